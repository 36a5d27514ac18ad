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

from cloud_bridge.channels import Decoded, Kind
from cloud_bridge.durable_queue import NewItem
from cloud_bridge.intake import RejectReason
from contract.frame import Frame
from contract.messages import RfidEvent, Verdict
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
class _Held:
    item: NewItem
    key: FrameKey


@dataclass
class Decision:
    """What intake does with one accepted message: queue it, refuse it, or hold it."""

    refused: Refused | None = None
    held: bool = False
    #: Held verdicts this message released (its frame arrived): queue them after it.
    released: list[NewItem] = field(default_factory=list)


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
    ) -> None:
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
        self._held: list[_Held] = [
            _Held(NewItem(Kind.VERDICT.value, str(t), bytes(b), int(r), str(src)), (str(d), str(i), int(q)))
            for d, i, q, t, b, r, src in conn.execute("SELECT * FROM held_verdicts ORDER BY rowid")
        ]
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
            return Decision(self._claim(decoded.session_id, decoded.device_id, decoded.patient_ref))
        if kind == Kind.FRAME and isinstance(decoded, Frame):
            return self._frame(decoded, item)
        if kind == Kind.VERDICT and isinstance(decoded, Verdict):
            return self._verdict(decoded, item)
        return Decision()

    def _claim(self, session_id: str | None, device_id: str, patient_ref: str | None) -> Refused | None:
        if session_id is None:
            return None
        owner = self._owners.get(session_id)
        if owner is None:
            if patient_ref is None:
                return None
            self._owners[session_id] = (device_id, patient_ref)
            self._pending.append(
                ("INSERT OR IGNORE INTO session_owners VALUES (?, ?, ?)", (session_id, device_id, patient_ref))
            )
            return None
        if owner[0] != device_id:
            return Refused(RejectReason.SESSION_OWNER, f"session {session_id} belongs to another device")
        if patient_ref is not None and owner[1] != patient_ref:
            return Refused(RejectReason.SESSION_OWNER, f"session {session_id} belongs to another patient_ref")
        return None

    def _frame(self, frame: Frame, item: NewItem) -> Decision:
        refused = self._claim(frame.session_id, frame.device_id, frame.patient_ref)
        if refused is not None:
            return Decision(refused)
        key = key_of(frame)
        if key not in self._frames:
            self._frames[key] = _FrameInfo(frame.session_id, frame.patient_ref, item.received_ns)
            row = (*key[:2], _seq_sql(key[2]), frame.session_id, frame.patient_ref, item.received_ns)
            self._pending.append(("INSERT OR IGNORE INTO frame_keys VALUES (?,?,?,?,?,?,NULL)", row))
        if self._reoffer_ns > 0 and self._frames[key].verdict is None and key not in self._unanswered:
            if len(self._unanswered) >= self._max_unanswered:
                self._unanswered.pop(next(iter(self._unanswered)))
            self._unanswered[key] = _Unanswered(item.payload, item.received_ns)
        released = [h.item for h in self._held if h.key == key]
        if released:
            self._held = [h for h in self._held if h.key != key]
            self._pending.append(
                (
                    "DELETE FROM held_verdicts WHERE device_id=? AND incarnation=? AND seq=?",
                    (*key[:2], _seq_sql(key[2])),
                )
            )
        return Decision(released=released)

    def check_released(self, verdict: Verdict, payload: bytes) -> Refused | None:
        """A held verdict whose frame came: the frame checks (match, one per frame) now apply."""
        return self._match(verdict, payload)

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
            if len(self._held) >= self._max_held:
                return Decision(Refused(RejectReason.VERDICT_NO_FRAME, "no such frame (the hold is full)"))
            self._held.append(_Held(item, key))
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
        self._unanswered.pop(key, None)
        params = (digest, *key[:2], _seq_sql(key[2]))
        self._pending.append(("UPDATE frame_keys SET verdict=? WHERE device_id=? AND incarnation=? AND seq=?", params))
        return None

    def expired(self, now_ns: int) -> list[NewItem]:
        """Held verdicts whose frame did not come in time (the caller dead-letters them)."""
        late = [h for h in self._held if now_ns - h.item.received_ns > self._hold_ns]
        if not late:
            return []
        self._held = [h for h in self._held if now_ns - h.item.received_ns <= self._hold_ns]
        cutoff = now_ns - self._hold_ns
        self._pending.append(("DELETE FROM held_verdicts WHERE received_ns < ?", (cutoff,)))
        return [h.item for h in late]

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
            del self._frames[key]
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
        return len(self._held)

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
