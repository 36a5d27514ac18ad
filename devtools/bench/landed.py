"""What really landed in the stores, per frame identity: the benches' ground truth for stored/lost/duplicated.

A frame's identity is (device, incarnation, seq) where the store carries the device
incarnation (a re-imaged device restarts its seqs under a new one), else (device, seq): the
incarnation column/tag is read when present, so the counts sharpen on their own once the
bridge stores it.

Two stores are read back independently:
- the bridge's SQLite archive (`frames` and `verdicts` tables, keyed by device and seq, so a
  redelivered frame overwrites its row; rows beyond one per key would be duplicates). Its
  *rewrites* (raw frame writes that overwrote an existing row) come from the archive's own
  `rewrites` counter, kept by triggers in the writer's transaction: row counts alone can never
  show a redelivery;
- the TSDB (VictoriaMetrics export of the `frame_stats` measurement's `seq` field; one point
  per frame, keyed by its tags and capture time). A frame stored as two distinct points
  (e.g. different time or tags) is a duplicate. The same point written twice (same series,
  same timestamp) is a *rewrite*: InfluxDB overwrites it, VictoriaMetrics keeps both samples
  (no deduplication configured) - counted separately, because a dashboard summing raw
  samples would see it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.local_tsdb import LocalVictoriaMetrics

#: The TSDB series holding one sample per stored frame (measurement frame_stats, field seq).
FRAME_SEQ_SERIES = "frame_stats_seq"
#: Column (archive) and tag (TSDB) of the device incarnation, where the store has it.
INCARNATION = "incarnation"
#: The incarnation of a frame stored without one (before the stores carry it).
NO_INCARNATION = ""

#: (incarnation, seq): one frame of one device.
FrameKey = tuple[str, int]


@dataclass
class StoredFrames:
    """Frames of some devices as found in one store: device -> {seq: capture time in ns (ms for the TSDB)}."""

    frames: dict[str, dict[int, int]] = field(default_factory=dict)
    #: device -> {(incarnation, seq): capture time}: the frame identities found.
    keys: dict[str, dict[FrameKey, int]] = field(default_factory=dict)
    #: Rows/points beyond one per frame identity.
    duplicates: int = 0
    #: Identical frames written more than once (archive: overwritten rows; TSDB: repeated samples).
    rewrites: int = 0
    #: TSDB only: points of different frames with the same series and timestamp (one overwrites the other).
    collisions: int = 0

    def seqs(self, device_id: str) -> dict[int, int]:
        return self.frames.get(device_id, {})

    def identities(self, device_id: str) -> dict[FrameKey, int]:
        return self.keys.get(device_id, {})

    def add(self, device_id: str, incarnation: str, seq: int, capture_ns: int) -> bool:
        """Record one row/point; False (and counted as a duplicate) if its identity was seen already."""
        keys = self.keys.setdefault(device_id, {})
        if (incarnation, seq) in keys:
            self.duplicates += 1
            return False
        keys[(incarnation, seq)] = capture_ns
        self.frames.setdefault(device_id, {})[seq] = capture_ns
        return True

    @property
    def total(self) -> int:
        return sum(len(f) for f in self.frames.values())


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _archive_rows(path: Path, columns: str, table: str, devices: list[str]) -> list[tuple[Any, ...]]:
    """`columns` of `table` rows of `devices`, read-only ([] before the bridge created file or table).

    `{incarnation}` in `columns` reads the incarnation column, or NO_INCARNATION where the table has none.
    """
    if not path.exists() or not devices:
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        names = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        incarnation = INCARNATION if INCARNATION in names else f"'{NO_INCARNATION}'"
        columns = columns.format(incarnation=incarnation)
        sql = f"SELECT {columns} FROM {table} WHERE device_id IN ({_placeholders(len(devices))})"
        return list(conn.execute(sql, devices).fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def archive_frames(path: Path, devices: Iterable[str]) -> StoredFrames:
    """Frames of `devices` in the archive (empty before the bridge created it)."""
    wanted = list(devices)
    out = StoredFrames({d: {} for d in wanted}, {d: {} for d in wanted})
    columns = "device_id, {incarnation}, seq, capture_ns"
    for device_id, incarnation, seq, capture_ns in _archive_rows(path, columns, "frames", wanted):
        out.add(str(device_id), str(incarnation or NO_INCARNATION), int(seq), int(capture_ns))
    out.rewrites = archive_rewrites(path, wanted, "frames")
    return out


def archive_rewrites(path: Path, devices: Iterable[str], kind: str) -> int:
    """Raw `kind` ("frames" or "verdicts") writes of `devices` that overwrote an existing archive
    row (0 before the bridge created the archive, or in one written before the counter existed)."""
    wanted = list(devices)
    if not path.exists() or not wanted:
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        sql = f"SELECT COALESCE(SUM(n), 0) FROM rewrites WHERE kind = ? AND device_id IN ({_placeholders(len(wanted))})"
        return int(conn.execute(sql, [kind, *wanted]).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        conn.close()


def archive_verdicts(path: Path, devices: Iterable[str]) -> dict[str, set[FrameKey]]:
    """Frame identities with a stored frame verdict, per device."""
    wanted = list(devices)
    out: dict[str, set[FrameKey]] = {d: set() for d in wanted}
    for device_id, incarnation, seq in _archive_rows(path, "device_id, {incarnation}, seq", "verdicts", wanted):
        out.setdefault(str(device_id), set()).add((str(incarnation or NO_INCARNATION), int(seq)))
    return out


def without_verdict(frames: StoredFrames, verdicts: dict[str, set[FrameKey]]) -> int:
    """Frames stored in the archive with no stored verdict.

    Where the verdicts carry no incarnation but the frames do, a verdict matches by seq alone
    (the table cannot say which incarnation it was for).
    """
    missing = 0
    for device, keys in frames.keys.items():
        have = verdicts.get(device, set())
        by_seq = {seq for inc, seq in have if inc == NO_INCARNATION}
        missing += sum(1 for key in keys if key not in have and key[1] not in by_seq)
    return missing


def tsdb_frames(tsdb: LocalVictoriaMetrics, devices: Iterable[str]) -> StoredFrames:
    """Frames of `devices` in VictoriaMetrics (one `frame_stats_seq` sample per written point)."""
    from contract.ids import validate_device_id

    wanted = [validate_device_id(d) for d in devices]  # [a-z0-9-]: nothing to escape in the regex
    out = StoredFrames({d: {} for d in wanted}, {d: {} for d in wanted})
    if not wanted:
        return out
    pattern = "|".join(wanted)
    points: dict[tuple[str, tuple[tuple[str, str], ...], int], int] = {}
    for series in tsdb.export(f'{FRAME_SEQ_SERIES}{{device_id=~"{pattern}"}}'):
        labels = tuple(sorted(series.labels.items()))
        for value, ts in zip(series.values, series.timestamps_ms, strict=True):
            key = (series.name, labels, ts)
            if key in points:
                if points[key] == int(value):
                    out.rewrites += 1
                else:
                    out.collisions += 1  # another frame at the same point: InfluxDB would keep only one
                continue
            points[key] = int(value)
            device = series.labels.get("device_id", "")
            incarnation = series.labels.get(INCARNATION, NO_INCARNATION)
            out.add(device, incarnation, int(value), ts * 1_000_000)  # a second distinct point: a duplicate
    return out


def caught_up(stored: dict[int, int], first_seq: int, since_ns: int) -> bool:
    """True when the store holds a frame captured at or after `since_ns` and every frame before it.

    That is the benches' "recovered" test: nothing offered before the repair is missing and
    frames from after it are landing. (TSDB times are in ms: compare at ms precision.)
    """
    after = [seq for seq, ns in stored.items() if ns >= since_ns - 1_000_000 and seq >= first_seq]
    if not after:
        return False
    upto = min(after)
    have = sum(1 for seq in stored if first_seq <= seq <= upto)
    return have == upto - first_seq + 1
