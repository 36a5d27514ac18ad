"""The binary thermal frame (format version 2; version 1 still decodes).

Layout (all little-endian)::

    magic        3s   b"TSF"
    version      u8   2
    id_len       u8   length of the device id (1..32)
    device_id    id_len bytes, ASCII [a-z0-9-]
    incarnation  8s   the device's incarnation (64 bits; new with every new spool)   [version 2 only]
    seq          u64  per-device sequence number (duplicates keep theirs), at most 2^63-1
    capture_ns   i64  capture time, ns since the Unix epoch, not negative
    flags        u8   bit 0: session present, bit 1: patient_ref present
    session_id   16s  UUID bytes (zero when absent)
    patient_ref  8s   truncated HMAC (zero when absent)
    sensor       u8   SensorKind
    rows, cols   u8, u8
    ambient      i16  centi-degrees C
    pixels       rows*cols x i16, centi-degrees C, row-major

A 24x32 frame with a 10-character device id is 1,605 bytes (1,597 in version 1).

Why the incarnation: a re-imaged device starts its seq at 0 again, so (device, seq) alone would
let a second patient's frames collide with the first's. A version-1 frame (no incarnation field)
decodes with `LEGACY_INCARNATION`: its seq numbers are only unique until that device's spool is
replaced. The encoder always writes version 2.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from contract.errors import ContractError
from contract.ids import (
    INCARNATION_BYTES,
    INT64_MAX,
    LEGACY_INCARNATION,
    validate_device_id,
    validate_incarnation,
    validate_patient_ref,
    validate_session_id,
)
from contract.sensor import (
    CENTI_PER_C,
    MAX_AMBIENT_C,
    MAX_AMBIENT_CENTI,
    MAX_PIXEL_CENTI,
    MIN_AMBIENT_C,
    MIN_AMBIENT_CENTI,
    MIN_PIXEL_CENTI,
    MLX_SHAPE,
)

__all__ = [
    "FORMAT_VERSION",
    "LEGACY_FORMAT_VERSION",
    "LEGACY_INCARNATION",
    "MAGIC",
    "MAX_AMBIENT_CENTI",
    "MAX_CAPTURE_NS",
    "MAX_DIM",
    "MAX_PIXEL_CENTI",
    "MAX_SEQ",
    "MIN_AMBIENT_CENTI",
    "MIN_PIXEL_CENTI",
    "MLX90640_SHAPE",
    "Frame",
    "SensorKind",
    "decode_frame",
    "encode_frame",
]

MAGIC = b"TSF"
FORMAT_VERSION = 2
#: The format before incarnations; still decoded, with `LEGACY_INCARNATION`.
LEGACY_FORMAT_VERSION = 1
MAX_DIM = 128
FLAG_SESSION = 0x01
FLAG_PATIENT = 0x02
#: seq travels as u64 but is stored as a signed 64-bit integer (SQLite, InfluxDB), so it must fit that.
MAX_SEQ = INT64_MAX
MAX_CAPTURE_NS = INT64_MAX
#: Old name of the sensor geometry, kept for importers; defined in contract.sensor.
MLX90640_SHAPE = MLX_SHAPE

_AMBIENT_RANGE = f"{MIN_AMBIENT_C:.0f}..{MAX_AMBIENT_C:.0f} C"
_PREFIX = struct.Struct("<3sBB")
_INCARNATION = struct.Struct(f"<{INCARNATION_BYTES}s")
_FIXED = struct.Struct("<Qq B 16s 8s B BB h".replace(" ", ""))


class SensorKind(IntEnum):
    """Where the temperatures came from."""

    MLX90640 = 1
    REPLAY = 2
    SYNTHETIC = 3
    EMULATED_MLX90640 = 4


def _empty_centi() -> npt.NDArray[np.int16]:
    return np.zeros(MLX_SHAPE, dtype=np.int16)


@dataclass(frozen=True, eq=False)
class Frame:
    """One thermal frame with its provenance. Temperatures are held as int16 centi-degrees."""

    device_id: str
    seq: int
    capture_ns: int
    centi: npt.NDArray[np.int16] = field(default_factory=_empty_centi)
    ambient_c: float = 25.0
    sensor: SensorKind = SensorKind.SYNTHETIC
    session_id: str | None = None
    patient_ref: str | None = None
    incarnation: str = LEGACY_INCARNATION

    @classmethod
    def from_celsius(
        cls,
        temperatures_c: npt.ArrayLike,
        *,
        device_id: str,
        seq: int,
        capture_ns: int,
        ambient_c: float = 25.0,
        sensor: SensorKind = SensorKind.SYNTHETIC,
        session_id: str | None = None,
        patient_ref: str | None = None,
        incarnation: str = LEGACY_INCARNATION,
    ) -> Frame:
        """Build a frame from degrees Celsius, rejecting NaN, infinities and out-of-range values."""
        arr = np.asarray(temperatures_c, dtype=np.float64)
        if arr.ndim != 2:
            raise ContractError(f"temperatures must be 2-D, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ContractError("temperatures contain NaN or infinity")
        centi = np.rint(arr * CENTI_PER_C)
        return cls(
            device_id=device_id,
            seq=seq,
            capture_ns=capture_ns,
            centi=_check_pixels(centi).astype(np.int16),
            ambient_c=ambient_c,
            sensor=sensor,
            session_id=session_id,
            patient_ref=patient_ref,
            incarnation=incarnation,
        )

    @property
    def temperatures_c(self) -> npt.NDArray[np.float32]:
        return self.centi.astype(np.float32) / np.float32(CENTI_PER_C)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.centi.shape
        return int(rows), int(cols)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.device_id == other.device_id
            and self.incarnation == other.incarnation
            and self.seq == other.seq
            and self.capture_ns == other.capture_ns
            and round(self.ambient_c * CENTI_PER_C) == round(other.ambient_c * CENTI_PER_C)
            and self.sensor == other.sensor
            and self.session_id == other.session_id
            and self.patient_ref == other.patient_ref
            and np.array_equal(self.centi, other.centi)
        )

    __hash__ = None  # type: ignore[assignment]


def _check_pixels(centi: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    rows, cols = centi.shape
    if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
        raise ContractError(f"frame shape {rows}x{cols} outside 1..{MAX_DIM}")
    lo, hi = int(centi.min()), int(centi.max())
    if lo < MIN_PIXEL_CENTI or hi > MAX_PIXEL_CENTI:
        raise ContractError(
            f"pixel temperature out of range: {lo / CENTI_PER_C:.2f}..{hi / CENTI_PER_C:.2f} C "
            f"(allowed {MIN_PIXEL_CENTI / CENTI_PER_C:.0f}..{MAX_PIXEL_CENTI / CENTI_PER_C:.0f} C)"
        )
    return centi


def _is_int(value: object) -> bool:
    """An int that is not a bool: `True` is not a sequence number."""
    return isinstance(value, int) and not isinstance(value, bool)


def _ambient_centi(ambient_c: float) -> int:
    """The ambient temperature as centi-degrees, checked against the die range before rounding."""
    try:
        value = float(ambient_c)
    except (TypeError, ValueError):
        raise ContractError(f"ambient temperature {ambient_c!r} is not a number") from None
    if isinstance(ambient_c, bool) or not math.isfinite(value):
        raise ContractError(f"ambient temperature {ambient_c!r} is not a finite number")
    scaled = value * CENTI_PER_C  # 1e308 * 100 is inf: check before round(), which would overflow
    if not math.isfinite(scaled) or not MIN_AMBIENT_CENTI <= round(scaled) <= MAX_AMBIENT_CENTI:
        raise ContractError(f"ambient temperature {value} C outside {_AMBIENT_RANGE}")
    return round(scaled)


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame; raises ContractError if any field breaks the contract."""
    device = validate_device_id(frame.device_id).encode("ascii")
    incarnation = bytes.fromhex(validate_incarnation(frame.incarnation))
    if not _is_int(frame.seq) or not 0 <= frame.seq <= MAX_SEQ:
        raise ContractError(f"sequence number {frame.seq!r} outside 0..2^63-1")
    if not _is_int(frame.capture_ns) or not 0 <= frame.capture_ns <= MAX_CAPTURE_NS:
        raise ContractError(f"capture time {frame.capture_ns!r} ns outside 0..2^63-1")
    ambient = _ambient_centi(frame.ambient_c)
    centi = np.asarray(frame.centi)
    if centi.ndim != 2:
        raise ContractError(f"temperatures must be 2-D, got shape {centi.shape}")
    _check_pixels(centi)
    flags = 0
    session = bytes(16)
    patient = bytes(8)
    if frame.session_id is not None:
        flags |= FLAG_SESSION
        session = bytes.fromhex(validate_session_id(frame.session_id))
    if frame.patient_ref is not None:
        flags |= FLAG_PATIENT
        patient = bytes.fromhex(validate_patient_ref(frame.patient_ref))
    try:
        sensor = SensorKind(frame.sensor)
    except ValueError:
        raise ContractError(f"unknown sensor kind {frame.sensor!r}") from None
    rows, cols = centi.shape
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(device)),
            device,
            _INCARNATION.pack(incarnation),
            _FIXED.pack(frame.seq, frame.capture_ns, flags, session, patient, sensor, rows, cols, ambient),
            centi.astype("<i2", copy=False).tobytes(),
        )
    )


