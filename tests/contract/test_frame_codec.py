"""The binary frame: round-trips, and every malformed input gives ContractError and nothing else."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from contract import ContractError, Frame, SensorKind, decode_frame, encode_frame
from contract.frame import MAX_PIXEL_CENTI, MIN_PIXEL_CENTI

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
        seq=draw(st.integers(0, 2**64 - 1)),
        capture_ns=draw(st.integers(0, 2**63 - 1)),
        centi=centi,
        ambient_c=draw(st.integers(-4000, 8500)) / 100,
        sensor=draw(st.sampled_from(list(SensorKind))),
        session_id=draw(st.none() | hex32),
        patient_ref=draw(st.none() | hex16),
    )


@given(frames())
@settings(max_examples=200)
def test_roundtrip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_mlx_frame_is_about_1_6_kb() -> None:
    frame = Frame.from_celsius(np.full((24, 32), 34.0), device_id="pi-0001", seq=1, capture_ns=1)
    size = len(encode_frame(frame))
    assert 1536 < size < 1650
    decoded = decode_frame(encode_frame(frame))
    assert decoded.temperatures_c == pytest.approx(np.full((24, 32), 34.0))


@given(st.binary(max_size=4000))
@settings(max_examples=500)
def test_random_bytes_only_raise_contract_error(data: bytes) -> None:
    with contextlib.suppress(ContractError):
        decode_frame(data)


@given(frames(), st.data())
@settings(max_examples=200)
def test_truncated_or_extended_frames_are_rejected(frame: Frame, data: st.DataObject) -> None:
    payload = encode_frame(frame)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ContractError):
        decode_frame(payload[:cut])
    with pytest.raises(ContractError, match="frame length"):
        decode_frame(payload + b"\x00\x00")


@given(frames(), st.data())
@settings(max_examples=300)
def test_corrupted_bytes_only_raise_contract_error(frame: Frame, data: st.DataObject) -> None:
    payload = bytearray(encode_frame(frame))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ContractError):
        decode_frame(bytes(payload))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XYZ" + b[3:], "magic"),
        (lambda b: b[:3] + bytes([2]) + b[4:], "format version 2"),
        (lambda b: b[:4] + bytes([0]) + b[5:], "device id length 0"),
        (lambda b: b[:4] + bytes([40]) + b[5:], "device id length 40"),
    ],
)
def test_header_defects_are_named(mutate: object, message: str) -> None:
    payload = encode_frame(Frame.from_celsius(np.full((24, 32), 30.0), device_id="dev-1", seq=1, capture_ns=5))
    with pytest.raises(ContractError, match=message):
        decode_frame(mutate(payload))  # type: ignore[operator]


def test_encode_rejects_nan_range_and_bad_ids() -> None:
    temps = np.full((24, 32), 30.0)
    temps[3, 4] = np.nan
    with pytest.raises(ContractError, match="NaN"):
        Frame.from_celsius(temps, device_id="dev-1", seq=1, capture_ns=1)
    with pytest.raises(ContractError, match="out of range"):
        Frame.from_celsius(np.full((24, 32), 400.0), device_id="dev-1", seq=1, capture_ns=1)
    good = Frame.from_celsius(np.full((24, 32), 30.0), device_id="dev-1", seq=1, capture_ns=1)
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
