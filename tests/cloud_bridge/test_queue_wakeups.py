"""Queue waits end on the event they wait for (not on their timer): a filling append ends a
linger, a confirm ends `wait_confirmed` and `wait_empty`, `wake` ends them all.

Each wait is given 60 s and each check allows 30 s, so a wait that only ends on its timer
fails the test while a loaded machine cannot make it flake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from cloud_bridge.durable_queue import Batch, DurableQueue, NewItem

_LONG_S = 60.0
_BOUND_S = 30.0


def _items(n: int) -> list[NewItem]:
    return [NewItem("frame", "thermo/dev-1/frame", bytes([i]), i, "dev-1") for i in range(n)]


def _in_thread(wait: Callable[[], object]) -> tuple[threading.Thread, list[float]]:
    ended: list[float] = []

    def run() -> None:
        wait()
        ended.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.2)  # let it block
    return thread, ended


def _ends_soon(thread: threading.Thread, ended: list[float], since: float) -> None:
    thread.join(_BOUND_S)
    assert not thread.is_alive(), "the wait did not end on its event"
    assert ended[0] - since < _BOUND_S


def test_an_append_that_fills_the_batch_ends_a_linger_but_a_smaller_one_does_not(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["a", "b"], synchronous="normal")
    stop = threading.Event()
    try:
        queue.append(_items(1))
        thread, ended = _in_thread(lambda: queue.linger("a", fill=5, max_wait_s=_LONG_S, quiet_s=_LONG_S, stop=stop))
        queue.append(_items(2))  # 3 pending of 5: still lingering
        time.sleep(0.3)
        assert thread.is_alive()
        since = time.monotonic()
        queue.append(_items(2))  # 5 pending: the batch is full
        _ends_soon(thread, ended, since)
    finally:
        queue.close()


def test_new_data_still_wakes_a_waiting_reader_at_once(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["a"], synchronous="normal")
    try:
        thread, ended = _in_thread(lambda: queue.wait_for_data("a", timeout=_LONG_S))
        since = time.monotonic()
        queue.append(_items(1))
        _ends_soon(thread, ended, since)
    finally:
        queue.close()


def test_a_confirm_ends_wait_confirmed_and_wait_empty(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["a", "b"], synchronous="normal")
    try:
        queue.append(_items(3))
        confirmed, confirmed_at = _in_thread(lambda: queue.wait_confirmed("a", 3, timeout=_LONG_S))
        empty: list[bool] = []
        drained, drained_at = _in_thread(lambda: empty.append(queue.wait_empty(_LONG_S)))
        since = time.monotonic()
        queue.confirm(Batch("a", [], 3))
        _ends_soon(confirmed, confirmed_at, since)
        assert drained.is_alive()  # "b" has not confirmed yet
        queue.confirm(Batch("b", [], 3))
        _ends_soon(drained, drained_at, since)
        assert empty == [True]
    finally:
        queue.close()


def test_wake_ends_a_linger_whose_stop_was_set(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["a"], synchronous="normal")
    stop = threading.Event()
    try:
        queue.append(_items(1))
        thread, ended = _in_thread(lambda: queue.linger("a", fill=5, max_wait_s=_LONG_S, quiet_s=_LONG_S, stop=stop))
        since = time.monotonic()
        stop.set()
        queue.wake()
        _ends_soon(thread, ended, since)
    finally:
        queue.close()
