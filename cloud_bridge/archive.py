"""The bridge's local archive: one SQLite file with sessions, frame verdicts and frames.

Why it exists: it is always on, so a site without InfluxDB or Firebase still keeps every
session, and the HTML report (`thermoscreen report`) and the demo read results from it.
The bridge writes it (through its archive sink, idempotently: rows are keyed so a
redelivered message overwrites its own row); readers may open it at the same time (WAL).

Read API (what the report builds on)::

    from cloud_bridge.archive import Archive

    with Archive(path) as archive:             # read-only by default; raises ArchiveError
        for s in archive.sessions():           # SessionRecord, newest first (device_id=, patient_ref= filter)
            ...
        s = archive.session(session_id)        # SessionRecord or None
        vs = archive.verdicts(session_id)      # list[VerdictRecord], by capture time
        fs = archive.frames(session_id)        # FrameSeries: .seq, .capture_ns, .temperatures_c (n, rows, cols)
        m = archive.mean_frame(session_id)     # float32 (rows, cols) in degrees C, or None without frames

`SessionRecord` fields: session_id, device_id, patient_ref, started_ns, ended_ns (None while
open), frames_reported (the device's frame count at session end), and the session verdict:
frames (verdicts combined), probability, flagged, threshold, rule, model_version, verdict_ns,
member_spread and inconclusive ("inconclusive: repeat the capture"; all None until the bridge
has computed it; `has_verdict` says whether it has).

Tables (`SCHEMA_SQL`): `sessions` (PK session_id), `verdicts` (PK device_id, incarnation, seq),
`frames` (PK device_id, incarnation, seq: a re-imaged device starts its seq at 0 again; pixels
are int16 centi-degrees C, little-endian, row-major, zlib-compressed). Version-1 files (keyed
device_id, seq) are migrated on the writer's open, their rows under the legacy incarnation;
files from before the inconclusive fields gain those columns in place (NULL / 0 in old rows).
`rewrites` (PK kind, device_id) counts raw writes that met an existing frame or verdict row
(`REWRITES_SQL` triggers; `Archive.rewrites()`): a replay overwrites its row, so row counts
alone cannot show that anything was written twice.

The archive holds results of a screening aid, not a diagnosis.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from contract.ids import LEGACY_INCARNATION
from contract.messages import Verdict
from transport.private_files import private_dir, private_file

SCHEMA_VERSION = 2
#: The label of a `Verdict` rebuilt from an archive row (the archive does not store labels).
ARCHIVED_LABEL = "archived"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id      TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    patient_ref     TEXT,
    started_ns      INTEGER,
    ended_ns        INTEGER,
    frames_reported INTEGER,
    end_reason      TEXT,
    frames          INTEGER,
    probability     REAL,
    flagged         INTEGER,
    threshold       REAL,
    rule            TEXT,
    model_version   TEXT,
    verdict_ns      INTEGER,
    member_spread   REAL,
    inconclusive    INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_ns);
CREATE TABLE IF NOT EXISTS verdicts (
    device_id     TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    session_id    TEXT,
    patient_ref   TEXT,
    capture_ns    INTEGER NOT NULL,
    probability   REAL NOT NULL,
    flagged       INTEGER NOT NULL,
    threshold     REAL NOT NULL,
    model_version TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    latency_ms    REAL NOT NULL,
    incarnation   TEXT NOT NULL DEFAULT '0000000000000000',
    member_spread REAL,
    band_low      REAL,
    band_high     REAL,
    max_member_spread REAL,
    inconclusive  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, incarnation, seq)
);
CREATE INDEX IF NOT EXISTS verdicts_session ON verdicts (session_id, capture_ns);
CREATE TABLE IF NOT EXISTS frames (
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    session_id  TEXT,
    patient_ref TEXT,
    capture_ns  INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    cols        INTEGER NOT NULL,
    ambient_c   REAL NOT NULL,
    centi_zlib  BLOB NOT NULL,
    incarnation TEXT NOT NULL DEFAULT '0000000000000000',
    PRIMARY KEY (device_id, incarnation, seq)
);
CREATE INDEX IF NOT EXISTS frames_session ON frames (session_id, capture_ns);
CREATE TABLE IF NOT EXISTS rewrites (
    kind      TEXT NOT NULL,
    device_id TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (kind, device_id)
);
"""

