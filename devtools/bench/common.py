"""What the benches share: where a run keeps its files, and how it reports progress."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Progress = Callable[[str], None]


def in_workdir(workdir: Path | None, bench: str, run: Callable[[Path], T]) -> T:
    """`run(dir)` in `workdir` (kept afterwards, for reading logs), or in a temp dir removed after."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return run(workdir)
    with tempfile.TemporaryDirectory(prefix=f"thermoscreen-bench-{bench}-") as tmp:
        return run(Path(tmp))


def progress_printer(bench: str) -> Progress:
    """Progress lines on stderr, `bench <name>: ...`, so stdout keeps only the JSON result."""

    def progress(message: str) -> None:
        print(f"bench {bench}: {message}", file=sys.stderr, flush=True)

    return progress
