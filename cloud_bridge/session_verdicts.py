"""The session stage: turns ended sessions into session verdicts once their frame verdicts are in.

An explicit stage of the queue, like a sink: it drains the queue's rfid and verdict items
after its own cursor (`STAGE_NAME`), gets each record from the shared decoded cache (the one
ingest validated; no second decode in the common case), and holds, per session it has seen
and not yet judged, the session's start/end and its frame verdicts (the contract's `Verdict`,
which the rule in `session_rule` is written against). It writes nothing itself: a result is
queued as an item (`SessionOutcome`, or `SessionClosed` for a session that never got a frame
verdict), from which the archive sink (the one writer of the archive), the other sinks and
the publisher store and send it.

A session is complete when its `session_end` is in and either every frame the device
reported has a verdict, or `grace_s` passed since its end and since its latest verdict (late
verdicts still coming extend it) and intake has no frame of it still without a verdict (both
bounded by `max_wait_s`), intake holds none of its
verdicts (several bridges: they wait there for their frame's receipt) and the stage has read
everything queued up to that moment. Restart: what the stage held was in memory; the archive
holds every rfid/verdict item the archive sink confirmed, so the stage waits until the
archive has caught up with everything queued before the restart, reads the sessions without
a verdict from it once, and continues with the queue after that point. A crash delays a
verdict, never loses it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.channels import Decoded, Kind, SessionClosed, SessionOutcome, decode_item, expect
from cloud_bridge.config import SessionSettings
from cloud_bridge.durable_queue import Batch, DurableQueue, NewItem, QueuedItem
from cloud_bridge.erasure_tombstones import ErasedIds
from contract.messages import RfidEvent, RfidEventKind, SessionVerdict, Verdict
from contract.session_rule import RULE_NAME, combine
from contract.topics import session_verdict_topic

log = logging.getLogger(__name__)

#: The stage's cursor in the queue.
STAGE_NAME = "sessions"
STAGE_KINDS = frozenset({Kind.RFID.value, Kind.VERDICT.value})
_DONE_MEMORY = 10_000
_BATCH = 2000
#: After a step that read everything queued, the stage waits this long before reading again.
#: Why: it read and confirmed its cursor (a write transaction) after every ingest commit, so
#: at 200 frames/s it ran ~400 tiny steps a second, 9% of a core (docs/performance.md) for
#: results nobody waits for in milliseconds (sessions are judged `grace_s`, 5 s, after their
#: end). Paced, each step takes what 50 ms brought; with more waiting (a backlog) it goes on at once.
PACE_S = 0.05


@dataclass
class _Session:
    device_id: str | None = None
    patient_ref: str | None = None
    started_ns: int | None = None
    ended_ns: int | None = None
    frames_reported: int | None = None
    #: One verdict per frame (device, seq): a redelivered verdict replaces its own.
    verdicts: dict[tuple[str, int], Verdict] = field(default_factory=dict)
    #: monotonic deadlines, set when the end is seen.
    deadline: float = 0.0
    give_up: float = 0.0
    #: The queue's last id when the grace period ran out: judge once the stage read up to it.
    mark: int | None = None


class PendingSessionVerdicts:
    """Sessions seen but not yet judged, with their frame verdicts; judged ones are queued as results."""

    name = STAGE_NAME

    def __init__(
        self,
        queue: DurableQueue,
        settings: SessionSettings,
        *,
        archive_path: Path,
        archive_sink: str,
        decode: Callable[[str, bytes], Decoded] = decode_item,
        erased: ErasedIds | None = None,
        held_at_intake: Callable[[str], bool] | None = None,
        awaiting_verdicts: Callable[[str], bool] | None = None,
    ) -> None:
        """`held_at_intake(session_id)`: True while intake holds a verdict or frame of the session
        (several bridges: a verdict waits there for its frame's receipt), so it is not judged yet.
        `awaiting_verdicts(session_id)`: True while intake has frames of the session without a
        committed verdict (the nodes are behind); the stage waits for them up to `max_wait_s`."""
        self._held_at_intake = held_at_intake
        self._awaiting_verdicts = awaiting_verdicts
        self._queue = queue
        #: Erased patients: a session of theirs still in memory is dropped, never judged.
        self._erased = erased
        self._settings = settings
        self._archive_path = archive_path
        self._archive_sink = archive_sink
        self._decode = decode
        self._sessions: dict[str, _Session] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._startup_mark: int | None = queue.last_id
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.published = 0
        self.closed_without_verdict = 0
        self._thread = threading.Thread(target=self._run, name="session-stage", daemon=True)

    def start(self) -> PendingSessionVerdicts:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.wake()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> list[str]:
        """Ended sessions still waiting for their verdict."""
        with self._lock:
            return sorted(sid for sid, s in self._sessions.items() if s.ended_ns is not None)

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                mark = self._startup_mark
                if mark is not None and not self._resume():
                    # Woken by the archive sink's confirm (waiting for new data here returned at
                    # once while the archive was behind: a busy loop until it caught up).
                    self._queue.wait_confirmed(self._archive_sink, mark, timeout=0.2, stop=self._stop)
                    continue
                moved, full = self._step()
            except Exception:
                log.exception("session stage step failed; retrying")
                self._stop.wait(1.0)
                continue
            if not moved:
                self._queue.wait_for_data(self.name, timeout=0.2, stop=self._stop)
            elif not full:
                self._stop.wait(PACE_S)

    def step(self) -> bool:
        """Read one batch, take it in, judge what is complete; True if the cursor moved."""
        return self._step()[0]

    def _step(self) -> tuple[bool, bool]:
        """`step`, and whether more is waiting after what it read (a backlog: no pause then)."""
        batch = self._queue.read(self.name, max_items=_BATCH, kinds=STAGE_KINDS)
        now = time.monotonic()
        for item in batch.items:
            self._take(item, now)
        moved = batch.end_id > self._queue.cursor(self.name)
        if moved:
            self._queue.confirm(batch)
        self._judge_due(time.monotonic())
        return moved, batch.end_id < self._queue.last_id

    def _take(self, item: QueuedItem, now: float) -> None:
        decoded = self._decode(item.kind, item.payload)
        if item.kind == Kind.RFID:
            self._take_event(expect(decoded, RfidEvent), now)
        elif item.kind == Kind.VERDICT:
            verdict = expect(decoded, Verdict)
            if verdict.session_id is not None and verdict.session_id not in self._done:
                session = self._session(verdict.session_id)
                session.verdicts[(verdict.device_id, verdict.seq)] = verdict
                if session.ended_ns is not None:
                    # Late verdicts still coming: the grace runs from the latest one, not from the end.
                    # Why: under overload (several bridges at 1,000 frames/s on 2 cores) the node's
                    # last verdicts came seconds after session_end, steadily; a grace counted from
                    # the end judged 12 of 20 sessions without their last 3-7 frames. Bounded by
                    # max_wait_s: a device that never stops sending cannot keep a session open.
                    extended = max(session.deadline, now + self._settings.grace_s)
                    session.deadline = min(extended, session.give_up)
                    session.mark = None

    def _session(self, session_id: str) -> _Session:
        with self._lock:
            return self._sessions.setdefault(session_id, _Session())

    def _take_event(self, event: RfidEvent, now: float) -> None:
        if event.session_id in self._done:
            return
        session = self._session(event.session_id)
        session.device_id = event.device_id
        session.patient_ref = event.patient_ref
        if event.event == RfidEventKind.SESSION_START:
            session.started_ns = event.ts_ns
            return
        if session.ended_ns is None:
            session.deadline = now + self._settings.grace_s
            session.give_up = now + self._settings.max_wait_s
        session.ended_ns = event.ts_ns
        session.frames_reported = event.frame_count

    # -- judging ---------------------------------------------------------------------------
    def _judge_due(self, now: float) -> None:
        if self._erased is not None:
            self._erased.refresh()
        with self._lock:
            ended = [(sid, s) for sid, s in self._sessions.items() if s.ended_ns is not None]
        for session_id, session in ended:
            self._judge(session_id, session, now)

    def _judge(self, session_id: str, session: _Session, now: float) -> None:
        if self._erased is not None and self._erased.covers(session.patient_ref, session_id):
            log.info("session %s: its patient was erased; dropped without a verdict", session_id)
            self._forget(session_id)
            return
        verdicts = [v for v in session.verdicts.values() if v.device_id == session.device_id]
        frames_in = len(verdicts)
        reported = session.frames_reported
        all_in = reported is not None and reported > 0 and frames_in >= reported
        if not all_in:
            if now < session.deadline:
                return
            if self._held_at_intake is not None and self._held_at_intake(session_id):
                return  # bounded by intake's hold: a verdict is released or refused by then
            if self._awaiting_verdicts is not None and now < session.give_up and self._awaiting_verdicts(session_id):
                return  # frames in hand still wait for their verdict (the nodes are behind); max_wait_s bounds it
            # (a storage bridge restarting: its frames' receipts come late, and so do their verdicts)
            # Everything queued until now must have been read before the session is judged.
            if session.mark is None:
                session.mark = self._queue.last_id
            if self._queue.cursor(self.name) < session.mark:
                return
        combined = combine(verdicts)
        if combined is None:
            if now >= session.give_up:
                log.warning("session %s ended without any frame verdict; closed without a session verdict", session_id)
                closed = SessionClosed(session_id=session_id, closed_ns=time.time_ns())
                self._emit(Kind.SESSION_CLOSED, session.device_id, closed.model_dump_json().encode("utf-8"))
                self.closed_without_verdict += 1
                self._forget(session_id)
            return
        if session.patient_ref is None or session.device_id is None or session.ended_ns is None:
            log.warning("session %s has no patient_ref; no session verdict", session_id)
            self._forget(session_id)
            return
        verdict = SessionVerdict(
            device_id=session.device_id,
            session_id=session_id,
            patient_ref=session.patient_ref,
            frames=combined.frames,
            probability=combined.probability,
            flagged=combined.flagged,
            threshold=combined.threshold,
            rule=RULE_NAME,
            model_version=combined.model_version,
            ts_ns=time.time_ns(),
            member_spread=combined.member_spread,
            inconclusive=combined.inconclusive,
            # The device's incarnation, from its frames' verdicts (a session lives in one incarnation;
            # the latest verdict decides if a replay ever mixed them), so the device can tell it is its own.
            incarnation=max(verdicts, key=lambda v: (v.capture_ns, v.seq)).incarnation,
        )
        outcome = SessionOutcome(verdict=verdict, started_ns=session.started_ns, ended_ns=session.ended_ns)
        self._emit(Kind.SESSION_OUTCOME, session.device_id, outcome.model_dump_json().encode("utf-8"))
        self.published += 1
        log.info(
            "session %s: %d frames, probability %.3f, %s",
            session_id,
            combined.frames,
            combined.probability,
            "inconclusive" if combined.inconclusive else "flagged" if combined.flagged else "not flagged",
        )
        self._forget(session_id)

    def _emit(self, kind: Kind, device_id: str | None, payload: bytes) -> None:
        topic = session_verdict_topic(device_id) if device_id else f"{STAGE_NAME}/{kind.value}"
        self._queue.append([NewItem(kind.value, topic, payload, time.time_ns())])

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)
            self._done[session_id] = None
            while len(self._done) > _DONE_MEMORY:
                self._done.popitem(last=False)

    # -- restart ---------------------------------------------------------------------------
    def _resume(self) -> bool:
        """Once the archive holds everything queued before this start: take its unjudged sessions."""
        mark = self._startup_mark
        if mark is None:
            return True
        if self._queue.cursor(self._archive_sink) < mark:
            return False
        now = time.monotonic()
        with Archive(self._archive_path, readonly=True) as archive:
            for record in archive.sessions_without_verdict():
                session = self._session(record.session_id)
                session.device_id, session.patient_ref = record.device_id, record.patient_ref
                session.started_ns, session.ended_ns = record.started_ns, record.ended_ns
                session.frames_reported = record.frames_reported
                session.deadline = now + self._settings.grace_s
                session.give_up = now + self._settings.max_wait_s
                for row in archive.verdicts(record.session_id):
                    session.verdicts[(row.device_id, row.seq)] = row.as_verdict()
        # Items up to the mark are in the archive (read above); the queue is read after it.
        self._queue.confirm(Batch(self.name, [], mark))
        self._startup_mark = None
        return True
