"""Erasing one patient (GDPR Art. 17) from each store the bridge writes: one function per store.

`thermoscreen patients forget` (thermoscreen/forget.py) calls these in order: her session ids
are collected first (`sessions_*`), her tombstones written (`erasure_tombstones`), then the
queue, the archive, the TSDB, Firestore and the reports are erased. Each function returns
what it removed, counted per kind, and raises `StoreUnavailableError` naming its store when the
store cannot be reached or refuses; the others still run and a rerun finishes the job, since
every step deletes by `patient_ref` and session id and so is idempotent.

SQLite stores are erased with `secure_delete` on (freed pages are zeroed, not left readable in
the file) and their WAL is checkpointed and truncated afterwards where no reader holds it.
What a patient's items look like in the queue: frames name her in binary (8 bytes of ref, 16
of session UUID), JSON messages in hex text, dead letters hold raw (maybe malformed) payloads;
candidates are found by both byte forms with SQLite's `instr` and confirmed by decoding where
the payload decodes (a payload that does not decode but contains her ids is removed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cloud_bridge.channels import decode_item
from cloud_bridge.config import FirestoreSettings, InfluxSettings
from cloud_bridge.erasure_tombstones import ids_of
from contract.messages import DeadLetter

#: The stores in the order they are erased (the receipt's keys; `registry` is the clinic's).
STORES = ("queue", "archive", "influx", "firestore", "reports")
#: Needles per SQL statement (each is one `instr` term).
_NEEDLES_PER_QUERY = 200
#: Firestore allows 500 writes per batch and 30 values in an `in` filter.
_FIRESTORE_BATCH = 500
_FIRESTORE_IN = 30
_FIRESTORE_TIMEOUT_S = 20.0
#: Far enough in the future for any screening point (InfluxDB 2 delete needs a stop time).
_V2_STOP = "2200-01-01T00:00:00Z"

Counts = dict[str, int]


class StoreUnavailableError(RuntimeError):
    """A store could not be reached or refused the erasure; `store` names it."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store}: {reason}")
        self.store = store
        self.reason = reason


# -- matching ----------------------------------------------------------------------------------
def _needles(patient_ref: str, session_ids: Iterable[str]) -> list[bytes]:
    """Her ids as they appear in payloads: hex text (JSON) and raw bytes (the binary frame)."""
    out = [patient_ref.encode("ascii"), bytes.fromhex(patient_ref)]
    for sid in sorted(set(session_ids)):
        out.append(sid.encode("ascii"))
        with contextlib.suppress(ValueError):
            out.append(bytes.fromhex(sid))
    return out


def _names_her(kind: str | None, payload: bytes, patient_ref: str, sessions: set[str], needles: list[bytes]) -> bool:
    """Does this queued payload belong to her? Decoded where it decodes, else by its bytes."""
    try:
        decoded = decode_item(kind or "", payload)
    except Exception:  # malformed or unknown kind: only its bytes can tell
        return any(n in payload for n in needles)
    if isinstance(decoded, DeadLetter):
        try:
            sample = base64.b64decode(decoded.payload_b64)
        except ValueError:
            sample = b""
        return any(n in sample for n in needles) or any(n in decoded.reason.encode() for n in needles)
    ref, sid = ids_of(decoded)
    return ref == patient_ref or (sid is not None and sid in sessions)


def _instr_clause(column: str, count: int) -> str:
    return " OR ".join([f"instr({column}, ?) > 0"] * count)


def _candidates(conn: sqlite3.Connection, sql: str, column: str, needles: list[bytes]) -> Iterator[tuple[Any, ...]]:
    """Rows whose `column` contains any needle (`sql` ends in WHERE; each row once)."""
    seen: set[object] = set()
    for start in range(0, len(needles), _NEEDLES_PER_QUERY):
        part = needles[start : start + _NEEDLES_PER_QUERY]
        for row in conn.execute(f"{sql} {_instr_clause(column, len(part))}", part):
            if row[0] not in seen:
                seen.add(row[0])
                yield row


