"""Private files: the registry and its audit log are nobody else's business on the machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def _private_dir(directory: Path) -> None:
    """Make `directory` exist with mode 0700, or say why it cannot be."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != DIR_MODE:
        try:
            directory.chmod(DIR_MODE)
        except PermissionError:
            raise ValueError(
                f"{directory}: cannot make it private (0700); put the registry in a directory of its own"
            ) from None


def create_private_file(path: Path) -> None:
    """Create `path` 0600 (if missing) before anything else opens it, in a 0700 directory.

    `os.open` with the mode comes first so that SQLite never creates the file with the umask's
    looser mode, not even for a moment.
    """
    _private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)
