"""Running the components as real child processes (demo, end-to-end benches, fault drills).

Each child is a `thermoscreen <job>` process with its own log file; the supervisor stops
them with SIGTERM (graceful: sessions end, batches finish, queues flush) or kills them with
SIGKILL when a fault is the point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO


class ChildProcess:
    """One `thermoscreen` subcommand running as a child process, logging to a file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "thermoscreen", *self.args]

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
        )
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it does not go. Returns the exit code."""
        proc = self.proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-work."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


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
            if child.proc is not None and child.proc.poll() is not None and child.proc.returncode != 0:
                tail = child.log_tail(3).replace("\n", " | ")
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}: {tail}")

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
