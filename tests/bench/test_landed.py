"""The fault bench's ground truth read from a real archive schema: frames counted by their identity.

The archive is built with the bridge's own schema (SCHEMA_SQL): frames and verdicts keyed by
(device, incarnation, seq), legacy (pre-incarnation) devices under LEGACY_INCARNATION.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from cloud_bridge.archive import REWRITES_SQL, SCHEMA_SQL, Archive, ArchivedFrame, compress_centi
from contract.ids import LEGACY_INCARNATION
from devtools.bench.landed import archive_frames, archive_rewrites, archive_verdicts, without_verdict


def _archive(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_SQL)
    conn.executescript(REWRITES_SQL)
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
    assert stored.rewrites == 2  # the two overwrites are counted, although the rows stayed three
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


def _archived(device: str, seq: int) -> ArchivedFrame:
    centi = np.full((24, 32), 3000 + seq, dtype=np.int16)
    return ArchivedFrame(device, seq, "s1", "p1", 1_000 + seq, 24, 32, 24.0, compress_centi(centi), "00000000000000aa")


def test_the_archive_counts_every_raw_write_that_overwrote_a_row(tmp_path: Path) -> None:
    """The bridge's writer, not SQL of the test's own: a redelivered frame keeps one row, and is counted."""
    path = tmp_path / "archive.sqlite"
    with Archive(path, readonly=False) as archive:
        archive.put_frames([_archived("d1", s) for s in range(5)] + [_archived("d2", 0)])
        archive.commit()
        assert archive.rewrites() == {}
        archive.put_frames([_archived("d1", 3), _archived("d1", 4), _archived("d1", 4)])  # a batch replayed
        archive.commit()
        assert archive.counts()["frames"] == 6
        assert archive.rewrites() == {"frames": 3}
    assert archive_frames(path, ["d1"]).rewrites == 3
    assert archive_frames(path, ["d2"]).rewrites == 0  # counted per device
    assert archive_rewrites(path, ["d1", "d2"], "verdicts") == 0
