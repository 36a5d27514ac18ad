"""Starts a real Mosquitto on loopback for tests, the demo and the benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from broker.mosquitto_conf import render_dev_config

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
#: What Mosquitto logs (log_type information) when SIGHUP makes it re-read its files.
RELOAD_LOG_LINE = "Reloading config."
#: Logged (log_type information) at the start, and once the signal handlers are installed.
STARTING_LOG_LINE = " starting\n"
RUNNING_LOG_LINE = " running\n"


class BrokerStartError(RuntimeError):
    """Mosquitto is missing or did not start; the message says which and why."""


def find_mosquitto() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if path:
            return path
    raise BrokerStartError("mosquitto not found: install it (Debian: apt-get install mosquitto)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts TCP connections on host:port, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerStartError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerStartError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


class LocalMosquitto:
    """A Mosquitto process with a given config file (or a generated dev config on a free port).

    `ports` are waited on at start. `restart()` keeps the same config and ports.
    """

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        ports: list[int] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="thermoscreen-mosquitto-"))
        if config_path is None:
            port = free_port()
            config_path = self.workdir / "mosquitto.conf"
            config_path.write_text(render_dev_config(port), encoding="utf-8")
            ports = [port]
        if not ports:
            raise ValueError("ports must be given with an explicit config")
        self.config_path = config_path
        self.ports = ports
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> LocalMosquitto:
        binary = find_mosquitto()
        starts = self.log_count(STARTING_LOG_LINE)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_file = log
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            for port in self.ports:
                wait_for_port("127.0.0.1", port, timeout, self._proc)
            # Mosquitto listens before it installs its signal handlers; a SIGHUP in between
            # would kill it. Where the config logs `information`, wait for "running" too.
            if self.log_count(STARTING_LOG_LINE) > starts:
                self.wait_for_log(RUNNING_LOG_LINE, starts + 1, timeout)
        except BrokerStartError as exc:
            self.stop()
            tail = self.log_tail()
            raise BrokerStartError(f"mosquitto did not start: {exc}; log: {tail}") from None
        return self

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: a clean broker shutdown."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    def reload(self) -> None:
        """SIGHUP: re-read password and ACL files."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def reload_and_wait(self, timeout: float = 10.0) -> None:
        """SIGHUP, then block until the broker logged that it reloaded.

        Mosquitto logs "Reloading config." (log_type information) in the loop iteration that
        re-reads the files, so any connection made after this returns meets the new files.
        Needs a config that logs `information` (the provisioned one does; the dev one does not).
        """
        if self._proc is None:
            raise BrokerStartError("mosquitto is not running")
        before = self.log_count(RELOAD_LOG_LINE)
        self._proc.send_signal(signal.SIGHUP)
        self.wait_for_log(RELOAD_LOG_LINE, before + 1, timeout)

    def log_count(self, needle: str) -> int:
        """How many times `needle` appears in the broker's log so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").count(needle)
        except OSError:
            return 0

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until `needle` appears `count` times in the broker's log, or raise."""
        deadline = time.monotonic() + timeout
        while self.log_count(needle) < count:
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"mosquitto did not log {needle!r} within {timeout:.0f} s; log: {self.log_tail()}"
                )
            time.sleep(0.02)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
