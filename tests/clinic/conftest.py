"""Keys and paths for the registry tests (random keys; the registry lives in its own directory), and
the real stores the erasure tests erase from: VictoriaMetrics, influxd, the Firestore emulator."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_firestore import FirestoreEmulatorError, LocalFirestoreEmulator
from devtools.local_influxd import InfluxdStartError, LocalInfluxd
from devtools.local_tsdb import LocalVictoriaMetrics, TsdbStartError


@pytest.fixture
def registry_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def site_key() -> bytes:
    return os.urandom(16)


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    return tmp_path / "clinic" / "patients.sqlite"


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalVictoriaMetrics]:
    """A real VictoriaMetrics for the erasure tests (tests keep apart by their own patient refs)."""
    tsdb = LocalVictoriaMetrics(tmp_path_factory.mktemp("victoria") / "data")
    try:
        tsdb.start()
    except TsdbStartError as exc:
        pytest.fail(f"VictoriaMetrics is required for the erasure tests: {exc}")
    try:
        yield tsdb
    finally:
        tsdb.stop()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfluxd]:
    """A real InfluxDB 1.x (influxd): the InfluxQL erasure path."""
    server = LocalInfluxd(tmp_path_factory.mktemp("influxd"))
    try:
        server.start()
    except InfluxdStartError as exc:
        pytest.fail(f"influxd is required for the InfluxQL erasure test: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFirestoreEmulator]:
    """The Firestore emulator (gcloud + Java), started once; skipped with the reason where it is missing."""
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
