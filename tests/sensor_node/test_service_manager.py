"""A real `thermoscreen sensor` process under a stand-in systemd: readiness, watchdog pings, stopping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.timeout(60)
def test_sensor_notifies_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    # A dead broker: the device still captures and spools (store-and-forward), so it is ready.
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermoscreen", "sensor", "--source", "synthetic", "--rfid", "scripted",
         "--rate", "4", "--broker", "mqtt://127.0.0.1:9", "--spool", str(tmp_path / "spool" / "spool.db")],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=capturing at 4 Hz, incarnation "), ready
        pings = [sock.recv(4096) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:  # pings may still be on their way before STOPPING=1
            message = sock.recv(4096)
            if message != b"WATCHDOG=1" or time.monotonic() > deadline:
                break
        assert message == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sock.close()
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "spool" / "spool.db").stat().st_mode & 0o777 == 0o600
