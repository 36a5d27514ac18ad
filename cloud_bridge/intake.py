"""What the bridge accepts: validate an MQTT message through the channel registry and name its kind.

Validation happens before a message is queued, so sinks only ever see valid payloads; a
rejected one becomes a dead letter with a one-line reason. `classify` never raises, whatever
the payload: a decoder that fails with anything but ContractError (a 5,000-digit integer
made `json` raise a plain ValueError) is a rejection too, not a dead ingest thread. The queue
keeps the original bytes; sinks get the decoded record through `decoded_cache.DecodedCache`
(what ingest decoded, reused) or decode it again with `channels.decode_item`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud_bridge.channels import (
    Channel,
    Decoded,
    Kind,
    SessionOutcome,
    channel_for,
    check_range,
    decode_item,
)
from contract.errors import ContractError
from contract.topics import TopicInfo, parse_topic

__all__ = ["Accepted", "Decoded", "Kind", "RejectReason", "Rejected", "SessionOutcome", "classify", "decode_item"]


class RejectReason(StrEnum):
    """Why a message was refused (dead-letter counts are kept per reason)."""

    TOPIC = "topic"
    MALFORMED = "malformed"
    OWNERSHIP = "ownership"
    RANGE = "range"
    #: The decoder failed with something else than ContractError (a bug or a parser limit).
    DECODER = "decoder"
    #: Refused by the provenance rules (`provenance`): session ownership and verdict checks.
    SESSION_OWNER = "session-owner"
    #: Several bridges: a frame's session was claimed by no rfid event within `hold_s`.
    SESSION_UNCLAIMED = "session-unclaimed"
    VERDICT_FLAGGED = "verdict-flagged"
    VERDICT_INCONCLUSIVE = "verdict-inconclusive"
    VERDICT_MODEL = "verdict-model"
    VERDICT_NO_FRAME = "verdict-no-frame"
    VERDICT_MISMATCH = "verdict-mismatch"
    VERDICT_DUPLICATE = "verdict-duplicate"


@dataclass(frozen=True)
class Accepted:
    kind: Kind
    decoded: Decoded
    device_id: str | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str
    device_id: str | None
    #: False for inputs that must not produce a dead letter (a malformed dead letter: no loops).
    dead_letter: bool = True
    category: RejectReason = RejectReason.MALFORMED


#: Distinct valid topics whose parse is remembered (devices x channels; cleared when full).
TOPIC_CACHE_MAX = 8192
_topics: dict[str, tuple[TopicInfo, Channel]] = {}


def _route(topic: str) -> tuple[TopicInfo, Channel]:
    """`parse_topic` and its channel, remembered per topic (a pure function of the string).

    Why: every message of a device comes on the same few topics, and parsing one (split,
    id validation, the channel lookup) was about a fifth of `classify` in the profile. Only
    topics that parse are kept, and the map is bounded, so a flood of made-up topics cannot
    grow it; a rejected topic is parsed again each time (and rejected again).
    """
    hit = _topics.get(topic)
    if hit is not None:
        return hit
    info = parse_topic(topic)
    routed = (info, channel_for(info))
    if len(_topics) >= TOPIC_CACHE_MAX:
        _topics.clear()
    _topics[topic] = routed
    return routed


def classify(topic: str, payload: bytes) -> Accepted | Rejected:
    """Validate a received message; never raises."""
    try:
        info, channel = _route(topic)
    except ContractError as exc:
        return Rejected(str(exc), None, category=RejectReason.TOPIC)
    except Exception as exc:  # a topic parser bug must not stop ingest either
        return Rejected(_describe(exc), None, category=RejectReason.DECODER)
    device_id = info.device_id
    letter = channel.dead_letter_on_reject
    try:
        decoded = channel.decode(payload)
    except ContractError as exc:
        return Rejected(str(exc), device_id, letter, RejectReason.MALFORMED)
    except Exception as exc:
        return Rejected(_describe(exc), device_id, letter, RejectReason.DECODER)
    try:
        channel.owner(info, decoded)
    except ContractError as exc:
        return Rejected(str(exc), device_id, letter, RejectReason.OWNERSHIP)
    try:
        check_range(decoded, payload)
    except ContractError as exc:
        return Rejected(str(exc), device_id, letter, RejectReason.RANGE)
    return Accepted(channel.kind, decoded, device_id)


def _describe(exc: BaseException) -> str:
    """One line, bounded: a parser's message may quote the offending input."""
    text = " ".join(str(exc).split())[:200]
    return f"payload could not be decoded ({type(exc).__name__}: {text})"