def _open_sqlite(path: Path, store: str) -> sqlite3.Connection | None:
    """A writer connection with secure_delete on, or None if the file does not exist."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailableError(store, f"{path}: {exc}") from None
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _finish(conn: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL (old pages of hers live there too); best effort under readers."""
    with contextlib.suppress(sqlite3.DatabaseError):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()


def _in(values: list[str] | list[int]) -> str:
    return ",".join("?" for _ in values)


# -- session ids --------------------------------------------------------------------------------
def sessions_archive(path: Path, patient_ref: str) -> set[str]:
    """Her session ids in the archive (sessions, frames and verdicts that name her)."""
    conn = _open_sqlite(path, "archive")
    if conn is None:
        return set()
    try:
        found: set[str] = set()
        for table in ("sessions", "frames", "verdicts") if "sessions" in _tables(conn) else ():
            rows = conn.execute(f"SELECT DISTINCT session_id FROM {table} WHERE patient_ref = ?", (patient_ref,))
            found |= {str(r[0]) for r in rows if r[0] is not None}
        return found
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailableError("archive", f"{path}: {exc}") from None
    finally:
        conn.close()


def sessions_queue(path: Path, patient_ref: str) -> set[str]:
    """Her session ids the bridge queue knows (its session owners and frame keys)."""
    conn = _open_sqlite(path, "queue")
    if conn is None:
        return set()
    try:
        found: set[str] = set()
        for table in {"session_owners", "frame_keys"} & _tables(conn):
            rows = conn.execute(f"SELECT DISTINCT session_id FROM {table} WHERE patient_ref = ?", (patient_ref,))
            found |= {str(r[0]) for r in rows if r[0] is not None}
        return found
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailableError("queue", f"{path}: {exc}") from None
    finally:
        conn.close()


# -- the archive and the queue ------------------------------------------------------------------
def erase_archive(path: Path, patient_ref: str, session_ids: Iterable[str]) -> Counts:
    """Delete her sessions (with their session verdicts), frames and frame verdicts from the archive."""
    sessions = sorted(set(session_ids))
    counts = {"sessions": 0, "frames": 0, "verdicts": 0}
    conn = _open_sqlite(path, "archive")
    if conn is None:
        return counts
    try:
        if "sessions" not in _tables(conn):
            return counts
        conn.execute("BEGIN IMMEDIATE")
        for table in ("frames", "verdicts", "sessions"):
            counts[table] += conn.execute(f"DELETE FROM {table} WHERE patient_ref = ?", (patient_ref,)).rowcount
            for start in range(0, len(sessions), 500):
                part = sessions[start : start + 500]
                counts[table] += conn.execute(f"DELETE FROM {table} WHERE session_id IN ({_in(part)})", part).rowcount
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(sqlite3.DatabaseError):
            conn.execute("ROLLBACK")
        conn.close()
        raise StoreUnavailableError("archive", f"{path}: {exc}") from None
    _finish(conn)
    return counts


def erase_queue(path: Path, patient_ref: str, session_ids: Iterable[str]) -> Counts:
    """Delete her pending items, dead letters, held verdicts and intake state from the bridge queue.

    Safe while the bridge runs (one SQLite transaction); its per-device quota then still counts
    the removed items until it restarts.
    """
    sessions = set(session_ids)
    needles = _needles(patient_ref, sessions)
    counts = {"items": 0, "deadletters": 0, "held_verdicts": 0, "held_frames": 0, "session_owners": 0, "frame_keys": 0}
    conn = _open_sqlite(path, "queue")
    if conn is None:
        return counts
    try:
        tables = _tables(conn)
        conn.execute("BEGIN IMMEDIATE")
        if "items" in tables:
            counts["items"] = _delete_matching(
                conn, "items", "SELECT id, kind, payload FROM items WHERE",
                patient_ref=patient_ref, sessions=sessions, needles=needles,
            )  # fmt: skip
        if "deadletters" in tables:
            counts["deadletters"] = _delete_dead(conn, patient_ref, sessions, needles)
        if "held_verdicts" in tables:
            counts["held_verdicts"] = _delete_matching(
                conn, "held_verdicts", "SELECT rowid, 'verdict', payload FROM held_verdicts WHERE",
                patient_ref=patient_ref, sessions=sessions, needles=needles, key="rowid",
            )  # fmt: skip
        if "held_frames" in tables:  # several bridges: frames waiting for their session's claim
            counts["held_frames"] = _delete_matching(
                conn, "held_frames", "SELECT rowid, 'frame', payload FROM held_frames WHERE",
                patient_ref=patient_ref, sessions=sessions, needles=needles, key="rowid",
            )  # fmt: skip
        for table in {"session_owners", "frame_keys"} & tables:
            counts[table] = _delete_by_ids(conn, table, patient_ref, sorted(sessions))
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(sqlite3.DatabaseError):
            conn.execute("ROLLBACK")
        conn.close()
        raise StoreUnavailableError("queue", f"{path}: {exc}") from None
    _finish(conn)
    return counts


