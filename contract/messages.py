"""The JSON messages of the contract. Each carries `v` (the message version) and rejects unknown keys.

Version 2 adds `incarnation` to what a device sends (`RfidEvent`, `DeviceStatus`) and to what
names a device's frames (`Verdict`, `SessionVerdict`). A version-1 message still decodes; it has no
incarnation, and reads as `LEGACY_INCARNATION` (a device from before incarnations).

Every field is bounded, because every field ends up in a store: integers that get stored fit a
signed 64-bit column (SQLite, InfluxDB), counts are not negative, strings have a maximum length
and no control characters, floats are finite. Decoding is strict (no "1" for 1, no `true` for 1),
and rejects duplicate keys, deep nesting and numbers too long to parse, so that for ANY bytes
`decode_message` either returns a valid message or raises ContractError, nothing else.
"""

from __future__ import annotations

import base64
import json
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.errors import ContractError
from contract.ids import (
    INT64_MAX,
    LEGACY_INCARNATION,
    validate_device_id,
    validate_incarnation,
    validate_node_id,
    validate_patient_ref,
    validate_session_id,
)

MESSAGE_VERSION: Final = 2
#: Message versions this decoder reads: 1 (before incarnations) and the current one.
READABLE_MESSAGE_VERSIONS = (1, MESSAGE_VERSION)
#: Dead letters carry at most this many bytes of the rejected payload (base64).
DEADLETTER_SAMPLE_BYTES = 2048
#: JSON messages above this size are rejected before parsing.
MAX_JSON_BYTES = 64 * 1024
#: No message nests deeper than 2 (an object holding `values`); this leaves room and stops
#: a hostile `[[[[...` long before the parser's recursion limit.
MAX_JSON_DEPTH = 8
#: Longest integer literal accepted (2^63-1 has 19 digits, with sign 20). Python refuses to
#: parse more than 4,300 digits with a plain ValueError; we refuse much earlier, by name.
MAX_INT_DIGITS = 20
#: A day: no frame takes longer than that to verdict.
MAX_LATENCY_MS = 86_400_000.0
#: Health numbers are counters and rates; larger magnitudes are corruption, not health.
MAX_METRIC_ABS = 1e18
DEADLETTER_REASON_CHARS = 500
DEADLETTER_TOPIC_CHARS = 256

#: Text without control characters (they would break log lines, tags and line protocol).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

