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
        new_session: bool = True,
    ) -> None:
        self.name = name
        #: In its own session, a child does not get the terminal's Ctrl-C: the parent decides
        #: how to stop it (the demo shuts down gracefully instead of everything dying at once).
        self.new_session = new_session
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0
        #: True once stopped or killed by the caller: `Supervisor.check_alive` then leaves it alone.
        self.stopped_on_purpose = False
        self._term_sent = False

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "thermoscreen", *self.args]

    def start(self) -> ChildProcess:
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.stopped_on_purpose = False
        self._term_sent = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=self.new_session,
        )
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else None."""
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, signum: int) -> None:
        """Deliver `signum` (e.g. SIGSTOP/SIGCONT to freeze a component in a drill) if it runs."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def restart(self, *, timeout: float = 20.0, kill: bool = False) -> ChildProcess:
        """Stop (SIGTERM, or SIGKILL with `kill`) if running, then start the same command again."""
        if kill:
            self.kill()
        else:
            self.stop(timeout)
        return self.start()

    def request_stop(self) -> None:
        """Send SIGTERM once (a second one could hit the default handler while it shuts down)."""
        self.stopped_on_purpose = True
        if self.running() and not self._term_sent:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            self._term_sent = True

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (unless already sent), wait, then SIGKILL if it does not go. Returns the exit code."""
        self.request_stop()
        proc = self.proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
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
        self.stopped_on_purpose = True
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
            if child.stopped_on_purpose:
                continue
            if child.proc is not None and child.proc.poll() is not None and child.proc.returncode != 0:
                tail = child.log_tail(3).replace("\n", " | ")
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}: {tail}")

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
