"""The one registry of what the bridge receives: per channel its queue kind, decoder and ownership check.

Why one table: the kinds used to be dispatched in eight places (intake, each sink, the
subscriptions), so a new message type or a changed rule had to be found eight times.
Here each channel says, once:

- which MQTT filter the bridge subscribes to, and which (scope, channel) of a parsed topic
  it covers (`contract.topics.parse_topic`);
- the queue kind it is stored under (text in the queue rows);
- how its payload is decoded (the contract's codec; `decode_item` reuses it for queued rows);
- its ownership check: the id in the topic must be the id in the payload (a device may only
  speak for itself; a device status is only taken from that device's own topic);
- whether a rejected message produces a dead letter (not for malformed dead letters: no loops).

Sinks dispatch on the kind with a handler table (`Handlers`), never with isinstance chains;
`expect` narrows a decoded record to the type its kind promises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from contract.errors import ContractError
from contract.frame import Frame, decode_frame
from contract.messages import (
    DeadLetter,
    DeviceStatus,
    FrameReceipts,
    NodeMetrics,
    NodeStatus,
    RfidEvent,
    SessionVerdict,
    Verdict,
    decode_message,
)
from contract.topics import (
    ALL_DEADLETTERS,
    ALL_DEVICE_STATUS,
    ALL_FRAMES,
    ALL_NODE_METRICS,
    ALL_NODE_STATUS,
    ALL_RECEIPTS,
    ALL_RFID,
    ALL_VERDICTS,
    TopicInfo,
    shared,
)

#: The stores hold signed 64-bit integers (SQLite, Firestore); sequence numbers are u64 by contract
#: and are mapped explicitly (`archive.seq_to_sql`), every other integer must fit.
I64_MAX = 2**63 - 1
_U64_FIELDS = frozenset({"seq"})


class Kind(StrEnum):
    """The kinds of queued items (stored as text in the queue)."""

    FRAME = "frame"
    RFID = "rfid"
    VERDICT = "verdict"
    DEVICE_STATUS = "device_status"
    NODE_STATUS = "node_status"
    NODE_METRICS = "node_metrics"
    DEADLETTER = "deadletter"
    #: Another bridge's frame receipts (several bridges): state for provenance, never queued.
    RECEIPTS = "receipts"
    #: Produced by the bridge's session stage: a computed session verdict (`SessionOutcome` JSON).
    SESSION_OUTCOME = "session_outcome"
    #: Produced by the session stage: an ended session closed without any frame verdict.
    SESSION_CLOSED = "session_closed"


class SessionOutcome(BaseModel):
    """The bridge's session verdict plus the session's times, queued for every sink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: SessionVerdict
    started_ns: int | None
    ended_ns: int


