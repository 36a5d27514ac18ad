"""Record integrity at intake: who owns a session, and which verdicts the bridge may store.

Why at intake: once an item is queued every sink stores it, so a session taken over by another
device, or a verdict for a frame that never existed, must be refused before the commit. The
rules (issue 12.3, 12.4):

- a session belongs to the device and `patient_ref` that first named it (its `session_start`,
  or failing that its first frame or `session_end`); an rfid event or a frame naming that
  session from another device, or with another patient, is a dead letter;
- a verdict is stored only if its `flagged` equals `probability >= threshold`, its `inconclusive`
  equals its own rule (band and spread limit, `contract.session_rule.is_inconclusive`), its model is one
  the site approved, and it matches a frame the bridge holds (device, incarnation, seq, session,
  patient); exactly one verdict per frame is stored, later ones are dead letters;
- a verdict that arrives before its frame is held (durably, bounded in count and time) and
  released when the frame comes, or dead-lettered when its time is up.

Several bridges (`[cluster]`, docs/scaling.md): a `sessions` bridge learns the frames other
bridges committed from their receipts (`FrameReceipts`), which admit verdicts like the frames
themselves; a `storage` bridge follows rfid events and verdicts as state only (never queued,
never dead-lettered: the sessions bridge does that). In both roles only rfid events claim a
session (`rfid_claims_only`), because every bridge sees them in the broker's one order; a frame
naming an unclaimed session is held like an early verdict, released by the claim, or, when its
time is up, by the owner the archive knows (`owner_lookup`), else refused.

State lives in the bridge queue's SQLite file, written in the same transaction as the items
it admits (`DurableQueue.append(..., state=...)`), so it survives a restart and never claims
an item that was not committed.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_bridge.channels import Decoded, Kind, decode_item
from cloud_bridge.durable_queue import NewItem
from cloud_bridge.intake import RejectReason
from contract.frame import Frame
from contract.messages import FrameReceipts, RfidEvent, Verdict
from contract.model import shipped
from contract.session_rule import is_inconclusive

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS session_owners (
    session_id  TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    patient_ref TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS frame_keys (
    device_id   TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    session_id  TEXT,
    patient_ref TEXT,
    received_ns INTEGER NOT NULL,
    verdict     TEXT,
    PRIMARY KEY (device_id, incarnation, seq)
);
CREATE TABLE IF NOT EXISTS held_frames (
    session_id  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    source      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS held_verdicts (
    device_id   TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    source      TEXT NOT NULL
);
"""


def shipped_model_version() -> str:
    """The version of the model this release ships (the default of `approved_models`)."""
    return shipped.shipped_model_version()


@dataclass(frozen=True)
class Refused:
    reason: RejectReason
    detail: str


FrameKey = tuple[str, str, int]
#: `_claim`'s answer for a session nobody claimed yet when only rfid events may claim (held, not refused).
_UNCLAIMED = Refused(RejectReason.SESSION_UNCLAIMED, "no rfid event claimed its session")
#: Frames of unclaimed sessions one device may have waiting at most (several bridges): its rfid
#: event normally comes first, so a device with this many waiting is naming sessions nobody opens.
MAX_HELD_FRAMES_PER_SOURCE = 500
_NO_FRAME_IN_TIME = Refused(RejectReason.VERDICT_NO_FRAME, "its frame did not arrive in time")


def inconclusive_inconsistency(v: Verdict) -> str | None:
    """Why a verdict's inconclusive fields contradict each other, or None when they agree."""
    if (v.band_low is None) != (v.band_high is None):
        return "band_low and band_high must be given together"
    if v.band_low is not None and v.band_high is not None and not v.band_low <= v.threshold <= v.band_high:
        return "the inconclusive band does not contain the threshold"
    if (v.max_member_spread is not None) and v.member_spread is None:
        return "max_member_spread without member_spread"
    expected = is_inconclusive(v.probability, v.member_spread, v.band_low, v.band_high, v.max_member_spread)
    if v.inconclusive != expected:
        return f"inconclusive {v.inconclusive} contradicts the verdict's own band and spread limit"
    return None


