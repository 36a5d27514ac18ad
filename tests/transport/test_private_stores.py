"""Every store of screening data at rest is private: 0600 database (and -wal/-shm), 0700 directory.

The stores call `transport.private_files` in their constructors: a fresh store is private
under any umask, and one restored 0644 (a re-imaged SD card, a backup copied back) is
tightened when it is opened. Real stores on a real filesystem, no mocks.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.archive import Archive
from cloud_bridge.durable_queue import DurableQueue
from sensor_node.spool import Spool


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _queue(path: Path) -> Any:
    return DurableQueue(path, ["influx"])


def _archive(path: Path) -> Any:
    return Archive(path, readonly=False)


def _spool(path: Path) -> Any:
    return Spool(path, max_items=100, max_bytes=1_000_000)


STORES: dict[str, Callable[[Path], Any]] = {"queue": _queue, "archive": _archive, "spool": _spool}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _close(store: Any) -> None:
    store.close()


@pytest.mark.parametrize("kind", sorted(STORES))
def test_a_new_store_is_private_under_umask_0(kind: str, tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "state" / f"{kind}.sqlite"
    store = STORES[kind](path)
    try:
        wal = path.with_name(path.name + "-wal")
        assert _mode(path) == 0o600
        if wal.exists():
            assert _mode(wal) == 0o600
        assert _mode(path.parent) == 0o700
    finally:
        _close(store)


@pytest.mark.parametrize("kind", sorted(STORES))
def test_a_restored_0644_store_is_tightened_when_opened(kind: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = state / f"{kind}.sqlite"
    _close(STORES[kind](path))
    state.chmod(0o755)
    path.chmod(0o644)
    # A -wal left behind by a crash, restored 0644 with the rest.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    wal = path.with_name(path.name + "-wal")
    store = STORES[kind](path)
    try:
        assert _mode(path) == 0o600
        assert _mode(state) == 0o700
        if wal.exists():
            assert _mode(wal) == 0o600
    finally:
        _close(store)
        conn.close()


def test_keygen_key_is_0600_in_a_0700_directory(tmp_path: Path, loose_umask: None) -> None:
    """`thermoscreen train keygen`: the model-signing key never readable by others, whatever the umask."""
    from training.cli import _run_keygen

    key = tmp_path / "keys" / "signing.key"
    assert _run_keygen(argparse.Namespace(out=key)) == 0
    assert _mode(key) == 0o600
    assert _mode(key.parent) == 0o700
