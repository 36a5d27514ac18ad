"""Test helpers for MQTT: collect messages and wait on them with timeouts (never bare sleeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from transport.connection import Message, MqttConnection, MqttSettings


class Collector:
    """Subscribes and records messages; `wait_for(n)` blocks until n arrived or times out."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        return self.wait_until(lambda msgs: len(msgs) >= count, timeout, f"{count} messages")

    def wait_until(
        self, predicate: Callable[[list[Message]], bool], timeout: float = 10.0, what: str = ""
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what or 'condition'}; got {len(self.messages)}")
                self._cond.wait(remaining)
            return list(self.messages)


def connect(url: str, **kwargs: object) -> MqttConnection:
    """A started connection to the broker at `url` (anonymous, dev config)."""
    conn = MqttConnection(MqttSettings(url=url), **kwargs)  # type: ignore[arg-type]
    return conn.start()


def subscribe_and_wait(conn: MqttConnection, topic_filter: str, collector: Collector, timeout: float = 5.0) -> None:
    receipt = conn.subscribe(topic_filter, collector)
    assert receipt.wait(timeout), f"no SUBACK for {topic_filter}"
    assert receipt.granted, f"subscription to {topic_filter} refused: {receipt.reason_codes}"
