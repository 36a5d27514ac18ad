"""Running the components as real child processes (demo, end-to-end benches, fault drills).

Each child is a `thermoscreen <job>` process with its own log file; the supervisor stops
them with SIGTERM (graceful: sessions end, batches finish, queues flush) or kills them with
SIGKILL when a fault is the point.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

from devtools.managed_process import ManagedProcess


class ChildProcess(ManagedProcess):
    """One `thermoscreen` subcommand running as a child process, logging to a file.

    `start()` returns once the process is started: whether the component is *online* is the
    caller's to wait for (over MQTT, see `LocalStack.wait_online`).
    """

    stop_timeout_s = 20.0

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = True,
    ) -> None:
        #: In its own session, a child does not get the terminal's Ctrl-C: the parent decides
        #: how to stop it (the demo shuts down gracefully instead of everything dying at once).
        super().__init__(log_dir / f"{name}.log", env={**os.environ, **(env or {})}, cwd=cwd, new_session=new_session)
        self.name = name
        self.args = list(args)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "thermoscreen", *self.args]

    def restart(self, timeout: float | None = None, *, kill: bool = False) -> Self:
        """Stop (SIGTERM, or SIGKILL with `kill`) if running, then start the same command again."""
        if kill:
            self.kill()
        else:
            self.stop(timeout)
        return self.start()

    def log_tail(self, lines: int = 8, sep: str = "\n") -> str:
        return super().log_tail(lines, sep)


class Supervisor:
    """Starts children, and stops all of them (in reverse order) however the run ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[ChildProcess] = []

    def spawn(self, name: str, args: Sequence[str], **kwargs: object) -> ChildProcess:
        child = ChildProcess(name, args, log_dir=self.log_dir, **kwargs)  # type: ignore[arg-type]
        self.children.append(child)
        return child.start()

    def check_alive(self) -> None:
        """Raise if any child died on its own (with the tail of its log)."""
        for child in self.children:
            if child.stopped_on_purpose:
                continue
            code = child.returncode
            if code is not None and code != 0:
                raise RuntimeError(f"{child.name} exited with code {code}: {child.log_tail(3, ' | ')}")

    def get(self, name: str) -> ChildProcess:
        """The child called `name` (LookupError naming the known ones if there is none)."""
        for child in self.children:
            if child.name == name:
                return child
        known = ", ".join(c.name for c in self.children) or "none"
        raise LookupError(f"no component {name!r} (components: {known})")

    def stop_all(self, timeout: float = 20.0) -> dict[str, int | None]:
        codes = {}
        for child in reversed(self.children):
            codes[child.name] = child.stop(timeout)
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or timeout (for conditions across processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
