"""The archive read API the report builds on, and sink workers' retry/poison handling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_bridge.archive import Archive, ArchiveError
from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.config import InfluxSettings
from cloud_bridge.durable_queue import DurableQueue, NewItem
from cloud_bridge.influx_sink import InfluxSink
from cloud_bridge.intake import Kind
from cloud_bridge.sink import Backoff, SinkWorker
from contract.frame import encode_frame
from contract.messages import encode_message
from contract.topics import frame_topic, rfid_topic, verdict_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def _queue_session(queue: DurableQueue, device: str, n: int, seed: int = 0) -> None:
    session = make_session(device, n, seed=seed)
    items = [NewItem(Kind.RFID, rfid_topic(device), encode_message(session.start), 0)]
    for frame, verdict in zip(session.frames, session.verdicts, strict=True):
        items.append(NewItem(Kind.FRAME, frame_topic(device), encode_frame(frame), 0))
        items.append(NewItem(Kind.VERDICT, verdict_topic(device), encode_message(verdict), 0))
    items.append(NewItem(Kind.RFID, rfid_topic(device), encode_message(session.end), 0))
    queue.append(items)


def test_archive_read_api_returns_sessions_verdicts_and_frames(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    queue = DurableQueue(tmp_path / "q.sqlite", ["archive"])
    session = make_session("ar-1", 6, seed=4)
    items = [NewItem(Kind.RFID, rfid_topic("ar-1"), encode_message(session.start), 0)]
    items += [NewItem(Kind.FRAME, frame_topic("ar-1"), encode_frame(f), 0) for f in session.frames]
    items += [NewItem(Kind.VERDICT, verdict_topic("ar-1"), encode_message(v), 0) for v in session.verdicts]
    items.append(NewItem(Kind.RFID, rfid_topic("ar-1"), encode_message(session.end), 0))
    queue.append(items)
    sink = ArchiveSink(path)
    worker = SinkWorker(sink, queue, batch_items=4, backoff=Backoff(0.1, 1.0))
    while worker.drain_once():
        pass
    sink.close()
    with Archive(path) as archive:
        (record,) = archive.sessions()
        assert record.session_id == session.session_id and record.patient_ref == session.patient_ref
        assert record.ended_ns == session.end.ts_ns and not record.has_verdict
        assert [s.session_id for s in archive.pending_sessions()] == [session.session_id]
        verdicts = archive.verdicts(session.session_id)
        assert [v.seq for v in verdicts] == list(range(6))
        assert [v.probability for v in verdicts] == [v.probability for v in session.verdicts]
        frames = archive.frames(session.session_id)
        assert frames.temperatures_c.shape == (6, 24, 32) and list(frames.seq) == list(range(6))
        expected = np.stack([f.temperatures_c for f in session.frames])
        assert np.allclose(frames.temperatures_c, expected)
        mean = archive.mean_frame(session.session_id)
        assert mean is not None and np.allclose(mean, expected.mean(axis=0), atol=1e-4)
        assert archive.mean_frame("0" * 32) is None and archive.session("0" * 32) is None
    with pytest.raises(ArchiveError, match="archive not found"):
        Archive(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ArchiveError, match="not a thermoscreen archive"):
        Archive(tmp_path / "junk.sqlite")


def test_a_corrupt_queued_item_is_skipped_and_counted_while_the_rest_lands(
    tmp_path: Path, running_victoria: LocalVictoriaMetrics
) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["influx"])
    _queue_session(queue, "poison-1", 3)
    # A row the contract rejects (disk corruption, or a bug): it must not block the queue.
    queue.append([NewItem(Kind.FRAME, frame_topic("poison-1"), b"TSF garbage", 0)])
    _queue_session(queue, "poison-2", 3, seed=1)
    sink = InfluxSink(InfluxSettings(enabled=True, url=running_victoria.url, frame_rows_every=0))
    worker = SinkWorker(sink, queue, batch_items=100, backoff=Backoff(0.1, 1.0))
    while worker.drain_once():
        pass
    sink.close()
    counters = worker.counters()
    assert counters.rejected == 1 and queue.stats().depth == 0
    keys, _ = running_victoria.wait_for_points('{__name__="frame_stats_mean_c",device_id=~"poison-.*"}', 6)
    assert len(keys) == 6


def test_worker_backs_off_while_the_store_is_down_and_catches_up(tmp_path: Path) -> None:
    tsdb = LocalVictoriaMetrics(tmp_path / "vm")  # not started yet: the store is down
    queue = DurableQueue(tmp_path / "q.sqlite", ["influx"])
    _queue_session(queue, "backoff-1", 4)
    sink = InfluxSink(InfluxSettings(enabled=True, url=tsdb.url, frame_rows_every=0, timeout_s=2.0))
    worker = SinkWorker(sink, queue, batch_items=100, backoff=Backoff(0.05, 0.4)).start()
    try:
        counters = wait_until(worker.counters, lambda c: c.errors >= 3, 20.0, "failed writes")
        assert counters.failing_s > 0 and "unreachable" in (counters.last_error or "")
        assert queue.stats().depth == 10
        tsdb.start()
        assert queue.wait_empty(20.0)
        assert worker.counters().failing_s == 0
        keys, _ = tsdb.wait_for_points('{__name__="verdict_probability",device_id="backoff-1"}', 4)
        assert len(keys) == 4
    finally:
        worker.stop()
        tsdb.stop()
        queue.close()


def test_cli_runs_for_a_duration_without_a_config_and_prints_json(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    start = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "thermoscreen",
            "bridge",
            "--broker",
            mosquitto.url,
            "--archive",
            str(tmp_path / "archive.sqlite"),
            "--queue",
            str(tmp_path / "queue.sqlite"),
            "--duration",
            "1",
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    summary = json.loads(out.stdout)
    assert summary["dropped"] == 0 and summary["queue_depth"] == 0 and "stored" in summary
    assert time.monotonic() - start >= 1.0
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert archive.counts() == {"sessions": 0, "verdicts": 0, "frames": 0}
