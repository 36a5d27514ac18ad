"""The JSON messages of contract v1. Each carries `v` (the message version) and rejects unknown keys."""

from __future__ import annotations

import base64
import json
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from contract.errors import ContractError
from contract.ids import (
    validate_device_id,
    validate_node_id,
    validate_patient_ref,
    validate_session_id,
)

MESSAGE_VERSION = 1
#: Dead letters carry at most this many bytes of the rejected payload (base64).
DEADLETTER_SAMPLE_BYTES = 2048
#: JSON messages above this size are rejected before parsing.
MAX_JSON_BYTES = 64 * 1024

DeviceId = Annotated[str, AfterValidator(validate_device_id)]
NodeId = Annotated[str, AfterValidator(validate_node_id)]
SessionId = Annotated[str, AfterValidator(validate_session_id)]
PatientRef = Annotated[str, AfterValidator(validate_patient_ref)]
TimestampNs = Annotated[int, Field(ge=0, lt=2**63)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    v: Literal[1] = 1


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class DeviceStatus(_Message):
    """Retained on `thermo/v1/<device>/status`; `offline` is also the device's last will."""

    state: DeviceState
    ts_ns: TimestampNs | None = None
    firmware: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=32)
    spool_depth: int | None = Field(default=None, ge=0)
    spool_dropped_frames: int | None = Field(default=None, ge=0)
    session_id: SessionId | None = None


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
    seq: int = Field(ge=0, lt=2**64)
    frame_count: int | None = Field(default=None, ge=0)
    reason: SessionEndReason | None = None


class Verdict(_Message):
    """One frame's inference result on `thermo/v1/<device>/verdict`."""

    device_id: DeviceId
    seq: int = Field(ge=0, lt=2**64)
    capture_ns: TimestampNs
    session_id: SessionId | None = None
    patient_ref: PatientRef | None = None
    probability: Probability
    label: str = Field(min_length=1, max_length=32)
    flagged: bool
    threshold: Probability
    model_version: str = Field(min_length=1, max_length=64)
    #: sha256 of the .tflite file that scored the frame (the version string alone can be reused).
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    node_id: NodeId
    latency_ms: float = Field(ge=0.0)


class SessionVerdict(_Message):
    """The bridge's combined verdict for a whole session on `thermo/v1/<device>/session_verdict`."""

    device_id: DeviceId
    session_id: SessionId
    patient_ref: PatientRef
    frames: int = Field(ge=0)
    probability: Probability
    flagged: bool
    threshold: Probability
    rule: str = Field(min_length=1, max_length=64)
    model_version: str = Field(min_length=1, max_length=64)
    ts_ns: TimestampNs


class NodeRole(StrEnum):
    INFERENCE = "inference"
    BRIDGE = "bridge"


class NodeStatus(_Message):
    """Retained on `thermo/v1/nodes/<node>/status`; `offline` is the node's last will."""

    node_id: NodeId
    role: NodeRole
    state: DeviceState
    ts_ns: TimestampNs | None = None
    model_version: str | None = Field(default=None, max_length=64)
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class NodeMetrics(_Message):
    """Periodic health numbers on `thermo/v1/nodes/<node>/metrics` (names documented per role)."""

    node_id: NodeId
    role: NodeRole
    ts_ns: TimestampNs
    values: dict[Annotated[str, Field(max_length=64)], float] = Field(max_length=64)
    model_version: str | None = Field(default=None, max_length=64)


class DeadLetter(_Message):
    """Rejected input on `thermo/v1/deadletter/<component>`, with the reason."""

    component: NodeId
    reason: str = Field(min_length=1, max_length=500)
    topic: str = Field(max_length=256)
    device_id: DeviceId | None = None
    ts_ns: TimestampNs
    payload_size: int = Field(ge=0)
    payload_b64: str = Field(max_length=4 * DEADLETTER_SAMPLE_BYTES // 3 + 4)

    @classmethod
    def for_payload(
        cls, *, component: str, reason: str, topic: str, payload: bytes, ts_ns: int, device_id: str | None
    ) -> DeadLetter:
        sample = base64.b64encode(payload[:DEADLETTER_SAMPLE_BYTES]).decode("ascii")
        return cls(
            component=component,
            reason=reason[:500] or "rejected",
            topic=topic[:256],
            device_id=device_id,
            ts_ns=ts_ns,
            payload_size=len(payload),
            payload_b64=sample,
        )


class ModelSwap(_Message):
    """Admin command on `thermo/v1/admin/model`: inference nodes load the model directory."""

    model_dir: str = Field(min_length=1, max_length=1024)
    expected_version: str | None = Field(default=None, max_length=64)


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


def _reject_constant(name: str) -> Any:
    raise ContractError(f"JSON constant {name} is not allowed")


def decode_message(payload: bytes, model: type[M]) -> M:
    """Parse and validate a JSON message of type `model`; any defect raises ContractError."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if len(data) > MAX_JSON_BYTES:
        raise ContractError(f"{model.__name__} payload of {len(data)} bytes exceeds {MAX_JSON_BYTES}")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ContractError(f"{model.__name__} payload is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ContractError(f"{model.__name__} payload is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise ContractError(f"{model.__name__} payload nests too deeply") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{model.__name__} payload must be a JSON object, got {type(raw).__name__}")
    version = raw.get("v")
    if version != MESSAGE_VERSION:
        raise ContractError(f"{model.__name__}: unsupported message version v={version!r}, expected 1")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(f"{model.__name__}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `field.path: message`."""
    errors = exc.errors()
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = str(err.get("msg", "invalid")).replace("\n", " ")
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more
