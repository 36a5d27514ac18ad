"""The on-disk spool (order, persistence, bounds, drop policy) and the session state machine."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from contract.ids import LEGACY_INCARNATION, validate_incarnation
from contract.messages import RfidEventKind, SessionEndReason
from sensor_node.session import OpenSessionSlot
from sensor_node.spool import RowKind, Spool, SpoolError


def open_spool(path: Path, *, max_items: int = 1000, max_bytes: int = 1 << 20) -> Spool:
    return Spool(path, max_items=max_items, max_bytes=max_bytes)


def add(spool: Spool, kind: RowKind, size: int = 100) -> int:
    return spool.append(kind, f"thermo/v1/pi-1/{'frame' if kind is RowKind.FRAME else 'rfid'}", lambda s: b"x" * size)


def test_rows_come_back_in_order_with_their_sequence_numbers(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.sqlite")
    seqs = [spool.append(RowKind.FRAME, "t", lambda s: f"payload {s}".encode(), qos=1) for _ in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    rows, last = spool.peek_after(0, 3)
    assert [r.seq for r in rows] == [0, 1, 2] and [r.payload for r in rows] == [
        b"payload 0",
        b"payload 1",
        b"payload 2",
    ]
    rows2, _ = spool.peek_after(rows[-1].id, 10)
    assert [r.seq for r in rows2] == [3, 4] and last == rows2[-1].id
    assert spool.ack_through(rows[-1].id) == 3
    assert spool.depth == 2 and spool.size_bytes == len(b"payload 3") + len(b"payload 4")
    spool.close()


def test_unacknowledged_rows_and_the_sequence_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = open_spool(path)
    for _ in range(4):
        add(spool, RowKind.FRAME)
    rows, _ = spool.peek_after(0, 2)
    spool.ack_through(rows[-1].id)
    spool.close()
    again = open_spool(path)
    assert again.depth == 2
    assert [r.seq for r in again.peek_after(0, 10)[0]] == [2, 3]
    assert add(again, RowKind.EVENT) == 4  # numbering continues
    again.ack_through(again.last_id)
    again.close()
    empty = open_spool(path)  # ids never go back, even after the table was emptied
    assert empty.depth == 0 and add(empty, RowKind.FRAME) == 5
    assert empty.peek_after(0, 10)[0][0].id > rows[-1].id
    empty.close()


def stored(spool: Spool) -> list[tuple[int, str]]:
    """(seq, kind) of the stored rows, read beside the spool (peeking would mark them in flight)."""
    with sqlite3.connect(spool.path) as db:
        return [(int(seq), str(kind)) for seq, kind in db.execute("SELECT seq, kind FROM outbox ORDER BY id")]


def test_full_spool_drops_oldest_frames_never_events(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.sqlite", max_items=10)
    add(spool, RowKind.EVENT)  # session_start, seq 0
    for _ in range(12):
        add(spool, RowKind.FRAME)
    rows = stored(spool)
    assert spool.depth == 10 and spool.dropped_frames == 3
    assert rows[0] == (0, "event")
    assert [seq for seq, _ in rows[1:]] == list(range(4, 13))  # frames 1..3 were the oldest
    for _ in range(12):
        add(spool, RowKind.EVENT)  # events always fit: frames make room, then the bound gives way
    kinds = [kind for _, kind in stored(spool)]
    assert kinds.count("event") == 13 and "frame" not in kinds
    assert spool.dropped_frames == 12
    seq = add(spool, RowKind.FRAME)  # nothing left to drop but events: the new frame is dropped
    assert seq == 25 and spool.dropped_frames == 13 and spool.depth == 13
    spool.close()
    assert open_spool(tmp_path / "s.sqlite", max_items=10).dropped_frames == 13


def test_frames_already_handed_to_the_broker_are_not_dropped(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.sqlite", max_items=5)
    for _ in range(5):
        add(spool, RowKind.FRAME)
    in_flight, _ = spool.peek_after(0, 3)
    add(spool, RowKind.FRAME)  # drops seq 3, the oldest frame not in flight
    assert [seq for seq, _ in stored(spool)] == [0, 1, 2, 4, 5]
    spool.peek_after(in_flight[-1].id, 10)
    assert add(spool, RowKind.FRAME) == 6  # everything is in flight: the new frame is dropped
    assert [seq for seq, _ in stored(spool)] == [0, 1, 2, 4, 5] and spool.dropped_frames == 2
    spool.close()


def test_byte_bound_counts_payload_bytes(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.sqlite", max_items=1000, max_bytes=64 * 1024)
    for _ in range(50):
        add(spool, RowKind.FRAME, size=1600)
    assert spool.size_bytes <= 64 * 1024 and spool.depth == 64 * 1024 // 1600
    assert spool.dropped_frames == 50 - spool.depth
    spool.close()


def test_one_process_per_spool_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = open_spool(path)
    with pytest.raises(SpoolError, match="in use by another sensor process"):
        open_spool(path)
    spool.close()
    foreign = tmp_path / "other.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)")
    db.execute("INSERT INTO meta VALUES ('schema', 99)")
    db.commit()
    db.close()
    with pytest.raises(SpoolError, match="schema version 99"):
        open_spool(foreign)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match="cannot be opened"):
        open_spool(garbage)
    assert garbage.read_bytes() == b"this is not a database" * 100  # never overwritten


def test_same_card_ends_other_card_switches_timeout_ends() -> None:
    tracker = OpenSessionSlot(timeout_s=60)
    [start] = tracker.on_scan("aaaaaaaaaaaaaaaa", now=0.0)
    assert start.event is RfidEventKind.SESSION_START
    tracker.count_frame()
    tracker.count_frame()
    [end] = tracker.on_scan("aaaaaaaaaaaaaaaa", now=5.0)
    assert end.event is RfidEventKind.SESSION_END and end.reason is SessionEndReason.CARD
    assert end.session.session_id == start.session.session_id and end.session.frame_count == 2
    assert tracker.current is None
    tracker.on_scan("aaaaaaaaaaaaaaaa", now=6.0)
    end_a, start_b = tracker.on_scan("bbbbbbbbbbbbbbbb", now=7.0)
    assert end_a.reason is SessionEndReason.CARD and start_b.session.patient_ref == "bbbbbbbbbbbbbbbb"
    assert tracker.check_timeout(now=66.9) is None
    timed_out = tracker.check_timeout(now=67.0)
    assert timed_out is not None and timed_out.reason is SessionEndReason.TIMEOUT
    tracker.on_scan("cccccccccccccccc", now=70.0)
    shutdown = tracker.end(SessionEndReason.SHUTDOWN)
    assert shutdown is not None and shutdown.reason is SessionEndReason.SHUTDOWN
    assert tracker.end(SessionEndReason.SHUTDOWN) is None


# --- incarnation (issue 12.2) ----------------------------------------------------------------


def test_incarnation_is_created_with_the_spool_and_kept_across_reopens(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_items=10, max_bytes=10_000)
    first = spool.incarnation
    assert validate_incarnation(first) == first and first != LEGACY_INCARNATION
    spool.append(RowKind.FRAME, "t", lambda seq: b"x")
    spool.close()
    reopened = Spool(path, max_items=10, max_bytes=10_000)
    assert (reopened.incarnation, reopened.next_seq) == (first, 1)  # a restart keeps both
    reopened.close()
    for leftover in tmp_path.iterdir():  # re-image: the spool and its WAL files are gone
        leftover.unlink()
    fresh = Spool(path, max_items=10, max_bytes=10_000)
    assert fresh.next_seq == 0 and fresh.incarnation not in (first, LEGACY_INCARNATION)
    fresh.close()


def test_spool_from_before_incarnations_gets_one_once(tmp_path: Path) -> None:
    """An upgraded device: its old spool has no incarnation; one is created on first open and kept."""
    path = tmp_path / "spool.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:  # the version-1 spool layout, as it was written
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', 1), ('next_seq', 41), ('dropped_frames', 0)")
        db.commit()
    spool = Spool(path, max_items=10, max_bytes=10_000)
    created = spool.incarnation
    assert spool.next_seq == 41 and validate_incarnation(created) == created != LEGACY_INCARNATION
    spool.close()
    again = Spool(path, max_items=10, max_bytes=10_000)
    assert again.incarnation == created
    again.close()


def test_incarnation_with_the_top_bit_set_survives_the_integer_column(tmp_path: Path) -> None:
    """meta holds it as a signed 64-bit integer: values >= 2^63 and all-digit values come back exact."""
    path = tmp_path / "spool.sqlite"
    Spool(path, max_items=10, max_bytes=10_000).close()
    for stored in ("ffffffffffffffff", "8000000000000000", "0000000000001234"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            signed = int.from_bytes(bytes.fromhex(stored), "big", signed=True)
            db.execute("UPDATE meta SET value = ? WHERE key = 'incarnation'", (signed,))
            db.commit()
        spool = Spool(path, max_items=10, max_bytes=10_000)
        assert spool.incarnation == stored
        spool.close()
