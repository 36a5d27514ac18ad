"""Starts a real Mosquitto on loopback for tests, the demo and the benchmarks."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

from broker.mosquitto_conf import render_dev_config
from devtools.managed_process import ManagedProcess, ProcessStartError, find_program, free_port, wait_for_port

__all__ = [
    "RELOAD_LOG_LINE",
    "BrokerStartError",
    "LocalMosquitto",
    "find_mosquitto",
    "free_port",
    "wait_for_port",
]

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
#: What Mosquitto logs (log_type information) when SIGHUP makes it re-read its files.
RELOAD_LOG_LINE = "Reloading config."
#: Logged (log_type information) at the start, and once the signal handlers are installed.
STARTING_LOG_LINE = " starting\n"
RUNNING_LOG_LINE = " running\n"


class BrokerStartError(ProcessStartError):
    """Mosquitto is missing or did not start; the message says which and why."""


def find_mosquitto() -> str:
    return find_program(
        MOSQUITTO_CANDIDATES, BrokerStartError, "mosquitto not found: install it (Debian: apt-get install mosquitto)"
    )


class LocalMosquitto(ManagedProcess):
    """A Mosquitto process with a given config file (or a generated dev config on a free port).

    `ports` are waited on at start. `restart()` keeps the same config and ports.
    """

    name = "mosquitto"
    start_error = BrokerStartError

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
        super().__init__(self.workdir / "mosquitto.log")
        self.config_path = config_path
        self.ports = ports
        self._starts_logged = 0

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # Counted before the new process can log, so `wait_ready` sees only its own lines.
        self._starts_logged = self.log_count(STARTING_LOG_LINE)
        return [find_mosquitto(), "-c", str(self.config_path)]

    def wait_ready(self, timeout: float) -> None:
        for port in self.ports:
            self.wait_for_port(port, timeout)
        # Mosquitto listens before it installs its signal handlers; a SIGHUP in between
        # would kill it. Where the config logs `information`, wait for "running" too.
        if self.log_count(STARTING_LOG_LINE) > self._starts_logged:
            self.wait_for_log(RUNNING_LOG_LINE, self._starts_logged + 1, timeout)

    def reload(self) -> None:
        """SIGHUP: re-read password and ACL files."""
        self.send_signal(signal.SIGHUP)

    def reload_and_wait(self, timeout: float = 10.0) -> None:
        """SIGHUP, then block until the broker logged that it reloaded.

        Mosquitto logs "Reloading config." (log_type information) in the loop iteration that
        re-reads the files, so any connection made after this returns meets the new files.
        Needs a config that logs `information` (the provisioned one does; the dev one does not).
        """
        if not self.running:
            raise BrokerStartError("mosquitto is not running")
        before = self.log_count(RELOAD_LOG_LINE)
        self.send_signal(signal.SIGHUP)
        self.wait_for_log(RELOAD_LOG_LINE, before + 1, timeout)
