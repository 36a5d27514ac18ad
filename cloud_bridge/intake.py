"""What the bridge accepts: validate an MQTT message with the contract and name its kind.

Validation happens before a message is queued, so sinks only ever see valid payloads; a
malformed one becomes a dead letter with the contract's one-line reason. The queue keeps the
original bytes; sinks get the decoded record through `decoded_cache.DecodedCache` (what
ingest decoded, reused) or decode it again with `decode_item` (after a restart or a backlog).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from contract.errors import ContractError
from contract.frame import Frame, decode_frame
from contract.messages import (
    DeadLetter,
    DeviceStatus,
    NodeMetrics,
    NodeStatus,
    RfidEvent,
    SessionVerdict,
    Verdict,
    decode_message,
)
from contract.topics import parse_topic


class Kind(StrEnum):
    """The kinds of queued items (stored as text in the queue)."""

    FRAME = "frame"
    RFID = "rfid"
    VERDICT = "verdict"
    DEVICE_STATUS = "device_status"
    NODE_STATUS = "node_status"
    NODE_METRICS = "node_metrics"
    DEADLETTER = "deadletter"
    #: Produced by the bridge itself: a computed session verdict (`SessionOutcome` JSON).
    SESSION_OUTCOME = "session_outcome"


class SessionOutcome(BaseModel):
    """The bridge's session verdict plus the session's times, queued for every sink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: SessionVerdict
    started_ns: int | None
    ended_ns: int


Decoded = Frame | RfidEvent | Verdict | DeviceStatus | NodeStatus | NodeMetrics | DeadLetter | SessionOutcome


@dataclass(frozen=True)
class Accepted:
    kind: Kind
    decoded: Decoded


@dataclass(frozen=True)
class Rejected:
    reason: str
    device_id: str | None
    #: False for inputs that must not produce a dead letter (a malformed dead letter: no loops).
    dead_letter: bool = True


def _check_device(topic_device: str | None, payload_device: str, what: str) -> None:
    if topic_device != payload_device:
        raise ContractError(f"{what} device_id {payload_device!r} differs from the topic's {topic_device!r}")


def classify(topic: str, payload: bytes) -> Accepted | Rejected:
    """Validate a received message; never raises."""
    device_id: str | None = None
    try:
        info = parse_topic(topic)
        device_id = info.device_id
        if info.scope == "device":
            if info.channel == "frame":
                frame = decode_frame(payload)
                _check_device(device_id, frame.device_id, "frame")
                return Accepted(Kind.FRAME, frame)
            if info.channel == "rfid":
                event = decode_message(payload, RfidEvent)
                _check_device(device_id, event.device_id, "rfid event")
                return Accepted(Kind.RFID, event)
            if info.channel == "verdict":
                verdict = decode_message(payload, Verdict)
                _check_device(device_id, verdict.device_id, "verdict")
                return Accepted(Kind.VERDICT, verdict)
            if info.channel == "status":
                return Accepted(Kind.DEVICE_STATUS, decode_message(payload, DeviceStatus))
            raise ContractError(f"the bridge does not store {info.channel} messages")
        if info.scope == "node":
            if info.channel == "status":
                status = decode_message(payload, NodeStatus)
                if status.node_id != info.node_id:
                    raise ContractError(f"node status node_id {status.node_id!r} differs from the topic's")
                return Accepted(Kind.NODE_STATUS, status)
            metrics = decode_message(payload, NodeMetrics)
            if metrics.node_id != info.node_id:
                raise ContractError(f"node metrics node_id {metrics.node_id!r} differs from the topic's")
            return Accepted(Kind.NODE_METRICS, metrics)
        if info.scope == "deadletter":
            try:
                return Accepted(Kind.DEADLETTER, decode_message(payload, DeadLetter))
            except ContractError as exc:
                return Rejected(str(exc), None, dead_letter=False)
        raise ContractError(f"the bridge does not store {info.scope} messages")
    except ContractError as exc:
        return Rejected(str(exc), device_id)


def decode_item(kind: str, payload: bytes) -> Decoded:
    """Decode a queued payload (validated at ingest, so errors here mean a corrupt queue)."""
    if kind == Kind.FRAME:
        return decode_frame(payload)
    models: dict[str, type[BaseModel]] = {
        Kind.RFID: RfidEvent,
        Kind.VERDICT: Verdict,
        Kind.DEVICE_STATUS: DeviceStatus,
        Kind.NODE_STATUS: NodeStatus,
        Kind.NODE_METRICS: NodeMetrics,
        Kind.DEADLETTER: DeadLetter,
    }
    if kind == Kind.SESSION_OUTCOME:
        return SessionOutcome.model_validate_json(payload)
    model = models.get(kind)
    if model is None:
        raise ContractError(f"unknown queued kind {kind!r}")
    return decode_message(payload, model)  # type: ignore[type-var,return-value]
