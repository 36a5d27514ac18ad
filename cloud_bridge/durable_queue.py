"""The bridge's on-disk queue: SQLite in WAL mode, one row per message, one cursor per sink.

Why this shape: the broker is told to forget a message (PUBACK) only after the message is
committed here, so the commit must be durable; `synchronous=FULL` fsyncs the WAL on every
commit, which survives power loss and OS crashes (NORMAL would survive only a process crash,
yet the broker would already have dropped the message). The fsync cost is paid once per
ingest batch (group commit), not once per message.

Each sink drains the queue in id order and owns a cursor (the last id it confirmed); an item
leaves the queue when every sink's cursor passed it. Ids use AUTOINCREMENT so they are never
reused (a reused id below a cursor would be skipped). The queue is bounded by `max_items`:
`drop_oldest` moves every cursor past the oldest items and deletes them, `drop_newest`
refuses new items; either way the drops are counted and persisted. It is bounded in payload
bytes too (`max_bytes`, same policy), and each source (the device or node a message came
from) may hold at most its `SourceQuota`: beyond it the source's new messages are refused
and counted per source, so one flooding device cannot push the others' data out.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from transport.private_files import private_dir, private_file

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    source      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deadletters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stage       TEXT NOT NULL,
    item_id     INTEGER,
    kind        TEXT,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_ns INTEGER NOT NULL,
    UNIQUE (stage, item_id)
);
"""
#: Counter names of items refused by a source's quota: `quota:<source>`.
_QUOTA_PREFIX = "quota:"
#: Counter names of dead letters: `dead:<stage>:<reason>` (stage: intake or a sink's name).
_DEAD_PREFIX = "dead:"
#: Bytes of a rejected MQTT payload kept in the dead-letter table (queued items are kept whole).
DEAD_PAYLOAD_BYTES = 64 * 1024

DropPolicy = Literal["drop_oldest", "drop_newest"]


@dataclass(frozen=True)
class NewItem:
    """A validated message about to be queued."""

    kind: str
    topic: str
    payload: bytes
    received_ns: int
    #: Who sent it (a device or node id); "" for the bridge's own items, which no quota limits.
    source: str = ""


@dataclass(frozen=True)
class SourceQuota:
    """What one source may hold in the queue at most (items waiting for any sink)."""

    max_items: int
    max_bytes: int


@dataclass(frozen=True)
class DeadItem:
    """A message or queued item that can never be stored, kept with the reason (and replayable)."""

    stage: str
    reason: str
    detail: str
    topic: str
    payload: bytes
    received_ns: int
    item_id: int | None = None
    kind: str | None = None
    #: False: only counted, no row (a source over its dead-letter rate must not fill the disk).
    keep_row: bool = True


@dataclass(frozen=True)
class QueuedItem:
    id: int
    kind: str
    topic: str
    payload: bytes
    received_ns: int


@dataclass(frozen=True)
class Batch:
    """Items for one sink; confirming it moves the sink's cursor to `end_id`."""

    sink: str
    items: list[QueuedItem]
    end_id: int


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_age_s: float
    dropped: int
    stored: int
    sink_depth: dict[str, int] = field(default_factory=dict)
    #: Dead letters per `stage/reason` (e.g. `intake/malformed`, `archive/range`).
    dead: dict[str, int] = field(default_factory=dict)
    #: Payload bytes waiting in the queue.
    depth_bytes: int = 0
    #: Items refused because their source was over its quota, per source.
    quota_dropped: dict[str, int] = field(default_factory=dict)


