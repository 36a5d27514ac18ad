"""Fixtures of the bridge tests: a real VictoriaMetrics (session-scoped, restartable) and the
Firestore emulator (session-scoped; skipped with the reason where the machine lacks it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_firestore import FirestoreEmulatorError, LocalFirestoreEmulator
from devtools.local_tsdb import LocalVictoriaMetrics, TsdbStartError


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalVictoriaMetrics]:
    """One VictoriaMetrics for the whole run; tests keep apart by using their own device ids."""
    tsdb = LocalVictoriaMetrics(tmp_path_factory.mktemp("victoria") / "data")
    try:
        tsdb.start()
    except TsdbStartError as exc:
        pytest.fail(f"VictoriaMetrics is required for the bridge tests: {exc}")
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
    """The Firestore emulator (gcloud + Java); slow to start, so started once per run."""
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
def bridge_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bridge"
    path.mkdir()
    return path
