"""Files only their owner may read: secrets, screening stores, reports (0600 files, 0700 directories).

Why: SD cards get re-imaged and backups get restored by tools that drop modes, so a file we
once created 0600 can come back 0644. Every opener of a private file therefore *checks and
tightens* (one log line when it had to), instead of trusting how the file was made. New files
are created 0600 from the first byte (os.open with the mode, then fchmod: the umask can
neither widen nor narrow it), never chmod-ed after being written world-readable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: Mode bits nobody but the owner may hold on a private file or directory.
FOREIGN_BITS = 0o077
#: Files SQLite keeps next to a database; they hold the same rows, so they get the same mode.
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


def _tighten(path: Path, what: str) -> None:
    """Drop group/other bits from an existing `path`, with one log line when there were any."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & FOREIGN_BITS:
        os.chmod(path, mode & ~FOREIGN_BITS)
        log.warning("%s %s was %04o, readable by others: tightened to %04o", what, path, mode, mode & ~FOREIGN_BITS)


def private_dir(path: Path) -> Path:
    """Make `path` a directory only its owner can enter: missing levels are created 0700, it is tightened."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first: tightened below
            os.mkdir(level, PRIVATE_DIR_MODE)
            os.chmod(level, PRIVATE_DIR_MODE)  # the umask may have narrowed it
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a directory")
    if not missing:
        _refuse_shared(path)
    _tighten(path, "directory")
    return path


class SharedDirectoryError(PermissionError):
    """A store was pointed straight into a directory others use (such as /tmp): never tighten that."""


def _refuse_shared(path: Path) -> None:
    """Refuse an existing directory with the sticky bit (a shared one) instead of tightening it.

    Why: tightening /tmp (1777) to 1700 would break every other user and service of the machine
    (seen once, with `--spool /tmp/spool.sqlite`). The store needs a directory of its own;
    making one below (`/tmp/thermoscreen/spool.sqlite`) is fine.
    """
    info = os.stat(path)
    if info.st_mode & stat.S_ISVTX:
        raise SharedDirectoryError(
            f"{path}: a shared directory (mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}); "
            "give the store a directory of its own, e.g. a new subdirectory"
        )


def private_parent(path: Path) -> Path:
    """Create the missing directories above `path` 0700; existing ones (a home, the cwd) are left as they are."""
    parent = Path(path).parent
    if not parent.exists():
        private_dir(parent)
    return parent


def private_file(path: Path) -> Path:
    """Make sure `path` (created empty if missing) and its SQLite siblings are 0600.

    Call it before `sqlite3.connect`: SQLite gives the -wal and -shm files it creates the mode
    of the database file, so a 0600 database keeps its journal 0600 too.
    """
    path = Path(path)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(create_private(path))
    _tighten(path, "file")
    for suffix in SQLITE_SIBLINGS:
        sibling = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            _tighten(sibling, "file")
    return path


def create_private(path: Path, *, mode: int = PRIVATE_FILE_MODE) -> int:
    """Create a new file `path` with exactly `mode` (O_EXCL: never an existing one) and return its fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask narrowed it, perhaps; it never widened it
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(
    path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE, chown: tuple[int, int] | None = None
) -> None:
    """Replace `path` with `data` atomically: a temp file made with `mode` (and owner), fsync, rename.

    A crash leaves the old file or the new one, never half of one, and the content is never
    readable with a looser mode than `mode`, not even for an instant.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = create_private(tmp, mode=mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if chown is not None and chown != (os.geteuid(), os.getegid()):
            os.chown(tmp, *chown)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
