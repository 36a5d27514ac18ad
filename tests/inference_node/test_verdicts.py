"""The direct JSON verdict encoder produces exactly the message the pydantic path would,
and both copy the frame's incarnation (issue 12.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.frame import LEGACY_FORMAT_VERSION, Frame, encode_frame
from contract.ids import INCARNATION_BYTES, LEGACY_INCARNATION
from contract.messages import Verdict, decode_message
from contract.model.model_runner import ModelRunner
from contract.topics import frame_topic
from inference_node.verdicts import VerdictEncoder
from tests.inference_node.conftest import ClientFactory, ModelDirs, NodeFactory
from tests.inference_node.frames import all_acked, count_verdicts, make_frame, verdicts
from tests.mqtt_helpers import Collector

ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True).filter(lambda s: s not in {"nodes", "deadletter", "admin"})


def test_fast_verdict_json_equals_the_validated_message(test_models: ModelDirs) -> None:
    runner = ModelRunner.load(test_models.v1)

    @settings(max_examples=200, deadline=None)
    @given(
        device=ids,
        node=ids,
        seq=st.integers(0, 2**63 - 1),
        capture_ns=st.integers(0, 2**63 - 1),
        session=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        patient=st.none() | st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
        probability=st.floats(0.0, 1.0),
        latency=st.floats(-1.0, 1e6),
        incarnation=st.sampled_from(["0" * 16, "f" * 16]) | st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    )
    def check(
        *,
        device: str,
        node: str,
        seq: int,
        capture_ns: int,
        session: str | None,
        patient: str | None,
        probability: float,
        latency: float,
        incarnation: str,
    ) -> None:
        encoder = VerdictEncoder(node, runner)
        frame = Frame(
            device,
            seq,
            capture_ns,
            np.zeros((24, 32), np.int16),
            session_id=session,
            patient_ref=patient,
            incarnation=incarnation,
        )
        topic, payload = encoder.encode(frame, probability, latency)
        assert topic == f"thermo/v1/{device}/verdict"
        decoded = decode_message(payload, Verdict)
        assert decoded == encoder.verdict(frame, probability, latency)
        assert decoded.flagged == (probability >= runner.threshold)
        assert decoded.label == runner.labels[int(decoded.flagged)]
        assert decoded.incarnation == incarnation  # (device, incarnation, seq) names the frame

    check()


def _as_version_1(payload: bytes) -> bytes:
    """The same frame as an old device sent it: format 1, no incarnation bytes after the device id."""
    id_end = 5 + payload[4]
    return payload[:3] + bytes([LEGACY_FORMAT_VERSION]) + payload[4:id_end] + payload[id_end + INCARNATION_BYTES :]


def test_the_node_puts_each_frames_incarnation_on_its_verdict(
    *, observer: Collector, clients: ClientFactory, start_node: NodeFactory, frames_c: npt.NDArray[np.float32]
) -> None:
    """A re-imaged device sends seq 0.. again under a new incarnation; a v1 device sends the legacy one."""
    start_node(batch_max=4)
    pub = clients()
    before, after = "1111111111111111", "2222222222222222"
    receipts = []
    for incarnation in (before, after):
        for seq in range(3):
            frame = dataclasses.replace(make_frame(frames_c, "pi-re", seq), incarnation=incarnation)
            receipts.append(pub.publish(frame_topic("pi-re"), encode_frame(frame), qos=1))
    old = _as_version_1(encode_frame(dataclasses.replace(make_frame(frames_c, "pi-old", 7), incarnation=after)))
    receipts.append(pub.publish(frame_topic("pi-old"), old, qos=1))
    all_acked(receipts)
    observer.wait_until(lambda ms: count_verdicts(ms) >= 7, 20, "7 verdicts")
    got = sorted((v.device_id, v.incarnation, v.seq) for v in verdicts(observer.messages))
    expected = [("pi-old", LEGACY_INCARNATION, 7)] + [("pi-re", i, s) for i in (before, after) for s in range(3)]
    assert got == expected
