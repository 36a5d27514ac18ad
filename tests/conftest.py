"""Shared fixtures: real servers on free loopback ports, started with the project's own configs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_firestore import FirestoreEmulatorError, LocalFirestoreEmulator
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics, TsdbStartError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "dmr_ir" / "dmr_ir.npz"
#: Points the real-data tests at the DMR-IR file where `../shared` is not beside the checkout
#: (a git worktree elsewhere, a CI cache).
DMR_IR_ENV = "THERMOSCREEN_DMR_IR"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A real Mosquitto with the project's generated dev config (plaintext, loopback only)."""
    (tmp_path / "mosquitto").mkdir(exist_ok=True)
    broker = LocalMosquitto(workdir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def dmr_ir_path() -> Path:
    """The real DMR-IR thermograms, where this machine has them: `$THERMOSCREEN_DMR_IR`, else `../shared`.

    A set variable that names no file is an error, not a skip: a typo must not silently skip
    the real-data checks.
    """
    named = os.environ.get(DMR_IR_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            pytest.fail(f"{DMR_IR_ENV}={named}: no such file")
        return path
    if not SHARED_DATA.exists():
        pytest.skip(
            f"real thermograms not present at {SHARED_DATA} nor named by ${DMR_IR_ENV}"
            " (tests use synthetic data elsewhere)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalVictoriaMetrics]:
    """One VictoriaMetrics for the whole run; tests keep apart by their own device ids and patient refs."""
    tsdb = LocalVictoriaMetrics(tmp_path_factory.mktemp("victoria") / "data")
    try:
        tsdb.start()
    except TsdbStartError as exc:
        pytest.fail(f"VictoriaMetrics is required for the bridge and erasure tests: {exc}")
    try:
        yield tsdb
    finally:
        tsdb.stop()


@pytest.fixture
def running_victoria(victoria: LocalVictoriaMetrics) -> LocalVictoriaMetrics:
    """The shared VictoriaMetrics, restarted if an earlier test left it stopped."""
    if not victoria.running:
        victoria.start()
    return victoria


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFirestoreEmulator]:
    """The Firestore emulator (gcloud + Java): slow to start, so one per run; skipped with the reason where missing."""
    emulator = LocalFirestoreEmulator(tmp_path_factory.mktemp("firestore"))
    try:
        emulator.start()
    except FirestoreEmulatorError as exc:
        pytest.skip(f"Firestore emulator unavailable here: {exc}")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def emulator_project(firestore_emulator: LocalFirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """FIRESTORE_EMULATOR_HOST set (children inherit it) and a project id of this test's own."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    return f"demo-{uuid.uuid4().hex[:12]}"
