"""Screening sessions: a card scan starts one, the same card again (or a timeout, or shutdown) ends it.

Pure state, no I/O: the node turns the returned changes into `RfidEvent` messages. Sessions are
keyed by the pseudonym, so the raw UID is not kept here. A *different* card scanned during a
session ends it (reason `card`) and starts the new card's session: the next patient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contract.ids import new_session_id
from contract.messages import RfidEventKind, SessionEndReason


@dataclass(frozen=True)
class Session:
    session_id: str
    patient_ref: str
    started_mono: float
    frame_count: int = 0


@dataclass(frozen=True)
class SessionChange:
    event: RfidEventKind
    session: Session
    reason: SessionEndReason | None = None


class OpenSessionSlot:
    """At most one open session per device. Not thread-safe: the node holds its lock around calls."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._current: Session | None = None

    @property
    def current(self) -> Session | None:
        return self._current

    def on_scan(self, patient_ref: str, now: float) -> list[SessionChange]:
        """A card was scanned: end the open session and/or start one."""
        changes: list[SessionChange] = []
        current = self._current
        if current is not None:
            changes.append(self._end(SessionEndReason.CARD))
            if current.patient_ref == patient_ref:
                return changes
        self._current = Session(new_session_id(), patient_ref, now)
        changes.append(SessionChange(RfidEventKind.SESSION_START, self._current))
        return changes

    def count_frame(self) -> None:
        if self._current is not None:
            self._current = replace(self._current, frame_count=self._current.frame_count + 1)

    def check_timeout(self, now: float) -> SessionChange | None:
        if self._current is not None and now - self._current.started_mono >= self.timeout_s:
            return self._end(SessionEndReason.TIMEOUT)
        return None

    def end(self, reason: SessionEndReason) -> SessionChange | None:
        return self._end(reason) if self._current is not None else None

    def _end(self, reason: SessionEndReason) -> SessionChange:
        assert self._current is not None
        change = SessionChange(RfidEventKind.SESSION_END, self._current, reason)
        self._current = None
        return change
