"""JSON messages, topics and pseudonyms of contract v1."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import ContractError, make_patient_ref, new_session_id
from contract import topics as t
from contract.ids import LEGACY_INCARNATION, new_incarnation, validate_incarnation
from contract.messages import (
    MAX_JSON_DEPTH,
    MESSAGE_TYPES,
    MESSAGE_VERSION,
    DeadLetter,
    DeviceState,
    DeviceStatus,
    ModelSwap,
    NodeMetrics,
    NodeRole,
    NodeStatus,
    RfidEvent,
    RfidEventKind,
    SessionEndReason,
    SessionVerdict,
    Verdict,
    _nesting_depth,
    decode_message,
    encode_message,
)

SID = new_session_id()
REF = "0123456789abcdef"
INC = "fedcba9876543210"

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
        incarnation=INC,
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
        incarnation=INC,
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
    assert json.loads(payload)["v"] == MESSAGE_VERSION == 2
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
        (b'{"v": 3, "state": "online"}', "version"),
        (b'{"v": 0, "state": "online"}', "version"),
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


# --- hostile JSON (issue 13.1) and structured fuzzing (issue 19.10) -----------------------

#: One message of every type with EVERY optional field set, so that every validator is reachable.
FULL_SAMPLES: list[Any] = [
    DeviceStatus(
        state=DeviceState.ONLINE,
        ts_ns=1,
        firmware="fw-1.2",
        source="mlx",
        spool_depth=3,
        spool_dropped_frames=0,
        session_id=SID,
        incarnation=INC,
    ),
    RfidEvent(
        event=RfidEventKind.SESSION_END,
        device_id="pi-1",
        session_id=SID,
        patient_ref=REF,
        ts_ns=5,
        seq=2,
        frame_count=10,
        reason=SessionEndReason.CARD,
        incarnation=INC,
    ),
    *SAMPLES[2:4],
    NodeStatus(node_id="node-a", role=NodeRole.INFERENCE, state=DeviceState.ONLINE, ts_ns=2, model_version="m-1"),
    NodeMetrics(node_id="node-a", role=NodeRole.INFERENCE, ts_ns=3, values={"frames_total": 4.0}, model_version="m"),
    DeadLetter.for_payload(component="bridge", reason="bad", topic="t", payload=b"x", ts_ns=1, device_id="pi-1"),
    ModelSwap(model_dir="/models/thermal-2", expected_version="thermal-2"),
]
assert {type(m) for m in FULL_SAMPLES} == set(MESSAGE_TYPES.values())

HUGE_INT = "9" * 5000
#: Raw JSON texts of values that must never get into a store.
HOSTILE_JSON = [
    HUGE_INT,
    "-" + HUGE_INT,
    str(2**63),
    str(2**64),
    "-1",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1.0",
    '"1"',
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '"\\ud800"',
    '"a\\u0000b"',
    '"\\n"',
    '""',
    json.dumps("x" * 5000),
    "[" * 50 + "]" * 50,
    '{"a":' * 20 + "1" + "}" * 20,
]
json_scalars = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.text(max_size=80).map(json.dumps),
    st.text(max_size=80).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(HOSTILE_JSON),
)


def _pairs(message: Any) -> list[tuple[str, str]]:
    """(key, raw JSON value) pairs of a valid message, in order."""
    return [(k, json.dumps(v)) for k, v in json.loads(encode_message(message)).items()]


def _render(pairs: list[tuple[str, str]]) -> bytes:
    """An object from raw pairs: unlike json.dumps, it can write duplicate keys and any literal."""
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}").encode("utf-8", "surrogatepass")


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[type[Any], bytes]:
    """A valid message of a random type with 1..3 fields replaced, removed, duplicated or added."""
    message = draw(st.sampled_from(FULL_SAMPLES))
    pairs = _pairs(message)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(pairs) - 1))
        key = pairs[index][0]
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "duplicate", "extra", "nest"]))
        if action == "replace":
            pairs[index] = (key, draw(json_scalars))
        elif action == "drop":
            del pairs[index]
            if not pairs:
                break
        elif action == "duplicate":
            pairs.append((key, draw(st.one_of(st.just(pairs[index][1]), json_scalars))))
        elif action == "extra":
            pairs.append((draw(st.text(max_size=10)), draw(json_scalars)))
        else:
            depth = draw(st.integers(1, 40))
            pairs[index] = (key, "[" * depth + pairs[index][1] + "]" * depth)
    return type(message), _render(pairs)


def _assert_storable(message: Any) -> None:
    """Whatever decodes is within bounds: ints fit signed 64-bit, floats are finite."""
    for value in json.loads(encode_message(message)).values():
        for item in value.values() if isinstance(value, dict) else [value]:
            if isinstance(item, int) and not isinstance(item, bool):
                assert 0 <= item <= 2**63 - 1
            if isinstance(item, float):
                assert math.isfinite(item)


@given(hostile_messages())
@settings(max_examples=400, deadline=None)
def test_hostile_messages_only_raise_contract_error(case: tuple[type[Any], bytes]) -> None:
    model, payload = case
    try:
        message = decode_message(payload, model)
    except ContractError as exc:
        assert exc.args[0].isprintable(), "a dead-letter reason is one printable line"
        return
    _assert_storable(message)
    assert decode_message(encode_message(message), model) == message


@given(st.sampled_from(FULL_SAMPLES), st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_or_mutated_bytes_only_raise_contract_error(message: Any, data: st.DataObject) -> None:
    payload = bytearray(encode_message(message))
    if data.draw(st.booleans()):
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    else:
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_message(bytes(payload), type(message))
    except ContractError:
        return
    _assert_storable(decoded)


def _with(message: Any, key: str, raw: str) -> bytes:
    pairs = [(k, v) for k, v in _pairs(message) if k != key] + [(key, raw)]
    return _render(pairs)


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("spool_depth", HUGE_INT, "integer literal"),  # was a plain ValueError (Python's 4,300-digit limit)
        ("spool_depth", str(2**63), "spool_depth"),  # was accepted, then overflowed SQLite
        ("spool_depth", "-1", "spool_depth"),
        ("spool_depth", '"1"', "spool_depth"),
        ("spool_depth", "true", "spool_depth"),
        ("spool_depth", "1.0", "spool_depth"),
        ("spool_depth", "1e400", "finite"),
        ("ts_ns", "NaN", "NaN"),
        ("ts_ns", "Infinity", "Infinity"),
        ("firmware", json.dumps("x" * 65), "firmware"),
        ("firmware", '"a\\u0000b"', "firmware"),
        ("firmware", '"\\ud800"', "JSON"),
        ("firmware", "1", "firmware"),
        ("state", '"ONLINE"', "state"),
        ("state", "1", "state"),
        ("session_id", '"' + "A" * 32 + '"', "session"),
        ("incarnation", '"' + "A" * 16 + '"', "incarnation"),
        ("incarnation", '"' + "a" * 15 + '"', "incarnation"),
        ("incarnation", '"' + "a" * 17 + '"', "incarnation"),
        ("incarnation", '"' + "g" * 16 + '"', "incarnation"),
        ("incarnation", str(2**63), "incarnation"),
        ("incarnation", "null", "incarnation"),
        ("incarnation", json.dumps("0123456789abcde\n"), "incarnation"),
        ("v", "true", "version"),
        ("v", "1.0", "version"),
        ("v", '"1"', "version"),
    ],
)
def test_hostile_status_values_are_rejected(key: str, raw: str, message: str) -> None:
    status = FULL_SAMPLES[0]
    assert key in dict(_pairs(status))  # the field exists, so the mutation reaches its validator
    with pytest.raises(ContractError, match=message):
        decode_message(_with(status, key, raw), DeviceStatus)


@pytest.mark.parametrize(
    ("model_index", "key", "raw", "message"),
    [
        (1, "seq", str(2**63), "seq"),
        (1, "frame_count", "-1", "frame_count"),
        (1, "incarnation", "1", "incarnation"),
        (2, "incarnation", '"' + "F" * 16 + '"', "incarnation"),
        (3, "incarnation", '""', "incarnation"),
        (2, "seq", str(2**64 - 1), "seq"),
        (2, "flagged", "1", "flagged"),
        (2, "probability", "true", "probability"),
        (2, "probability", '"0.5"', "probability"),
        (2, "latency_ms", "1e300", "latency_ms"),
        (2, "label", '""', "label"),
        (3, "frames", str(2**63), "frames"),
        (3, "rule", json.dumps("r\n"), "rule"),
        (5, "values", '{"frames_total": 1e19}', "values"),
        (5, "values", '{"": 1}', "values"),
        (5, "values", '{"a b": 1}', "values"),
        (5, "values", '{"a": true}', "values"),
        (6, "payload_size", str(2**63), "payload_size"),
        (6, "reason", json.dumps("r" * 501), "reason"),
        (7, "model_dir", json.dumps("m" * 1025), "model_dir"),
    ],
)
def test_hostile_values_of_every_type_are_rejected(model_index: int, key: str, raw: str, message: str) -> None:
    sample = FULL_SAMPLES[model_index]
    assert key in dict(_pairs(sample))
    with pytest.raises(ContractError, match=message):
        decode_message(_with(sample, key, raw), type(sample))


def test_largest_storable_integers_are_accepted() -> None:
    status = decode_message(_with(FULL_SAMPLES[0], "spool_depth", str(2**63 - 1)), DeviceStatus)
    assert status.spool_depth == 2**63 - 1
    verdict = decode_message(_with(FULL_SAMPLES[2], "seq", str(2**63 - 1)), Verdict)
    assert verdict.seq == 2**63 - 1


def test_duplicate_keys_and_deep_nesting_are_rejected() -> None:
    pairs = _pairs(FULL_SAMPLES[0])
    with pytest.raises(ContractError, match="duplicate key 'state'"):
        decode_message(_render([*pairs, ("state", '"offline"')]), DeviceStatus)
    with pytest.raises(ContractError, match="duplicate key"):
        decode_message(_render([*pairs, ("state", '"online"')]), DeviceStatus)  # same value: still refused
    deep = _render([*pairs[:-1], ("session_id", "[" * 9 + "1" + "]" * 9)])
    with pytest.raises(ContractError, match="nests too deeply"):
        decode_message(deep, DeviceStatus)
    nested_in_string = _render([*pairs, ("firmware", json.dumps("[" * 60))])
    with pytest.raises(ContractError, match="firmware"):  # brackets inside strings are not nesting
        decode_message(nested_in_string, DeviceStatus)


def test_producers_types_still_construct() -> None:
    """Strictness applies to decoding: producers still build messages from enum values in Python."""
    assert NodeStatus(node_id="n", role="bridge", state="online").role is NodeRole.BRIDGE


# --- incarnations (issue 12.2) -------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["DeviceStatus", "RfidEvent", "Verdict", "SessionVerdict"])
def test_device_messages_carry_the_incarnation(index: int) -> None:
    sample = FULL_SAMPLES[index]
    assert json.loads(encode_message(sample))["incarnation"] == INC
    assert decode_message(encode_message(sample), type(sample)).incarnation == INC


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["DeviceStatus", "RfidEvent", "Verdict", "SessionVerdict"])
def test_version_1_message_reads_with_the_legacy_incarnation(index: int) -> None:
    """An old sender's message (v1, no incarnation) decodes, as v2 with the legacy incarnation."""
    sample = FULL_SAMPLES[index]
    old = _render([(k, v) for k, v in _pairs(sample) if k not in ("v", "incarnation")] + [("v", "1")])
    message = decode_message(old, type(sample))
    assert message.incarnation == LEGACY_INCARNATION
    assert message.v == MESSAGE_VERSION
    assert message == sample.model_copy(update={"incarnation": LEGACY_INCARNATION})
    assert decode_message(encode_message(message), type(sample)) == message


