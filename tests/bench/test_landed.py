"""The fault bench's ground truth read from a real archive schema: frames counted by their identity.

The archive is built with the bridge's own schema (SCHEMA_SQL): frames and verdicts keyed by
(device, incarnation, seq), legacy (pre-incarnation) devices under LEGACY_INCARNATION.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloud_bridge.archive import SCHEMA_SQL
from contract.ids import LEGACY_INCARNATION
from devtools.bench.landed import archive_frames, archive_verdicts, without_verdict


def _archive(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_SQL)
    return conn


def _frame(conn: sqlite3.Connection, seq: int, capture_ns: int, incarnation: str = LEGACY_INCARNATION) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO frames (device_id, incarnation, seq, capture_ns, rows, cols, ambient_c, centi_zlib)"
        " VALUES ('d1', ?, ?, ?, 24, 32, 24.0, x'00')",
        (incarnation, seq, capture_ns),
    )
    conn.commit()


def _verdict(conn: sqlite3.Connection, seq: int, incarnation: str = LEGACY_INCARNATION) -> None:
    conn.execute(
        "INSERT INTO verdicts (device_id, incarnation, seq, capture_ns, probability, flagged, threshold,"
        " model_version, node_id, latency_ms) VALUES ('d1', ?, ?, 1, 0.1, 0, 0.5, 'm', 'n', 1.0)",
        (incarnation, seq),
    )
    conn.commit()


def test_a_reimaged_device_without_incarnation_collides_on_seq(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    conn = _archive(path)
    for seq in (0, 1, 2):  # first image of a legacy (pre-incarnation) device
        _frame(conn, seq, 1_000 + seq)
    for seq in (0, 1):  # re-imaged: seqs restart and overwrite the first image's rows
        _frame(conn, seq, 9_000 + seq)
    _verdict(conn, 0)
    stored = archive_frames(path, ["d1"])
    assert set(stored.identities("d1")) == {(LEGACY_INCARNATION, s) for s in (0, 1, 2)}
    assert stored.total == 3  # five frames offered: two lost to the collision
    assert without_verdict(stored, archive_verdicts(path, ["d1"])) == 2


def test_incarnations_keep_a_reimaged_devices_frames_apart(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    conn = _archive(path)
    for seq in (0, 1, 2):
        _frame(conn, seq, 1_000 + seq, incarnation="00000000000000aa")
        _verdict(conn, seq, incarnation="00000000000000aa")
    for seq in (0, 1):
        _frame(conn, seq, 9_000 + seq, incarnation="00000000000000bb")
        _verdict(conn, seq, incarnation="00000000000000bb")
    stored = archive_frames(path, ["d1"])
    assert len(stored.identities("d1")) == 5
    assert stored.duplicates == 0
    assert without_verdict(stored, archive_verdicts(path, ["d1"])) == 0
