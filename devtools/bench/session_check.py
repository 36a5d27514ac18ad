"""Did every session of a bench run get its one session verdict, computed from all its frames?

Why in the e2e bench: with several bridges (`--bridges N`) a session's frames and verdicts
are spread over bridges, and the one property that must survive is the session verdict the
doctor acts on: exactly one, counting every frame verdict of the session, whichever bridge
received the frames. The archive is the record; the session verdicts published on MQTT show
whether one was computed twice (a recomputation carries a new `ts_ns`, a re-publish the same).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import ContractError
from contract.messages import SessionVerdict, decode_message
from transport.connection import Message

#: How often the archive is polled while waiting for the last session verdicts.
POLL_S = 0.25


@dataclass
class PublishedSessionVerdicts:
    """Counts the session verdicts seen on MQTT: session id -> the distinct `ts_ns` it was published with."""

    computed: dict[str, set[int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, message: Message) -> None:
        try:
            verdict = decode_message(message.payload, SessionVerdict)
        except ContractError:
            return
        with self._lock:
            self.computed.setdefault(verdict.session_id, set()).add(verdict.ts_ns)

    def times_computed(self) -> dict[str, int]:
        with self._lock:
            return {s: len(ts) for s, ts in self.computed.items()}


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    frames_in_verdict: int | None
    stored_verdicts: int


def _rows(archive: Path, devices: list[str]) -> list[SessionRow]:
    from cloud_bridge.archive import Archive

    rows: list[SessionRow] = []
    with Archive(archive) as db:
        for device in devices:
            for record in db.sessions(device_id=device):
                rows.append(SessionRow(record.session_id, record.frames, len(db.verdicts(record.session_id))))
    return rows


def check_sessions(
    archive: Path, devices: list[str], published: PublishedSessionVerdicts, idle_s: float
) -> dict[str, Any]:
    """Wait (until nothing changed for `idle_s`) for each device's session verdict, then judge them."""
    last: list[SessionRow] = []
    last_change = time.monotonic()
    while True:
        rows = _rows(archive, devices) if archive.exists() else []
        if rows and all(r.frames_in_verdict is not None for r in rows) and len(rows) >= len(devices):
            break
        if rows != last:
            last, last_change = rows, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            break
        time.sleep(POLL_S)  # another process's database; bounded by the idle limit
    computed = published.times_computed()
    with_verdict = [r for r in rows if r.frames_in_verdict is not None]
    whole = [r for r in with_verdict if r.frames_in_verdict == r.stored_verdicts]
    return {
        "sessions": len(rows),
        "sessions_expected": len(devices),
        "sessions_with_verdict": len(with_verdict),
        # The session verdict counts every frame verdict the archive holds for the session.
        "sessions_from_all_frames": len(whole),
        "sessions_computed_twice": sum(1 for r in rows if computed.get(r.session_id, 0) > 1),
        "sessions_ok": len(whole) == len(rows) == len(devices)
        and all(computed.get(r.session_id, 0) == 1 for r in rows),
    }
