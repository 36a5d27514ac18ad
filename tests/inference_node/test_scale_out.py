"""Two `thermoscreen infer` processes in one group: they split the frames, survive each other's death,
and a SIGTERM drains the frames in hand before leaving."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cloud_bridge.archive import Archive
from cloud_bridge.service import Bridge
from contract.messages import DeviceState, NodeStatus, decode_message
from devtools.local_mosquitto import LocalMosquitto
from tests.cloud_bridge.helpers import bridge_config
from tests.conftest import REPO_ROOT
from tests.inference_node.conftest import ClientFactory, ModelDirs
from tests.inference_node.frames import all_acked, count_verdicts, publish_frames, verdicts
from tests.mqtt_helpers import Collector
from transport.connection import Message

DEVICES = ("pi-a", "pi-b", "pi-c")


def _status(messages: list[Message], node_id: str) -> list[NodeStatus]:
    return [decode_message(m.payload, NodeStatus) for m in messages if m.topic == f"thermo/v1/nodes/{node_id}/status"]


def _is(state: DeviceState, node_id: str) -> Callable[[list[Message]], bool]:
    return lambda ms: bool(_status(ms, node_id)) and _status(ms, node_id)[-1].state == state


@pytest.fixture
def node_procs(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _start(procs: list[subprocess.Popen[bytes]], url: str, node_id: str, models: ModelDirs, log: Path) -> None:
    cmd = [sys.executable, "-m", "thermoscreen", "-v", "infer", "--broker", url, "--node-id", node_id]
    cmd += ["--group", "ward-1", "--model", str(models.v1), "--model-key", models.public_key]
    cmd += ["--batch", "8", "--batch-ms", "1"]
    with log.open("wb") as out:
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT))


def _burst_verdicts(messages: list[Message], node_id: str) -> int:
    return sum(1 for v in verdicts(messages) if v.node_id == node_id and 100 <= v.seq < 200)


def _publish_round(clients: ClientFactory, images: npt.NDArray[np.float32], seqs: range) -> None:
    pub = clients()
    all_acked([r for device in DEVICES for r in publish_frames(pub, images, device, seqs)])


def test_two_nodes_split_frames_survive_a_sigkill_and_drain_on_sigterm(
    *,
    mosquitto: LocalMosquitto,
    observer: Collector,
    clients: ClientFactory,
    test_models: ModelDirs,
    frames_c: npt.NDArray[np.float32],
    node_procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    _start(node_procs, mosquitto.url, "infer-a", test_models, tmp_path / "a.log")
    _start(node_procs, mosquitto.url, "infer-b", test_models, tmp_path / "b.log")
    node_a, node_b = node_procs
    for node_id in ("infer-a", "infer-b"):
        observer.wait_until(_is(DeviceState.ONLINE, node_id), 60, f"{node_id} online")

    # 1. Both serve: every frame verdicted once, by one of them, and each gets a share.
    _publish_round(clients, frames_c, range(100))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 300, 30, "300 verdicts")
    first = verdicts(observer.messages)
    assert sorted((v.device_id, v.seq) for v in first) == sorted((d, s) for d in DEVICES for s in range(100))
    shares = {node: sum(v.node_id == node for v in first) for node in ("infer-a", "infer-b")}
    assert all(share > 0 for share in shares.values()), shares

    # 2. SIGKILL one while a burst is in flight: the broker sends what it had not handed over to
    # the survivor, and what died in the killed node's hands comes back through the bridge's
    # re-offer (frames without a verdict after reoffer_s); every frame ends with a verdict.
    bridge = Bridge(
        bridge_config(
            tmp_path / "bridge",
            mosquitto.url,
            provenance={"reoffer_s": 1.0, "max_reoffers": 5, "approved_models": ["test-1"]},
        )
    ).start()
    burst = [(d, s) for d in DEVICES for s in range(100, 200)]
    try:
        pub = clients()
        receipts = [r for d in DEVICES for r in publish_frames(pub, frames_c, d, range(100, 200), session=False)]
        observer.wait_until(lambda ms: _burst_verdicts(ms, "infer-a") > 0, 30, "infer-a answering the burst")
        node_a.kill()
        node_a.wait(10)
        all_acked(receipts, timeout=30)
        answered_by_a = _burst_verdicts(observer.messages, "infer-a")
        assert answered_by_a < len(burst), "the kill came after the burst: nothing was in flight"
        observer.wait_until(_is(DeviceState.OFFLINE, "infer-a"), 30, "infer-a last will")
        assert _status(observer.messages, "infer-a")[-1].model_version is None, "the will, not a clean goodbye"
        got = observer.wait_until(
            lambda ms: {(v.device_id, v.seq) for v in verdicts(ms)} >= set(burst), 30, "a verdict for every frame"
        )
        assert bridge.wait_idle(20.0)
        reoffered = bridge.ingest.reoffered if bridge.ingest is not None else 0
    finally:
        bridge.stop()
    second = [v for v in verdicts(got)[len(first) :] if (v.device_id, v.seq) in set(burst)]
    assert {(v.device_id, v.seq) for v in second} == set(burst), "nothing lost"
    assert {v.node_id for v in second} <= {"infer-a", "infer-b"}
    with Archive(tmp_path / "bridge" / "archive.sqlite") as archive:
        assert archive.counts()["frames"] == archive.counts()["verdicts"] == len(burst)
    print(f"infer-a answered {answered_by_a} of {len(burst)} before its SIGKILL; {reoffered} frames re-offered")

    # 3. SIGTERM the survivor right after the broker took a burst: it answers all of it, then says offline.
    _publish_round(clients, frames_c, range(200, 400))
    node_b.send_signal(signal.SIGTERM)
    assert node_b.wait(30) == 0, (tmp_path / "b.log").read_text()[-2000:]
    observer.wait_until(_is(DeviceState.OFFLINE, "infer-b"), 10, "infer-b offline")
    assert _status(observer.messages, "infer-b")[-1].model_version == "test-1", "published by the node itself"
    # infer-b's verdicts all reached the broker before its offline status did, so they are all here.
    final = verdicts(observer.messages)
    keys = [(v.device_id, v.seq) for v in final if (v.device_id, v.seq) not in set(burst)]
    assert len(keys) == len(set(keys)), "no frame verdicted twice (outside the kill, where a re-offer may race)"
    assert set(keys) | set(burst) == {(d, s) for d in DEVICES for s in range(400)}
    assert "stopped" in (tmp_path / "b.log").read_text()
