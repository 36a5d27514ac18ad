"""Turns ended sessions into session verdicts once their frame verdicts are in.

A session is complete when its `session_end` is archived and either every frame the device
reported has a verdict, or `grace_s` passed (late verdicts), and the archive has caught up
with everything queued up to that moment. The verdict is computed from the archive with the
rule in `session_rule` and queued as a `SessionOutcome` item, from which the sinks store it
and the publisher sends it to the device. Ended sessions without a verdict are picked up
again after a restart (the archive says which), so a crash delays a verdict, never loses it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.config import SessionSettings
from cloud_bridge.durable_queue import DurableQueue, NewItem, QueuedItem
from cloud_bridge.intake import Kind, SessionOutcome, decode_item
from cloud_bridge.session_rule import RULE_NAME, combine
from contract.messages import RfidEvent, RfidEventKind, SessionVerdict, Verdict
from contract.topics import session_verdict_topic

log = logging.getLogger(__name__)
_DONE_MEMORY = 10_000


@dataclass
class _Pending:
    deadline: float
    give_up: float
    mark: int | None = None


class SessionTracker:
    def __init__(
        self, archive_path: Path, queue: DurableQueue, settings: SessionSettings, *, archive_sink: str
    ) -> None:
        self._archive = Archive(archive_path, readonly=True)
        self._writer = Archive(archive_path, readonly=False)
        self._queue = queue
        self._settings = settings
        self._archive_sink = archive_sink
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._startup_mark: int | None = queue.last_id
        self._stop = False
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="session-tracker", daemon=True)

    def start(self) -> SessionTracker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._archive.close()
        self._writer.close()

    @property
    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._pending)

    def on_archived(self, items: Sequence[QueuedItem]) -> None:
        """Called by the archive sink after each stored batch."""
        now = time.monotonic()
        with self._cond:
            touched = False
            for item in items:
                if item.kind == Kind.RFID:
                    event = decode_item(item.kind, item.payload)
                    if isinstance(event, RfidEvent) and event.event == RfidEventKind.SESSION_END:
                        self._add_locked(event.session_id, now)
                        touched = True
                elif item.kind == Kind.VERDICT and self._pending:
                    verdict = decode_item(item.kind, item.payload)
                    touched = touched or (isinstance(verdict, Verdict) and verdict.session_id in self._pending)
                elif item.kind == Kind.SESSION_OUTCOME:
                    outcome = decode_item(item.kind, item.payload)
                    if isinstance(outcome, SessionOutcome):
                        self._pending.pop(outcome.verdict.session_id, None)
            if touched:
                self._cond.notify_all()

    def _add_locked(self, session_id: str, now: float) -> None:
        if session_id in self._done or session_id in self._pending:
            return
        self._pending[session_id] = _Pending(now + self._settings.grace_s, now + self._settings.max_wait_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                self._cond.wait(timeout=0.2)
                if self._stop:
                    return
                snapshot = dict(self._pending)
            try:
                self._resume_after_restart()
                for session_id, pending in snapshot.items():
                    self._evaluate(session_id, pending)
            except Exception:
                log.exception("session tracker step failed; retrying")

    def _resume_after_restart(self) -> None:
        if self._startup_mark is None or self._queue.cursor(self._archive_sink) < self._startup_mark:
            return
        self._startup_mark = None
        now = time.monotonic()
        with self._cond:
            for record in self._archive.pending_sessions():
                self._add_locked(record.session_id, now)

    def _evaluate(self, session_id: str, pending: _Pending) -> None:
        record = self._archive.session(session_id)
        if record is None or record.ended_ns is None or record.verdict_ns is not None:
            self._forget(session_id)
            return
        verdicts = self._archive.verdicts(session_id)
        now = time.monotonic()
        frames_in = len({(v.device_id, v.seq) for v in verdicts})
        all_in = (
            record.frames_reported is not None and record.frames_reported > 0 and frames_in >= record.frames_reported
        )
        if not all_in:
            if now < pending.deadline:
                return
            # Everything queued until now must be archived before the session is judged.
            if pending.mark is None:
                pending.mark = self._queue.last_id
            if self._queue.cursor(self._archive_sink) < pending.mark:
                return
            verdicts = self._archive.verdicts(session_id)
        combined = combine(verdicts)
        if combined is None:
            if now >= pending.give_up:
                log.warning("session %s ended without any frame verdict; closed without a session verdict", session_id)
                self._writer.put_session_no_verdict(session_id, time.time_ns())
                self._writer.commit()
                self._forget(session_id)
            return
        if record.patient_ref is None:
            log.warning("session %s has no patient_ref; no session verdict", session_id)
            self._forget(session_id)
            return
        verdict = SessionVerdict(
            device_id=record.device_id,
            session_id=session_id,
            patient_ref=record.patient_ref,
            frames=combined.frames,
            probability=combined.probability,
            flagged=combined.flagged,
            threshold=combined.threshold,
            rule=RULE_NAME,
            model_version=combined.model_version,
            ts_ns=time.time_ns(),
        )
        outcome = SessionOutcome(verdict=verdict, started_ns=record.started_ns, ended_ns=record.ended_ns)
        self._queue.append(
            [
                NewItem(
                    Kind.SESSION_OUTCOME,
                    session_verdict_topic(record.device_id),
                    outcome.model_dump_json().encode("utf-8"),
                    time.time_ns(),
                )
            ]
        )
        self.published += 1
        log.info(
            "session %s: %d frames, probability %.3f, %s",
            session_id,
            combined.frames,
            combined.probability,
            "flagged" if combined.flagged else "not flagged",
        )
        self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        with self._cond:
            self._pending.pop(session_id, None)
            self._done[session_id] = None
            while len(self._done) > _DONE_MEMORY:
                self._done.popitem(last=False)
