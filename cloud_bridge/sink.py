"""A sink drains the durable queue in batches; a batch leaves its queue only once stored.

`SinkWorker` runs one sink on its own thread: read a batch after the sink's cursor, write
it, confirm it; on failure keep the batch, count the error and retry after an exponential
back-off (min..max, reset by the next success). A sink raises `PermanentSinkError` for
items the store will never accept (e.g. HTTP 400): the worker then writes the batch item by
item and skips only the items that are refused again, so one poison item cannot block the
queue forever; the skipped ones are counted (`rejected`) and logged.

Linger: once an item is waiting, the worker waits up to `linger_s` for `batch_items` to
queue up before it writes, as long as items keep arriving (it stops waiting after
`linger_s / 4` without a new commit, and at once on stop). At moderate rates this turns
many one-item writes (an HTTP request or an fsync each) into a few bigger ones; a backlog
(a full batch already waiting) is never delayed. Delivery is unchanged: a batch still
leaves the queue only when confirmed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloud_bridge.durable_queue import Batch, DurableQueue, QueuedItem

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A write that may succeed later (store down, timeout, 5xx)."""


class PermanentSinkError(SinkError):
    """A write the store refuses for good (malformed data); retrying the same items cannot help."""


class Sink(Protocol):
    name: str
    #: Queue kinds this sink stores; None = all.
    kinds: frozenset[str] | None

    def write(self, items: Sequence[QueuedItem]) -> int:
        """Store `items` (idempotently) and return how many points/documents/rows were written."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkCounters:
    batches: int
    items: int
    written: int
    errors: int
    rejected: int
    last_error: str | None
    #: Seconds the sink has been failing continuously (0 while healthy).
    failing_s: float


@dataclass(frozen=True)
class Backoff:
    min_s: float
    max_s: float

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.min_s * 2.0 ** max(0, failures - 1)))


class SinkWorker:
    """Drains one sink on a thread until `stop()`."""

    def __init__(
        self,
        sink: Sink,
        queue: DurableQueue,
        *,
        batch_items: int,
        backoff: Backoff,
        linger_s: float = 0.0,
    ) -> None:
        self.sink = sink
        self.queue = queue
        self.batch_items = batch_items
        self.linger_s = linger_s
        self.backoff = backoff
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._batches = self._items = self._written = self._errors = self._rejected = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> SinkWorker:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()
        self.queue.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def counters(self) -> SinkCounters:
        with self._lock:
            failing = 0.0 if self._failing_since is None else time.monotonic() - self._failing_since
            return SinkCounters(
                self._batches, self._items, self._written, self._errors, self._rejected, self._last_error, failing
            )

    def drain_once(self) -> bool:
        """Process one batch; True if it moved the cursor (used by tests and shutdown)."""
        batch = self.queue.read(self.sink.name, max_items=self.batch_items, kinds=self.sink.kinds)
        if not batch.items:
            if batch.end_id > self.queue.cursor(self.sink.name):
                self.queue.confirm(batch)
                return True
            return False
        written = self._write(batch)
        self.queue.confirm(batch)
        with self._lock:
            self._batches += 1
            self._items += len(batch.items)
            self._written += written
            self._failing_since = None
        return True

    def _write(self, batch: Batch) -> int:
        try:
            return self.sink.write(batch.items)
        except PermanentSinkError as exc:
            if len(batch.items) == 1:
                self._reject(batch.items[0], exc)
                return 0
            log.warning(
                "%s refused a batch (%s); writing its %d items one by one", self.sink.name, exc, len(batch.items)
            )
        written = 0
        for item in batch.items:
            try:
                written += self.sink.write([item])
            except PermanentSinkError as exc:
                self._reject(item, exc)
        return written

    def _reject(self, item: QueuedItem, exc: Exception) -> None:
        log.error("%s refused item %d (%s on %s) for good: %s", self.sink.name, item.id, item.kind, item.topic, exc)
        with self._lock:
            self._rejected += 1

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self.linger_s > 0:
                self.queue.linger(
                    self.sink.name,
                    fill=self.batch_items,
                    max_wait_s=self.linger_s,
                    quiet_s=self.linger_s / 4,
                    stop=self._stop,
                )
            try:
                moved = self.drain_once()
            except Exception as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                text = " ".join(str(exc).split())[:300] or type(exc).__name__
                with self._lock:
                    self._errors += 1
                    self._last_error = text
                    if self._failing_since is None:
                        self._failing_since = time.monotonic()
                log.warning(
                    "%s write failed (%d in a row), retrying in %.1f s: %s", self.sink.name, failures, delay, text
                )
                self._stop.wait(delay)
                continue
            failures = 0
            if not moved:
                self.queue.wait_for_data(self.sink.name, timeout=0.5, stop=self._stop)
        try:
            self.sink.close()
        except Exception:
            log.debug("closing %s failed", self.sink.name, exc_info=True)
