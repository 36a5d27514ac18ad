"""`/metrics` of a real running node, scraped over HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.local_mosquitto import LocalMosquitto
from inference_node.config import load_config
from inference_node.node import InferenceNode
from tests.conftest import REPO_ROOT
from tests.inference_node.frames import all_acked, publish_frames
from tests.inference_node.model_factory import sample_frames_c
from tests.mqtt_helpers import connect


@pytest.fixture
def shipped_node(mosquitto: LocalMosquitto) -> Iterator[InferenceNode]:
    """The shipped model (no TensorFlow needed), metrics on an ephemeral loopback port."""
    config = load_config(
        None,
        {
            "mqtt.url": mosquitto.url,
            "node_id": "infer-prom",
            "model_poll_s": 0,
            "metrics_interval_s": 0.2,
            "metrics.prometheus_port": 0,
        },
    )
    node = InferenceNode(config).start()
    try:
        yield node
    finally:
        node.stop()


def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_metrics_are_off_by_default() -> None:
    assert load_config(None).metrics.prometheus_port is None


def test_scrape_shows_the_figures_published_over_mqtt(mosquitto: LocalMosquitto, shipped_node: InferenceNode) -> None:
    port = shipped_node.prometheus_port
    assert port is not None
    images: npt.NDArray[np.float32] = sample_frames_c(4, seed=1)
    pub = connect(mosquitto.url)
    try:
        all_acked(publish_frames(pub, images, "pi-prom", range(12)))
        deadline = time.monotonic() + 20
        while shipped_node.stats.frames_total < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pub.stop()
    time.sleep(0.5)  # one metrics window with the frames in it was published
    families = scrape(port)
    node = {"node_id": "infer-prom"}
    assert ("thermoscreen_inference_frames_total", node, 12.0) in families["thermoscreen_inference_frames"]
    assert ("thermoscreen_inference_deadletters_total", node, 0.0) in families["thermoscreen_inference_deadletters"]
    assert ("thermoscreen_inference_queue_depth", node, 0.0) in families["thermoscreen_inference_queue_depth"]
    latency = {
        (name, labels.get("quantile")): value
        for name, labels, value in families["thermoscreen_inference_latency_seconds"]
    }
    assert latency[("thermoscreen_inference_latency_seconds_count", None)] == 12.0
    assert 0.0 < latency[("thermoscreen_inference_latency_seconds_sum", None)] < 12 * 10.0
    assert ("thermoscreen_inference_latency_seconds", "0.99") in latency
    (info,) = families["thermoscreen_inference_model_info"]
    assert info[1] == {**node, "version": shipped_node.model_version, "sha256": shipped_node.model_sha256}


def test_scrape_is_bound_to_loopback(shipped_node: InferenceNode) -> None:
    assert shipped_node.config.metrics.prometheus_bind == "127.0.0.1"
    assert shipped_node._metrics_server is not None
    assert shipped_node._metrics_server.server.server_address[0] == "127.0.0.1"


def test_taken_metrics_port_is_one_line_and_exit_2(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "inference.toml"
        config.write_text(f'[metrics]\nprometheus_port = {port}\n\n[mqtt]\nurl = "{mosquitto.url}"\n')
        out = subprocess.run(
            [sys.executable, "-m", "thermoscreen", "infer", "--config", str(config), "--node-id", "infer-port"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("thermoscreen infer: error: [metrics] cannot serve Prometheus on 127.0.0.1:"), out.stderr
