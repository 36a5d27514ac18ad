"""The binary frame: round-trips, and every malformed input gives ContractError and nothing else.

The fuzz tests build STRUCTURED inputs -- a valid TSF header whose fields are then set to hostile
values, truncated or extended -- so that every check after the magic is reached (random bytes
almost never get past the magic, issue 19.10).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from contract import ContractError, Frame, SensorKind, decode_frame, encode_frame
from contract.frame import (
    FORMAT_VERSION,
    LEGACY_FORMAT_VERSION,
    LEGACY_INCARNATION,
    MAX_AMBIENT_CENTI,
    MAX_CAPTURE_NS,
    MAX_PIXEL_CENTI,
    MAX_SEQ,
    MIN_AMBIENT_CENTI,
    MIN_PIXEL_CENTI,
)
from contract.sensor import MLX_SHAPE

device_ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True).filter(
    lambda s: s not in {"nodes", "deadletter", "admin"}
)
hex32 = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
hex16 = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    rows = draw(st.integers(1, 32))
    cols = draw(st.integers(1, 40))
    centi = draw(hnp.arrays(np.int16, (rows, cols), elements=st.integers(MIN_PIXEL_CENTI, MAX_PIXEL_CENTI)))
    return Frame(
        device_id=draw(device_ids),
        seq=draw(st.integers(0, MAX_SEQ)),
        capture_ns=draw(st.integers(0, MAX_CAPTURE_NS)),
        centi=centi,
        ambient_c=draw(st.integers(MIN_AMBIENT_CENTI, MAX_AMBIENT_CENTI)) / 100,
        sensor=draw(st.sampled_from(list(SensorKind))),
        session_id=draw(st.none() | hex32),
        patient_ref=draw(st.none() | hex16),
        incarnation=draw(hex16),
    )


@given(frames())
@settings(max_examples=200)
def test_roundtrip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_mlx_frame_is_about_1_6_kb() -> None:
    frame = Frame.from_celsius(np.full(MLX_SHAPE, 34.0), device_id="pi-0001", seq=1, capture_ns=1)
    size = len(encode_frame(frame))
    assert 1536 < size < 1650
    decoded = decode_frame(encode_frame(frame))
    assert decoded.temperatures_c == pytest.approx(np.full(MLX_SHAPE, 34.0))


@given(frames(), st.data())
@settings(max_examples=200)
def test_truncated_or_extended_frames_are_rejected(frame: Frame, data: st.DataObject) -> None:
    payload = encode_frame(frame)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ContractError):
        decode_frame(payload[:cut])
    with pytest.raises(ContractError, match="frame length"):
        decode_frame(payload + b"\x00\x00")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XYZ" + b[3:], "magic"),
        (lambda b: b[:3] + bytes([3]) + b[4:], "format version 3"),
        (lambda b: b[:4] + bytes([0]) + b[5:], "device id length 0"),
        (lambda b: b[:4] + bytes([40]) + b[5:], "device id length 40"),
    ],
)
def test_header_defects_are_named(mutate: object, message: str) -> None:
    payload = encode_frame(Frame.from_celsius(np.full(MLX_SHAPE, 30.0), device_id="dev-1", seq=1, capture_ns=5))
    with pytest.raises(ContractError, match=message):
        decode_frame(mutate(payload))  # type: ignore[operator]


def test_encode_rejects_nan_range_and_bad_ids() -> None:
    temps = np.full(MLX_SHAPE, 30.0)
    temps[3, 4] = np.nan
    with pytest.raises(ContractError, match="NaN"):
        Frame.from_celsius(temps, device_id="dev-1", seq=1, capture_ns=1)
    with pytest.raises(ContractError, match="out of range"):
        Frame.from_celsius(np.full(MLX_SHAPE, 400.0), device_id="dev-1", seq=1, capture_ns=1)
    good = Frame.from_celsius(np.full(MLX_SHAPE, 30.0), device_id="dev-1", seq=1, capture_ns=1)
    for bad_id in ("Dev", "", "a" * 33, "nodes", "dev/1"):
        with pytest.raises(ContractError, match="device id"):
            encode_frame(Frame(bad_id, 1, 1, good.centi))
    with pytest.raises(ContractError, match="session id"):
        encode_frame(Frame("dev-1", 1, 1, good.centi, session_id="nope"))
    with pytest.raises(ContractError, match="patient_ref"):
        encode_frame(Frame("dev-1", 1, 1, good.centi, patient_ref="ABCDEF0123456789"))
    with pytest.raises(ContractError, match="sequence"):
        encode_frame(Frame("dev-1", -1, 1, good.centi))
    with pytest.raises(ContractError, match="ambient"):
        encode_frame(Frame("dev-1", 1, 1, good.centi, ambient_c=float("nan")))


def test_decode_rejects_out_of_range_pixel() -> None:
    frame = Frame.from_celsius(np.full((2, 2), 30.0), device_id="dev-1", seq=1, capture_ns=1)
    payload = bytearray(encode_frame(frame))
    payload[-2:] = (32000).to_bytes(2, "little", signed=True)
    with pytest.raises(ContractError, match="out of range"):
        decode_frame(bytes(payload))


# --- structured fuzzing -------------------------------------------------------------------

#: Hypothesis favours the first choices; magic and version come last so most inputs get past them.
_FIELDS: tuple[str, ...] = ("incarnation", "seq", "capture_ns", "flags", "session", "patient", "sensor", "rows", "cols")
_FIELDS += ("ambient", "pixels", "device", "id_len", "version", "magic")


def _pack(f: dict[str, Any]) -> bytes:
    """Lay out header fields exactly as contract/frame.py documents, whatever their values."""
    return b"".join(
        (
            f["magic"],
            struct.pack("<BB", f["version"], f["id_len"]),
            f["device"],
            b"" if f["version"] == LEGACY_FORMAT_VERSION else f["incarnation"],
            struct.pack("<Qq", f["seq"], f["capture_ns"]),
            struct.pack("<B", f["flags"]),
            f["session"],
            f["patient"],
            struct.pack("<BBBh", f["sensor"], f["rows"], f["cols"], f["ambient"]),
            f["pixels"],
        )
    )


def _fields_of(frame: Frame) -> dict[str, Any]:
    device = frame.device_id.encode("ascii")
    rows, cols = frame.shape
    return {
        "magic": b"TSF",
        "version": FORMAT_VERSION,
        "id_len": len(device),
        "device": device,
        "incarnation": bytes.fromhex(frame.incarnation),
        "seq": frame.seq,
        "capture_ns": frame.capture_ns,
        "flags": (frame.session_id is not None) | (frame.patient_ref is not None) << 1,
        "session": bytes.fromhex(frame.session_id) if frame.session_id else bytes(16),
        "patient": bytes.fromhex(frame.patient_ref) if frame.patient_ref else bytes(8),
        "sensor": int(frame.sensor),
        "rows": rows,
        "cols": cols,
        "ambient": round(frame.ambient_c * 100),
        "pixels": frame.centi.astype("<i2").tobytes(),
    }


u8 = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 24, 32, 33, 127, 128, 129, 255]), st.integers(0, 255))
u64 = st.one_of(st.sampled_from([0, 1, MAX_SEQ, MAX_SEQ + 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
i64 = st.one_of(st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))
i16 = st.one_of(
    st.sampled_from(
        [-32768, MIN_AMBIENT_CENTI - 1, MIN_AMBIENT_CENTI, MAX_AMBIENT_CENTI, MAX_AMBIENT_CENTI + 1, 32767]
    ),
    st.integers(-32768, 32767),
)
pixel = st.one_of(
    st.sampled_from([-32768, MIN_PIXEL_CENTI - 1, MIN_PIXEL_CENTI, MAX_PIXEL_CENTI, MAX_PIXEL_CENTI + 1, 32767]),
    st.integers(MIN_PIXEL_CENTI, MAX_PIXEL_CENTI),
)
HOSTILE: dict[str, st.SearchStrategy[Any]] = {
    "magic": st.one_of(st.just(b"TSF"), st.sampled_from([b"TSX", b"tsf", b"\x00\x00\x00", b"TS\xff"])),
    "version": st.one_of(st.just(1), u8),
    "id_len": u8,
    "incarnation": st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=12)),
    "device": st.one_of(
        st.binary(min_size=0, max_size=40),
        st.sampled_from([b"nodes", b"Dev-1", b"dev/1", b"dev\xff", b"\x00", b"a" * 32, b"a" * 33]),
    ),
    "seq": u64,
    "capture_ns": i64,
    "flags": u8,
    "session": st.binary(min_size=16, max_size=16),
    "patient": st.binary(min_size=8, max_size=8),
    "sensor": u8,
    "rows": u8,
    "cols": u8,
    "ambient": i16,
    "pixels": st.binary(max_size=64),  # wrong lengths; right-length hostile pixels: _hostile_pixels
}


def _hostile_pixels(draw: st.DrawFn, fields: dict[str, Any]) -> bytes:
    """rows*cols pixels (so the length check passes), some of them outside -40..300 C."""
    count = fields["rows"] * fields["cols"]  # up to 255 x 255: too many to draw one by one
    values = np.full(count, draw(st.integers(MIN_PIXEL_CENTI, MAX_PIXEL_CENTI)), dtype="<i2")
    if count:
        for index, value in draw(st.lists(st.tuples(st.integers(0, count - 1), pixel), max_size=8)):
            values[index] = value
    return values.tobytes()


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with 1..4 header fields replaced by hostile values, then maybe cut or extended."""
    fields = _fields_of(draw(frames()))
    for name in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=4, unique=True)):
        hostile_pixels = name == "pixels" and draw(st.booleans())
        fields[name] = _hostile_pixels(draw, fields) if hostile_pixels else draw(HOSTILE[name])
    payload = _pack(fields)
    cut = draw(st.one_of(st.none(), st.integers(0, len(payload))))
    tail = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=8)))
    return (payload if cut is None else payload[:cut]) + tail


