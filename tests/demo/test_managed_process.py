"""The one launcher base (devtools.managed_process) with real child processes (`sh`, `python`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from devtools.managed_process import ManagedProcess, ProcessStartError, free_port


class _Shell(ManagedProcess):
    name = "shell"
    stop_timeout_s = 0.5

    def __init__(self, log_path: Path, script: str) -> None:
        super().__init__(log_path)
        self.script = script

    def command(self) -> list[str]:
        return ["sh", "-c", self.script]


class _GroupShell(_Shell):
    signal_group: ClassVar[bool] = True


class _Listener(ManagedProcess):
    name = "listener"

    def __init__(self, log_path: Path, port: int, *, exit_first: bool = False) -> None:
        super().__init__(log_path)
        self.port = port
        self.exit_first = exit_first

    def command(self) -> list[str]:
        code = (
            "import socket, sys, time\n"
            "print('about to listen', flush=True)\n"
            f"if {self.exit_first}: sys.exit(3)\n"
            "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)\n"
        )
        return [sys.executable, "-c", code, str(self.port)]

    def wait_ready(self, timeout: float) -> None:
        self.wait_for_port(self.port, timeout)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that this container may lack counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    proc = _Shell(tmp_path / "p.log", "trap '' TERM; echo up; while :; do sleep 0.05; done").start()
    assert proc.wait(0.3) is None and proc.running
    started = time.monotonic()
    code = proc.stop()
    assert code == -9  # SIGKILL, not a clean exit
    assert 0.4 < time.monotonic() - started < 5
    assert proc.pid is None and not proc.running and proc.log_tail() == "up"


def test_signal_group_leaves_no_grandchild_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    proc = _GroupShell(tmp_path / "g.log", f"sleep 60 & echo $! > {pid_file}; wait").start()
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    proc.stop()
    assert not _alive(grandchild)


def test_start_waits_for_the_port_and_a_failed_start_names_the_log(tmp_path: Path) -> None:
    with _Listener(tmp_path / "ok.log", free_port()) as ok:
        assert ok.running and ok.starts == 1
    assert not ok.running

    failing = _Listener(tmp_path / "bad.log", free_port(), exit_first=True)
    with pytest.raises(ProcessStartError, match=r"listener did not start: process exited with code 3.*about to listen"):
        failing.start()
    assert not failing.running
