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
    """The consumer takes the first frame and is waiting for company before the others arrive
    (so the waiting path runs every time); it returns as soon as B are in, long before T."""
    batcher: MicroBatcher[int] = MicroBatcher(max_items=3, max_wait_s=5.0)
    batcher.put(0)
    out: list[list[int]] = []
    done = threading.Event()

    def consume() -> None:
        out.append([a.item for a in batcher.next_batch(1.0)])
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 5.0
    while batcher.qsize() and time.monotonic() < deadline:  # until the consumer took frame 0
        time.sleep(0.001)
    assert batcher.qsize() == 0
    assert not done.wait(0.05), "the consumer must be waiting for the rest of its batch"
    put_at = time.monotonic()
    for i in (1, 2, 3):
        batcher.put(i)
    assert done.wait(5.0)
    elapsed = time.monotonic() - put_at
    thread.join(5)
    assert out == [[0, 1, 2]]
    assert elapsed < 1.0, f"{elapsed:.2f} s: the batch waited for T instead of returning at B"
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


def test_a_lone_frame_does_not_wait_for_company_when_frames_come_further_apart_than_t() -> None:
    """Frames 10 s apart and T = 5 s: the next frame goes out at once instead of after 5 s."""
    batcher: MicroBatcher[int] = MicroBatcher(max_items=8, max_wait_s=5.0)
    now = time.perf_counter()
    for i, age in enumerate((40.0, 30.0, 20.0, 10.0)):  # each already older than T: no waiting
        batcher.put(i, at=now - age)
        assert [a.item for a in batcher.next_batch(0.1)] == [i]
    assert batcher.mean_gap_s is not None and abs(batcher.mean_gap_s - 10.0) < 1e-6
    assert not batcher.company_expected()
    batcher.put(4)
    started = time.monotonic()
    assert [a.item for a in batcher.next_batch(0.1)] == [4]
    assert time.monotonic() - started < 1.0, "the frame waited for company that was not expected"


def test_frames_closer_together_than_t_make_the_consumer_wait_for_company() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_items=8, max_wait_s=5.0)
    now = time.perf_counter()
    for i in range(3):  # 1 ms apart, already older than T
        batcher.put(i, at=now - 10.0 + i * 0.001)
        batcher.next_batch(0.1)
    assert batcher.mean_gap_s is not None and batcher.mean_gap_s < 0.01
    assert batcher.company_expected()