def _assert_within_contract(frame: Frame, payload: bytes) -> None:
    """What decode_frame accepts is within every bound and re-encodes to the same bytes."""
    assert 0 <= frame.seq <= MAX_SEQ
    assert 0 <= frame.capture_ns <= MAX_CAPTURE_NS
    assert int(frame.centi.min()) >= MIN_PIXEL_CENTI and int(frame.centi.max()) <= MAX_PIXEL_CENTI
    if payload[3] == LEGACY_FORMAT_VERSION:  # re-encodes as version 2, with the legacy incarnation
        assert frame.incarnation == LEGACY_INCARNATION
        assert decode_frame(encode_frame(frame)) == frame
    else:
        assert encode_frame(frame) == payload


@given(hostile_frames())
@settings(max_examples=400, deadline=None)
def test_hostile_frames_only_raise_contract_error(payload: bytes) -> None:
    try:
        frame = decode_frame(payload)
    except ContractError as exc:
        assert exc.args[0].isprintable(), "a dead-letter reason is one printable line"
        return
    _assert_within_contract(frame, payload)


@given(frames(), st.data())
@settings(max_examples=200, deadline=None)
def test_corrupted_bytes_only_raise_contract_error(frame: Frame, data: st.DataObject) -> None:
    payload = bytearray(encode_frame(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_frame(bytes(payload))
    except ContractError:
        return
    _assert_within_contract(decoded, bytes(payload))


def _good_fields() -> dict[str, Any]:
    frame = Frame.from_celsius(
        np.full(MLX_SHAPE, 30.0),
        device_id="dev-1",
        seq=1,
        capture_ns=5,
        session_id="0" * 31 + "1",
        patient_ref="0" * 15 + "1",
    )
    return _fields_of(frame)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seq", MAX_SEQ + 1, "sequence number"),
        ("seq", 2**64 - 1, "sequence number"),
        ("capture_ns", -1, "negative"),
        ("flags", 0x04, "flag bits"),
        ("sensor", 0, "sensor kind"),
        ("sensor", 99, "sensor kind"),
        ("rows", 0, "frame shape"),
        ("cols", 129, "frame shape"),
        ("rows", 25, "frame length"),
        ("ambient", MIN_AMBIENT_CENTI - 1, "ambient"),
        ("ambient", MAX_AMBIENT_CENTI + 1, "ambient"),
        ("device", b"dev\xff1", "not ASCII"),
        ("device", b"Dev-1", "device id"),
        ("pixels", np.full(MLX_SHAPE, MAX_PIXEL_CENTI + 1, dtype="<i2").tobytes(), "out of range"),
    ],
)
def test_every_field_defect_is_named(field: str, value: Any, message: str) -> None:
    fields = _good_fields()
    assert decode_frame(_pack(fields)).seq == 1  # the unmutated frame is valid
    fields[field] = value
    with pytest.raises(ContractError, match=message):
        decode_frame(_pack(fields))


