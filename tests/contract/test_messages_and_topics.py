"""JSON messages, topics and pseudonyms of contract v1."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import ContractError, make_patient_ref, new_session_id
from contract import topics as t
from contract.messages import (
    MESSAGE_TYPES,
    DeadLetter,
    DeviceState,
    DeviceStatus,
    ModelSwap,
    NodeMetrics,
    NodeRole,
    NodeStatus,
    RfidEvent,
    RfidEventKind,
    SessionVerdict,
    Verdict,
    decode_message,
    encode_message,
)

SID = new_session_id()
REF = "0123456789abcdef"

SAMPLES = [
    DeviceStatus(state=DeviceState.ONLINE, ts_ns=1, spool_depth=3),
    RfidEvent(event=RfidEventKind.SESSION_START, device_id="pi-1", session_id=SID, patient_ref=REF, ts_ns=5, seq=0),
    Verdict(
        device_id="pi-1",
        seq=7,
        capture_ns=9,
        session_id=SID,
        patient_ref=REF,
        probability=0.7,
        label="sick",
        flagged=True,
        threshold=0.3,
        model_version="thermal-1",
        node_id="node-a",
        latency_ms=1.5,
    ),
    SessionVerdict(
        device_id="pi-1",
        session_id=SID,
        patient_ref=REF,
        frames=10,
        probability=0.2,
        flagged=False,
        threshold=0.3,
        rule="mean_logit",
        model_version="thermal-1",
        ts_ns=10,
    ),
    NodeStatus(node_id="node-a", role=NodeRole.INFERENCE, state=DeviceState.OFFLINE),
    NodeMetrics(node_id="bridge-1", role=NodeRole.BRIDGE, ts_ns=3, values={"queue_depth": 4.0}),
    DeadLetter.for_payload(
        component="inference", reason="bad", topic="x", payload=b"\x00" * 5000, ts_ns=1, device_id=None
    ),
    ModelSwap(model_dir="/models/thermal-2"),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_roundtrips(message: Any) -> None:
    payload = encode_message(message)
    assert json.loads(payload)["v"] == 1
    assert decode_message(payload, type(message)) == message


def test_deadletter_truncates_sample() -> None:
    dl = SAMPLES[6]
    assert isinstance(dl, DeadLetter)
    assert dl.payload_size == 5000
    assert len(dl.payload_b64) < 5000


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"v": 2, "state": "online"}', "version"),
        (b'{"state": "online"}', "version"),
        (b'{"v": 1, "state": "online", "extra": 1}', "extra"),
        (b'{"v": 1, "state": "online", "ts_ns": NaN}', "NaN"),
        (b"[" * 30000 + b"]" * 30000, "nests too deeply|JSON object"),
        (b" " * 70000, "exceeds"),
    ],
)
def test_bad_json_gives_contract_error(payload: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_message(payload, DeviceStatus)


def test_verdict_rejects_probability_outside_unit_interval() -> None:
    raw = json.loads(encode_message(SAMPLES[2]))
    raw["probability"] = 1.5
    with pytest.raises(ContractError, match="probability"):
        decode_message(json.dumps(raw).encode(), Verdict)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_random_bytes_only_raise_contract_error(data: bytes) -> None:
    for model in MESSAGE_TYPES.values():
        with contextlib.suppress(ContractError):
            decode_message(data, model)


def test_topics_build_and_parse() -> None:
    assert t.frame_topic("pi-1") == "thermo/v1/pi-1/frame"
    assert t.parse_topic("thermo/v1/pi-1/verdict").device_id == "pi-1"
    info = t.parse_topic(t.node_topic("node-a", t.NodeChannel.METRICS))
    assert (info.scope, info.node_id, info.channel) == ("node", "node-a", "metrics")
    assert t.parse_topic(t.deadletter_topic("inference")).component == "inference"
    assert t.parse_topic(t.ADMIN_MODEL_TOPIC).scope == "admin"
    assert t.shared("infer", t.ALL_FRAMES) == "$share/infer/thermo/v1/+/frame"
    for bad in ("thermo/v2/pi-1/frame", "thermo/v1/PI/frame", "thermo/v1/pi-1/other", "thermo/v1/nodes/x", "x"):
        with pytest.raises(ContractError):
            t.parse_topic(bad)


def test_patient_ref_is_keyed_and_stable() -> None:
    key = b"site-key-0123456789"
    ref = make_patient_ref(b"\xde\xad\xbe\xef", key)
    assert len(ref) == 16 and int(ref, 16) >= 0
    assert ref == make_patient_ref(b"\xde\xad\xbe\xef", key)
    assert ref != make_patient_ref(b"\xde\xad\xbe\xef", b"other-site-key-xyz!")
    assert "deadbeef" not in ref
    with pytest.raises(ContractError, match="site key"):
        make_patient_ref(b"\x01", b"short")
