"""What an operator runs: `infer --check`, systemd readiness and watchdog of a real `thermoscreen infer`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.model.shipped import shipped_model_dir, shipped_model_version
from devtools.local_mosquitto import LocalMosquitto
from tests.conftest import REPO_ROOT
from transport import service_manager


def infer(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "infer", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def test_check_prints_the_shipped_model_as_one_json_object() -> None:
    out = infer("--check", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["version"] == shipped_model_version()
    assert len(result["sha256"]) == 64
    assert Path(result["model_dir"]) == shipped_model_dir()


def test_check_refuses_an_unsigned_model_with_one_line_and_exit_2(tmp_path: Path) -> None:
    import shutil

    model = shutil.copytree(shipped_model_dir(), tmp_path / "m")
    (model / "manifest.json.sig").unlink()
    out = infer("--check", "--model", str(model))
    assert out.returncode == 2
    assert out.stdout == ""
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "not signed" in err[0], out.stderr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    try:
        yield path, sock
    finally:
        sock.close()


def test_systemd_ready_watchdog_and_stopping(
    mosquitto: LocalMosquitto, notify_socket: tuple[Path, socket.socket]
) -> None:
    """A real `thermoscreen infer` under a fake systemd: READY=1, then WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    path, sock = notify_socket
    env = {k: v for k, v in os.environ.items() if k != service_manager.WATCHDOG_PID_ENV}
    env[service_manager.NOTIFY_SOCKET_ENV] = str(path)
    env[service_manager.WATCHDOG_USEC_ENV] = "200000"  # pings every 0.1 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermoscreen", "infer", "--broker", mosquitto.url, "--node-id", "infer-sd"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=serving model "), first
        pings = [sock.recv(4096) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
