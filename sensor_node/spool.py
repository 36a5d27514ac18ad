"""The store-and-forward spool: every outgoing message waits here (SQLite, WAL) until the broker's PUBACK.

Why SQLite: a device may lose the broker for minutes or lose power; a WAL database keeps
rows through both with one small transaction per message, and survives SIGKILL. The spool
also owns the per-device sequence number (persisted with each row, so a resent message keeps
its number and the count continues after a restart), and the device's *incarnation*: 64 random
bits created with the spool and kept in its meta table. A new spool (re-imaged or replaced
device) starts its sequence numbers at 0 again, so it gets a new incarnation, and
(device, incarnation, seq) stays unique; a restart on the same spool keeps both. A spool from
before incarnations gets one created on first open and kept from then on.

Bounds: `max_items` rows and `max_bytes` of payload. When a new message does not fit, the
oldest *frames* not yet handed to the broker are dropped (counted in `dropped_frames`,
persisted); session events are never dropped, and may exceed the bounds if nothing else is
left to drop. A frame that finds nothing it may drop is itself dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from contract.ids import INCARNATION_BYTES, new_incarnation

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
"""


class RowKind(StrEnum):
    FRAME = "frame"
    EVENT = "event"


@dataclass(frozen=True)
class SpoolRow:
    id: int
    seq: int
    kind: RowKind
    topic: str
    qos: int
    retain: bool
    payload: bytes


class SpoolError(RuntimeError):
    """The spool file cannot be used (locked by another process, not a spool, unwritable)."""


class Spool:
    """A bounded, persistent FIFO of encoded MQTT messages with a persistent sequence counter."""

    def __init__(self, path: Path, *, max_items: int, max_bytes: int, synchronous: str = "full") -> None:
        self.path = path
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock_file = self._acquire_process_lock(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
            self._open(synchronous)
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise SpoolError(f"spool {path} cannot be opened: {exc}") from None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    @staticmethod
    def _acquire_process_lock(path: Path) -> IO[str]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(path.with_name(path.name + ".lock"), "a+", encoding="ascii")  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(f"cannot create spool {path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise SpoolError(f"spool {path} is in use by another sensor process") from None
        return lock_file

    def _open(self, synchronous: str) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL journal (got {mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema")
        if version is None:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('next_seq', 0), ('dropped_frames', 0)", (1,))
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"spool schema version {version}, this node reads {SCHEMA_VERSION}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._incarnation = self._load_incarnation()
        self._next_seq = int(meta["next_seq"])
        self._dropped = int(meta["dropped_frames"])
        count, size, last = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox"
        ).fetchone()
        self._count, self._bytes, self._last_id = int(count), int(size), int(last)
        self._sent_through = 0

    def _load_incarnation(self) -> str:
        """The spool's incarnation; created (once, durably) for a new spool or one from before incarnations.

        Kept in `meta` as the signed 64-bit integer with the same 8 bytes (the column is INTEGER:
        a hex string of digits only would be turned into a number by SQLite's type affinity).
        """
        db = self._db
        fresh = int.from_bytes(bytes.fromhex(new_incarnation()), "big", signed=True)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('incarnation', ?)", (fresh,))
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
        if not isinstance(value, int):
            raise sqlite3.DatabaseError(f"spool incarnation is corrupt: {value!r}")
        return value.to_bytes(INCARNATION_BYTES, "big", signed=True).hex()

    # -- state -------------------------------------------------------------------------------
    @property
    def incarnation(self) -> str:
        """The device's incarnation: new with every new spool, the same across restarts."""
        return self._incarnation

    @property
    def depth(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_id(self) -> int:
        return self._last_id

    # -- writing -----------------------------------------------------------------------------
    def append(
        self,
        kind: RowKind,
        topic: str,
        make_payload: Callable[[int], bytes],
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> int:
        """Store a message built for the next sequence number; returns that number.

        `make_payload(seq)` runs inside the transaction, so numbers are unique and gap-free
        except where frames were dropped.
        """
        with self._lock:
            seq = self._next_seq
            payload = make_payload(seq)
            size = len(payload)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                freed_count, freed_bytes, dropped = self._make_room(kind, size)
                stored = kind is RowKind.EVENT or (
                    self._count - freed_count + 1 <= self.max_items
                    and self._bytes - freed_bytes + size <= self.max_bytes
                )
                row_id = self._last_id
                if stored:
                    cursor = db.execute(
                        "INSERT INTO outbox (seq, kind, topic, qos, retain, payload, size)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, kind.value, topic, qos, int(retain), payload, size),
                    )
                    row_id = int(cursor.lastrowid or 0)
                else:
                    dropped += 1
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                if dropped:
                    db.execute("UPDATE meta SET value = ? WHERE key = 'dropped_frames'", (self._dropped + dropped,))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            self._next_seq = seq + 1
            self._dropped += dropped
            self._count += (1 if stored else 0) - freed_count
            self._bytes += (size if stored else 0) - freed_bytes
            self._last_id = row_id
            self._changed.notify_all()
            return seq

    def _make_room(self, kind: RowKind, size: int) -> tuple[int, int, int]:
        """Delete the oldest frames until one more message of `size` fits; (rows, bytes, frames) freed."""
        excess_items = self._count + 1 - self.max_items
        excess_bytes = self._bytes + size - self.max_bytes
        if excess_items <= 0 and excess_bytes <= 0:
            return 0, 0, 0
        freed_count = freed_bytes = 0
        victims: list[int] = []
        for row_id, row_size in self._db.execute(
            "SELECT id, size FROM outbox WHERE kind = ? AND id > ? ORDER BY id",
            (RowKind.FRAME.value, self._sent_through),
        ):
            if freed_count >= excess_items and freed_bytes >= excess_bytes:
                break
            victims.append(int(row_id))
            freed_count += 1
            freed_bytes += int(row_size)
        if kind is RowKind.FRAME and (freed_count < excess_items or freed_bytes < excess_bytes):
            return 0, 0, 0  # not enough frames to drop: the new frame is dropped instead
        if victims:
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
        return freed_count, freed_bytes, len(victims)

    # -- reading and acknowledging ----------------------------------------------------------
    def peek_after(self, after_id: int, limit: int) -> tuple[list[SpoolRow], int]:
        """Up to `limit` rows with id > after_id in order, and the highest id stored so far.

        The rows returned count as handed to the broker from then on: a full spool no longer
        drops them (they would reach the broker anyway, so counting them dropped would be wrong).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seq, kind, topic, qos, retain, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            last = self._last_id
            if rows:
                self._sent_through = max(self._sent_through, int(rows[-1][0]))
        return [SpoolRow(r[0], r[1], RowKind(r[2]), r[3], r[4], bool(r[5]), bytes(r[6])) for r in rows], last

    def ack_through(self, row_id: int) -> int:
        """Forget every row with id <= row_id (all of them were acknowledged); returns rows removed."""
        with self._lock:
            sizes = self._db.execute("DELETE FROM outbox WHERE id <= ? RETURNING size", (row_id,)).fetchall()
            self._count -= len(sizes)
            self._bytes -= sum(int(s[0]) for s in sizes)
            self._changed.notify_all()
            return len(sizes)

    def wait_for_rows(self, after_id: int, timeout: float) -> bool:
        """Block until a row with id > after_id was appended, or `timeout`; True if there is one."""
        with self._changed:
            return self._changed.wait_for(lambda: self._last_id > after_id, timeout)

    def wait_until_empty(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._lock_file.close()
