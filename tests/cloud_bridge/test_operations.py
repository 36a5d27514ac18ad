"""The bridge as an operator runs it: systemd readiness/watchdog and a Prometheus `/metrics` scrape."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools import component_toml
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import connect


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_bridge_notifies_systemd_and_serves_prometheus_metrics(tmp_path: Path, mosquitto: LocalMosquitto) -> None:
    config = bridge_config(tmp_path, mosquitto.url, metrics={"prometheus_port": 0})
    path = component_toml.write(tmp_path / "bridge.toml", config)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermoscreen", "bridge", "--config", str(path), "--progress-s", "0"],
        env={**os.environ, **env}, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=storing to archive"), ready
        assert notify.recv(4096) == b"WATCHDOG=1"
        line = proc.stderr.readline()
        match = re.search(r"Prometheus on port (\d+)", line)
        assert match, line
        port = int(match.group(1))
        session = make_session("ops-1", 6, seed=2)
        conn = connect(mosquitto.url)
        messages = list(session.ordered_messages())
        publish_all(conn, messages)
        conn.stop()
        node = (("node_id", config.bridge.node_id),)
        samples = wait_until(
            lambda: _scrape(port),
            lambda s: s.get("thermoscreen_bridge_messages_received_total", {}).get(node, 0) >= len(messages),
            timeout=20,
            what="the scrape to count every message",
        )
        assert samples["thermoscreen_bridge_messages_queued_total"][node] >= len(messages)
        assert samples["thermoscreen_bridge_queue_depth"][node] >= 0
        assert (("node_id", config.bridge.node_id), ("sink", "archive")) in samples[
            "thermoscreen_bridge_sink_written_total"
        ]
        proc.send_signal(signal.SIGTERM)
        while (message := notify.recv(4096)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        notify.close()