class SessionClosed(BaseModel):
    """An ended session that got no frame verdict within `max_wait_s`: it stops being pending."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    closed_ns: int


Decoded = (
    Frame
    | RfidEvent
    | Verdict
    | DeviceStatus
    | NodeStatus
    | NodeMetrics
    | DeadLetter
    | FrameReceipts
    | SessionOutcome
    | SessionClosed
)
D = TypeVar("D")
#: A sink's handler table: queue kind -> what to do with one decoded item of that kind.
Handlers = Mapping[Kind, Callable[..., D]]


def expect(decoded: Decoded, model: type[D]) -> D:
    """`decoded` as the type its kind promises; a mismatch means a corrupt queue row."""
    if not isinstance(decoded, model):
        raise ContractError(f"queued record is a {type(decoded).__name__}, expected {model.__name__}")
    return decoded


def _json(model: type[BaseModel]) -> Callable[[bytes], Decoded]:
    def decode(payload: bytes) -> Decoded:
        return decode_message(payload, model)  # type: ignore[type-var,return-value]

    return decode


def _bridge_json(model: type[SessionOutcome] | type[SessionClosed]) -> Callable[[bytes], Decoded]:
    def decode(payload: bytes) -> Decoded:
        return model.model_validate_json(payload)

    return decode


OwnerCheck = Callable[[TopicInfo, Decoded], None]


def _device_owns(info: TopicInfo, decoded: Decoded) -> None:
    """A device speaks only for itself: a payload's device_id must be the topic's (when it has one)."""
    payload_device = getattr(decoded, "device_id", info.device_id)
    if payload_device != info.device_id:
        raise ContractError(f"{info.channel} device_id {payload_device!r} differs from the topic's {info.device_id!r}")


def _node_owns(info: TopicInfo, decoded: Decoded) -> None:
    payload_node = getattr(decoded, "node_id", None)
    if payload_node != info.node_id:
        raise ContractError(f"node {info.channel} node_id {payload_node!r} differs from the topic's")


def _bridge_owns(info: TopicInfo, decoded: Decoded) -> None:
    """A bridge publishes receipts only for itself (the ACL lets only bridge accounts write there)."""
    bridge = getattr(decoded, "bridge_id", None)
    if bridge != info.node_id:
        raise ContractError(f"receipts bridge_id {bridge!r} differs from the topic's {info.node_id!r}")


def _anyone(info: TopicInfo, decoded: Decoded) -> None:
    """Dead letters are reports about other messages; any component may send them."""


@dataclass(frozen=True)
class Channel:
    kind: Kind
    #: (scope, channel) of `parse_topic`; None for kinds the bridge produces itself.
    topic: tuple[str, str] | None
    subscription: str | None
    decode: Callable[[bytes], Decoded]
    owner: OwnerCheck
    #: False: a rejected message is only logged (a malformed dead letter must not make another).
    dead_letter_on_reject: bool = True


CHANNELS: tuple[Channel, ...] = (
    Channel(Kind.RFID, ("device", "rfid"), ALL_RFID, _json(RfidEvent), _device_owns),
    Channel(Kind.FRAME, ("device", "frame"), ALL_FRAMES, decode_frame, _device_owns),
    Channel(Kind.VERDICT, ("device", "verdict"), ALL_VERDICTS, _json(Verdict), _device_owns),
    Channel(Kind.DEVICE_STATUS, ("device", "status"), ALL_DEVICE_STATUS, _json(DeviceStatus), _device_owns),
    Channel(Kind.NODE_STATUS, ("node", "status"), ALL_NODE_STATUS, _json(NodeStatus), _node_owns),
    Channel(Kind.NODE_METRICS, ("node", "metrics"), ALL_NODE_METRICS, _json(NodeMetrics), _node_owns),
    Channel(
        Kind.DEADLETTER,
        ("deadletter", "deadletter"),
        ALL_DEADLETTERS,
        _json(DeadLetter),
        _anyone,
        dead_letter_on_reject=False,
    ),
    # Subscribed only by a `sessions` bridge (`subscriptions`), so no subscription of its own here.
    Channel(Kind.RECEIPTS, ("bridge", "receipts"), None, _json(FrameReceipts), _bridge_owns),
    Channel(Kind.SESSION_OUTCOME, None, None, _bridge_json(SessionOutcome), _anyone),
    Channel(Kind.SESSION_CLOSED, None, None, _bridge_json(SessionClosed), _anyone),
)

BY_KIND: dict[str, Channel] = {c.kind.value: c for c in CHANNELS}
#: Kinds intake never queues (state for the provenance gate only), so no sink handles them.
NEVER_QUEUED: frozenset[str] = frozenset({Kind.RECEIPTS.value})
BY_TOPIC: dict[tuple[str, str], Channel] = {c.topic: c for c in CHANNELS if c.topic is not None}
#: The bridge's MQTT subscriptions, in registry order.
SUBSCRIPTIONS: tuple[str, ...] = tuple(c.subscription for c in CHANNELS if c.subscription is not None)
#: What a `storage` bridge follows besides its share of the frames: rfid events (session owners)
#: and verdicts (which of its frames have one, for re-offers). Neither is queued there.
STORAGE_FOLLOWS: tuple[str, ...] = (ALL_RFID, ALL_VERDICTS)


def subscriptions(role: str, group: str) -> tuple[str, ...]:
    """The MQTT filters of a bridge in `role` (`[cluster]`): the frames shared in `group` unless single."""
    if role == "single":
        return SUBSCRIPTIONS
    frames = shared(group, ALL_FRAMES)
    if role == "storage":
        return (frames, *STORAGE_FOLLOWS)
    if role == "sessions":
        return (*(frames if f == ALL_FRAMES else f for f in SUBSCRIPTIONS), ALL_RECEIPTS)
    raise ValueError(f"unknown bridge role {role!r}")


def stale_subscriptions(role: str, group: str) -> tuple[str, ...]:
    """Filters another role subscribes to that this one must not keep (a persistent session remembers them)."""
    mine = set(subscriptions(role, group))
    every = {f for r in ("single", "sessions", "storage") for f in subscriptions(r, group)}
    return tuple(sorted(every - mine))


def channel_for(info: TopicInfo) -> Channel:
    channel = BY_TOPIC.get((info.scope, info.channel))
    if channel is None:
        raise ContractError(f"the bridge does not store {info.scope} {info.channel} messages")
    return channel


def check_range(decoded: Decoded, payload: bytes | None = None) -> None:
    """Every integer of a JSON message must fit the stores' signed 64 bits (u64 `seq` excepted).

    Why here: the contract admits unbounded integers in places (counters), and a value above
    2**63 passed validation only to make a sink raise OverflowError, which looked transient
    and stopped that sink for everybody. Rejected at intake, it becomes a dead letter.
    With the `payload` it was decoded from, payloads that cannot hold such an integer
    (`may_exceed_i64`) skip the walk over every value.
    """
    if isinstance(decoded, BaseModel) and (payload is None or may_exceed_i64(payload)):
        _check_ints(decoded.model_dump(), "")


#: Runs of 19 or more digits: the only ones that can spell an integer outside the signed 64 bits.
_LONG_DIGITS = re.compile(rb"[0-9]{19,}")


def may_exceed_i64(payload: bytes) -> bool:
    """False when `payload` cannot hold an integer outside the signed 64-bit range.

    Why: `check_range` dumps the decoded model and walks every value (a tenth of intake's
    cost per verdict). An integer literal outside -2**63..2**63-1 is a run of digits worth more
    than 2**63 - 1, so a payload whose every run of 19+ digits is below that cannot hold one
    (a verdict's `capture_ns` has 19 digits and passes here). A run in a string or in a
    float's digits only makes the full check run. Binary frames are not models
    (`check_range` skips them).
    """
    return any(int(run) > I64_MAX for run in _LONG_DIGITS.findall(payload))


def _check_ints(value: object, path: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -I64_MAX - 1 <= value <= I64_MAX and path.rsplit(".", 1)[-1] not in _U64_FIELDS:
            raise ContractError(f"{path or 'value'}: integer out of the 64-bit range the stores hold")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_ints(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for item in value:
            _check_ints(item, path)


def decode_item(kind: str, payload: bytes) -> Decoded:
    """Decode a queued payload (validated at ingest, so errors here mean a corrupt queue)."""
    channel = BY_KIND.get(kind)
    if channel is None:
        raise ContractError(f"unknown queued kind {kind!r}")
    return channel.decode(payload)
