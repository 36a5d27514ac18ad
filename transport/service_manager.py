"""systemd readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`), no library needed.

The sd_notify protocol is one datagram on the AF_UNIX socket named by `$NOTIFY_SOCKET` (a
leading `@` means the abstract namespace). Outside systemd the variable is unset and every
call is a no-op, so components call these unconditionally. The watchdog pings only while the
component's own health check passes: a bridge whose ingest thread died, or a node that
stopped consuming, stops pinging, and systemd restarts it after `WatchdogSec` instead of
leaving it "running but doing nothing". Written by hand because it is 30 lines and the Pi
should not need a compiled `python-systemd`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STOPPING=1", "STATUS=...") to systemd; False outside systemd."""
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the `WatchdogSec=` systemd gave this process (the documented ping rate), or None."""
    usec = os.environ.get(WATCHDOG_USEC_ENV)
    pid = os.environ.get(WATCHDOG_PID_ENV)
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Watchdog:
    """Pings `WATCHDOG=1` every half watchdog period while `healthy()` holds; stops with `stop()`."""

    def __init__(self, healthy: Callable[[], bool], interval_s: float | None = None) -> None:
        self._healthy = healthy
        self._interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        if self._interval_s is None or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._interval_s is not None
        while not self._stop.wait(self._interval_s):
            if self._healthy():
                notify("WATCHDOG=1")
            else:
                log.error("health check failed: withholding the systemd watchdog ping")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def ready(status: str) -> None:
    """Readiness plus a one-line status (`systemctl status` shows it)."""
    notify(f"READY=1\nSTATUS={status}")


def stopping() -> None:
    notify("STOPPING=1")