def _delete_matching(
    conn: sqlite3.Connection,
    table: str,
    select: str,
    *,
    patient_ref: str,
    sessions: set[str],
    needles: list[bytes],
    key: str = "id",
) -> int:
    doomed = [
        row[0]
        for row in _candidates(conn, select, "payload", needles)
        if _names_her(str(row[1]), bytes(row[2]), patient_ref, sessions, needles)
    ]
    for start in range(0, len(doomed), 500):
        part = doomed[start : start + 500]
        conn.execute(f"DELETE FROM {table} WHERE {key} IN ({_in(part)})", part)
    return len(doomed)


def _delete_dead(conn: sqlite3.Connection, patient_ref: str, sessions: set[str], needles: list[bytes]) -> int:
    """Dead letters: a refused payload may not decode at all, so any of her ids in it (or in the reason) counts."""
    doomed: set[int] = set()
    for row in _candidates(conn, "SELECT id, kind, payload FROM deadletters WHERE", "payload", needles):
        doomed.add(int(row[0]))
    text_needles = [n for n in needles if n.isascii() and n.decode("ascii", "replace").isalnum()]
    for row in _candidates(conn, "SELECT id FROM deadletters WHERE", "CAST(detail AS BLOB)", text_needles):
        doomed.add(int(row[0]))
    ids = sorted(doomed)
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        conn.execute(f"DELETE FROM deadletters WHERE id IN ({_in(part)})", part)
    return len(ids)


def _delete_by_ids(conn: sqlite3.Connection, table: str, patient_ref: str, sessions: list[str]) -> int:
    n = int(conn.execute(f"DELETE FROM {table} WHERE patient_ref = ?", (patient_ref,)).rowcount)
    for start in range(0, len(sessions), 500):
        part = sessions[start : start + 500]
        n += int(conn.execute(f"DELETE FROM {table} WHERE session_id IN ({_in(part)})", part).rowcount)
    return n


