"""Keys and paths for the registry tests (random keys; the registry lives in its own directory), and
influxd for the InfluxQL erasure path (VictoriaMetrics and the Firestore emulator: tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_influxd import InfluxdStartError, LocalInfluxd


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