# Why triggers: BEFORE INSERT sees the row an INSERT OR REPLACE is about to replace, in the
# writer's own transaction, so the count survives a SIGKILL exactly as the rows do; it costs
# one primary-key probe per row and no change to the writers. Kept out of SCHEMA_SQL because
# `_migrate` splits that on ";".
REWRITES_SQL = "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {table}_rewrites BEFORE INSERT ON {table}
WHEN EXISTS (SELECT 1 FROM {table} WHERE device_id = NEW.device_id AND incarnation = NEW.incarnation
             AND seq = NEW.seq)
BEGIN
    INSERT INTO rewrites (kind, device_id, n) VALUES ('{table}', NEW.device_id, 1)
    ON CONFLICT (kind, device_id) DO UPDATE SET n = n + 1;
END;
"""
    for table in ("frames", "verdicts")
)

# SQLite stores integers as signed 64-bit; sequence numbers are u64. Values below 2**63 (all
# real ones) are stored as they are; larger ones wrap to negative (two's complement).
_U64 = 2**64
_I64_MAX = 2**63 - 1


def seq_to_sql(seq: int) -> int:
    """u64 sequence number -> signed 64-bit SQLite integer (identity below 2**63)."""
    return seq if seq <= _I64_MAX else seq - _U64


def seq_from_sql(value: int) -> int:
    v = int(value)
    return v if v >= 0 else v + _U64


class ArchiveError(RuntimeError):
    """The archive file is missing, unreadable or not an archive; the message is one line."""


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    device_id: str
    patient_ref: str | None
    started_ns: int | None
    ended_ns: int | None
    frames_reported: int | None
    end_reason: str | None
    frames: int | None
    probability: float | None
    flagged: bool | None
    threshold: float | None
    rule: str | None
    model_version: str | None
    verdict_ns: int | None
    member_spread: float | None = None
    inconclusive: bool | None = None

    @property
    def has_verdict(self) -> bool:
        return self.probability is not None


@dataclass(frozen=True)
class VerdictRecord:
    device_id: str
    seq: int
    session_id: str | None
    patient_ref: str | None
    capture_ns: int
    probability: float
    flagged: bool
    threshold: float
    model_version: str
    node_id: str
    latency_ms: float
    incarnation: str = LEGACY_INCARNATION
    #: The inconclusive fields (contract `Verdict`), kept so that a session re-judged from the
    #: archive applies the same inconclusive rule.
    member_spread: float | None = None
    band_low: float | None = None
    band_high: float | None = None
    max_member_spread: float | None = None
    inconclusive: bool = False

    @classmethod
    def from_verdict(cls, v: Verdict) -> VerdictRecord:
        """The archive row of a contract `Verdict` (its label is not kept)."""
        return cls(
            v.device_id, v.seq, v.session_id, v.patient_ref, v.capture_ns, v.probability, v.flagged,
            v.threshold, v.model_version, v.node_id, v.latency_ms, v.incarnation,
            v.member_spread, v.band_low, v.band_high, v.max_member_spread, v.inconclusive,
        )  # fmt: skip

    def as_verdict(self) -> Verdict:
        """The contract's `Verdict` of this row (the session rule's input). The archive keeps no
        label; the rule does not read it."""
        return Verdict(
            device_id=self.device_id,
            seq=self.seq,
            capture_ns=self.capture_ns,
            session_id=self.session_id,
            patient_ref=self.patient_ref,
            probability=self.probability,
            label=ARCHIVED_LABEL,
            flagged=self.flagged,
            threshold=self.threshold,
            model_version=self.model_version,
            node_id=self.node_id,
            latency_ms=self.latency_ms,
            incarnation=self.incarnation,
            member_spread=self.member_spread,
            band_low=self.band_low,
            band_high=self.band_high,
            max_member_spread=self.max_member_spread,
            inconclusive=self.inconclusive,
        )


@dataclass(frozen=True)
class FrameSeries:
    """The frames of one session in capture order; temperatures in degrees C."""

    device_id: str | None
    seq: npt.NDArray[np.uint64]
    capture_ns: npt.NDArray[np.int64]
    ambient_c: npt.NDArray[np.float32]
    temperatures_c: npt.NDArray[np.float32]  # shape (n, rows, cols)

    def __len__(self) -> int:
        return int(self.seq.shape[0])


@dataclass(frozen=True)
class ArchivedFrame:
    """A frame row as the archive stores it (pixels already compressed)."""

    device_id: str
    seq: int
    session_id: str | None
    patient_ref: str | None
    capture_ns: int
    rows: int
    cols: int
    ambient_c: float
    centi_zlib: bytes
    incarnation: str = LEGACY_INCARNATION


def compress_centi(centi: npt.NDArray[np.int16]) -> bytes:
    """int16 centi-degrees -> zlib(little-endian, row-major bytes).

    Level 1: the stream format (and `decompress_centi`) does not depend on the level, and on
    noisy sensor pixels level 6 saves little space for several times the CPU.
    """
    return zlib.compress(np.ascontiguousarray(centi, dtype="<i2").tobytes(), 1)


def decompress_centi(blob: bytes, rows: int, cols: int) -> npt.NDArray[np.int16]:
    raw = zlib.decompress(blob)
    if len(raw) != rows * cols * 2:
        raise ArchiveError(f"frame blob holds {len(raw)} bytes, expected {rows * cols * 2} for {rows}x{cols}")
    return np.frombuffer(raw, dtype="<i2").reshape(rows, cols).astype(np.int16)


_SESSION_COLUMNS = (
    "session_id, device_id, patient_ref, started_ns, ended_ns, frames_reported, end_reason, "
    "frames, probability, flagged, threshold, rule, model_version, verdict_ns, member_spread, inconclusive"
)
_VERDICT_COLUMNS = (
    "device_id, seq, session_id, patient_ref, capture_ns, probability, flagged, threshold, "
    "model_version, node_id, latency_ms, incarnation, member_spread, band_low, band_high, max_member_spread, "
    "inconclusive"
)
#: Columns added after version 2 (table, column, declaration): added in place to older archives.
_ADDED_COLUMNS = (
    ("sessions", "member_spread", "REAL"),
    ("sessions", "inconclusive", "INTEGER"),
    ("verdicts", "member_spread", "REAL"),
    ("verdicts", "band_low", "REAL"),
    ("verdicts", "band_high", "REAL"),
    ("verdicts", "max_member_spread", "REAL"),
    ("verdicts", "inconclusive", "INTEGER NOT NULL DEFAULT 0"),
)


def _session(row: tuple[object, ...]) -> SessionRecord:
    (sid, dev, pref, started, ended, reported, reason, frames, prob, flagged, thr, rule, mv, vns, spread, inc) = row
    return SessionRecord(
        session_id=str(sid),
        device_id=str(dev),
        patient_ref=None if pref is None else str(pref),
        started_ns=None if started is None else int(started),  # type: ignore[call-overload]
        ended_ns=None if ended is None else int(ended),  # type: ignore[call-overload]
        frames_reported=None if reported is None else int(reported),  # type: ignore[call-overload]
        end_reason=None if reason is None else str(reason),
        frames=None if frames is None else int(frames),  # type: ignore[call-overload]
        probability=None if prob is None else float(prob),  # type: ignore[arg-type]
        flagged=None if flagged is None else bool(flagged),
        threshold=None if thr is None else float(thr),  # type: ignore[arg-type]
        rule=None if rule is None else str(rule),
        model_version=None if mv is None else str(mv),
        verdict_ns=None if vns is None else int(vns),  # type: ignore[call-overload]
        member_spread=None if spread is None else float(spread),  # type: ignore[arg-type]
        inconclusive=None if inc is None else bool(inc),
    )


def _verdict(row: tuple[object, ...]) -> VerdictRecord:
    (dev, seq, sid, pref, cap, prob, flagged, thr, mv, node, lat, inc, spread, low, high, limit, unsure) = row
    return VerdictRecord(
        device_id=str(dev),
        seq=seq_from_sql(int(seq)),  # type: ignore[call-overload]
        session_id=None if sid is None else str(sid),
        patient_ref=None if pref is None else str(pref),
        capture_ns=int(cap),  # type: ignore[call-overload]
        probability=float(prob),  # type: ignore[arg-type]
        flagged=bool(flagged),
        threshold=float(thr),  # type: ignore[arg-type]
        model_version=str(mv),
        node_id=str(node),
        latency_ms=float(lat),  # type: ignore[arg-type]
        incarnation=str(inc),
        member_spread=_optional_float(spread),
        band_low=_optional_float(low),
        band_high=_optional_float(high),
        max_member_spread=_optional_float(limit),
        inconclusive=bool(unsure),
    )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _add_columns(conn: sqlite3.Connection) -> None:
    """Archives written before the inconclusive fields gain their columns (NULL / 0 for old rows)."""
    for table, column, declaration in _ADDED_COLUMNS:
        if column not in {str(c[1]) for c in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def connect_archive(path: str | Path, *, readonly: bool) -> sqlite3.Connection:
    """An SQLite connection to the archive (WAL; the writer creates the tables)."""
    p = Path(path)
    try:
        if readonly:
            if not p.exists():
                raise ArchiveError(f"{p}: archive not found")
            conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
        else:
            private_dir(p.parent)
            private_file(p)
            conn = sqlite3.connect(str(p), timeout=10.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the queue forgets an item once the archive confirmed it, so the rows must
            # be on disk by then, not only in the OS cache.
            conn.execute("PRAGMA synchronous=FULL")
            _migrate(conn)
            conn.executescript(SCHEMA_SQL)
            _add_columns(conn)
            conn.executescript(REWRITES_SQL)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.commit()
        conn.execute("PRAGMA busy_timeout=10000")
        # Fail early and clearly on a file that is not an archive.
        conn.execute("SELECT 1 FROM sessions LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"{p}: not a thermoscreen archive: {exc}") from None
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Version 1 archives keyed frames and verdicts by (device, seq): rebuild those two tables
    keyed by (device, incarnation, seq), their rows under the legacy incarnation. One transaction."""
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    old = [
        t
        for t in ("verdicts", "frames")
        if t in tables and "incarnation" not in {str(c[1]) for c in conn.execute(f"PRAGMA table_info({t})")}
    ]
    if not old:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in old:
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
            conn.execute(f"DROP INDEX IF EXISTS {table}_session")
        for statement in SCHEMA_SQL.split(";"):  # not executescript: it would commit half a migration
            if statement.strip():
                conn.execute(statement)
        for table in old:
            columns = ", ".join(str(c[1]) for c in conn.execute(f"PRAGMA table_info({table}_v1)"))
            conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v1")
            conn.execute(f"DROP TABLE {table}_v1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class Archive:
    """Reads (and, with `readonly=False`, writes) the archive file at `path`."""

    def __init__(self, path: str | Path, *, readonly: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._conn = connect_archive(self.path, readonly=readonly)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    # -- reads -----------------------------------------------------------------------------
    def sessions(self, *, device_id: str | None = None, patient_ref: str | None = None) -> list[SessionRecord]:
        """All sessions, newest first, optionally for one device or one patient."""
        where, params = [], []
        if device_id is not None:
            where.append("device_id = ?")
            params.append(device_id)
        if patient_ref is not None:
            where.append("patient_ref = ?")
            params.append(patient_ref)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {clause} "
            "ORDER BY COALESCE(started_ns, ended_ns) DESC, session_id",
            params,
        ).fetchall()
        return [_session(r) for r in rows]

    def session(self, session_id: str) -> SessionRecord | None:
        row = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else _session(row)

    def verdicts(self, session_id: str) -> list[VerdictRecord]:
        """The frame verdicts of a session in capture order."""
        rows = self._conn.execute(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE session_id = ? ORDER BY capture_ns, seq", (session_id,)
        ).fetchall()
        return [_verdict(r) for r in rows]

    def frames(self, session_id: str) -> FrameSeries:
        """The session's frames in capture order (frames of a different shape than the first are skipped)."""
        rows = self._conn.execute(
            "SELECT device_id, seq, capture_ns, rows, cols, ambient_c, centi_zlib FROM frames "
            "WHERE session_id = ? ORDER BY capture_ns, seq",
            (session_id,),
        ).fetchall()
        return _frame_series(rows)

    def mean_frame(self, session_id: str) -> npt.NDArray[np.float32] | None:
        """The pixel-wise mean temperature (C) over the session's frames, or None without frames."""
        series = self.frames(session_id)
        if len(series) == 0:
            return None
        mean: npt.NDArray[np.float32] = series.temperatures_c.mean(axis=0, dtype=np.float64).astype(np.float32)
        return mean

    def pending_sessions(self) -> list[SessionRecord]:
        """Ended sessions without a session verdict yet (the bridge resumes them after a restart)."""
        rows = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE ended_ns IS NOT NULL AND verdict_ns IS NULL"
        ).fetchall()
        return [_session(r) for r in rows]

    def sessions_without_verdict(self) -> list[SessionRecord]:
        """Open and ended sessions without a session verdict (the session stage resumes from them)."""
        rows = self._conn.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE verdict_ns IS NULL").fetchall()
        return [_session(r) for r in rows]

    # -- writes (the bridge's archive sink; callers group them in one transaction) ----------
    def put_session_start(self, *, session_id: str, device_id: str, patient_ref: str, started_ns: int) -> None:
        self._conn.execute(
            "INSERT INTO sessions (session_id, device_id, patient_ref, started_ns) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET started_ns = excluded.started_ns "
            # A session is never handed to another device or patient (intake refuses that too).
            "WHERE sessions.device_id = excluded.device_id AND sessions.patient_ref IS excluded.patient_ref",
            (session_id, device_id, patient_ref, started_ns),
        )

    def put_session_end(
        self,
        *,
        session_id: str,
        device_id: str,
        patient_ref: str,
        ended_ns: int,
        frames_reported: int | None,
        end_reason: str | None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO sessions (session_id, device_id, patient_ref, ended_ns, frames_reported, end_reason) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET ended_ns = excluded.ended_ns, "
            "frames_reported = excluded.frames_reported, end_reason = excluded.end_reason, "
            "device_id = excluded.device_id, patient_ref = excluded.patient_ref",
            (session_id, device_id, patient_ref, ended_ns, frames_reported, end_reason),
        )

    def put_session_verdict(
        self,
        *,
        session_id: str,
        device_id: str,
        patient_ref: str,
        frames: int,
        probability: float,
        flagged: bool,
        threshold: float,
        rule: str,
        model_version: str,
        verdict_ns: int,
        member_spread: float | None = None,
        inconclusive: bool = False,
    ) -> None:
        self._conn.execute(
            "INSERT INTO sessions (session_id, device_id, patient_ref, frames, probability, flagged, threshold, "
            "rule, model_version, verdict_ns, member_spread, inconclusive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET frames = excluded.frames, probability = excluded.probability, "
            "flagged = excluded.flagged, threshold = excluded.threshold, rule = excluded.rule, "
            "model_version = excluded.model_version, verdict_ns = excluded.verdict_ns, "
            "member_spread = excluded.member_spread, inconclusive = excluded.inconclusive",
            (
                session_id,
                device_id,
                patient_ref,
                frames,
                probability,
                int(flagged),
                threshold,
                rule,
                model_version,
                verdict_ns,
                member_spread,
                int(inconclusive),
            ),
        )

    def put_verdicts(self, verdicts: Iterable[VerdictRecord]) -> None:
        self._conn.executemany(
            f"INSERT OR REPLACE INTO verdicts ({_VERDICT_COLUMNS}) VALUES ({', '.join('?' * 17)})",
            [
                (
                    v.device_id,
                    seq_to_sql(v.seq),
                    v.session_id,
                    v.patient_ref,
                    v.capture_ns,
                    v.probability,
                    int(v.flagged),
                    v.threshold,
                    v.model_version,
                    v.node_id,
                    v.latency_ms,
                    v.incarnation,
                    v.member_spread,
                    v.band_low,
                    v.band_high,
                    v.max_member_spread,
                    int(v.inconclusive),
                )
                for v in verdicts
            ],
        )

    def put_frames(self, frames: Iterable[ArchivedFrame]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO frames (device_id, seq, session_id, patient_ref, capture_ns, rows, cols, "
            "ambient_c, centi_zlib, incarnation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f.device_id,
                    seq_to_sql(f.seq),
                    f.session_id,
                    f.patient_ref,
                    f.capture_ns,
                    f.rows,
                    f.cols,
                    f.ambient_c,
                    f.centi_zlib,
                    f.incarnation,
                )
                for f in frames
            ],
        )

    def put_session_no_verdict(self, session_id: str, verdict_ns: int) -> None:
        """Close an ended session that never got a frame verdict (it stops being pending)."""
        self._conn.execute(
            "UPDATE sessions SET rule = 'no-verdicts', frames = 0, verdict_ns = ? WHERE session_id = ? "
            "AND verdict_ns IS NULL",
            (verdict_ns, session_id),
        )

    def commit(self) -> None:
        self._conn.commit()

    def counts(self) -> dict[str, int]:
        """Rows per table (for summaries and tests)."""
        return {
            table: int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("sessions", "verdicts", "frames")
        }

    def rewrites(self) -> dict[str, int]:
        """Raw frame and verdict writes that overwrote an existing row, per table ({} in archives
        written before the counter existed). Zero unless something was delivered twice."""
        try:
            rows = self._conn.execute("SELECT kind, SUM(n) FROM rewrites GROUP BY kind").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise
        return {str(kind): int(n) for kind, n in rows}