class DurableQueue:
    """Thread-safe: one writer connection behind a lock, a read connection per thread."""

    def __init__(
        self,
        path: Path,
        sinks: Sequence[str],
        *,
        max_items: int = 2_000_000,
        max_bytes: int = 2**31,
        quota: SourceQuota | None = None,
        drop_policy: DropPolicy = "drop_oldest",
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        if not sinks:
            raise ValueError("the queue needs at least one sink")
        self.path = Path(path)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.quota = quota
        self.drop_policy = drop_policy
        self._synchronous = synchronous.upper()
        private_dir(self.path.parent)
        private_file(self.path)
        self._lock = threading.Lock()
        #: Three conditions on one lock, so that each event wakes only the threads it can
        #: concern (at 200 frames/s every append and every confirm woke every sink, the session
        #: stage and the drain waiter, most only to go back to sleep): `_new_data` on each commit
        #: of new items (`wait_for_data`), `_filled` when a lingering sink's batch is full
        #: (`linger`), `_confirmed` when a cursor moved (`wait_empty`). `wake` and `close` notify all.
        self._new_data = threading.Condition(self._lock)
        self._filled = threading.Condition(self._lock)
        self._confirmed = threading.Condition(self._lock)
        #: item id at which each lingering sink's batch is full (only while it lingers).
        self._fill_at: dict[str, int] = {}
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._w = self._open()
        self._w.executescript(_SCHEMA)
        columns = {str(r[1]) for r in self._w.execute("PRAGMA table_info(items)")}
        if "source" not in columns:  # a queue file of an older bridge
            self._w.execute("ALTER TABLE items ADD COLUMN source TEXT NOT NULL DEFAULT ''")
        with self._write_transaction():
            # Sinks no longer configured would hold items forever: forget their cursors.
            marks = ",".join("?" for _ in sinks)
            self._w.execute(f"DELETE FROM cursors WHERE sink NOT IN ({marks})", tuple(sinks))
            for sink in sinks:
                self._w.execute("INSERT OR IGNORE INTO cursors (sink, position) VALUES (?, 0)", (sink,))
        self._cursors: dict[str, int] = dict(self._w.execute("SELECT sink, position FROM cursors").fetchall())
        self._last_id = int(self._w.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])
        seq_row = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        self._last_id = max(self._last_id, int(seq_row[0]) if seq_row else 0)
        counters = dict(self._w.execute("SELECT name, value FROM counters").fetchall())
        self._dropped = int(counters.get("dropped", 0))
        self._stored = int(counters.get("stored", 0))
        self._quota_dropped = {
            name[len(_QUOTA_PREFIX) :]: int(value) for name, value in counters.items() if name.startswith(_QUOTA_PREFIX)
        }
        #: Items and payload bytes waiting in the queue, per source (kept in step with every insert/delete).
        self._pending: dict[str, list[int]] = {}
        self._bytes = 0
        self._dead = {
            name[len(_DEAD_PREFIX) :].replace(":", "/"): int(value)
            for name, value in counters.items()
            if name.startswith(_DEAD_PREFIX)
        }
        self._closed = False
        #: monotonic time of the last `append` that added items (sinks linger while items keep coming).
        self._last_append = 0.0
        self._w_sync = ""
        self._purge_locked()
        floor = min(self._cursors.values())
        self._account_locked(floor, self._last_id, +1)

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE on the writer connection; COMMIT on success, ROLLBACK on any exception."""
        self._w.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._w.execute("COMMIT")
        except BaseException:
            self._w.execute("ROLLBACK")
            raise

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as exc:
            raise RuntimeError(f"{self.path}: cannot open the bridge queue: {exc}") from None
        return conn

    def _set_sync_locked(self, mode: str) -> None:
        """Switch the writer's `synchronous` only when it changes (a PRAGMA per commit adds up)."""
        if self._w_sync != mode:
            self._w.execute(f"PRAGMA synchronous={mode}")
            self._w_sync = mode

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    @property
    def sinks(self) -> list[str]:
        return sorted(self._cursors)

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        items: Sequence[NewItem],
        dead: Sequence[DeadItem] = (),
        state: Callable[[sqlite3.Connection], None] | None = None,
    ) -> int:
        """Commit `items` and `dead` letters durably (one transaction); returns how many items the limit dropped.

        `state` writes intake state (session owners, frame keys: `provenance`) in the same
        transaction, so that state never claims an item that was not committed.
        """
        if not items and not dead and state is None:
            return 0
        with self._lock:
            rows, refused = self._within_quota_locked(items)
            dropped = 0
            self._set_sync_locked(self._synchronous)
            depth = self._last_id - min(self._cursors.values())
            excess = depth + len(rows) - self.max_items
            excess_bytes = self._bytes + sum(len(r.payload) for r in rows) - self.max_bytes
            with self._write_transaction():
                if (excess > 0 or excess_bytes > 0) and self.drop_policy == "drop_newest":
                    keep = len(rows)
                    while keep > 0 and (excess > 0 or excess_bytes > 0):
                        keep -= 1
                        excess -= 1
                        excess_bytes -= len(rows[keep].payload)
                    dropped = len(rows) - keep
                    rows = rows[:keep]
                elif excess > 0 or excess_bytes > 0:
                    dropped = self._drop_oldest_locked(max(excess, 0), max(excess_bytes, 0))
                if rows:
                    self._w.executemany(
                        "INSERT INTO items (kind, topic, payload, received_ns, source) VALUES (?, ?, ?, ?, ?)",
                        [(r.kind, r.topic, r.payload, r.received_ns, r.source) for r in rows],
                    )
                if dropped:
                    self._bump_locked("dropped", dropped)
                for source, n in refused.items():
                    self._bump_locked(_QUOTA_PREFIX + source, n)
                added = self._dead_letters_locked(dead)
                if state is not None:
                    state(self._w)
            self._count_dead(added)
            self._dropped += dropped
            for source, n in refused.items():
                self._quota_dropped[source] = self._quota_dropped.get(source, 0) + n
            for r in rows:
                self._add_pending(r.source, 1, len(r.payload))
            if rows:
                seq = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
                self._last_id = int(seq[0])
                self._last_append = time.monotonic()
            self._new_data.notify_all()
            if any(at <= self._last_id for at in self._fill_at.values()):
                self._filled.notify_all()
            if dropped:  # drop_oldest moved the cursors
                self._confirmed.notify_all()
            return dropped + sum(refused.values())

    def _within_quota_locked(self, items: Sequence[NewItem]) -> tuple[list[NewItem], dict[str, int]]:
        """The items whose source stays within its quota, and how many each source had refused.

        Why: the queue is shared; without a per-source bound, one device flooding it (valid
        messages or not) would push every other device's data out through the global limit.
        """
        quota = self.quota
        if quota is None:
            return list(items), {}
        kept: list[NewItem] = []
        refused: dict[str, int] = {}
        extra: dict[str, list[int]] = {}
        for item in items:
            if not item.source:
                kept.append(item)
                continue
            held = self._pending.get(item.source, [0, 0])
            more = extra.setdefault(item.source, [0, 0])
            if held[0] + more[0] + 1 > quota.max_items or held[1] + more[1] + len(item.payload) > quota.max_bytes:
                refused[item.source] = refused.get(item.source, 0) + 1
                continue
            more[0] += 1
            more[1] += len(item.payload)
            kept.append(item)
        return kept, refused

    def _add_pending(self, source: str, items: int, size: int) -> None:
        held = self._pending.setdefault(source, [0, 0])
        held[0] += items
        held[1] += size
        self._bytes += size
        if held[0] <= 0:
            del self._pending[source]

    def _account_locked(self, after_id: int, through_id: int, sign: int) -> None:
        """Add (+1) or remove (-1) the items with ids in (after_id, through_id] from the per-source counts."""
        if through_id <= after_id:
            return
        rows = self._w.execute(
            "SELECT source, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM items WHERE id > ? AND id <= ? "
            "GROUP BY source",
            (after_id, through_id),
        ).fetchall()
        for source, count, size in rows:
            self._add_pending(str(source), sign * int(count), sign * int(size))

    def with_writer(self, use: Callable[[sqlite3.Connection], T]) -> T:
        """Run `use` on the writer connection (setting up tables of the queue file's other users)."""
        with self._lock:
            return use(self._w)

    def dead_letter(self, dead: Sequence[DeadItem]) -> None:
        """Commit dead letters durably (a sink's refused items) before their batch is confirmed."""
        if not dead:
            return
        with self._lock:
            self._set_sync_locked(self._synchronous)
            with self._write_transaction():
                added = self._dead_letters_locked(dead)
            self._count_dead(added)

    def _dead_letters_locked(self, dead: Sequence[DeadItem]) -> list[str]:
        """Inside a transaction: insert letters (a queued item once per stage) and count them per reason."""
        added: list[str] = []
        for d in dead:
            if not d.keep_row:
                key = f"{d.stage}/{d.reason}"
                self._bump_locked(_DEAD_PREFIX + key.replace("/", ":"), 1)
                added.append(key)
                continue
            cursor = self._w.execute(
                "INSERT OR IGNORE INTO deadletters (stage, item_id, kind, topic, reason, detail, payload, received_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d.stage,
                    d.item_id,
                    d.kind,
                    _text(d.topic[:1024]),
                    _text(d.reason),
                    _text(d.detail[:1000]),
                    d.payload if d.item_id is not None else d.payload[:DEAD_PAYLOAD_BYTES],
                    d.received_ns,
                ),
            )
            if cursor.rowcount == 1:  # a redelivered item refused again is not counted twice
                key = f"{d.stage}/{d.reason}"
                self._bump_locked(_DEAD_PREFIX + key.replace("/", ":"), 1)
                added.append(key)
        return added

    def _count_dead(self, added: Sequence[str]) -> None:
        for key in added:
            self._dead[key] = self._dead.get(key, 0) + 1

    def dead_letters(self, stage: str | None = None) -> list[DeadItem]:
        """The dead-letter table, oldest first (for tests, status and replay)."""
        where, params = ("WHERE stage = ?", (stage,)) if stage is not None else ("", ())
        rows = self._reader().execute(
            "SELECT stage, reason, detail, topic, payload, received_ns, item_id, kind FROM deadletters "
            f"{where} ORDER BY id",
            params,
        )
        return [DeadItem(str(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4]), int(r[5]), r[6], r[7]) for r in rows]

    def _drop_oldest_locked(self, count: int, size: int = 0) -> int:
        """Inside a transaction: move every cursor past the oldest items (at least `count` items and
        `size` payload bytes) and delete them."""
        floor = min(self._cursors.values())
        new_floor = min(floor + count, self._last_id)
        if size > 0:
            freed = 0
            for item_id, length in self._w.execute(
                "SELECT id, LENGTH(payload) FROM items WHERE id > ? ORDER BY id", (floor,)
            ):
                freed += int(length)
                if freed >= size:
                    new_floor = max(new_floor, int(item_id))
                    break
            else:
                new_floor = self._last_id
        if new_floor <= floor:
            return 0
        self._account_locked(floor, new_floor, -1)
        self._w.execute("UPDATE cursors SET position = MAX(position, ?)", (new_floor,))
        self._w.execute("DELETE FROM items WHERE id <= ?", (new_floor,))
        for sink, pos in self._cursors.items():
            self._cursors[sink] = max(pos, new_floor)
        return new_floor - floor

    def _bump_locked(self, name: str, delta: int) -> None:
        self._w.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
            (name, delta, delta),
        )

    # -- draining --------------------------------------------------------------------------
    def read(self, sink: str, *, max_items: int, kinds: Iterable[str] | None = None) -> Batch:
        """The next items for `sink` after its cursor (only `kinds` if given), oldest first.

        One SELECT, no explicit read transaction: the upper bound is `last_id` as of the last
        committed `append` (taken under the lock), so the rows read and `end_id` agree even
        while new items are being committed.
        """
        with self._lock:
            cursor = self._cursors[sink]
            end = self._last_id
        conn = self._reader()
        kind_list = sorted(kinds) if kinds is not None else None
        if kind_list is None:
            rows = conn.execute(
                "SELECT id, kind, topic, payload, received_ns FROM items WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (cursor, end, max_items),
            ).fetchall()
        else:
            marks = ",".join("?" for _ in kind_list)
            rows = conn.execute(
                "SELECT id, kind, topic, payload, received_ns FROM items WHERE id > ? AND id <= ? "
                f"AND kind IN ({marks}) ORDER BY id LIMIT ?",
                (cursor, end, *kind_list, max_items),
            ).fetchall()
        items = [QueuedItem(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), int(r[4])) for r in rows]
        end_id = items[-1].id if len(items) >= max_items else max(end, cursor)
        return Batch(sink, items, end_id)

    def confirm(self, batch: Batch) -> None:
        """The sink stored `batch`: move its cursor and delete items every sink has passed."""
        with self._lock:
            if batch.end_id <= self._cursors[batch.sink]:
                return
            cursors = dict(self._cursors)
            cursors[batch.sink] = batch.end_id
            old_floor = min(self._cursors.values())
            floor = min(cursors.values())
            # A lost cursor update only re-sends items to an idempotent sink: no fsync needed here
            # (the next FULL commit of `append` makes it durable anyway).
            self._set_sync_locked("NORMAL")
            with self._write_transaction():
                self._w.execute(
                    "UPDATE cursors SET position = MAX(position, ?) WHERE sink = ?", (batch.end_id, batch.sink)
                )
                deleted = 0
                if floor > old_floor:  # only the slowest sink's confirm can free items
                    self._account_locked(old_floor, floor, -1)
                    deleted = max(0, self._w.execute("DELETE FROM items WHERE id <= ?", (floor,)).rowcount)
                if deleted:
                    self._bump_locked("stored", deleted)
            self._cursors = cursors
            self._stored += deleted
            self._confirmed.notify_all()

    def _purge_locked(self) -> None:
        floor = min(self._cursors.values())
        self._set_sync_locked("NORMAL")
        with self._write_transaction():
            deleted = max(0, self._w.execute("DELETE FROM items WHERE id <= ?", (floor,)).rowcount)
            if deleted:
                self._bump_locked("stored", deleted)
        self._stored += deleted

    def wait_for_data(self, sink: str, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until there may be items after `sink`'s cursor, `stop` is set, or timeout."""
        with self._new_data:
            return self._new_data.wait_for(
                lambda: self._last_id > self._cursors[sink] or self._closed or (stop is not None and stop.is_set()),
                timeout,
            )

    def wait_confirmed(self, sink: str, position: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until `sink`'s cursor reached `position`, `stop` is set, the queue closes, or timeout."""
        with self._confirmed:
            return self._confirmed.wait_for(
                lambda: self._cursors[sink] >= position or self._closed or (stop is not None and stop.is_set()),
                timeout,
            )

    def linger(self, sink: str, *, fill: int, max_wait_s: float, quiet_s: float, stop: threading.Event) -> None:
        """Let a sink's batch fill: block while fewer than `fill` items wait after its cursor.

        Returns at once when nothing is pending (no batch to fill), and otherwise as soon as
        `fill` items are pending, `max_wait_s` has passed, no new item was committed for
        `quiet_s` (so an idle stream is not delayed), `stop` is set or the queue closes.
        The pending count includes kinds the sink skips; that only ends the wait earlier.
        An append wakes the wait only when it fills the batch; the quiet time is re-checked
        when the timer runs out (so a steady stream wakes a lingering sink about every
        `quiet_s`, not on every commit).
        """
        deadline = time.monotonic() + max_wait_s
        with self._filled:
            try:
                while True:
                    pending = self._last_id - self._cursors[sink]
                    if pending <= 0 or pending >= fill or self._closed or stop.is_set():
                        return
                    now = time.monotonic()
                    remaining = min(deadline, self._last_append + quiet_s) - now
                    if remaining <= 0:
                        return
                    self._fill_at[sink] = self._cursors[sink] + fill
                    self._filled.wait(remaining)
            finally:
                self._fill_at.pop(sink, None)

    def wake(self) -> None:
        """Wake every waiter (so they see a stop flag at once)."""
        with self._lock:
            self._notify_all_locked()

    def _notify_all_locked(self) -> None:
        self._new_data.notify_all()
        self._filled.notify_all()
        self._confirmed.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        """Block until every sink confirmed every item (or timeout); True if empty."""
        with self._confirmed:
            return self._confirmed.wait_for(
                lambda: self._closed or self._last_id <= min(self._cursors.values()), timeout
            )

    # -- introspection ---------------------------------------------------------------------
    def cursor(self, sink: str) -> int:
        with self._lock:
            return self._cursors[sink]

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._last_id

    def stats(self) -> QueueStats:
        with self._lock:
            floor = min(self._cursors.values())
            depth = self._last_id - floor
            sink_depth = {s: self._last_id - c for s, c in self._cursors.items()}
            dropped, stored, dead = self._dropped, self._stored, dict(self._dead)
            depth_bytes, quota_dropped = self._bytes, dict(self._quota_dropped)
        age = 0.0
        if depth > 0:
            row = self._reader().execute("SELECT received_ns FROM items WHERE id > ? ORDER BY id LIMIT 1", (floor,))
            first = row.fetchone()
            if first is not None:
                age = max(0.0, (time.time_ns() - int(first[0])) / 1e9)
        return QueueStats(
            depth=depth,
            oldest_age_s=age,
            dropped=dropped,
            stored=stored,
            sink_depth=sink_depth,
            dead=dead,
            depth_bytes=depth_bytes,
            quota_dropped=quota_dropped,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._notify_all_locked()
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._w.close()


def _text(value: str) -> str:
    """Text SQLite can store: a lone surrogate (e.g. from a hostile payload's JSON escape) would
    make the whole ingest transaction fail, so it is replaced."""
    return value.encode("utf-8", "replace").decode("utf-8")
