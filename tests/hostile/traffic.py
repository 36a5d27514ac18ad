"""Hostile and valid traffic for the hostile-client suite, built from the contract tests' generators.

Why a module of its own: the generators in tests/contract decide what "hostile" looks like for
one decoder; here the same generators are aimed at a real broker, so each generated message is
paired with the topic a device account may publish it on and with the oracle's verdict (must
the bridge store it or dead-letter it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from cloud_bridge.channels import check_range
from contract import ContractError, Frame, decode_frame, encode_frame, new_session_id
from contract import topics as t
from contract.messages import (
    DeviceState,
    DeviceStatus,
    RfidEvent,
    RfidEventKind,
    SessionEndReason,
    decode_message,
)
from tests.contract.test_frame_codec import hostile_frames
from tests.contract.test_messages_and_topics import HOSTILE_JSON, _pairs, _render, json_scalars

#: The hostile device accounts (each may publish only on its own topics, as the ACL grants).
HOSTILE_DEVICES = ("evil-1", "evil-2")
#: The honest devices whose traffic the hostile ones try to disturb.
GOOD_DEVICES = ("good-1", "good-2")
#: A patient pseudonym of the honest devices' sessions.
GOOD_REF = "0123456789abcdef"


@dataclass(frozen=True)
class Publication:
    """One MQTT message a device account sends."""

    sender: str
    topic: str
    payload: bytes
    retain: bool = False


def status_sample(ts_ns: int, spool_depth: int, session_id: str | None = None) -> DeviceStatus:
    return DeviceStatus(
        state=DeviceState.ONLINE,
        ts_ns=ts_ns,
        firmware="fw-1.2",
        source="mlx",
        spool_depth=spool_depth,
        spool_dropped_frames=0,
        session_id=session_id,
    )


def rfid_sample(device_id: str, session_id: str, *, end: bool, ts_ns: int, seq: int) -> RfidEvent:
    if end:
        return RfidEvent(
            event=RfidEventKind.SESSION_END,
            device_id=device_id,
            session_id=session_id,
            patient_ref=GOOD_REF,
            ts_ns=ts_ns,
            seq=seq,
            frame_count=3,
            reason=SessionEndReason.CARD,
        )
    return RfidEvent(
        event=RfidEventKind.SESSION_START,
        device_id=device_id,
        session_id=session_id,
        patient_ref=GOOD_REF,
        ts_ns=ts_ns,
        seq=seq,
    )


def good_frame(device_id: str, seq: int, session_id: str | None) -> bytes:
    frame = Frame.from_celsius(
        np.full((24, 32), 33.0),
        device_id=device_id,
        seq=seq,
        capture_ns=1_700_000_000_000_000_000 + seq % 1_000_000_000,
        session_id=session_id,
        patient_ref=GOOD_REF if session_id else None,
    )
    return encode_frame(frame)


# --- the oracle -------------------------------------------------------------------------------


def must_be_rejected(pub: Publication) -> bool:
    """True if the contract (or the stores' 64-bit range, or ownership) forbids storing `pub`."""
    channel = pub.topic.rsplit("/", 1)[-1]
    try:
        if channel == t.DeviceChannel.FRAME.value:
            decoded: Any = decode_frame(pub.payload)
        elif channel == t.DeviceChannel.RFID.value:
            decoded = decode_message(pub.payload, RfidEvent)
        else:
            decoded = decode_message(pub.payload, DeviceStatus)
        check_range(decoded)
    except ContractError:
        return True
    except Exception:  # any decoder failure is a rejection the bridge must survive
        return True
    return getattr(decoded, "device_id", pub.sender) != pub.sender


# --- hostile generators -------------------------------------------------------------------


def _mutated_json(draw: st.DrawFn, message: Any, victim_values: dict[str, str]) -> bytes:
    """The contract tests' JSON mutations, plus other devices' ids and session ids."""
    pairs = _pairs(message)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(pairs) - 1))
        key = pairs[index][0]
        action = draw(st.sampled_from(["replace", "replace", "victim", "drop", "duplicate", "extra", "nest", "huge"]))
        if action == "replace":
            pairs[index] = (key, draw(json_scalars))
        elif action == "victim" and key in victim_values:
            pairs[index] = (key, victim_values[key])
        elif action == "victim":
            pairs[index] = (key, draw(st.sampled_from(HOSTILE_JSON)))
        elif action == "drop":
            del pairs[index]
            if not pairs:
                break
        elif action == "duplicate":
            pairs.append((key, draw(st.one_of(st.just(pairs[index][1]), json_scalars))))
        elif action == "extra":
            pairs.append((draw(st.text(max_size=10)), draw(json_scalars)))
        elif action == "nest":
            depth = draw(st.integers(1, 40))
            pairs[index] = (key, "[" * depth + pairs[index][1] + "]" * depth)
        else:
            pairs[index] = (key, json.dumps("x" * draw(st.integers(65, 60_000))))
    return _render(pairs)


#: What a hostile device account sends: mutated frames, valid frames of another device, rfid, status.
KINDS = ("frame", "foreign_frame", "rfid", "status")


@st.composite
def hostile_publications(draw: st.DrawFn, victim_session: str, kind: str) -> Publication:
    """A message of `kind` one hostile device account may send (maybe one the contract accepts)."""
    sender = draw(st.sampled_from(HOSTILE_DEVICES))
    victim = {"device_id": json.dumps(GOOD_DEVICES[0]), "session_id": json.dumps(victim_session)}
    if kind == "frame":
        return Publication(sender, t.frame_topic(sender), draw(hostile_frames()))
    if kind == "foreign_frame":  # a perfectly valid frame, but of another device
        seq = draw(st.integers(0, 2**63 - 1))
        return Publication(sender, t.frame_topic(sender), good_frame(GOOD_DEVICES[0], seq, victim_session))
    if kind == "rfid":
        sample = rfid_sample(sender, new_session_id(), end=draw(st.booleans()), ts_ns=5, seq=1)
        return Publication(sender, t.rfid_topic(sender), _mutated_json(draw, sample, victim))
    sample_status = status_sample(ts_ns=7, spool_depth=3, session_id=new_session_id())
    return Publication(sender, t.status_topic(sender), _mutated_json(draw, sample_status, victim))


def hostile(victim_session: str, kind: str) -> st.SearchStrategy[Publication]:
    """Only the hostile ones: a mutation that happens to stay valid is not what this suite tests."""
    return hostile_publications(victim_session, kind).filter(must_be_rejected)


@st.composite
def hostile_mix(draw: st.DrawFn, victim_session: str, per_kind: int) -> list[Publication]:
    """`per_kind` distinct hostile messages of every kind, in a drawn order.

    Why not one list of random kinds: hypothesis starts from its simplest example, which would
    be all frames; this way every run covers every kind.
    """
    pubs: list[Publication] = []
    for kind in KINDS:
        unique = st.lists(hostile(victim_session, kind), min_size=per_kind, max_size=per_kind, unique_by=_key)
        pubs += draw(unique)
    return draw(st.permutations(pubs))


def _key(pub: Publication) -> tuple[str, bytes]:
    return pub.topic, pub.payload
