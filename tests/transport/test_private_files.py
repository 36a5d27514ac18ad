"""transport.private_files on a real filesystem: modes of new files, tightening of restored ones."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from transport.private_files import (
    SharedDirectoryError,
    create_private,
    private_dir,
    private_file,
    private_parent,
    write_atomic,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """umask 0: what a careless init script or a restored image gives a process."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_dir_creates_every_missing_level_0700(tmp_path: Path, loose_umask: None) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert private_dir(target) == target
    for level in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert _mode(level) == 0o700, level


def test_private_dir_tightens_a_looser_one_with_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "restored"
    target.mkdir()
    os.chmod(target, 0o755)
    with caplog.at_level(logging.WARNING, logger="transport.private_files"):
        private_dir(target)
        private_dir(target)  # already private: no second line
    assert _mode(target) == 0o700
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "0755" in lines[0] and str(target) in lines[0], lines


def test_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "f")


def test_private_parent_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    private_parent(tmp_path / "report.html")
    assert _mode(tmp_path) == 0o755
    private_parent(tmp_path / "new" / "report.html")
    assert _mode(tmp_path / "new") == 0o700


def test_private_file_tightens_the_database_and_its_sqlite_siblings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "store.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    siblings = [db, tmp_path / "store.sqlite-wal", tmp_path / "store.sqlite-shm"]
    for path in siblings:
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="transport.private_files"):
        private_file(db)
    assert [_mode(p) for p in siblings] == [0o600, 0o600, 0o600]
    conn.close()
    assert len(caplog.records) == 3


def test_private_file_creates_a_missing_file_0600_and_sqlite_follows_it(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "new.sqlite"
    private_file(db)
    assert _mode(db) == 0o600
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    # SQLite gives the journal files it creates the database file's mode.
    assert _mode(tmp_path / "new.sqlite-wal") == 0o600
    conn.close()


def test_private_file_keeps_a_stricter_mode(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_text("x")
    os.chmod(path, 0o400)
    private_file(path)
    assert _mode(path) == 0o400


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_create_private_is_exactly_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        os.close(create_private(tmp_path / "k"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600


def test_create_private_never_opens_an_existing_file_or_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("old")
    with pytest.raises(FileExistsError):
        create_private(tmp_path / "k")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        create_private(tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()


def test_write_atomic_replaces_a_loose_file_with_a_private_one(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_private_dir_refuses_a_shared_sticky_directory_and_leaves_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    with pytest.raises(SharedDirectoryError, match="shared directory"):
        private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    below = private_dir(shared / "store")  # a directory of its own below it is fine
    assert stat.S_IMODE(below.stat().st_mode) == 0o700
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
