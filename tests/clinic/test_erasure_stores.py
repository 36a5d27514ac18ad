"""Erasure store by store (cloud_bridge/erasure.py), each against the real thing: SQLite files,
VictoriaMetrics, influxd; another patient's data stays, and a second run removes nothing."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cloud_bridge import erasure, erasure_tombstones
from cloud_bridge.config import InfluxSettings
from cloud_bridge.durable_queue import DeadItem, DurableQueue
from cloud_bridge.provenance import SCHEMA_SQL as PROVENANCE_SQL
from devtools.local_influxd import LocalInfluxd
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.managed_process import free_port
from tests.clinic.erasure_helpers import fill_archive, queue_items, sessions_of, tsdb_lines

HER, OTHER = "a1b2c3d4e5f60718", "0f1e2d3c4b5a6978"


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_archive_erasure_removes_her_sessions_frames_and_verdicts_and_zeroes_the_pages(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    hers, others = sessions_of(HER, "dev-a", 2), sessions_of(OTHER, "dev-b", 1, seed=9)
    fill_archive(path, hers + others)
    found = erasure.sessions_archive(path, HER)
    assert found == {s.session_id for s in hers}

    removed = erasure.erase_archive(path, HER, found)

    assert removed == {"sessions": 2, "frames": 6, "verdicts": 6}
    for table in ("sessions", "frames", "verdicts"):
        assert {r[0] for r in _rows(path, f"SELECT DISTINCT patient_ref FROM {table}")} == {OTHER}
    assert len(_rows(path, "SELECT * FROM frames")) == 3
    # secure_delete + checkpoint: her pseudonym is not left in freed pages of the file or its WAL.
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            assert HER.encode() not in file.read_bytes()
    assert erasure.erase_archive(path, HER, found) == {"sessions": 0, "frames": 0, "verdicts": 0}
    assert erasure.erase_archive(tmp_path / "missing.sqlite", HER, found) == {"sessions": 0, "frames": 0, "verdicts": 0}


def test_queue_erasure_removes_her_pending_items_dead_letters_and_intake_state(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    her, other = sessions_of(HER, "dev-a", 1)[0], sessions_of(OTHER, "dev-b", 1, seed=9)[0]
    queue = DurableQueue(path, ["archive", "influx"])
    her_items, other_items = queue_items(her), queue_items(other)
    frame_payload = her_items[1].payload  # binary: her ids are bytes, not hex text
    dead = [
        DeadItem("intake", "malformed", "bad", her_items[1].topic, frame_payload[:-7], 1),  # does not decode
        DeadItem("intake", "session-owner", f"session {her.session_id} belongs to another device", "t", b"x", 1),
        DeadItem("intake", "malformed", "bad", other_items[1].topic, other_items[1].payload[:-7], 1),
    ]
    queue.append(her_items + other_items, dead)

    def provenance_rows(conn: sqlite3.Connection) -> None:
        conn.executescript(PROVENANCE_SQL)
        for s in (her, other):
            conn.execute("INSERT INTO session_owners VALUES (?, ?, ?)", (s.session_id, s.device_id, s.patient_ref))
            conn.execute(
                "INSERT INTO frame_keys VALUES (?, ?, 0, ?, ?, 1, NULL)",
                (s.device_id, s.frames[0].incarnation, s.session_id, s.patient_ref),
            )
        verdict = queue_items(her)[2]
        conn.execute(
            "INSERT INTO held_verdicts VALUES ('dev-a', 'x', 9, ?, ?, 1, 'dev-a')", (verdict.topic, verdict.payload)
        )
        for s in (her, other):  # several bridges: a frame waiting for its session's claim
            frame = queue_items(s)[1]
            row = (s.session_id, frame.topic, frame.payload, s.device_id)
            conn.execute("INSERT INTO held_frames VALUES (?, ?, ?, 1, ?)", row)

    queue.with_writer(provenance_rows)
    queue.close()
    sessions = erasure.sessions_queue(path, HER)
    assert sessions == {her.session_id}

    removed = erasure.erase_queue(path, HER, sessions)

    assert removed == {
        "items": 8, "deadletters": 2, "held_verdicts": 1, "held_frames": 1, "session_owners": 1, "frame_keys": 1
    }  # fmt: skip
    assert _rows(path, "SELECT session_id FROM held_frames") == [(other.session_id,)]
    assert len(_rows(path, "SELECT * FROM items")) == len(other_items)
    assert [r[0] for r in _rows(path, "SELECT detail FROM deadletters")] == ["bad"]
    assert _rows(path, "SELECT patient_ref FROM session_owners") == [(OTHER,)]
    assert _rows(path, "SELECT COUNT(*) FROM held_verdicts") == [(0,)]
    assert bytes.fromhex(HER) not in path.read_bytes() and HER.encode() not in path.read_bytes()
    reopened = DurableQueue(path, ["archive", "influx"])  # the bridge opens what is left as before
    try:
        batch = reopened.read("archive", max_items=100)
        assert [i.payload for i in batch.items] == [i.payload for i in other_items]
    finally:
        reopened.close()
    assert sum(erasure.erase_queue(path, HER, sessions).values()) == 0


def _settings(url: str, **extra: object) -> InfluxSettings:
    return InfluxSettings.model_validate({"enabled": True, "url": url, "timeout_s": 10.0, **extra})


def test_victoria_metrics_erasure_deletes_her_series_by_tag(victoria: LocalVictoriaMetrics) -> None:
    her, other = sessions_of(HER, "vm-a", 1)[0], sessions_of(OTHER, "vm-b", 1, seed=9)[0]
    victoria.write_lines(tsdb_lines(her) + tsdb_lines(other))
    victoria.wait_for_points(f'{{patient_ref="{OTHER}"}}', 1)
    before = len(victoria.export(f'{{patient_ref="{HER}"}}'))
    assert before > 0

    removed = erasure.erase_influx(_settings(victoria.url), "auto", HER, {her.session_id})

    assert removed["series"] >= before
    assert victoria.export(f'{{patient_ref="{HER}"}}') == []
    assert victoria.export(f'{{session_id="{her.session_id}"}}') == []
    assert victoria.export(f'{{patient_ref="{OTHER}"}}') != []
    assert erasure.erase_influx(_settings(victoria.url), "victoriametrics", HER, {her.session_id}) == {"series": 0}


def test_influxdb_1x_erasure_drops_her_series_with_influxql(influx: LocalInfluxd) -> None:
    her, other = sessions_of(HER, "ix-a", 1)[0], sessions_of(OTHER, "ix-b", 1, seed=9)[0]
    influx.query("thermoscreen", "CREATE DATABASE thermoscreen")
    influx.write("thermoscreen", tsdb_lines(her) + tsdb_lines(other))
    settings = _settings(influx.url, bucket="thermoscreen")
    assert erasure.influx_flavour(settings) == "influxql"

    removed = erasure.erase_influx(settings, "auto", HER, {her.session_id})

    assert removed["series"] > 0
    assert "series" not in influx.query("thermoscreen", f"SHOW SERIES WHERE \"patient_ref\" = '{HER}'")
    assert "series" not in influx.query("thermoscreen", f"SHOW SERIES WHERE \"session_id\" = '{her.session_id}'")
    assert "series" in influx.query("thermoscreen", f"SHOW SERIES WHERE \"patient_ref\" = '{OTHER}'")
    assert erasure.erase_influx(settings, "influxql", HER, {her.session_id}) == {"series": 0}


def test_an_unreachable_tsdb_is_named() -> None:
    unreachable = r"^influx: http://127\.0\.0\.1:\d+/ping unreachable"
    with pytest.raises(erasure.StoreUnavailableError, match=unreachable) as info:
        erasure.erase_influx(_settings(f"http://127.0.0.1:{free_port()}"), "auto", HER, ())
    assert info.value.store == "influx"


def test_reports_mentioning_her_are_removed_others_and_links_stay(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "2026").mkdir(parents=True)
    (reports / "her.html").write_text(f"<p>patient {HER}</p>")
    (reports / "2026" / "both.html").write_text(f"<p>{HER} and {OTHER}</p>")
    (reports / "other.html").write_text(f"<p>patient {OTHER}</p>")
    outside = tmp_path / "outside.html"
    outside.write_text(f"<p>{HER}</p>")
    (reports / "link.html").symlink_to(outside)

    assert erasure.erase_reports(reports, HER) == {"files": 2}

    assert sorted(p.name for p in reports.rglob("*") if p.is_file() or p.is_symlink()) == ["link.html", "other.html"]
    assert outside.exists()
    assert erasure.erase_reports(reports, HER) == {"files": 0}
    assert erasure.erase_reports(tmp_path / "none", HER) == {"files": 0}


def test_tombstones_are_hashed_private_appended_once_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "erased.txt"
    watcher = erasure_tombstones.ErasedIds(path, refresh_s=0.0)
    assert watcher.empty and not watcher.covers(HER, None)

    assert erasure_tombstones.add(path, HER, ["s" * 32]) == 2
    assert erasure_tombstones.add(path, HER, ["s" * 32]) == 0

    text = path.read_text()
    assert HER not in text and "s" * 32 not in text and len(text.splitlines()) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    watcher.refresh()
    assert watcher.covers(HER, None) and watcher.covers(None, "s" * 32)
    assert not watcher.covers(OTHER, "t" * 32)
    path.write_text(text + "garbage\n")
    with pytest.raises(ValueError, match=r"erased\.txt: line 3: not a tombstone"):
        erasure_tombstones.load(path)
