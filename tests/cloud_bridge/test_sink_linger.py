"""Sink linger (a fuller batch while items keep arriving, never on a backlog or a stop) and decoded-record reuse."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud_bridge.archive import Archive
from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.config import load_config
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import DurableQueue, NewItem, QueuedItem
from cloud_bridge.intake import Accepted, Kind, classify
from cloud_bridge.sink import Backoff, SinkWorker
from contract.errors import ContractError
from contract.frame import Frame, encode_frame
from contract.messages import encode_message
from contract.topics import frame_topic
from devtools.synthetic_stream import make_session


class ObservedArchiveSink(ArchiveSink):
    """The real archive sink (a real SQLite archive), with each batch it is handed noted."""

    name = "rec"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[list[bytes]] = []
        self.written = threading.Event()

    def write(self, items: Sequence[QueuedItem]) -> int:
        written = super().write(items)
        self.batches.append([i.payload for i in items])
        self.written.set()
        return written


_FRAMES = [encode_frame(f) for f in make_session("linger-1", 10, seed=3).frames]


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [
        NewItem(Kind.FRAME, frame_topic("linger-1"), _FRAMES[start + i], time.time_ns(), "linger-1") for i in range(n)
    ]


def _archived(sink: ArchiveSink) -> int:
    with Archive(sink.path) as archive:
        return archive.counts()["frames"]


def test_linger_waits_for_a_full_batch_while_items_keep_arriving(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["rec"], synchronous="normal")
    sink = ObservedArchiveSink(tmp_path / "archive.sqlite")
    # quiet_s = linger/4 = 5 s: the second append (moments later) arrives well inside it.
    worker = SinkWorker(sink, queue, batch_items=10, backoff=Backoff(0.1, 1.0), linger_s=20.0).start()
    try:
        queue.append(_items(3))
        queue.append(_items(7, start=3))
        assert queue.wait_empty(15.0)
        assert sink.batches == [_FRAMES[:10]]
        assert _archived(sink) == 10
    finally:
        worker.stop()
        sink.close()
        queue.close()


def test_linger_returns_at_once_for_a_backlog_and_when_nothing_is_pending(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["rec"], synchronous="normal")
    stop = threading.Event()
    try:
        start = time.monotonic()
        queue.linger("rec", fill=5, max_wait_s=60.0, quiet_s=60.0, stop=stop)  # nothing pending
        queue.append(_items(5))
        queue.linger("rec", fill=5, max_wait_s=60.0, quiet_s=60.0, stop=stop)  # a full batch waits
        assert time.monotonic() - start < 30.0
    finally:
        queue.close()


def test_linger_ends_when_the_stream_goes_quiet(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["rec"], synchronous="normal")
    stop = threading.Event()
    try:
        queue.append(_items(1))
        start = time.monotonic()
        queue.linger("rec", fill=100, max_wait_s=60.0, quiet_s=0.05, stop=stop)
        assert time.monotonic() - start < 30.0
    finally:
        queue.close()


def test_stop_flushes_a_lingering_batch_at_once(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["rec"], synchronous="normal")
    sink = ObservedArchiveSink(tmp_path / "archive.sqlite")
    worker = SinkWorker(sink, queue, batch_items=1000, backoff=Backoff(0.1, 1.0), linger_s=600.0).start()
    try:
        queue.append(_items(2))
        # Lingering (up to 150 s quiet, 600 s in all) until the stop, which must write the batch first.
        assert not sink.written.wait(0.3)
        worker.stop(timeout=30.0)
        assert not worker.alive
        assert sink.batches == [_FRAMES[:2]]
        assert _archived(sink) == 2 and queue.stats().depth == 0
    finally:
        worker.stop()
        sink.close()
        queue.close()


def test_linger_is_configurable_per_sink_with_a_default() -> None:
    config = load_config(None, overrides={"influx.linger_ms": 0, "archive.linger_ms": 120})
    assert config.influx.linger_ms == 0 and config.archive.linger_ms == 120
    assert 0 < config.firestore.linger_ms <= 100


def test_decoded_cache_reuses_what_ingest_decoded_and_decodes_unknown_bytes() -> None:
    session = make_session("cache-1", 3, seed=2)
    frames = [encode_frame(f) for f in session.frames]
    cache = DecodedCache(max_items=2)
    accepted = classify(frame_topic("cache-1"), frames[0])
    assert isinstance(accepted, Accepted)
    cache.put(Kind.FRAME, frames[0], accepted.decoded)
    assert cache.decode(Kind.FRAME, bytes(frames[0])) is accepted.decoded  # equal bytes from the queue hit
    second = cache.decode(Kind.FRAME, frames[1])  # a miss decodes like decode_item
    assert isinstance(second, Frame) and second.seq == session.frames[1].seq
    assert np.array_equal(second.centi, session.frames[1].centi)
    cache.decode(Kind.FRAME, frames[2])
    assert len(cache) == 2 and (cache.hits, cache.misses) == (1, 2)  # bounded: the oldest went out
    with pytest.raises(ContractError):
        cache.decode(Kind.FRAME, b"not a frame")
    verdict = cache.decode(Kind.VERDICT, encode_message(session.verdicts[0]))
    assert verdict == session.verdicts[0]
