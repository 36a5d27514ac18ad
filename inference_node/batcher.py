"""Micro-batching: up to `max_items` frames, and no frame waits more than `max_wait_s` for company.

The network thread only appends (a lock-free C queue, so receiving never waits for scoring);
the worker takes batches. When idle a frame goes out after at most `max_wait_s`; under load
frames already waited longer than that, so the worker takes whatever is queued (up to
`max_items`) at once and batches grow with the load.

The queue is bounded (`max_pending`): when the node cannot keep up, new items are refused
and counted (`dropped`) instead of memory growing until the host kills the node, which
would lose every frame in hand at once.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

#: How often a filling batch looks for more frames (bounds the extra wait past B frames).
POLL_S = 0.0005


class Arrival(NamedTuple, Generic[T]):
    """An item and when it arrived (time.perf_counter(), seconds)."""

    at: float
    item: T


class MicroBatcher(Generic[T]):
    """A queue that hands out batches; safe for one or more producers and one consumer."""

    def __init__(self, max_items: int, max_wait_s: float, max_pending: int | None = None) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_items = max_items
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_pending = max_pending
        self.dropped = 0
        self._drop_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Arrival[T]] = queue.SimpleQueue()

    def put(self, item: T, at: float | None = None) -> bool:
        """Queue `item`; False (and counted in `dropped`) when `max_pending` items are already waiting."""
        if self.max_pending is not None and self._queue.qsize() >= self.max_pending:
            with self._drop_lock:
                self.dropped += 1
            return False
        self._queue.put(Arrival(time.perf_counter() if at is None else at, item))
        return True

    def qsize(self) -> int:
        return self._queue.qsize()

    def next_batch(self, timeout: float) -> list[Arrival[T]]:
        """Wait up to `timeout` s for a first item, then fill the batch; [] if nothing came.

        While filling, the consumer polls every `POLL_S` instead of blocking on the queue: a
        blocked consumer is woken (and takes the GIL from the network thread) for every single
        frame, which made batches of one and cost more CPU than scoring them.
        """
        try:
            first = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        deadline = first.at + self.max_wait_s
        get_nowait = self._queue.get_nowait
        while True:
            try:
                while len(batch) < self.max_items:
                    batch.append(get_nowait())
                return batch
            except queue.Empty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return batch
            time.sleep(min(remaining, POLL_S))