def _session_of(item: NewItem) -> str | None:
    """The session a queued item names (a decode: only on the rare paths, restart and expiry)."""
    session_id = getattr(decode_item(item.kind, item.payload), "session_id", None)
    return session_id if isinstance(session_id, str) else None


def _seq_sql(seq: int) -> int:
    return seq if seq < 2**63 else seq - 2**64


def key_of(record: Frame | Verdict) -> FrameKey:
    """(device, incarnation, seq): a re-imaged device restarts seq at 0, so seq alone is not a key."""
    return (record.device_id, record.incarnation, record.seq)


@dataclass
class _FrameInfo:
    session_id: str | None
    patient_ref: str | None
    received_ns: int
    #: sha256 of the stored verdict's payload: its identical replay is admitted, another is not.
    verdict: str | None = None


@dataclass
class _Unanswered:
    """A frame without a verdict yet: its payload, when it came or was last offered, offers made."""

    payload: bytes
    last_ns: int
    offers: int = 0


@dataclass
class _HeldFrame:
    """A frame naming a session nobody claimed yet (several bridges only)."""

    item: NewItem
    session_id: str


#: Who owns a session according to the archive: (device_id, patient_ref), or None.
OwnerLookup = Callable[[str], tuple[str, str] | None]


@dataclass
class Decision:
    """What intake does with one accepted message: queue it, refuse it, hold it, or only learn from it."""

    refused: Refused | None = None
    held: bool = False
    #: The message is state for the gate alone (receipts; rfid and verdicts at a storage bridge):
    #: committed as state and acknowledged, never queued and never a dead letter.
    state_only: bool = False
    #: Held items this message released (checked already): queue them after it.
    released: list[NewItem] = field(default_factory=list)
    #: Held items this message released that the checks then refused: dead letters.
    rejected: list[tuple[NewItem, Refused]] = field(default_factory=list)

    def take(self, other: Decision) -> None:
        self.released.extend(other.released)
        self.rejected.extend(other.rejected)


def _count_up(counts: dict[str, int], session_id: str) -> None:
    counts[session_id] = counts.get(session_id, 0) + 1


def _count_down(counts: dict[str, int], session_id: str) -> None:
    """One less for the session; the entry goes at zero (the maps stay as small as what is pending)."""
    left = counts.get(session_id, 0) - 1
    if left > 0:
        counts[session_id] = left
    else:
        counts.pop(session_id, None)


