"""sd_notify readiness and watchdog pings, received on a real AF_UNIX datagram socket as systemd would."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from transport import service_manager


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv(service_manager.NOTIFY_SOCKET_ENV, str(path))
    try:
        yield sock
    finally:
        sock.close()


def test_outside_systemd_notify_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(service_manager.NOTIFY_SOCKET_ENV, raising=False)
    assert service_manager.notify("READY=1") is False


def test_ready_sends_ready_and_status(notify_socket: socket.socket) -> None:
    service_manager.ready("connected to broker")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=connected to broker"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"thermoscreen-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv(service_manager.NOTIFY_SOCKET_ENV, "@" + name)
    try:
        assert service_manager.notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(service_manager.WATCHDOG_USEC_ENV, "3000000")
    monkeypatch.setenv(service_manager.WATCHDOG_PID_ENV, str(os.getpid()))
    assert service_manager.watchdog_interval_s() == pytest.approx(1.5)
    monkeypatch.setenv(service_manager.WATCHDOG_PID_ENV, str(os.getpid() + 1))
    assert service_manager.watchdog_interval_s() is None
    monkeypatch.delenv(service_manager.WATCHDOG_USEC_ENV)
    assert service_manager.watchdog_interval_s() is None


def test_watchdog_pings_only_while_healthy(notify_socket: socket.socket) -> None:
    healthy = threading.Event()
    healthy.set()
    dog = service_manager.Watchdog(healthy.is_set, interval_s=0.05).start()
    try:
        assert notify_socket.recv(4096) == b"WATCHDOG=1"
        healthy.clear()
        time.sleep(0.15)  # let a ping that was already on its way arrive
        notify_socket.settimeout(0.3)
        while True:
            try:
                notify_socket.recv(4096)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):  # unhealthy: no ping in 6 intervals
            notify_socket.recv(4096)
    finally:
        dog.stop()
