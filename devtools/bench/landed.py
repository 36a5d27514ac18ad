"""What really landed in the stores, per (device, seq): the benches' ground truth for stored/lost/duplicated.

Two stores are read back independently:
- the bridge's SQLite archive (`frames` and `verdicts` tables, keyed by device and seq, so a
  redelivered frame overwrites its row; rows beyond one per key would be duplicates);
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


@dataclass
class StoredFrames:
    """Frames of some devices as found in one store: device -> {seq: capture time in ns (ms for the TSDB)}."""

    frames: dict[str, dict[int, int]] = field(default_factory=dict)
    #: Rows/points beyond one per (device, seq).
    duplicates: int = 0
    #: TSDB only: identical points written more than once.
    rewrites: int = 0
    #: TSDB only: points of different frames with the same series and timestamp (one overwrites the other).
    collisions: int = 0

    def seqs(self, device_id: str) -> dict[int, int]:
        return self.frames.get(device_id, {})

    @property
    def total(self) -> int:
        return sum(len(f) for f in self.frames.values())


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _archive_rows(path: Path, columns: str, table: str, devices: list[str]) -> list[tuple[Any, ...]]:
    """`columns` of `table` rows of `devices`, read-only ([] before the bridge created file or table)."""
    if not path.exists() or not devices:
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
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
    out = StoredFrames({d: {} for d in wanted})
    for device_id, seq, capture_ns in _archive_rows(path, "device_id, seq, capture_ns", "frames", wanted):
        frames = out.frames.setdefault(str(device_id), {})
        if int(seq) in frames:
            out.duplicates += 1
        frames[int(seq)] = int(capture_ns)
    return out


def archive_verdicts(path: Path, devices: Iterable[str]) -> dict[str, set[int]]:
    """Sequence numbers with a stored frame verdict, per device."""
    wanted = list(devices)
    out: dict[str, set[int]] = {d: set() for d in wanted}
    for device_id, seq in _archive_rows(path, "device_id, seq", "verdicts", wanted):
        out.setdefault(str(device_id), set()).add(int(seq))
    return out
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = conn.execute(
            f"SELECT device_id, seq FROM verdicts WHERE device_id IN ({_placeholders(len(wanted))})", wanted
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return out
        raise
    finally:
        conn.close()
    for device_id, seq in rows:
        out.setdefault(str(device_id), set()).add(int(seq))
    return out


def tsdb_frames(tsdb: LocalVictoriaMetrics, devices: Iterable[str]) -> StoredFrames:
    """Frames of `devices` in VictoriaMetrics (one `frame_stats_seq` sample per written point)."""
    from contract.ids import validate_device_id

    wanted = [validate_device_id(d) for d in devices]  # [a-z0-9-]: nothing to escape in the regex
    out = StoredFrames({d: {} for d in wanted})
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
            frames = out.frames.setdefault(device, {})
            if int(value) in frames:
                out.duplicates += 1  # a second distinct point for the same frame
            else:
                frames[int(value)] = ts * 1_000_000
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
