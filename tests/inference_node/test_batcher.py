"""MicroBatcher: batches never exceed B, an idle frame is not held for company it will not get."""

from __future__ import annotations

import threading
import time

from inference_node.batcher import MicroBatcher


def test_queued_items_come_out_in_order_in_batches_of_at_most_b() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_items=4, max_wait_s=0.0)
    for i in range(10):
        batcher.put(i)
    batches = [[a.item for a in batcher.next_batch(0.1)] for _ in range(3)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batcher.next_batch(0.01) == []


def test_a_frame_that_already_waited_longer_than_t_goes_out_without_waiting() -> None:
    batcher: MicroBatcher[str] = MicroBatcher(max_items=32, max_wait_s=10.0)
    batcher.put("late", at=time.perf_counter() - 11.0)  # arrived 11 s ago, T is 10 s
    batch = batcher.next_batch(0.1)
    assert [a.item for a in batch] == ["late"]


def test_frames_arriving_within_t_join_the_batch() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_items=3, max_wait_s=5.0)
    batcher.put(0)
    started = threading.Event()

    def late_producer() -> None:
        started.set()
        batcher.put(1)
        batcher.put(2)
        batcher.put(3)

    thread = threading.Thread(target=late_producer)
    thread.start()
    started.wait(5)
    batch = batcher.next_batch(1.0)  # returns as soon as B=3 items are in, long before T
    thread.join(5)
    assert [a.item for a in batch] == [0, 1, 2]
    assert batcher.qsize() == 1  # item 3 waits for the next batch


def test_empty_queue_returns_nothing_after_the_timeout() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_items=8, max_wait_s=0.002)
    assert batcher.next_batch(0.01) == []
    assert batcher.qsize() == 0


def test_a_full_queue_refuses_and_counts_new_items() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_items=4, max_wait_s=0.0, max_pending=3)
    accepted = [batcher.put(i) for i in range(5)]
    assert accepted == [True, True, True, False, False] and batcher.dropped == 2
    assert [a.item for a in batcher.next_batch(0.1)] == [0, 1, 2]
    assert batcher.put(9) and batcher.dropped == 2, "room again once the worker took its batch"