def _frame_series(rows: Iterable[tuple[object, ...]]) -> FrameSeries:
    seqs: list[int] = []
    caps: list[int] = []
    ambient: list[float] = []
    pixels: list[npt.NDArray[np.int16]] = []
    shape: tuple[int, int] | None = None
    device: str | None = None
    for dev, seq, cap, nrows, ncols, amb, blob in rows:
        rc = (int(nrows), int(ncols))  # type: ignore[call-overload]
        if shape is None:
            shape, device = rc, str(dev)
        if rc != shape:
            continue
        seqs.append(seq_from_sql(int(seq)))  # type: ignore[call-overload]
        caps.append(int(cap))  # type: ignore[call-overload]
        ambient.append(float(amb))  # type: ignore[arg-type]
        pixels.append(decompress_centi(bytes(blob), *rc))  # type: ignore[call-overload]
    rows_, cols_ = shape or (0, 0)
    temps = (
        np.stack(pixels).astype(np.float32) / np.float32(100.0)
        if pixels
        else np.zeros((0, rows_, cols_), dtype=np.float32)
    )
    return FrameSeries(
        device_id=device,
        seq=np.asarray(seqs, dtype=np.uint64),
        capture_ns=np.asarray(caps, dtype=np.int64),
        ambient_c=np.asarray(ambient, dtype=np.float32),
        temperatures_c=temps,
    )
