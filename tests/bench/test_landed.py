"""The fault bench's ground truth read from a real archive schema: frames counted by their identity.

The archive is built with the bridge's own schema (SCHEMA_SQL), once as it is today (frames keyed by
device and seq) and once with an `incarnation` column added, as the incarnation work will store it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloud_bridge.archive import SCHEMA_SQL
from devtools.bench.landed import NO_INCARNATION, archive_frames, archive_verdicts, without_verdict


def _archive(path: Path, *, incarnation: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_SQL)
    if incarnation:
        # The incarnation work's shape: identity (device, incarnation, seq); rebuilt without the old key.
        conn.executescript(
            "DROP TABLE frames; CREATE TABLE frames (device_id TEXT, incarnation TEXT, seq INTEGER,"
            " session_id TEXT, patient_ref TEXT, capture_ns INTEGER, rows INTEGER, cols INTEGER,"
            " ambient_c REAL, centi_zlib BLOB, PRIMARY KEY (device_id, incarnation, seq));"
        )
    return conn


def _frame(conn: sqlite3.Connection, seq: int, capture_ns: int, incarnation: str | None = None) -> None:
    if incarnation is None:
        sql = "INSERT OR REPLACE INTO frames VALUES ('d1', ?, NULL, NULL, ?, 24, 32, 24.0, x'00')"
        conn.execute(sql, (seq, capture_ns))
    else:
        sql = "INSERT OR REPLACE INTO frames VALUES ('d1', ?, ?, NULL, NULL, ?, 24, 32, 24.0, x'00')"
        conn.execute(sql, (incarnation, seq, capture_ns))
    conn.commit()


def _verdict(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("INSERT INTO verdicts VALUES ('d1', ?, NULL, NULL, 1, 0.1, 0, 0.5, 'm', 'n', 1.0)", (seq,))
    conn.commit()


def test_a_reimaged_device_without_incarnation_collides_on_seq(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    conn = _archive(path, incarnation=False)
    for seq in (0, 1, 2):  # first image
        _frame(conn, seq, 1_000 + seq)
    for seq in (0, 1):  # re-imaged: seqs restart and overwrite the first image's rows
        _frame(conn, seq, 9_000 + seq)
    _verdict(conn, 0)
    stored = archive_frames(path, ["d1"])
    assert set(stored.identities("d1")) == {(NO_INCARNATION, 0), (NO_INCARNATION, 1), (NO_INCARNATION, 2)}
    assert stored.total == 3  # five frames offered: two lost to the collision
    assert without_verdict(stored, archive_verdicts(path, ["d1"])) == 2


def test_incarnations_keep_a_reimaged_devices_frames_apart(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    conn = _archive(path, incarnation=True)
    for seq in (0, 1, 2):
        _frame(conn, seq, 1_000 + seq, incarnation="aa")
    for seq in (0, 1):
        _frame(conn, seq, 9_000 + seq, incarnation="bb")
    for seq in (0, 1, 2):
        _verdict(conn, seq)  # verdicts without incarnation: matched by seq alone
    stored = archive_frames(path, ["d1"])
    assert len(stored.identities("d1")) == 5
    assert stored.duplicates == 0
    assert without_verdict(stored, archive_verdicts(path, ["d1"])) == 0