class Provenance:
    """The intake gate; used by the ingest thread only (not thread-safe on purpose)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        approved_models: frozenset[str],
        hold_s: float,
        max_held: int,
        frame_memory_s: float,
        reoffer_s: float = 0.0,
        max_reoffers: int = 0,
        max_unanswered: int = 50_000,
        rfid_claims_only: bool = False,
        storage_role: bool = False,
        owner_lookup: OwnerLookup | None = None,
    ) -> None:
        """`rfid_claims_only` and `storage_role` as a `[cluster]` role sets them (module docstring)."""
        self._rfid_claims_only = rfid_claims_only or storage_role
        self._storage_role = storage_role
        self._owner_lookup = owner_lookup
        self._reoffer_ns = int(reoffer_s * 1e9)
        self._max_reoffers = max_reoffers
        self._max_unanswered = max_unanswered
        #: Frames without a verdict yet (received since this start): payload, last offer, offers made.
        self._unanswered: dict[FrameKey, _Unanswered] = {}
        self._approved = approved_models
        self._hold_ns = int(hold_s * 1e9)
        self._max_held = max_held
        self._memory_ns = int(frame_memory_s * 1e9)
        conn.executescript(SCHEMA_SQL)
        self._owners: dict[str, tuple[str, str]] = {
            str(s): (str(d), str(p)) for s, d, p in conn.execute("SELECT * FROM session_owners")
        }
        self._frames: dict[FrameKey, _FrameInfo] = {
            (str(d), str(i), int(q) if q >= 0 else q + 2**64): _FrameInfo(s, p, int(r), None if v is None else str(v))
            for d, i, q, s, p, r, v in conn.execute("SELECT * FROM frame_keys ORDER BY received_ns")
        }
        #: Sessions with frames in hand still without a verdict, and how many (the stage waits for them).
        self._awaiting: dict[str, int] = {}
        for info in self._frames.values():
            if info.verdict is None and info.session_id is not None:
                _count_up(self._awaiting, info.session_id)
        #: Verdicts matched but not yet committed: `after_commit` lowers `_awaiting` for them.
        self._answered_sessions: list[str] = []
        #: Verdicts waiting for their frame, by frame key, in arrival order (expiry looks at the front only).
        self._held: dict[FrameKey, list[NewItem]] = {}
        self._held_count = 0
        #: Sessions with a verdict or frame held, and how many: the session stage waits for them.
        self._held_sessions: dict[str, int] = {}
        #: Releases decided but not yet committed: `after_commit` lowers `_held_sessions` for them.
        self._released_sessions: list[str] = []
        for d, i, q, t, b, r, src in conn.execute("SELECT * FROM held_verdicts ORDER BY rowid"):
            item = NewItem(Kind.VERDICT.value, str(t), bytes(b), int(r), str(src))
            self._keep_held(item, (str(d), str(i), int(q) if q >= 0 else q + 2**64), _session_of(item))
        self._held_frames: list[_HeldFrame] = [
            _HeldFrame(NewItem(Kind.FRAME.value, str(t), bytes(b), int(r), str(src)), str(sid))
            for sid, t, b, r, src in conn.execute("SELECT * FROM held_frames ORDER BY rowid")
        ]
        #: Held frames per source (device): one device cannot fill the hold (MAX_HELD_FRAMES_PER_SOURCE).
        self._held_by_source: dict[str, int] = {}
        for held in self._held_frames:
            self._count_session(held.session_id, +1)
            self._held_by_source[held.item.source] = self._held_by_source.get(held.item.source, 0) + 1
        #: State changes decided since the last commit, in order: (SQL, parameters).
        self._pending: list[tuple[str, tuple[object, ...]]] = []

    @property
    def knows_owners(self) -> bool:
        return bool(self._owners)

    def seed_owners(self, conn: sqlite3.Connection, owners: list[tuple[str, str, str]]) -> None:
        """A queue file from before ownership was kept: take the owners the archive already has."""
        if self._owners:
            return
        conn.executemany("INSERT OR IGNORE INTO session_owners VALUES (?, ?, ?)", owners)
        for session_id, device_id, patient_ref in owners:
            self._owners.setdefault(session_id, (device_id, patient_ref))

    # -- decisions -------------------------------------------------------------------------
    def decide(self, kind: str, decoded: Decoded, item: NewItem) -> Decision:
        if kind == Kind.RFID and isinstance(decoded, RfidEvent):
            return self._rfid(decoded)
        if kind == Kind.FRAME and isinstance(decoded, Frame):
            return self._frame(decoded, item)
        if kind == Kind.VERDICT and isinstance(decoded, Verdict):
            if self._storage_role:
                return self._followed_verdict(decoded)
            return self._verdict(decoded, item)
        if kind == Kind.RECEIPTS and isinstance(decoded, FrameReceipts):
            return self._receipts(decoded, item)
        return Decision()

    def _rfid(self, event: RfidEvent) -> Decision:
        decision = Decision(self._claim(event.session_id, event.device_id, event.patient_ref, by_rfid=True))
        if decision.refused is None:
            decision.take(self._release_frames(event.session_id))
        if self._storage_role:  # the sessions bridge stores rfid events and dead-letters refused ones
            return Decision(state_only=True, released=decision.released, rejected=decision.rejected)
        return decision

    def _claim(
        self, session_id: str | None, device_id: str, patient_ref: str | None, *, by_rfid: bool = False
    ) -> Refused | None:
        if session_id is None:
            return None
        owner = self._owners.get(session_id)
        if owner is None:
            if patient_ref is None:
                return None
            if self._rfid_claims_only and not by_rfid:
                return _UNCLAIMED
            self._own(session_id, device_id, patient_ref)
            return None
        if owner[0] != device_id:
            return Refused(RejectReason.SESSION_OWNER, f"session {session_id} belongs to another device")
        if patient_ref is not None and owner[1] != patient_ref:
            return Refused(RejectReason.SESSION_OWNER, f"session {session_id} belongs to another patient_ref")
        return None

    def _own(self, session_id: str, device_id: str, patient_ref: str) -> None:
        self._owners[session_id] = (device_id, patient_ref)
        self._pending.append(
            ("INSERT OR IGNORE INTO session_owners VALUES (?, ?, ?)", (session_id, device_id, patient_ref))
        )

    def _frame(self, frame: Frame, item: NewItem) -> Decision:
        refused = self._claim(frame.session_id, frame.device_id, frame.patient_ref)
        if refused is _UNCLAIMED and frame.session_id is not None:
            return self._hold_frame(frame.session_id, item)
        if refused is not None:
            return Decision(refused)
        key = key_of(frame)
        self._record(key, frame.session_id, frame.patient_ref, item.received_ns)
        if self._reoffer_ns > 0 and key not in self._unanswered and self._unverdicted(key):
            if len(self._unanswered) >= self._max_unanswered:
                self._unanswered.pop(next(iter(self._unanswered)))
            self._unanswered[key] = _Unanswered(item.payload, item.received_ns)
        return self._release_verdicts(key)

    def _unverdicted(self, key: FrameKey) -> bool:
        info = self._frames.get(key)  # a storage bridge keeps no frame keys: unknown there
        return info is None or info.verdict is None

    def _record(self, key: FrameKey, session_id: str | None, patient_ref: str | None, received_ns: int) -> None:
        """Remember a frame the bridge (or, from a receipt, another bridge) committed."""
        if key in self._frames or self._storage_role:  # a storage bridge matches no verdicts
            return
        self._frames[key] = _FrameInfo(session_id, patient_ref, received_ns)
        if session_id is not None:
            _count_up(self._awaiting, session_id)
        row = (*key[:2], _seq_sql(key[2]), session_id, patient_ref, received_ns)
        self._pending.append(("INSERT OR IGNORE INTO frame_keys VALUES (?,?,?,?,?,?,NULL)", row))

    def _keep_held(self, item: NewItem, key: FrameKey, session_id: str | None) -> None:
        self._held.setdefault(key, []).append(item)
        self._held_count += 1
        self._count_session(session_id, +1)

    def _count_session(self, session_id: str | None, step: int) -> None:
        """Count a held item for its session (the stage waits while any is held); lower only after the commit."""
        if session_id is None:
            return
        if step > 0:
            _count_up(self._held_sessions, session_id)
        else:
            self._released_sessions.append(session_id)

    def waits_for(self, session_id: str) -> bool:
        """True while a verdict or frame of this session is held (the session stage asks, from its thread).

        Why it is safe across threads: a hold is counted as soon as it is decided, and a release
        only once its commit put the released items in the queue (`after_commit`), so a session
        judged after this said False finds every released verdict in the queue. One dict lookup
        (atomic under the GIL); the ingest thread is the only writer.
        """
        return self._held_sessions.get(session_id, 0) > 0

    def awaits_verdicts(self, session_id: str) -> bool:
        """True while a frame of this session is in hand (this bridge's, or another's by its
        receipt) and its verdict is not committed yet (the session stage asks, from its thread).

        Why: under overload the nodes answer seconds late, and a session's verdicts can pause
        longer than the grace (`bench e2e --bridges 2` at 1,000 frames/s: verdicts 22 s late, 0 of
        20 sessions judged from all their frames). A count per session, lowered only after the
        verdict's commit (`after_commit`), as for `waits_for`; the stage bounds the wait.
        """
        return self._awaiting.get(session_id, 0) > 0

    def _answered(self, session_id: str | None) -> None:
        if session_id is not None:
            self._answered_sessions.append(session_id)

    def after_commit(self) -> None:
        """The commit of the last decisions succeeded: their releases now count (see `waits_for`)."""
        answered, self._answered_sessions = self._answered_sessions, []
        for session_id in answered:
            _count_down(self._awaiting, session_id)
        released, self._released_sessions = self._released_sessions, []
        for session_id in released:
            _count_down(self._held_sessions, session_id)

    def _release_verdicts(self, key: FrameKey) -> Decision:
        """Held verdicts whose frame is now known: the frame checks (match, one per frame) apply."""
        if not self._held:
            return Decision()
        released = self._held.pop(key, None)
        if not released:
            return Decision()
        self._held_count -= len(released)
        self._pending.append(
            ("DELETE FROM held_verdicts WHERE device_id=? AND incarnation=? AND seq=?", (*key[:2], _seq_sql(key[2])))
        )
        decision = Decision()
        for item in released:
            verdict = decode_item(item.kind, item.payload)
            assert isinstance(verdict, Verdict)  # only verdicts are held under a frame key
            self._count_session(verdict.session_id, -1)
            refused = self._match(verdict, item.payload)
            if refused is None:
                decision.released.append(item)
            else:
                decision.rejected.append((item, refused))
        return decision

    def _hold_frame(self, session_id: str, item: NewItem) -> Decision:
        if len(self._held_frames) >= self._max_held:
            detail = "no rfid event claimed its session (the hold is full)"
            return Decision(Refused(RejectReason.SESSION_UNCLAIMED, detail))
        if self._held_by_source.get(item.source, 0) >= MAX_HELD_FRAMES_PER_SOURCE:
            # One device naming made-up sessions must not fill the hold the others' frames need.
            detail = f"no rfid event claimed its session (this device has {MAX_HELD_FRAMES_PER_SOURCE} frames waiting)"
            return Decision(Refused(RejectReason.SESSION_UNCLAIMED, detail))
        self._held_by_source[item.source] = self._held_by_source.get(item.source, 0) + 1
        self._held_frames.append(_HeldFrame(item, session_id))
        self._count_session(session_id, +1)
        row = (session_id, item.topic, item.payload, item.received_ns, item.source)
        self._pending.append(("INSERT INTO held_frames VALUES (?,?,?,?,?)", row))
        return Decision(held=True)

    def _release_frames(self, session_id: str) -> Decision:
        """Held frames of a session just claimed: they now go through the frame checks."""
        if not self._held_frames:
            return Decision()
        mine = [h for h in self._held_frames if h.session_id == session_id]
        if not mine:
            return Decision()
        self._held_frames = [h for h in self._held_frames if h.session_id != session_id]
        for held in mine:
            self._unhold_frame(held)
        self._pending.append(("DELETE FROM held_frames WHERE session_id=?", (session_id,)))
        decision = Decision()
        for held in mine:
            decision.take(self._admit_held_frame(held.item))
        return decision

    def _admit_held_frame(self, item: NewItem) -> Decision:
        frame = decode_item(item.kind, item.payload)
        assert isinstance(frame, Frame)
        outcome = self._frame(frame, item)
        if outcome.refused is not None:
            return Decision(rejected=[(item, outcome.refused)])
        if outcome.held:  # cannot happen: its session was just claimed; never drop it silently
            return Decision(rejected=[(item, Refused(RejectReason.SESSION_UNCLAIMED, "its session is unclaimed"))])
        return Decision(released=[item, *outcome.released], rejected=outcome.rejected)

    def _receipts(self, receipts: FrameReceipts, item: NewItem) -> Decision:
        """Another bridge committed these frames: they admit verdicts as if this bridge held them.

        The storage bridge checked each frame's session owner before it committed it, against
        the same rfid claims, so a mismatch here means the two disagree: logged as a dead letter
        (the frame is stored there), and its verdicts will not be admitted.
        """
        decision = Decision(state_only=True)
        for group in receipts.groups:
            refused = self._claim(group.session_id, group.device_id, group.patient_ref, by_rfid=True)
            if refused is not None:
                detail = f"receipt of {receipts.bridge_id} for {group.device_id}: {refused.detail}"
                decision.rejected.append((item, Refused(refused.reason, detail)))
                continue
            for seq in group.seqs:
                key = (group.device_id, group.incarnation, seq)
                self._record(key, group.session_id, group.patient_ref, item.received_ns)
                decision.take(self._release_verdicts(key))
        return decision

    def _followed_verdict(self, v: Verdict) -> Decision:
        """A storage bridge: a verdict for one of its frames ends that frame's re-offers (nothing stored)."""
        if v.flagged == (v.probability >= v.threshold) and v.model_version in self._approved:
            self._unanswered.pop(key_of(v), None)
        return Decision(state_only=True)

    def _verdict(self, v: Verdict, item: NewItem) -> Decision:
        if v.flagged != (v.probability >= v.threshold):
            return Decision(Refused(RejectReason.VERDICT_FLAGGED, "flagged contradicts probability >= threshold"))
        inconsistent = inconclusive_inconsistency(v)
        if inconsistent is not None:
            return Decision(Refused(RejectReason.VERDICT_INCONCLUSIVE, inconsistent))
        if v.model_version not in self._approved:
            return Decision(Refused(RejectReason.VERDICT_MODEL, f"model {v.model_version!r} is not approved here"))
        key = key_of(v)
        if key not in self._frames:
            if self._held_count >= self._max_held:
                return Decision(Refused(RejectReason.VERDICT_NO_FRAME, "no such frame (the hold is full)"))
            self._keep_held(item, key, v.session_id)
            row = (*key[:2], _seq_sql(key[2]), item.topic, item.payload, item.received_ns, item.source)
            self._pending.append(("INSERT INTO held_verdicts VALUES (?,?,?,?,?,?,?)", row))
            return Decision(held=True)
        return Decision(self._match(v, item.payload))

    def _match(self, v: Verdict, payload: bytes) -> Refused | None:
        key = key_of(v)
        info = self._frames.get(key)
        if info is None:
            return Refused(RejectReason.VERDICT_NO_FRAME, "no such frame")
        if (info.session_id, info.patient_ref) != (v.session_id, v.patient_ref):
            return Refused(RejectReason.VERDICT_MISMATCH, "session or patient_ref differs from the frame's")
        digest = hashlib.sha256(payload).hexdigest()
        if info.verdict == digest:
            return None  # a redelivery of the stored verdict: the sinks overwrite its own rows
        if info.verdict is not None:
            return Refused(RejectReason.VERDICT_DUPLICATE, "the frame has another verdict stored already")
        info.verdict = digest
        self._answered(info.session_id)
        self._unanswered.pop(key, None)
        params = (digest, *key[:2], _seq_sql(key[2]))
        self._pending.append(("UPDATE frame_keys SET verdict=? WHERE device_id=? AND incarnation=? AND seq=?", params))
        return None

    def expired(self, now_ns: int) -> Decision:
        """Held items whose time is up: verdicts without their frame are refused; frames of an
        unclaimed session take the owner the archive knows (`owner_lookup`), else are refused."""
        cutoff = now_ns - self._hold_ns
        decision = Decision()
        late = self._late_verdicts(cutoff)
        if late:
            self._pending.append(("DELETE FROM held_verdicts WHERE received_ns < ?", (cutoff,)))
            decision.rejected.extend((item, _NO_FRAME_IN_TIME) for item in late)
        # Held frames are in arrival order: the late ones are at the front (no scan of all of them).
        first_kept = next((k for k, h in enumerate(self._held_frames) if h.item.received_ns >= cutoff), None)
        late_frames = self._held_frames[: len(self._held_frames) if first_kept is None else first_kept]
        if late_frames:
            del self._held_frames[: len(late_frames)]
            self._pending.append(("DELETE FROM held_frames WHERE received_ns < ?", (cutoff,)))
            for held in late_frames:
                self._unhold_frame(held)
                decision.take(self._late_frame(held))
        return decision

    def _unhold_frame(self, held: _HeldFrame) -> None:
        self._count_session(held.session_id, -1)
        left = self._held_by_source.get(held.item.source, 0) - 1
        if left > 0:
            self._held_by_source[held.item.source] = left
        else:
            self._held_by_source.pop(held.item.source, None)

    def _late_verdicts(self, cutoff: int) -> list[NewItem]:
        """Held verdicts received before `cutoff`, taken out; from the front of the arrival order only.

        Why the front: with several bridges a sessions bridge may hold tens of thousands of
        verdicts while a storage bridge restarts, and this runs on every ingest batch.
        """
        late: list[NewItem] = []
        emptied: list[FrameKey] = []
        for key, items in self._held.items():
            if items[0].received_ns >= cutoff:
                break
            keep = [i for i in items if i.received_ns >= cutoff]
            late += [i for i in items if i.received_ns < cutoff]
            if keep:
                self._held[key] = keep
            else:
                emptied.append(key)
        for key in emptied:
            del self._held[key]
        self._held_count -= len(late)
        for item in late:
            self._count_session(_session_of(item), -1)
        return late

    def _late_frame(self, held: _HeldFrame) -> Decision:
        if held.session_id not in self._owners and self._owner_lookup is not None:
            owner = self._owner_lookup(held.session_id)
            if owner is not None:
                self._own(held.session_id, *owner)
        if held.session_id not in self._owners:
            detail = "no rfid event claimed its session in time"
            return Decision(rejected=[(held.item, Refused(RejectReason.SESSION_UNCLAIMED, detail))])
        return self._admit_held_frame(held.item)

    def forget_old(self, now_ns: int) -> None:
        """Frame keys older than `frame_memory_s` are forgotten (memory and table stay bounded).

        Why from the front only: `_frames` is in arrival order (loaded ordered by received_ns,
        then appended as frames come), so the old keys are its first ones. Scanning all of it
        on every ingest batch cost O(frames remembered): with an hour remembered at 1,000
        frames/s that is 3.6 M entries per batch. A wall clock stepped back leaves a few keys
        behind a newer one; they go when it does (later by at most the step).
        """
        cutoff = now_ns - self._memory_ns
        old: list[FrameKey] = []
        for key, info in self._frames.items():
            if info.received_ns >= cutoff:
                break
            old.append(key)
        for key in old:
            info = self._frames.pop(key)
            if info.verdict is None and info.session_id is not None:
                _count_down(self._awaiting, info.session_id)
        if old:
            self._pending.append(("DELETE FROM frame_keys WHERE received_ns < ?", (cutoff,)))

    def due_reoffers(self, now_ns: int) -> list[tuple[str, bytes]]:
        """Frames still without a verdict `reoffer_s` after they came (or after their last offer):
        (device, frame payload) to offer the inference nodes again, at most `max_reoffers` times."""
        # `_unanswered` is kept in order of `last_ns` (arrival order, and an offered frame moves to
        # the end), so the due ones are its first ones: no scan of every frame waiting once a second.
        due: list[tuple[str, bytes]] = []
        taken: list[tuple[FrameKey, _Unanswered]] = []
        for key, entry in self._unanswered.items():
            if now_ns - entry.last_ns < self._reoffer_ns:
                break
            taken.append((key, entry))
        for key, entry in taken:
            del self._unanswered[key]
            if entry.offers >= self._max_reoffers:
                continue
            entry.last_ns, entry.offers = now_ns, entry.offers + 1
            self._unanswered[key] = entry
            due.append((key[0], entry.payload))
        return due

    @property
    def held(self) -> int:
        return self._held_count + len(self._held_frames)

    def take_writes(self) -> Callable[[sqlite3.Connection], None] | None:
        """The state changes decided since the last call, as one function run inside the commit."""
        writes, self._pending = self._pending, []
        if not writes:
            return None

        def run(conn: sqlite3.Connection) -> None:
            # Consecutive writes of one statement go in one executemany (same order, same
            # transaction): one execute per frame and per verdict was the most frequent call.
            for sql, group in itertools.groupby(writes, key=operator.itemgetter(0)):
                conn.executemany(sql, [params for _, params in group])

        return run