def test_flag_clear_but_bytes_set_is_rejected() -> None:
    for flags, message in ((0x02, "session bytes"), (0x01, "patient_ref bytes")):
        fields = _good_fields()
        fields["flags"] = flags
        with pytest.raises(ContractError, match=message):
            decode_frame(_pack(fields))


def test_largest_storable_seq_roundtrips_and_larger_is_refused_on_encode() -> None:
    good = Frame.from_celsius(np.full((2, 2), 30.0), device_id="dev-1", seq=MAX_SEQ, capture_ns=MAX_CAPTURE_NS)
    assert MAX_SEQ == 2**63 - 1
    assert decode_frame(encode_frame(good)) == good
    for bad in (MAX_SEQ + 1, True, -1):
        with pytest.raises(ContractError, match="sequence"):
            encode_frame(Frame("dev-1", bad, 1, good.centi))
    with pytest.raises(ContractError, match="capture time"):
        encode_frame(Frame("dev-1", 1, MAX_CAPTURE_NS + 1, good.centi))
    for ambient in (1e308, -1e308, float("inf"), 85.01):
        with pytest.raises(ContractError, match="ambient"):
            encode_frame(Frame("dev-1", 1, 1, good.centi, ambient_c=ambient))


def test_version_1_frame_decodes_with_the_legacy_incarnation() -> None:
    """A frame from a device from before incarnations (no incarnation bytes) still decodes."""
    fields = _good_fields()
    fields["version"] = LEGACY_FORMAT_VERSION
    frame = decode_frame(_pack(fields))
    assert frame.incarnation == LEGACY_INCARNATION
    assert (frame.device_id, frame.seq, frame.capture_ns) == ("dev-1", 1, 5)
    assert frame.session_id == "0" * 31 + "1" and frame.patient_ref == "0" * 15 + "1"
    assert np.array_equal(frame.centi, np.full(MLX_SHAPE, 3000, dtype=np.int16))
    v1_bytes = _pack(fields)
    assert len(encode_frame(frame)) == len(v1_bytes) + 8  # re-encoded as version 2


def test_version_2_frame_carries_its_incarnation() -> None:
    frame = Frame.from_celsius(
        np.full((2, 2), 30.0), device_id="dev-1", seq=3, capture_ns=5, incarnation="8badf00d0000beef"
    )
    payload = encode_frame(frame)
    assert payload[3] == FORMAT_VERSION
    assert payload[5 + 5 : 5 + 5 + 8] == bytes.fromhex("8badf00d0000beef")  # right after the device id
    assert decode_frame(payload).incarnation == "8badf00d0000beef"
    assert frame != Frame.from_celsius(np.full((2, 2), 30.0), device_id="dev-1", seq=3, capture_ns=5)


@pytest.mark.parametrize("bad", ["8BADF00D0000BEEF", "8badf00d", "8badf00d0000beef0", "8badf00d0000beeg", "", 7])
def test_encoder_rejects_a_bad_incarnation(bad: Any) -> None:
    frame = Frame.from_celsius(np.full((2, 2), 30.0), device_id="dev-1", seq=3, capture_ns=5, incarnation=bad)
    with pytest.raises(ContractError, match="incarnation"):
        encode_frame(frame)