DeviceId = Annotated[str, AfterValidator(validate_device_id)]
NodeId = Annotated[str, AfterValidator(validate_node_id)]
SessionId = Annotated[str, AfterValidator(validate_session_id)]
PatientRef = Annotated[str, AfterValidator(validate_patient_ref)]
Incarnation = Annotated[str, AfterValidator(validate_incarnation)]
TimestampNs = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seq = Annotated[int, Field(ge=0, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: A spread of logits (they are clipped to about +-14 for probabilities in [1e-6, 1 - 1e-6]).
MemberSpread = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
MetricName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
MetricValue = Annotated[float, Field(ge=-MAX_METRIC_ABS, le=MAX_METRIC_ABS, allow_inf_nan=False)]


def _text(max_length: int, min_length: int = 0) -> Any:
    """A bounded, printable string field."""
    return Field(min_length=min_length, max_length=max_length, pattern=_PRINTABLE)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    v: Literal[1, 2] = MESSAGE_VERSION


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class ScreeningResult(StrEnum):
    """What a device shows for a session verdict: never "healthy" or "sick"."""

    REFER = "refer_for_follow_up"
    NO_FINDING = "no_finding"
    #: The ensemble's members disagree or the probability lies near the threshold: capture again.
    INCONCLUSIVE = "inconclusive_repeat_capture"


class DeviceStatus(_Message):
    """Retained on `thermo/v1/<device>/status`; `offline` is also the device's last will."""

    state: DeviceState
    ts_ns: TimestampNs | None = None
    firmware: Annotated[str, _text(64)] | None = None
    source: Annotated[str, _text(32)] | None = None
    spool_depth: Count | None = None
    spool_dropped_frames: Count | None = None
    session_id: SessionId | None = None
    incarnation: Incarnation = LEGACY_INCARNATION
    #: The last session verdict the device received and showed (screening aid, not a diagnosis).
    last_session_id: SessionId | None = None
    last_result: ScreeningResult | None = None
    #: Edge mode: the device's own result of its latest session, shown at once (also offline) and
    #: provisional until the cloud's session verdict for that session replaces it (then None).
    #: Never stored as a verdict: the cloud's session verdict is the one stored.
    provisional_session_id: SessionId | None = None
    provisional_result: ScreeningResult | None = None


class RfidEventKind(StrEnum):
    SESSION_START = "session_start"
    SESSION_END = "session_end"


class SessionEndReason(StrEnum):
    CARD = "card"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


class RfidEvent(_Message):
    """Card scans on `thermo/v1/<device>/rfid`: a session starts or ends. Never the raw UID."""

    event: RfidEventKind
    device_id: DeviceId
    session_id: SessionId
    patient_ref: PatientRef
    ts_ns: TimestampNs
    seq: Seq
    frame_count: Count | None = None
    reason: SessionEndReason | None = None
    incarnation: Incarnation = LEGACY_INCARNATION


class Verdict(_Message):
    """One frame's inference result on `thermo/v1/<device>/verdict`."""

    device_id: DeviceId
    seq: Seq
    capture_ns: TimestampNs
    session_id: SessionId | None = None
    patient_ref: PatientRef | None = None
    probability: Probability
    label: str = _text(32, min_length=1)
    flagged: bool
    threshold: Probability
    model_version: str = _text(64, min_length=1)
    #: sha256 of the .tflite file that scored the frame (the version string alone can be reused).
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    node_id: NodeId
    latency_ms: float = Field(ge=0.0, le=MAX_LATENCY_MS)
    #: The frame's incarnation: (device_id, incarnation, seq) names the frame.
    incarnation: Incarnation = LEGACY_INCARNATION
    #: Population std of the ensemble members' logits (None: a single model).
    member_spread: MemberSpread | None = None
    #: The model's inconclusive rule (contract.session_rule.is_inconclusive), carried so that
    #: the bridge can check `inconclusive` and apply the same rule per session. None: no rule.
    band_low: Probability | None = None
    band_high: Probability | None = None
    max_member_spread: MemberSpread | None = None
    #: "Inconclusive: repeat the capture" (near the threshold, or members disagree).
    inconclusive: bool = False


class SessionVerdict(_Message):
    """The bridge's combined verdict for a whole session on `thermo/v1/<device>/session_verdict`."""

    device_id: DeviceId
    session_id: SessionId
    patient_ref: PatientRef
    frames: Count
    probability: Probability
    flagged: bool
    threshold: Probability
    rule: str = _text(64, min_length=1)
    model_version: str = _text(64, min_length=1)
    ts_ns: TimestampNs
    #: The incarnation of the device whose session (and frames) this is.
    incarnation: Incarnation = LEGACY_INCARNATION
    #: Mean member spread over the session's frames (None: a single model).
    member_spread: MemberSpread | None = None
    #: "Inconclusive: repeat the capture": the device shows ScreeningResult.INCONCLUSIVE.
    inconclusive: bool = False


class NodeRole(StrEnum):
    INFERENCE = "inference"
    BRIDGE = "bridge"


class NodeStatus(_Message):
    """Retained on `thermo/v1/nodes/<node>/status`; `offline` is the node's last will."""

    node_id: NodeId
    role: NodeRole
    state: DeviceState
    ts_ns: TimestampNs | None = None
    model_version: Annotated[str, _text(64)] | None = None
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class NodeMetrics(_Message):
    """Periodic health numbers on `thermo/v1/nodes/<node>/metrics` (names documented per role)."""

    node_id: NodeId
    role: NodeRole
    ts_ns: TimestampNs
    values: dict[MetricName, MetricValue] = Field(max_length=64)
    model_version: Annotated[str, _text(64)] | None = None


#: Frames one receipts message names at most: at about 25 bytes a frame and 200 bytes a group this
#: keeps a message far below MAX_JSON_BYTES (64 KiB) even when every frame is in its own group.
MAX_RECEIPT_FRAMES = 250


class ReceiptGroup(BaseModel):
    """Frames of one device incarnation and session that a storage bridge committed together."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    device_id: DeviceId
    incarnation: Incarnation
    session_id: SessionId | None = None
    patient_ref: PatientRef | None = None
    seqs: list[Seq] = Field(min_length=1, max_length=MAX_RECEIPT_FRAMES)
    #: When the bridge received them (its commit's time): frame keys are remembered from here.
    received_ns: TimestampNs


class FrameReceipts(_Message):
    """On `thermo/v1/bridges/<bridge>/receipts`: frames a storage bridge holds durably.

    Why: with several bridges behind a shared subscription a frame and its verdict reach
    different bridges; the sessions bridge checks verdicts against these receipts instead of
    the frames themselves (a sixtieth of the bytes). Published only after the commit, from the
    bridge's own queue, so a receipt never names a frame that could still be lost.
    """

    bridge_id: NodeId
    groups: list[ReceiptGroup] = Field(min_length=1, max_length=MAX_RECEIPT_FRAMES)

    @property
    def frames(self) -> int:
        return sum(len(g.seqs) for g in self.groups)

    @model_validator(mode="after")
    def _bounded_total(self) -> FrameReceipts:
        if self.frames > MAX_RECEIPT_FRAMES:
            raise ValueError(f"names {self.frames} frames, at most {MAX_RECEIPT_FRAMES} per message")
        return self


class DeadLetter(_Message):
    """Rejected input on `thermo/v1/deadletter/<component>`, with the reason."""

    component: NodeId
    reason: str = Field(min_length=1, max_length=DEADLETTER_REASON_CHARS)
    topic: str = Field(max_length=DEADLETTER_TOPIC_CHARS)
    device_id: DeviceId | None = None
    ts_ns: TimestampNs
    payload_size: Count
    payload_b64: str = Field(max_length=4 * DEADLETTER_SAMPLE_BYTES // 3 + 4)

    @classmethod
    def for_payload(
        cls, *, component: str, reason: str, topic: str, payload: bytes, ts_ns: int, device_id: str | None
    ) -> DeadLetter:
        sample = base64.b64encode(payload[:DEADLETTER_SAMPLE_BYTES]).decode("ascii")
        return cls(
            component=component,
            reason=reason[:DEADLETTER_REASON_CHARS] or "rejected",
            topic=topic[:DEADLETTER_TOPIC_CHARS],
            device_id=device_id,
            ts_ns=ts_ns,
            payload_size=len(payload),
            payload_b64=sample,
        )


class ModelSwap(_Message):
    """Admin command on `thermo/v1/admin/model`: inference nodes load the model directory."""

    model_dir: str = _text(1024, min_length=1)
    expected_version: Annotated[str, _text(64)] | None = None


M = TypeVar("M", bound=_Message)

MESSAGE_TYPES: dict[str, type[_Message]] = {
    "status": DeviceStatus,
    "rfid": RfidEvent,
    "verdict": Verdict,
    "session_verdict": SessionVerdict,
    "node_status": NodeStatus,
    "node_metrics": NodeMetrics,
    "deadletter": DeadLetter,
    "model_swap": ModelSwap,
}


def encode_message(message: _Message) -> bytes:
    """Compact JSON bytes of a message."""
    return message.model_dump_json(exclude_none=True).encode("utf-8")


class _RejectedError(Exception):
    """Raised from inside json.loads hooks; decode_message turns it into a ContractError."""


def _reject_constant(name: str) -> Any:
    raise _RejectedError(f"payload JSON constant {name} is not allowed")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _RejectedError(
            f"payload has an integer literal of {len(text)} characters exceeds {MAX_INT_DIGITS} digits"
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise _RejectedError(f"payload number {text[:32]} is not a finite float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RejectedError(f"payload has duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
#: Every byte but the four brackets, for `bytes.translate(None, delete=...)`.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting_depth(data: bytes) -> int:
    """Deepest [ / { nesting outside string literals (stopping at the first level beyond
    MAX_JSON_DEPTH), found before the recursive parser runs.

    Why not a loop over the payload: at ~100 instructions a byte it cost a verdict 199k
    instructions (callgrind), 61% of its decode; the string regex alone still cost 133k. So
    the brackets outside strings are found in C: without a backslash, strings are exactly the
    odd pieces between quotes (an unmatched last quote opens no string, as for the regex); with
    one, the regex blanks them. A message has only a few brackets; the loop runs over those.
    """
    if b"\\" in data:
        outside = _JSON_STRING.sub(b"", data)
    else:
        pieces = data.split(b'"')
        unmatched_tail = pieces[-1:] if len(pieces) % 2 == 0 else []
        outside = b"".join(pieces[0::2] + unmatched_tail)
    depth = deepest = 0
    for byte in outside.translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return depth
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _parse_json(data: bytes) -> Any:
    """json.loads with every hostile-input guard; any defect raises _RejectedError with one line."""
    if _nesting_depth(data) > MAX_JSON_DEPTH:
        raise _RejectedError(f"payload nests too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _RejectedError("payload is not UTF-8") from None
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise _RejectedError(f"payload is not JSON: {exc.msg} at char {exc.pos}") from None
    except (RecursionError, ValueError) as exc:  # belt and braces: the depth scan should stop these
        raise _RejectedError(f"payload is not valid JSON ({type(exc).__name__})") from None


def decode_message(payload: bytes, model: type[M]) -> M:
    """Parse and validate a JSON message of type `model`; any defect raises ContractError.

    Two passes: our own json.loads with guards (size, depth, duplicate keys, integer length,
    finite floats, exact `v`), then pydantic in strict JSON mode, so enums still read from their
    string values but no field is coerced from another JSON type.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if len(data) > MAX_JSON_BYTES:
        raise ContractError(f"{model.__name__} payload of {len(data)} bytes exceeds {MAX_JSON_BYTES}")
    try:
        raw = _parse_json(data)
    except _RejectedError as exc:
        raise ContractError(f"{model.__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{model.__name__} payload must be a JSON object, got {type(raw).__name__}")
    version = raw.get("v")
    if type(version) is not int or version not in READABLE_MESSAGE_VERSIONS:
        raise ContractError(
            f"{model.__name__}: unsupported message version v={version!r}, expected one of {READABLE_MESSAGE_VERSIONS}"
        )
    if version < MESSAGE_VERSION and "incarnation" in raw:
        raise ContractError(f"{model.__name__}: incarnation is not a field of message version v={version}")
    try:
        message = model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise ContractError(f"{model.__name__}: {describe_validation_error(exc)}") from None
    # An old message reads as the current version with the legacy incarnation, so that what is
    # decoded always re-encodes to something this decoder reads back the same.
    return message if version == MESSAGE_VERSION else message.model_copy(update={"v": MESSAGE_VERSION})


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `field.path: message`."""
    errors = exc.errors()
    parts = []
    for err in errors[:3]:
        loc = _one_line(".".join(str(p)[:64] for p in err.get("loc", ()))) or "<root>"
        msg = _one_line(str(err.get("msg", "invalid")))
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _one_line(text: str) -> str:
    """Escape unprintable characters (a hostile key may hold a newline): a reason is one printable line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