def decode_frame(payload: bytes) -> Frame:
    """Parse and validate a frame; any defect raises ContractError with a precise message."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"frame payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if len(data) < _PREFIX.size:
        raise ContractError(f"frame truncated: {len(data)} bytes, header needs at least {_PREFIX.size}")
    magic, version, id_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise ContractError(f"not a thermoscreen frame: magic {magic!r}, expected {MAGIC!r}")
    if version not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION):
        raise ContractError(
            f"unsupported frame format version {version}, this decoder reads "
            f"{LEGACY_FORMAT_VERSION} and {FORMAT_VERSION}"
        )
    if not 1 <= id_len <= 32:
        raise ContractError(f"device id length {id_len} outside 1..32")
    incarnation_len = _INCARNATION.size if version == FORMAT_VERSION else 0
    fixed_at = _PREFIX.size + id_len + incarnation_len
    header_len = fixed_at + _FIXED.size
    if len(data) < header_len:
        raise ContractError(f"frame truncated: {len(data)} bytes, header needs {header_len}")
    try:
        device_id = data[_PREFIX.size : _PREFIX.size + id_len].decode("ascii")
    except UnicodeDecodeError:
        raise ContractError("device id is not ASCII") from None
    validate_device_id(device_id)
    incarnation = LEGACY_INCARNATION
    if incarnation_len:
        incarnation = _INCARNATION.unpack_from(data, _PREFIX.size + id_len)[0].hex()
    seq, capture_ns, flags, session, patient, sensor, rows, cols, ambient = _FIXED.unpack_from(data, fixed_at)
    if seq > MAX_SEQ:
        raise ContractError(f"sequence number {seq} outside 0..2^63-1")
    if capture_ns < 0:
        raise ContractError(f"capture time {capture_ns} ns is negative")
    if flags & ~(FLAG_SESSION | FLAG_PATIENT):
        raise ContractError(f"unknown flag bits 0x{flags:02x}")
    try:
        sensor_kind = SensorKind(sensor)
    except ValueError:
        raise ContractError(f"unknown sensor kind {sensor}") from None
    if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
        raise ContractError(f"frame shape {rows}x{cols} outside 1..{MAX_DIM}")
    expected = header_len + rows * cols * 2
    if len(data) != expected:
        raise ContractError(f"frame length {len(data)} bytes, expected {expected} for {rows}x{cols} pixels")
    if not MIN_AMBIENT_CENTI <= ambient <= MAX_AMBIENT_CENTI:
        raise ContractError(f"ambient temperature {ambient / CENTI_PER_C:.2f} C outside {_AMBIENT_RANGE}")
    session_id: str | None = None
    patient_ref: str | None = None
    if flags & FLAG_SESSION:
        session_id = session.hex()
    elif session != bytes(16):
        raise ContractError("session bytes set but session flag clear")
    if flags & FLAG_PATIENT:
        patient_ref = patient.hex()
    elif patient != bytes(8):
        raise ContractError("patient_ref bytes set but patient flag clear")
    centi = np.frombuffer(data, dtype="<i2", offset=header_len).reshape(rows, cols).astype(np.int16)
    _check_pixels(centi)
    return Frame(
        device_id=device_id,
        seq=seq,
        capture_ns=capture_ns,
        centi=centi,
        ambient_c=ambient / CENTI_PER_C,
        sensor=sensor_kind,
        session_id=session_id,
        patient_ref=patient_ref,
        incarnation=incarnation,
    )
