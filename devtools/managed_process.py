"""One child process with its own log file: what every local launcher shares.

Mosquitto, VictoriaMetrics, influxd, the Firestore emulator and the `thermoscreen <job>`
children of the demo and benches all need the same handful of things: start with stdout and
stderr appended to a log file, wait until the process answers (a TCP port, an HTTP 200, a log
line), read the log's tail for error messages, and stop with SIGTERM, a bounded wait and
SIGKILL. `ManagedProcess` does each of them once; a launcher names its command (`command`)
and how it knows the process is ready (`wait_ready`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

#: How often the readiness waits poll (a port, a URL, a log file).
POLL_S = 0.02


class ProcessStartError(RuntimeError):
    """A launcher's program is missing or did not become ready; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    error: type[Exception] = ProcessStartError,
) -> None:
    """Block until something accepts TCP connections on host:port, or raise `error`.

    With `proc`, fail at once when that process exits instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise error(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(POLL_S)
    raise error(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def log_tail(path: Path, lines: int = 5, sep: str = " | ") -> str:
    """The last `lines` lines of a log file joined by `sep` ('' if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return sep.join(text.strip().splitlines()[-lines:])


class ManagedProcess:
    """A child process logging to `log_path`, stopped with SIGTERM, a wait, then SIGKILL.

    Subclasses set `name` and `start_error`, implement `command()`, and override `wait_ready`
    when the process needs time before it can be used. `signal_group=True` starts the child in
    its own session and signals the whole group (for wrappers such as gcloud, whose Java child
    would otherwise outlive them); `new_session=True` alone keeps the terminal's Ctrl-C away
    from the child but signals only the child itself.
    """

    name: str = "process"
    start_error: ClassVar[type[ProcessStartError]] = ProcessStartError
    signal_group: ClassVar[bool] = False
    #: The default `start()` readiness and `stop()` grace period, in seconds.
    start_timeout_s: ClassVar[float] = 10.0
    stop_timeout_s: ClassVar[float] = 10.0

    def __init__(
        self,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.log_path = log_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.new_session = new_session or self.signal_group
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        #: How many times it was started (a drill tells a restart from a survivor by this).
        self.starts = 0
        #: True once stopped or killed by the caller (a supervisor then leaves it alone).
        self.stopped_on_purpose = False
        self._term_sent = False

    # -- what a launcher provides ------------------------------------------------------------
    def command(self) -> list[str]:
        """The argv to start (raise `start_error` if the program is not installed)."""
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        """Block until the fresh process can be used; raise `start_error` (or TimeoutError) if not."""

    # -- state -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The pid while it runs, else None."""
        return self.proc.pid if self.proc is not None and self.running else None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else None."""
        return None if self.proc is None else self.proc.poll()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Self:
        """Start the command, logging to `log_path` (appended), and wait until it is ready.

        If it does not get ready, it is stopped and `start_error` says why, with the log's tail.
        """
        if self.running:
            raise self.start_error(f"{self.name} is already running (pid {self.pid})")
        argv = self.command()
        self._close_log()
        self.stopped_on_purpose = False
        self._term_sent = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=self.new_session,
        )
        self.starts += 1
        try:
            self.wait_ready(self.start_timeout_s if timeout is None else timeout)
        except (ProcessStartError, TimeoutError) as exc:
            tail = self.log_tail()
            self.stop()
            raise self.start_error(f"{self.name} did not start: {exc}; log: {tail}") from None
        return self

    def send_signal(self, signum: int) -> None:
        """Deliver `signum` (SIGHUP to reload, SIGSTOP/SIGCONT to freeze) if it runs."""
        if self.proc is None or not self.running:
            return
        if self.signal_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def request_stop(self) -> None:
        """Send SIGTERM once (a second one could hit the default handler while it shuts down)."""
        self.stopped_on_purpose = True
        if not self._term_sent:
            self.send_signal(signal.SIGTERM)
            self._term_sent = True

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (unless already sent), wait, then SIGKILL if it does not go. Returns the exit code."""
        self.request_stop()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(self.stop_timeout_s if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._kill_now()
        self._reap_group(self.stop_timeout_s if timeout is None else timeout)
        self._close_log()
        return None if proc is None else proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-work, without a goodbye."""
        self.stopped_on_purpose = True
        self._kill_now()
        self._reap_group(self.stop_timeout_s)
        self._close_log()

    def restart(self, timeout: float | None = None) -> Self:
        """Stop (SIGTERM) and start the same command again."""
        self.stop()
        return self.start(timeout)

    def wait(self, timeout: float) -> int | None:
        """The exit code once it exits within `timeout`, else None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _kill_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.send_signal(signal.SIGKILL)
            self.proc.wait()

    def _reap_group(self, timeout: float) -> None:
        """With `signal_group`, wait until nothing of the group is left (SIGKILL it after `timeout`)."""
        if not self.signal_group or self.proc is None:
            return
        pgid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- the log -----------------------------------------------------------------------------
    def log_tail(self, lines: int = 5, sep: str = " | ") -> str:
        """The last lines of the log on one line ('' if it cannot be read)."""
        return log_tail(self.log_path, lines, sep)

    def log_count(self, needle: str) -> int:
        """How many times `needle` appears in the log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").count(needle)
        except OSError:
            return 0

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until `needle` appears `count` times in the log, or raise `start_error`."""
        deadline = time.monotonic() + timeout
        while self.log_count(needle) < count:
            if time.monotonic() > deadline:
                raise self.start_error(
                    f"{self.name} did not log {needle!r} within {timeout:.0f} s; log: {self.log_tail()}"
                )
            time.sleep(POLL_S)

    # -- readiness helpers for `wait_ready` ----------------------------------------------------
    def wait_for_port(self, port: int, timeout: float, host: str = "127.0.0.1") -> None:
        """Block until the process listens on host:port; raise `start_error` if it exits first."""
        wait_for_port(host, port, timeout, self.proc, error=self.start_error)

    def wait_http_ok(self, url: str, timeout: float, poll_s: float = 0.05) -> None:
        """Poll `url` until it answers 200; raise `start_error` if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.returncode
            if code is not None:
                raise self.start_error(f"exited with code {code}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(poll_s)
        raise self.start_error(f"{url} not answering after {timeout:.0f} s")


def find_program(candidates: Sequence[str], error: type[Exception], hint: str) -> str:
    """The first of `candidates` on PATH (or an existing absolute path), else raise `error(hint)`."""
    for candidate in candidates:
        path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if path:
            return path
    raise error(hint)
