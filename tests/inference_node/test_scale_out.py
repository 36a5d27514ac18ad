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

from contract.messages import DeviceState, NodeStatus, decode_message
from devtools.local_mosquitto import LocalMosquitto
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

    # 2. SIGKILL one; once the broker has noticed (its last will says offline), all load goes to the other.
    node_a.kill()
    node_a.wait(10)
    observer.wait_until(_is(DeviceState.OFFLINE, "infer-a"), 30, "infer-a last will")
    assert _status(observer.messages, "infer-a")[-1].model_version is None, "the will, not a clean goodbye"
    _publish_round(clients, frames_c, range(100, 200))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 600, 30, "600 verdicts")
    second = verdicts(observer.messages)[len(first) :]
    assert sorted((v.device_id, v.seq) for v in second) == sorted((d, s) for d in DEVICES for s in range(100, 200))
    assert {v.node_id for v in second} == {"infer-b"}

    # 3. SIGTERM the survivor right after the broker took a burst: it answers all of it, then says offline.
    _publish_round(clients, frames_c, range(200, 400))
    node_b.send_signal(signal.SIGTERM)
    assert node_b.wait(30) == 0, (tmp_path / "b.log").read_text()[-2000:]
    observer.wait_until(_is(DeviceState.OFFLINE, "infer-b"), 10, "infer-b offline")
    assert _status(observer.messages, "infer-b")[-1].model_version == "test-1", "published by the node itself"
    # infer-b's verdicts all reached the broker before its offline status did, so they are all here.
    final = verdicts(observer.messages)
    keys = [(v.device_id, v.seq) for v in final]
    assert len(keys) == len(set(keys)), "no frame verdicted twice"
    assert set(keys) == {(d, s) for d in DEVICES for s in range(400)}
    assert "stopped" in (tmp_path / "b.log").read_text()
