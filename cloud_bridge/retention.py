"""Retention: sessions, frames and verdicts older than `[retention] days` leave the archive and Firestore.

Why in the bridge: it is the one process that always runs at the site and already holds the
store settings. A session is old when its last known time (end, else start, else its verdict)
is before the cut-off; it goes with all its frames and verdicts, and so does any frame or
verdict captured before the cut-off (an orphan of a session never closed). InfluxDB keeps its
own retention (the bucket's, set to the same days in docker-compose.yml); VictoriaMetrics its
`-retentionPeriod` flag. Deletes run with SQLite's `secure_delete`, in one transaction per run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from cloud_bridge.config import FirestoreSettings, RetentionSettings
from cloud_bridge.erasure import StoreUnavailableError, firestore_retry

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 1_000_000_000
#: Firestore: writes per batch commit, values per `in` filter, and the request timeout.
_BATCH = 500
_IN = 30
_TIMEOUT_S = 20.0
Counts = dict[str, int]


def cutoff_ns(days: float, now_ns: int | None = None) -> int:
    """The time before which records are removed."""
    return (time.time_ns() if now_ns is None else now_ns) - int(days * NS_PER_DAY)


def purge_archive(path: Path, before_ns: int) -> Counts:
    """Delete old sessions (with their frames and verdicts) and old frames and verdicts from the archive."""
    import sqlite3

    counts = {"sessions": 0, "frames": 0, "verdicts": 0}
    if not path.exists():
        return counts
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TEMP TABLE old_sessions AS SELECT session_id FROM sessions "
            "WHERE COALESCE(ended_ns, started_ns, verdict_ns) < ?",
            (before_ns,),
        )
        for table in ("frames", "verdicts"):
            counts[table] = conn.execute(
                f"DELETE FROM {table} WHERE capture_ns < ? OR session_id IN (SELECT session_id FROM old_sessions)",
                (before_ns,),
            ).rowcount
        counts["sessions"] = conn.execute(
            "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM old_sessions)"
        ).rowcount
        conn.execute("DROP TABLE old_sessions")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(sqlite3.DatabaseError):
            conn.execute("ROLLBACK")
        raise StoreUnavailableError("archive", f"{path}: {exc}") from None
    finally:
        conn.close()
    return counts


def purge_firestore(settings: FirestoreSettings, before_ns: int) -> Counts:
    """Delete old `sessions` and `frames` documents; drop their ids from `patients`, and a
    patient document left with no session."""
    from cloud_bridge.firestore_sink import FirestoreSink

    try:
        sink = FirestoreSink(settings)
    except Exception as exc:
        raise StoreUnavailableError("firestore", " ".join(str(exc).split())[:200]) from None
    try:
        return _purge_documents(sink.client, before_ns)
    except Exception as exc:
        raise StoreUnavailableError("firestore", " ".join(str(exc).split())[:200]) from None
    finally:
        with contextlib.suppress(Exception):
            sink.close()


def _purge_documents(db: Any, before_ns: int) -> Counts:
    from google.cloud.firestore_v1 import ArrayRemove
    from google.cloud.firestore_v1.base_query import FieldFilter

    sessions_col, frames_col = db.collection("sessions"), db.collection("frames")
    old: dict[str, str | None] = {}  # session id -> patient_ref
    for field in ("ended_ns", "started_ns"):
        for doc in sessions_col.where(filter=FieldFilter(field, "<", before_ns)).stream(
            timeout=_TIMEOUT_S, retry=firestore_retry()
        ):
            data = doc.to_dict() or {}
            if field == "started_ns" and isinstance(data.get("ended_ns"), int) and data["ended_ns"] >= before_ns:
                continue
            old[doc.id] = data.get("patient_ref")
    frames = {
        d.reference
        for d in frames_col.where(filter=FieldFilter("capture_ns", "<", before_ns)).stream(
            timeout=_TIMEOUT_S, retry=firestore_retry()
        )
    }
    ids = sorted(old)
    for start in range(0, len(ids), _IN):
        query = frames_col.where(filter=FieldFilter("session_id", "in", ids[start : start + _IN]))
        frames |= {d.reference for d in query.stream(timeout=_TIMEOUT_S, retry=firestore_retry())}
    refs = [*frames, *(sessions_col.document(sid) for sid in ids)]
    for start in range(0, len(refs), _BATCH):
        batch = db.batch()
        for ref in refs[start : start + _BATCH]:
            batch.delete(ref)
        batch.commit(timeout=_TIMEOUT_S, retry=firestore_retry())
    patients = _trim_patients(db, old, ArrayRemove)
    return {"sessions": len(ids), "frames": len(frames), "patients": patients}


def _trim_patients(db: Any, old: dict[str, str | None], array_remove: Any) -> int:
    """Remove expired session ids from their patient documents; delete a patient left with none."""
    by_patient: dict[str, list[str]] = {}
    for sid, ref in old.items():
        if ref:
            by_patient.setdefault(ref, []).append(sid)
    removed = 0
    for ref, sids in by_patient.items():
        doc = db.collection("patients").document(ref)
        snapshot = doc.get(timeout=_TIMEOUT_S, retry=firestore_retry())
        if not snapshot.exists:
            continue
        left = [s for s in (snapshot.to_dict() or {}).get("session_ids", []) if s not in set(sids)]
        if left:
            doc.update({"session_ids": array_remove(sids)}, timeout=_TIMEOUT_S, retry=firestore_retry())
        else:
            doc.delete(timeout=_TIMEOUT_S, retry=firestore_retry())
            removed += 1
    return removed


class RetentionWorker:
    """A bridge thread: every `interval_s`, purge what is older than `days` (the first run at start)."""

    def __init__(self, settings: RetentionSettings, *, archive: Path, firestore: FirestoreSettings | None) -> None:
        if settings.days is None:
            raise ValueError("retention.days is not set")
        self.days = settings.days
        self.interval_s = settings.interval_s
        self._archive = archive
        self._firestore = firestore
        self._stop = threading.Event()
        self.runs = 0
        self.removed: dict[str, Counts] = {}
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="bridge-retention", daemon=True)

    def start(self) -> RetentionWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self, now_ns: int | None = None) -> dict[str, Counts]:
        """One purge of every store; a store that fails is logged and tried again next time."""
        before = cutoff_ns(self.days, now_ns)
        stores: list[tuple[str, Any]] = [("archive", lambda: purge_archive(self._archive, before))]
        if self._firestore is not None:
            firestore = self._firestore
            stores.append(("firestore", lambda: purge_firestore(firestore, before)))
        done: dict[str, Counts] = {}
        for name, purge in stores:
            try:
                done[name] = purge()
            except StoreUnavailableError as exc:
                self.last_error = str(exc)
                log.error("retention: %s (tried again in %.0f s)", exc, self.interval_s)
        self.runs += 1
        for name, counts in done.items():
            total = self.removed.setdefault(name, {})
            for kind, n in counts.items():
                total[kind] = total.get(kind, 0) + n
            if any(counts.values()):
                log.info("retention: removed from %s older than %g days: %s", name, self.days, counts)
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never a dead thread: the next interval tries again
                log.exception("retention run failed")
            self._stop.wait(self.interval_s)