def test_version_1_message_cannot_claim_an_incarnation() -> None:
    """Incarnations came with v2: a v1 message that names one is not from an old sender."""
    old = _render([(k, v) for k, v in _pairs(FULL_SAMPLES[1]) if k != "v"] + [("v", "1")])
    with pytest.raises(ContractError, match="incarnation is not a field of message version v=1"):
        decode_message(old, RfidEvent)


def test_new_incarnations_are_random_valid_and_never_legacy() -> None:
    drawn = {new_incarnation() for _ in range(200)}
    assert len(drawn) == 200
    assert all(validate_incarnation(i) == i for i in drawn)
    assert LEGACY_INCARNATION not in drawn
    assert validate_incarnation(LEGACY_INCARNATION) == "0" * 16
    for bad in ("", "0" * 15, "0" * 17, "ABCDEF0123456789", None, 5):
        with pytest.raises(ContractError, match="incarnation"):
            validate_incarnation(bad)  # type: ignore[arg-type]


def _reference_depth(data: bytes) -> int:
    """The byte loop the scan replaced (same string regex): deepest nesting outside strings."""
    depth = deepest = 0
    for byte in re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', data):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _assert_scan_agrees(data: bytes) -> None:
    expected, got = _reference_depth(data), _nesting_depth(data)
    if expected > MAX_JSON_DEPTH:
        assert got > MAX_JSON_DEPTH, data  # the scan may stop at the first level past the limit
    else:
        assert got == expected, data


def test_the_nesting_scan_agrees_with_the_plain_byte_loop_on_known_cases() -> None:
    for data in (
        b"[" + b"[]," * 50 + b"[]]",  # 51 siblings: depth 2, not 52
        b'{"a": "[[[[[[[[[[", "b": [1, {"c": "\\"]]]"}]}',  # brackets in strings, an escaped quote
        b'{"a": "unterminated [[[[[[[[[[',
        b"[" * 9 + b"]" * 9,
        b"[" * 30000 + b"]" * 30000,
        b"]]]][[",
    ):
        _assert_scan_agrees(data)
    assert _nesting_depth(b"[" + b"[]," * 50 + b"[]]") == 2


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b","]), max_size=80).map(b"".join))
def test_the_nesting_scan_agrees_with_the_plain_byte_loop(data: bytes) -> None:
    _assert_scan_agrees(data)
