"""The on-disk queue: per-sink cursors, persistence across reopen, the bounded drop policies."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from cloud_bridge.durable_queue import DeadItem, DurableQueue, NewItem, SourceQuota


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [NewItem("frame", f"t/{start + i}", f"p{start + i}".encode(), time.time_ns()) for i in range(n)]


def test_each_sink_drains_on_its_own_and_items_leave_when_all_confirmed(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", ["a", "b"])
    q.append(_items(5))
    batch_a = q.read("a", max_items=3)
    assert [i.payload for i in batch_a.items] == [b"p0", b"p1", b"p2"]
    q.confirm(batch_a)
    assert q.stats().depth == 5 and q.stats().sink_depth == {"a": 2, "b": 5}
    q.confirm(q.read("b", max_items=10))
    stats = q.stats()
    assert stats.sink_depth == {"a": 2, "b": 0} and stats.depth == 2 and stats.stored == 3
    # Unconfirmed items are read again (a failed write keeps its batch).
    again = q.read("a", max_items=10)
    assert [i.payload for i in again.items] == [b"p3", b"p4"]
    q.confirm(again)
    assert q.stats().depth == 0 and q.stats().stored == 5
    q.close()


def test_cursors_and_counters_survive_a_reopen_and_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = DurableQueue(path, ["a"])
    q.append(_items(3))
    q.confirm(q.read("a", max_items=3))
    q.close()
    q = DurableQueue(path, ["a"])
    assert q.stats().stored == 3 and q.stats().depth == 0
    q.append(_items(1, start=3))
    batch = q.read("a", max_items=10)
    assert [i.payload for i in batch.items] == [b"p3"] and batch.items[0].id == 4
    q.close()


def test_a_removed_sink_no_longer_holds_items(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = DurableQueue(path, ["a", "old"])
    q.append(_items(2))
    q.confirm(q.read("a", max_items=10))
    assert q.stats().depth == 2
    q.close()
    q = DurableQueue(path, ["a"])
    assert q.stats().depth == 0 and q.sinks == ["a"]
    q.close()


def test_kind_filter_skips_other_items_and_moves_the_cursor(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", ["all", "few"])
    q.append([*_items(3), NewItem("session_outcome", "t/x", b"x", time.time_ns()), *_items(2, start=3)])
    batch = q.read("few", max_items=10, kinds=["session_outcome"])
    assert [i.payload for i in batch.items] == [b"x"] and batch.end_id == 6
    q.confirm(batch)
    assert q.stats().sink_depth["few"] == 0
    q.close()


def test_drop_oldest_counts_drops_and_moves_lagging_cursors(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", ["fast", "down"], max_items=100, drop_policy="drop_oldest")
    for start in range(0, 150, 30):
        q.append(_items(30, start=start))
        q.confirm(q.read("fast", max_items=1000))
    stats = q.stats()
    assert stats.dropped == 50 and stats.depth == 100
    batch = q.read("down", max_items=1000)
    assert batch.items[0].payload == b"p50" and len(batch.items) == 100
    q.close()
    # The drop count is persisted.
    assert DurableQueue(tmp_path / "q.sqlite", ["fast", "down"], max_items=100).stats().dropped == 50


def test_drop_newest_refuses_new_items_beyond_the_limit(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", ["down"], max_items=100, drop_policy="drop_newest")
    assert q.append(_items(80)) == 0
    assert q.append(_items(30, start=80)) == 10
    batch = q.read("down", max_items=1000)
    assert len(batch.items) == 100 and batch.items[-1].payload == b"p99"
    assert q.stats().dropped == 10
    q.close()


def test_oldest_item_age_grows_while_a_sink_is_behind(tmp_path: Path) -> None:
    """Two snapshots while the sink is behind: the age grows with the clock; once it caught up, 0."""
    q = DurableQueue(tmp_path / "q.sqlite", ["a", "b"])
    q.append([NewItem("frame", "t", b"x", time.time_ns() - 5_000_000_000)])
    first, t_first = q.stats().oldest_age_s, time.monotonic()
    assert first == pytest.approx(5.0, abs=1.0)
    time.sleep(0.3)
    second, t_second = q.stats().oldest_age_s, time.monotonic()
    assert second - first == pytest.approx(t_second - t_first, abs=0.1)
    q.confirm(q.read("a", max_items=10))
    assert q.stats().oldest_age_s >= second  # "b" still has not taken it
    q.confirm(q.read("b", max_items=10))
    assert q.stats().oldest_age_s == 0.0
    q.close()


def test_queue_file_uses_wal(tmp_path: Path) -> None:
    DurableQueue(tmp_path / "q.sqlite", ["a"]).close()
    with sqlite3.connect(tmp_path / "q.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _from(source: str, n: int, size: int = 100) -> list[NewItem]:
    return [NewItem("frame", f"thermo/v1/{source}/frame", bytes([i % 256]) * size, 0, source) for i in range(n)]


def test_the_queue_is_bounded_in_bytes_and_each_source_by_its_quota(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.sqlite", ["a"], max_bytes=10 * 100, quota=SourceQuota(max_items=4, max_bytes=350))
    assert q.append(_from("noisy", 6)) == 3  # the quota's bytes (350) hold 3 of 100 bytes
    assert q.append(_from("calm", 3)) == 0
    assert q.append(_from("noisy", 1)) == 1  # still at its quota: refused, nothing else moves
    stats = q.stats()
    assert stats.quota_dropped == {"noisy": 4} and stats.dropped == 0 and stats.depth_bytes == 600
    q.confirm(q.read("a", max_items=2))  # two of noisy's leave: room for two again
    assert q.append(_from("noisy", 3)) == 1
    # The global byte bound (1000) drops the oldest by bytes; the bridge's own items have no quota.
    assert q.append([NewItem("session_outcome", "t", b"x" * 500, 0)]) == 1
    assert q.stats().dropped == 1 and q.stats().depth_bytes == 1000
    q.close()
    again = DurableQueue(tmp_path / "q.sqlite", ["a"], quota=SourceQuota(max_items=4, max_bytes=350))
    stats = again.stats()
    assert stats.quota_dropped == {"noisy": 5} and stats.depth_bytes == 1000 and stats.dropped == 1
    assert again.append(_from("noisy", 2)) == 1  # the per-source counts are rebuilt from the file
    again.close()


def test_a_dead_letter_with_unencodable_text_is_stored_not_raised(tmp_path: Path) -> None:
    """A lone surrogate in a reason would otherwise fail the whole ingest transaction."""
    q = DurableQueue(tmp_path / "q.sqlite", ["a"])
    q.append(_items(1), [DeadItem("intake", "malformed", "bad \ud800 text", "t/\udcff", b"x", 0)])
    [dead] = q.dead_letters()
    assert dead.detail == "bad ? text" and q.stats().dead == {"intake/malformed": 1} and q.stats().depth == 1
    q.close()
