"""A sink drains the durable queue in batches; a batch leaves its queue only once stored.

`SinkWorker` runs one sink on its own thread: read a batch after the sink's cursor, write
it, confirm it. Errors are sorted in two (`is_transient`):

- transient (the store is down, a timeout, a locked database: `SinkError`, `OSError`,
  `sqlite3.OperationalError`): keep the batch, count the error, retry after an exponential
  back-off (min..max, reset by the next success);
- anything else is permanent for some item of the batch (`PermanentSinkError` such as HTTP
  400, a corrupt row, an integer the store cannot hold: OverflowError, an encoding error, a
  constraint): the worker bisects the batch, stores every item the store accepts, and moves
  each refused item to the queue's dead-letter table with its reason (`rejected`, and per
  reason in the queue's stats). One poison item never blocks the queue, nor is it retried
  forever as if the store were down (an OverflowError once was, and the archive stopped for
  everybody).

If the worker thread itself dies (a bug outside the write), `alive` turns False and the
bridge's watchdog makes the process exit non-zero, so "running but storing nothing" cannot
last.

Linger: once an item is waiting, the worker waits up to `linger_s` for `batch_items` to
queue up before it writes, as long as items keep arriving (it stops waiting after
`linger_s / 4` without a new commit, and at once on stop). At moderate rates this turns
many one-item writes (an HTTP request or an fsync each) into a few bigger ones; a backlog
(a full batch already waiting) is never delayed. Delivery is unchanged: a batch still
leaves the queue only when confirmed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloud_bridge.durable_queue import Batch, DeadItem, DurableQueue, QueuedItem
from contract.errors import ContractError

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A write that may succeed later (store down, timeout, 5xx)."""


class PermanentSinkError(SinkError):
    """A write the store refuses for good (malformed data); retrying the same items cannot help."""


class DeadReason:
    """Reasons a sink refuses one item for good (dead-letter counts are kept per reason)."""

    REFUSED = "refused"  # the store said so (PermanentSinkError: HTTP 400, ...)
    CORRUPT = "corrupt"  # the queued row does not decode
    RANGE = "range"  # a number the store cannot hold (OverflowError, SQLite integer overflow)
    ENCODING = "encoding"
    CONSTRAINT = "constraint"
    ERROR = "error"  # any other error of this item alone


def is_transient(exc: BaseException) -> bool:
    """Errors that say nothing about the items: the store or the link is down, busy or slow."""
    if isinstance(exc, PermanentSinkError):
        return False
    return isinstance(exc, SinkError | OSError | sqlite3.OperationalError)


def dead_reason(exc: BaseException) -> str:
    if isinstance(exc, PermanentSinkError):
        return DeadReason.REFUSED
    if isinstance(exc, ContractError):
        return DeadReason.CORRUPT
    if isinstance(exc, OverflowError):
        return DeadReason.RANGE
    if isinstance(exc, UnicodeError):
        return DeadReason.ENCODING
    if isinstance(exc, sqlite3.IntegrityError):
        return DeadReason.CONSTRAINT
    return DeadReason.ERROR


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
        """Write the batch; a permanent error is narrowed down by bisection, a transient one raised."""
        return self._write_part(batch.items)

    def _write_part(self, items: Sequence[QueuedItem]) -> int:
        try:
            return self.sink.write(items)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                self._reject(items[0], exc)
                return 0
            log.warning("%s refused a batch of %d (%s); bisecting it", self.sink.name, len(items), _text(exc))
        middle = len(items) // 2
        return self._write_part(items[:middle]) + self._write_part(items[middle:])

    def _reject(self, item: QueuedItem, exc: Exception) -> None:
        reason = dead_reason(exc)
        log.error(
            "%s refused item %d (%s on %s) for good [%s]: %s",
            self.sink.name,
            item.id,
            item.kind,
            item.topic,
            reason,
            _text(exc),
        )
        self.queue.dead_letter(
            [
                DeadItem(
                    stage=self.sink.name,
                    reason=reason,
                    detail=f"{type(exc).__name__}: {_text(exc)}",
                    topic=item.topic,
                    payload=item.payload,
                    received_ns=item.received_ns,
                    item_id=item.id,
                    kind=item.kind,
                )
            ]
        )
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
                text = _text(exc)
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


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
