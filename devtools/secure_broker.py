"""A real Mosquitto provisioned like production (TLS, passwords, ACL), for tests in any area.

Usage in a test module or conftest:

    from devtools.secure_broker import SecureBroker

    @pytest.fixture
    def secure_broker(tmp_path):
        with SecureBroker(tmp_path) as broker:
            yield broker

    def test_x(secure_broker):
        dev = secure_broker.add_device("pi-1")            # account created, broker reloaded
        conn = secure_broker.connect(dev)                 # TLS, username, password
        settings = secure_broker.settings(dev)            # MqttSettings for a component's [mqtt]
        env = secure_broker.env(dev)                      # THERMOSCREEN_MQTT_PASSWORD for a subprocess
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.accounts import Role
from broker.files import BrokerFiles
from broker.provisioning import (
    Credentials,
    add_device,
    add_service,
    init_broker,
    read_site_key,
    remove_account,
)
from devtools.local_mosquitto import LocalMosquitto, free_port
from transport.connection import MqttConnection, MqttSettings


class SecureBroker:
    """`thermoscreen broker init` in `workdir/broker`, then `mosquitto -c` on two free loopback ports.

    The one production-like broker of the dev tools: tests use it directly, and `LocalStack`
    (the demo, the benches) runs its components against one.
    """

    def __init__(self, workdir: Path, *, hostnames: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.tls_port = free_port()
        self.files: BrokerFiles = init_broker(
            workdir / "broker", port=self.port, tls_port=self.tls_port, tls_bind="127.0.0.1", hostnames=hostnames
        )
        run_dir = workdir / "mosquitto-run"
        run_dir.mkdir(exist_ok=True)
        self.process = LocalMosquitto(self.files.config, ports=[self.port, self.tls_port], workdir=run_dir)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SecureBroker:
        """Start Mosquitto (again, after `stop()`/`kill()`), same config and ports.

        SIGINT is blocked while it starts, and the broker inherits that signal mask: a Ctrl-C
        in the terminal then reaches the caller (the demo shuts down gracefully, pytest tears
        down), never the broker underneath it.
        """
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        self.process.kill()

    def restart(self) -> None:
        """Stop the broker (SIGTERM) and start it again; clients reconnect on their own."""
        self.stop()
        self.start()

    def __enter__(self) -> SecureBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process.running

    # -- addresses and files ---------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.files.root

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def local_url(self) -> str:
        """The plaintext loopback listener (passwords still required)."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.files.ca_cert

    @property
    def site_key_file(self) -> Path:
        return self.files.site_key

    @property
    def site_key(self) -> bytes:
        return read_site_key(self.dir)

    def log_text(self) -> str:
        return self.process.log_path.read_text(encoding="utf-8", errors="replace")

    # -- accounts (each change reloads a running broker and waits for it) ------------------
    def add_device(self, device_id: str) -> Credentials:
        creds = add_device(self.dir, device_id)
        self._reload()
        return creds

    def add_service(self, role: Role | str, name: str) -> Credentials:
        creds = add_service(self.dir, role, name)
        self._reload()
        return creds

    def remove(self, username: str) -> None:
        remove_account(self.dir, username)
        self._reload()

    def _reload(self) -> None:
        if self.running:
            self.process.reload_and_wait()

    # -- clients ---------------------------------------------------------------------------
    def settings(
        self, creds: Credentials | None, *, url: str | None = None, tls: bool = True, **overrides: Any
    ) -> MqttSettings:
        """MqttSettings over TLS (plaintext loopback with `tls=False`, or `url`) with this account's
        username and the CA."""
        values: dict[str, Any] = {
            "url": url or (self.tls_url if tls else self.local_url),
            "username": creds.username if creds else None,
            "ca_file": self.ca_file,
            "connect_timeout_s": 5.0,
            **overrides,
        }
        return MqttSettings(**values)

    def connect(self, creds: Credentials, **overrides: Any) -> MqttConnection:
        """A started connection as this account (raises MqttConnectionError if refused)."""
        return MqttConnection(self.settings(creds, **overrides), password=creds.password).start()

    def env(self, creds: Credentials) -> dict[str, str]:
        """The environment for a component subprocess: its password in THERMOSCREEN_MQTT_PASSWORD."""
        return {**os.environ, "THERMOSCREEN_MQTT_PASSWORD": creds.password}


class _Probe(MqttConnection):
    """A connection that remembers the first CONNACK refusal it got.

    The wrapper's `last_connect_error` is overwritten by the disconnect that follows a refused
    CONNACK ("Protocol error"), so the refusal itself ("Not authorized") is caught here, per
    connection (other clients of the same broker may be refused at the same moment).
    """

    def __init__(self, settings: MqttSettings, password: str | None) -> None:
        super().__init__(settings, password=password)
        self.refusal: str | None = None
        self.answered = threading.Event()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False) and self.refusal is None:
            self.refusal = f"broker refused connection: {reason_code}"
            self.answered.set()
        super()._on_connect(client, userdata, flags, reason_code, properties)


def connect_outcome(settings: MqttSettings, password: str | None, timeout: float = 5.0) -> str | None:
    """Try to connect: None if the broker accepted us, else the first problem.

    Returns as soon as the broker answers either way, instead of waiting out the connect timeout.
    """
    conn = _Probe(settings, password)
    conn.start(wait=False)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.connected.is_set():
                return None
            if conn.answered.wait(0.02):
                return conn.refusal
            if conn.last_connect_error is not None:  # TLS failures and dropped connections
                return conn.last_connect_error
        return "no answer"
    finally:
        conn.stop()
