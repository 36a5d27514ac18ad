"""Helpers for running real sensor nodes against real brokers in tests."""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.mosquitto_conf import Listener, render_config
from contract.frame import Frame, decode_frame
from contract.messages import DeviceState, DeviceStatus, RfidEvent, decode_message
from devtools.local_mosquitto import LocalMosquitto, free_port
from sensor_node.config import SensorConfig
from sensor_node.node import SensorNode
from sensor_node.rfid import TapSource
from sensor_node.sources import open_source
from sensor_node.spool import Spool
from transport.connection import Message, MqttConnection, MqttSettings

SITE_KEY = bytes(range(32))


def fast_config(tmp_path: Path, url: str, **sections: dict[str, Any]) -> SensorConfig:
    """A node config with test-speed timings; `sections` override whole tables' keys."""
    raw: dict[str, dict[str, Any]] = {
        "device": {"id": "pi-1"},
        "source": {"kind": "synthetic", "rate_hz": 40.0, "seed": 3},
        "rfid": {"kind": "scripted"},
        "session": {"timeout_s": 60.0},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "flush_timeout_s": 5.0, "synchronous": "normal"},
        "status": {"interval_s": 0.5},
        "mqtt": {"url": url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return SensorConfig.model_validate(raw)


class RunningNode:
    """A SensorNode running on a thread; `stop()` shuts it down like SIGTERM does."""

    def __init__(self, config: SensorConfig, taps: TapSource) -> None:
        spool = Spool(config.spool_path, max_items=config.spool.max_items, max_bytes=config.spool.max_bytes)
        self.node = SensorNode(config, source=open_source(config), taps=taps, site_key=SITE_KEY, spool=spool)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.node.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "node did not shut down"


@pytest.fixture
def run_node() -> Iterator[Callable[[SensorConfig, TapSource], RunningNode]]:
    nodes: list[RunningNode] = []

    def start(config: SensorConfig, taps: TapSource) -> RunningNode:
        nodes.append(RunningNode(config, taps))
        return nodes[-1]

    yield start
    for running in nodes:
        running.stop()


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A Mosquitto that keeps sessions and queued messages across a restart (persistence on)."""
    workdir = tmp_path / "mosquitto-persistent"
    (workdir / "db").mkdir(parents=True)
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        render_config(
            [Listener(port=port)],
            allow_anonymous=True,
            persistence_dir=workdir / "db",
            user=pwd.getpwuid(
                os.getuid()
            ).pw_name,  # run as root, Mosquitto would drop to a user that cannot write here
        ),
        encoding="utf-8",
    )
    broker = LocalMosquitto(config, ports=[port], workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition that has no event to wait on (e.g. another process's file)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def persistent_subscriber(url: str, client_id: str) -> MqttConnection:
    settings = MqttSettings(
        url=url, client_id=client_id, clean_start=False, session_expiry_s=600, reconnect_min_s=0.05, reconnect_max_s=0.3
    )
    return MqttConnection(settings).start()


def frames_of(messages: list[Message]) -> list[Frame]:
    return [decode_frame(m.payload) for m in messages if m.topic.endswith("/frame")]


def events_of(messages: list[Message]) -> list[RfidEvent]:
    return [decode_message(m.payload, RfidEvent) for m in messages if m.topic.endswith("/rfid")]


def statuses_of(messages: list[Message]) -> list[DeviceStatus]:
    return [decode_message(m.payload, DeviceStatus) for m in messages if m.topic.endswith("/status")]


def went_offline(messages: list[Message]) -> bool:
    """The device's latest status says offline (a clean exit or its last will)."""
    statuses = statuses_of(messages)
    return bool(statuses) and statuses[-1].state is DeviceState.OFFLINE


def unique_by_seq(frames: list[Frame]) -> list[Frame]:
    """First occurrence of each sequence number, in arrival order (consumers de-duplicate like this)."""
    seen: set[int] = set()
    result = []
    for frame in frames:
        if frame.seq not in seen:
            seen.add(frame.seq)
            result.append(frame)
    return result
