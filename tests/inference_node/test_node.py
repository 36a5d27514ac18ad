"""In-process inference nodes against a real Mosquitto: verdicts, dead letters, health, model swaps."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from contract.frame import Frame, encode_frame
from contract.messages import (
    DeadLetter,
    DeviceState,
    ModelSwap,
    NodeMetrics,
    NodeStatus,
    decode_message,
    encode_message,
)
from contract.model.manifest import sha256_file
from contract.model.model_runner import ModelRunner
from contract.timeseries import NODE_METRICS
from contract.topics import ADMIN_MODEL_TOPIC, frame_topic
from tests.inference_node.conftest import ClientFactory, ModelDirs, NodeFactory, copy_model
from tests.inference_node.frames import (
    PATIENT,
    SESSION,
    all_acked,
    count_verdicts,
    make_frame,
    publish_frames,
    verdicts,
)
from tests.mqtt_helpers import Collector
from transport.connection import MqttConnection

Images = npt.NDArray[np.float32]


def _of(observer: Collector, suffix: str) -> list[bytes]:
    return [m.payload for m in observer.messages if m.topic.endswith(suffix)]


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_every_frame_gets_one_correct_verdict(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    test_models: ModelDirs,
    frames_c: Images,
    variant: str,
) -> None:
    node = start_node(variant=variant, batch_max=8)
    assert node.runner.variant == variant
    pub = clients()
    n = 120
    all_acked(publish_frames(pub, frames_c, "pi-1", range(n)) + publish_frames(pub, frames_c, "pi-2", range(n)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 2 * n, 20, f"{2 * n} verdicts")
    got = verdicts(observer.messages)
    assert sorted((v.device_id, v.seq) for v in got) == sorted((d, s) for d in ("pi-1", "pi-2") for s in range(n))

    reference = ModelRunner.load(test_models.v1, variant=variant)
    expected = reference.predict_celsius(frames_c)
    for v in got:
        assert v.probability == pytest.approx(expected[v.seq % len(frames_c)], abs=1e-5)
        assert v.flagged == (v.probability >= reference.threshold)
        assert v.label == reference.labels[int(v.flagged)]
        assert (v.threshold, v.model_version, v.node_id) == (reference.threshold, "test-1", "infer-t")
        assert (v.session_id, v.patient_ref) == (SESSION, PATIENT)
        assert v.model_sha256 == reference.model_sha256
        assert v.latency_ms >= 0
    assert {v.flagged for v in got} == {True, False}, "the test model flags some frames and clears others"

    status = decode_message(_of(observer, "/nodes/infer-t/status")[0], NodeStatus)
    assert (status.state, status.model_version, status.role.value) == (DeviceState.ONLINE, "test-1", "inference")
    assert status.model_sha256 == sha256_file(test_models.v1 / f"thermal_{variant}.tflite")
    observer.wait_until(
        lambda ms: any(
            decode_message(m.payload, NodeMetrics).values["frames_total"] >= 2 * n
            for m in ms
            if m.topic.endswith("/metrics")
        ),
        10,
        "metrics counting every frame",
    )
    metrics = decode_message(_of(observer, "/nodes/infer-t/metrics")[-1], NodeMetrics)
    assert set(NODE_METRICS.fields) >= {"frames_per_s", "batch_size", "latency_p50_ms", "latency_p99_ms"}
    for name in ("frames_per_s", "batch_size", "latency_p50_ms", "latency_p99_ms", "deadletters", "frames_total"):
        assert name in metrics.values and name in NODE_METRICS.fields
    assert metrics.model_version == "test-1" and metrics.values["deadletters"] == 0

    node.stop()
    observer.wait_until(
        lambda ms: (
            decode_message([m for m in ms if m.topic.endswith("/nodes/infer-t/status")][-1].payload, NodeStatus).state
            == DeviceState.OFFLINE
        ),
        10,
        "retained offline status after stop",
    )


def test_bad_frames_are_dead_lettered_and_the_node_keeps_answering(
    observer: Collector, clients: ClientFactory, start_node: NodeFactory, frames_c: Images
) -> None:
    start_node()
    pub = clients()
    small = Frame.from_celsius(frames_c[0][:12, :16], device_id="pi-3", seq=1, capture_ns=1)
    spoofed = make_frame(frames_c, "pi-other", 2)
    receipts = [
        pub.publish(frame_topic("pi-3"), b"\x00garbage\xff", qos=1),
        pub.publish(frame_topic("pi-3"), encode_frame(small), qos=1),
        pub.publish(frame_topic("pi-3"), encode_frame(spoofed), qos=1),
        pub.publish(frame_topic("pi-3"), encode_frame(make_frame(frames_c, "pi-3", 3)), qos=1),
    ]
    all_acked(receipts)
    observer.wait_until(lambda ms: count_verdicts(ms) >= 1 and len(_of(observer, "/deadletter/inference")) >= 3, 10)
    letters = [decode_message(p, DeadLetter) for p in _of(observer, "/deadletter/inference")]
    assert all(d.device_id == "pi-3" and d.component == "inference" and d.topic == frame_topic("pi-3") for d in letters)
    reasons = [d.reason for d in letters]
    assert "not a thermoscreen frame" in reasons[0]
    assert "12x16 does not match model test-1 input 24x32" in reasons[1]
    assert "does not match its topic" in reasons[2]
    assert letters[0].payload_size == 9
    assert [(v.device_id, v.seq) for v in verdicts(observer.messages)] == [("pi-3", 3)]


def _corrupt_copy(src: Path, dst: Path) -> Path:
    """A copy of `src` whose float32 file no longer matches its sha256."""
    model = copy_model(src, dst)
    path = model / "thermal_float32.tflite"
    path.write_bytes(path.read_bytes()[:-100])
    return model


def _truncated_with_matching_sha(models: ModelDirs, dst: Path) -> Path:
    """A copy whose manifest was (wrongly) rewritten and signed for a truncated file: sha256 and signature match."""
    model = copy_model(models.v2, dst)
    path = model / "thermal_float32.tflite"
    path.write_bytes(path.read_bytes()[:900])
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["float32"]["sha256"] = sha256_file(path)
    (model / "manifest.json").write_text(json.dumps(manifest))
    return models.sign(model)


class _Stream:
    """Publishes frames continuously from a thread until stopped, so swaps happen mid-stream."""

    def __init__(self, conn: MqttConnection, images: Images, device: str) -> None:
        self.conn = conn
        self.images = images
        self.device = device
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            receipts = publish_frames(self.conn, self.images, self.device, range(self.sent, self.sent + 10))
            all_acked(receipts)  # paced by the broker's acknowledgements, never by sleeping
            self.sent += 10

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()


def test_admin_swap_mid_stream_loses_no_frame_and_corrupt_models_are_refused(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    test_models: ModelDirs,
    frames_c: Images,
    tmp_path: Path,
) -> None:
    node = start_node(batch_max=4, model_dir=str(copy_model(test_models.v1, tmp_path / "v1")))
    admin = clients()
    _corrupt_copy(test_models.v2, tmp_path / "bad-sha")
    _truncated_with_matching_sha(test_models, tmp_path / "junk")
    copy_model(test_models.v2, tmp_path / "v2")

    def swap(model_dir: str, expected: str) -> None:
        msg = ModelSwap(model_dir=model_dir, expected_version=expected)
        assert admin.publish(ADMIN_MODEL_TOPIC, encode_message(msg), qos=1).wait(5)

    def letters() -> list[DeadLetter]:
        return [decode_message(p, DeadLetter) for p in _of(observer, "/deadletter/inference")]

    with _Stream(clients(), frames_c, "pi-9") as stream:
        observer.wait_until(lambda ms: count_verdicts(ms) >= 50, 20, "verdicts from model 1")
        swap("bad-sha", "test-2")
        swap("junk", "test-2")
        swap("v2", expected="test-9")  # the right files but not the version the admin asked for
        observer.wait_until(lambda ms: len(letters()) >= 3, 20, "three refusals")
        assert node.model_version == "test-1"
        before = count_verdicts(observer.messages)
        observer.wait_until(lambda ms: count_verdicts(ms) >= before + 20, 20, "old model still serving")
        swap("v2", expected="test-2")
        assert node.wait_for_model("test-2", 20)
        after = count_verdicts(observer.messages)
        observer.wait_until(lambda ms: count_verdicts(ms) >= after + 50, 20, "verdicts from model 2")
        sent = stream.stop()

    observer.wait_until(lambda ms: count_verdicts(ms) >= sent, 20, f"all {sent} verdicts")
    got = verdicts(observer.messages)
    assert sorted(v.seq for v in got) == list(range(sent)), "every frame exactly one verdict across the swaps"
    by_seq = sorted(got, key=lambda v: v.seq)
    versions = [v.model_version for v in by_seq]
    switch = versions.index("test-2")
    assert set(versions[:switch]) == {"test-1"} and set(versions[switch:]) == {"test-2"}, "one atomic switch"
    v2 = ModelRunner.load(test_models.v2).predict_celsius(frames_c)
    for v in by_seq[switch:]:
        assert v.probability == pytest.approx(v2[v.seq % len(frames_c)], abs=1e-5)
        assert v.threshold == pytest.approx(json.loads((test_models.v2 / "manifest.json").read_text())["threshold"])

    reasons = [d.reason for d in letters()]
    assert all(r.startswith("model swap refused, still serving test-1") for r in reasons)
    assert "sha256 mismatch" in reasons[0] and "does not load" in reasons[1] and "expected test-9" in reasons[2]
    assert all(d.topic == ADMIN_MODEL_TOPIC for d in letters())
    statuses = [decode_message(p, NodeStatus) for p in _of(observer, "/nodes/infer-t/status")]
    assert statuses[-1].model_version == "test-2"
    v2_sha = sha256_file(test_models.v2 / "thermal_float32.tflite")
    assert statuses[-1].model_sha256 == v2_sha
    assert {v.model_sha256 for v in by_seq[switch:]} == {v2_sha}
    assert {v.model_sha256 for v in by_seq[:switch]} == {sha256_file(test_models.v1 / "thermal_float32.tflite")}
    assert node.stats.model_swaps == 1 and node.stats.model_swaps_refused == 3


def test_garbage_admin_message_is_dead_lettered(
    observer: Collector, clients: ClientFactory, start_node: NodeFactory
) -> None:
    node = start_node()
    admin = clients()
    admin.publish(ADMIN_MODEL_TOPIC, b'{"v": 1, "model_dir": ""}', qos=1)
    observer.wait_until(lambda ms: bool(_of(observer, "/deadletter/inference")), 10, "dead letter")
    letter = decode_message(_of(observer, "/deadletter/inference")[0], DeadLetter)
    assert letter.topic == ADMIN_MODEL_TOPIC and "model_dir" in letter.reason
    assert node.model_version == "test-1"


def test_file_watch_swaps_to_a_new_model_and_refuses_a_truncated_one(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    test_models: ModelDirs,
    frames_c: Images,
    tmp_path: Path,
) -> None:
    live = copy_model(test_models.v1, tmp_path / "live")
    node = start_node(model_dir=str(live), model_poll_s=0.05)
    pub = clients()
    all_acked(publish_frames(pub, frames_c, "pi-4", range(10)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 10, 10)

    # Deploy v2 the way an operator would: model files and signature first, the manifest last.
    shutil.copy(test_models.v2 / "thermal_float32.tflite", live / "thermal_float32.tflite")
    (live / "thermal_int8.tflite").unlink()
    shutil.copy(test_models.v2 / "manifest.json.sig", live / "manifest.json.sig")
    shutil.copy(test_models.v2 / "manifest.json", live / "manifest.json.tmp")
    (live / "manifest.json.tmp").replace(live / "manifest.json")
    assert node.wait_for_model("test-2", 20), f"not swapped; last refusal: {node.last_refusal}"
    all_acked(publish_frames(pub, frames_c, "pi-4", range(10, 20)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 20, 10)

    refusals_before = node.stats.model_swaps_refused
    model_file = live / "thermal_float32.tflite"
    model_file.write_bytes(model_file.read_bytes()[:500])  # a copy interrupted half-way
    observer.wait_until(
        lambda ms: any(
            "sha256 mismatch" in decode_message(p, DeadLetter).reason for p in _of(observer, "/deadletter/inference")
        ),
        20,
        "refusal of the truncated model",
    )
    assert node.stats.model_swaps_refused > refusals_before
    all_acked(publish_frames(pub, frames_c, "pi-4", range(20, 30)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 30, 10)
    got = sorted(verdicts(observer.messages), key=lambda v: v.seq)
    assert [v.seq for v in got] == list(range(30))
    assert {v.model_version for v in got[:10]} == {"test-1"}
    assert {v.model_version for v in got[10:]} == {"test-2"}, "the truncated file did not replace the serving model"


def test_stop_answers_every_frame_already_received(
    observer: Collector, clients: ClientFactory, start_node: NodeFactory, frames_c: Images
) -> None:
    node = start_node(batch_max=2)
    pub = clients()
    n = 400
    all_acked(publish_frames(pub, frames_c, "pi-5", range(n)))  # the broker has routed all of them to the node
    node.stop()
    assert node.stats.frames_total == n
    observer.wait_until(lambda ms: count_verdicts(ms) >= n, 10)
    assert sorted(v.seq for v in verdicts(observer.messages)) == list(range(n))


def test_lone_frames_are_scored_on_arrival_and_bursts_still_batch(
    observer: Collector, clients: ClientFactory, start_node: NodeFactory, frames_c: Images
) -> None:
    """Frames 30 ms apart (batch wait 2 ms) are scored by the network thread itself, each
    answered correctly; a burst of frames back to back goes to the worker in batches."""
    node = start_node(batch_max=16, batch_ms=2)
    pub = clients()
    lone = 12
    for seq in range(lone):
        all_acked(publish_frames(pub, frames_c, "pi-6", [seq]))
        time.sleep(0.03)
    observer.wait_until(lambda ms: count_verdicts(ms) >= lone, 10, f"{lone} verdicts")
    assert node.frames_scored_inline >= lone - 2, "the first two arrivals set the gap; the rest come alone"
    inline_before, batches_before = node.frames_scored_inline, node.stats.batches_total
    burst = 300
    all_acked(publish_frames(pub, frames_c, "pi-6", range(lone, lone + burst)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= lone + burst, 20, f"{lone + burst} verdicts")
    assert node.frames_scored_inline - inline_before < burst // 2, "a burst is queued for the worker, not scored inline"
    assert node.stats.batches_total - batches_before < burst, "the worker scored the burst in batches"
    got = verdicts(observer.messages)
    assert sorted(v.seq for v in got) == list(range(lone + burst)), "each frame answered once"
    reference = ModelRunner.load(node.runner.model_dir, variant=node.runner.variant)
    expected = reference.predict_celsius(frames_c)
    assert all(v.probability == pytest.approx(expected[v.seq % len(frames_c)], abs=1e-5) for v in got)