# -- the TSDB -----------------------------------------------------------------------------------
def _http(method: str, url: str, *, body: bytes | None, headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    """(status, response) of one request; StoreUnavailableError for a refusal or no answer."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), (resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        detail = " ".join(exc.read()[:200].decode("utf-8", "replace").split())
        raise StoreUnavailableError(
            "influx", f"{method} {url.split('?', maxsplit=1)[0]}: HTTP {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreUnavailableError("influx", f"{url.split('?', maxsplit=1)[0]} unreachable: {reason}") from None


def _auth(settings: InfluxSettings) -> dict[str, str]:
    token = settings.resolve_token()
    return {"Authorization": f"Token {token}"} if token else {}


def influx_flavour(settings: InfluxSettings) -> str:
    """Which delete API the server speaks: its `/ping` says InfluxDB 1.x, 2.x, or neither (VictoriaMetrics)."""
    headers = _auth(settings)
    _, (reply, _) = _http("GET", f"{settings.url}/ping", body=None, headers=headers, timeout=settings.timeout_s)
    version = str(reply.get("X-Influxdb-Version") or "").lstrip("v")
    if version.startswith("1."):
        return "influxql"
    if version[:1].isdigit():
        return "v2"
    return "victoriametrics"


def _selectors(patient_ref: str, sessions: list[str]) -> list[str]:
    out = [f'{{patient_ref="{patient_ref}"}}']
    for start in range(0, len(sessions), 50):
        alternatives = "|".join(re.escape(s) for s in sessions[start : start + 50])
        out.append(f'{{session_id=~"{alternatives}"}}')
    return out


def _erase_victoria(settings: InfluxSettings, patient_ref: str, sessions: list[str]) -> Counts:
    """Series by tag: counted with `/api/v1/series` (all time), removed with `delete_series`.

    `/internal/force_flush` first: points of new series only reach the index after ~10 s
    (devtools/local_tsdb.py), and a delete must see them.
    """
    headers, timeout = _auth(settings), settings.timeout_s
    with contextlib.suppress(StoreUnavailableError):  # not every deployment exposes it
        _http("GET", f"{settings.url}/internal/force_flush", body=None, headers=headers, timeout=timeout)
    query = urllib.parse.urlencode([("start", "0"), *(("match[]", s) for s in _selectors(patient_ref, sessions))])
    body = query.encode()
    _, (_, raw) = _http("POST", f"{settings.url}/api/v1/series", body=body, headers=headers, timeout=timeout)
    series = len(json.loads(raw).get("data", []))
    _http("POST", f"{settings.url}/api/v1/admin/tsdb/delete_series", body=body, headers=headers, timeout=timeout)
    return {"series": series}


def _influxql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _erase_influxql(settings: InfluxSettings, patient_ref: str, sessions: list[str]) -> Counts:
    """InfluxDB 1.x: `SHOW SERIES` to count, then `DROP SERIES WHERE` per tag (the bucket is the database)."""
    database = settings.bucket.split("/")[0]
    conditions = [f'"patient_ref" = {_influxql_string(patient_ref)}']
    conditions += [f'"session_id" = {_influxql_string(s)}' for s in sessions]
    series = 0
    for condition in conditions:
        reply = _influxql(settings, database, f"SHOW SERIES WHERE {condition}")
        series += sum(len(s.get("values") or []) for s in reply.get("series", []))
        _influxql(settings, database, f"DROP SERIES WHERE {condition}")
    return {"series": series}


def _influxql(settings: InfluxSettings, database: str, statement: str) -> dict[str, Any]:
    body = urllib.parse.urlencode({"db": database, "q": statement}).encode()
    headers = {**_auth(settings), "Content-Type": "application/x-www-form-urlencoded"}
    _, (_, raw) = _http("POST", f"{settings.url}/query", body=body, headers=headers, timeout=settings.timeout_s)
    result: dict[str, Any] = json.loads(raw)["results"][0]
    if "error" in result and "database not found" not in str(result["error"]):
        raise StoreUnavailableError("influx", f"{statement}: {result['error']}")
    return result


def _erase_v2(settings: InfluxSettings, patient_ref: str, sessions: list[str]) -> Counts:
    """InfluxDB 2 `/api/v2/delete` with a tag predicate (untested here: InfluxDB 2 cannot run on this machine)."""
    params = urllib.parse.urlencode({"org": settings.org, "bucket": settings.bucket})
    headers = {**_auth(settings), "Content-Type": "application/json"}
    predicates = [f'patient_ref="{patient_ref}"', *(f'session_id="{s}"' for s in sessions)]
    for predicate in predicates:
        body = json.dumps({"start": "1970-01-01T00:00:00Z", "stop": _V2_STOP, "predicate": predicate}).encode()
        _http("POST", f"{settings.url}/api/v2/delete?{params}", body=body, headers=headers, timeout=settings.timeout_s)
    return {"deletes": len(predicates)}


def erase_influx(settings: InfluxSettings, api: str, patient_ref: str, session_ids: Iterable[str]) -> Counts:
    """Delete every series tagged with her `patient_ref` or one of her session ids."""
    sessions = sorted(set(session_ids))
    flavour = influx_flavour(settings) if api == "auto" else api
    if flavour == "victoriametrics":
        return _erase_victoria(settings, patient_ref, sessions)
    if flavour == "influxql":
        return _erase_influxql(settings, patient_ref, sessions)
    return _erase_v2(settings, patient_ref, sessions)


# -- Firestore ----------------------------------------------------------------------------------
def erase_firestore(settings: FirestoreSettings, patient_ref: str, session_ids: Iterable[str]) -> Counts:
    """Delete `patients/{ref}`, her `sessions/*` and `frames/*` (by patient_ref and by session id)."""
    from cloud_bridge.firestore_sink import FirestoreSink

    try:
        sink = FirestoreSink(settings)
    except Exception as exc:
        raise StoreUnavailableError("firestore", _short(exc)) from None
    try:
        return _erase_documents(sink.client, patient_ref, set(session_ids))
    except StoreUnavailableError:
        raise
    except Exception as exc:
        raise StoreUnavailableError("firestore", _short(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            sink.close()


def firestore_retry() -> Any:
    """Retries bounded in total time: the client's default keeps retrying an unreachable server
    for minutes whatever the per-call timeout (measured: > 100 s against a closed port)."""
    from google.api_core.retry import Retry

    return Retry(initial=0.25, maximum=2.0, multiplier=2.0, timeout=_FIRESTORE_TIMEOUT_S)


def _erase_documents(db: Any, patient_ref: str, sessions: set[str]) -> Counts:
    from google.cloud.firestore_v1.base_query import FieldFilter

    timeout, retry = _FIRESTORE_TIMEOUT_S, firestore_retry()
    patient = db.collection("patients").document(patient_ref)
    snapshot = patient.get(timeout=timeout, retry=retry)
    if snapshot.exists:
        sessions |= {str(s) for s in (snapshot.to_dict() or {}).get("session_ids", [])}
    sessions_col, frames_col = db.collection("sessions"), db.collection("frames")
    doomed: dict[str, set[Any]] = {"sessions": set(), "frames": set(), "patients": set()}
    where = FieldFilter("patient_ref", "==", patient_ref)
    for doc in sessions_col.where(filter=where).stream(timeout=timeout, retry=retry):
        doomed["sessions"].add(doc.reference)
        sessions.add(doc.id)
    doomed["frames"] |= {d.reference for d in frames_col.where(filter=where).stream(timeout=timeout, retry=retry)}
    ordered = sorted(sessions)
    for start in range(0, len(ordered), _FIRESTORE_IN):
        part = ordered[start : start + _FIRESTORE_IN]
        query = frames_col.where(filter=FieldFilter("session_id", "in", part))
        doomed["frames"] |= {d.reference for d in query.stream(timeout=timeout, retry=retry)}
        for sid in part:
            ref = sessions_col.document(sid)
            if ref.get(timeout=timeout, retry=retry).exists:
                doomed["sessions"].add(ref)
    if snapshot.exists:
        doomed["patients"].add(patient)
    refs = [r for group in doomed.values() for r in group]
    for start in range(0, len(refs), _FIRESTORE_BATCH):
        batch = db.batch()
        for ref in refs[start : start + _FIRESTORE_BATCH]:
            batch.delete(ref)
        batch.commit(timeout=timeout, retry=retry)
    return {name: len(group) for name, group in doomed.items()}


# -- the reports --------------------------------------------------------------------------------
def erase_reports(directory: Path, patient_ref: str) -> Counts:
    """Remove every regular file under `directory` whose content mentions her pseudonym (links are not followed)."""
    needle = patient_ref.encode("ascii")
    removed = 0
    if not directory.exists():
        return {"files": 0}
    errors: list[str] = []
    for root, _dirs, files in os.walk(directory, onerror=lambda e: errors.append(str(e))):
        for name in files:
            path = Path(root) / name
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                if needle in path.read_bytes():
                    path.unlink()
                    removed += 1
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
    if errors:
        raise StoreUnavailableError(
            "reports", f"{errors[0]} (and {len(errors) - 1} more)" if len(errors) > 1 else errors[0]
        )
    return {"files": removed}


def _short(exc: object) -> str:
    return " ".join(str(exc).split())[:200]
