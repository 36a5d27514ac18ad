"""The inference node's own counters, read from its metrics topic: when has it dealt with every frame?

Why: under saturating load the node's bounded queue drops frames (`frames_dropped`), so a
bench that waits for one verdict per frame published waits for verdicts that never come (it
used to sit out a 300 s timeout at the default 20,000 frames). The node says in each
`NodeMetrics` how many frames it verdicted (`frames_total`), dropped and dead-lettered since
it started; a phase is over once those add up to what was published. A node whose counters
stop moving before that ends the wait too (after `STALL_S`), reported as unaccounted frames.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from contract.messages import NodeMetrics, decode_message
from contract.topics import NodeChannel, node_topic
from transport.connection import Message, MqttConnection, MqttSettings

#: How often the bench's node publishes its metrics (its default is 5 s: up to 5 s of waiting per phase).
NODE_METRICS_INTERVAL_S = 0.5
#: Counters unchanged this long, with frames still unaccounted for: the node is done with what it got.
STALL_S = 20.0
#: However the counters move, one phase's wait ends after this long.
MAX_WAIT_S = 600.0


@dataclass(frozen=True)
class NodeCount:
    """The node's cumulative counters at one moment."""

    verdicted: int = 0
    dropped: int = 0
    deadletters: int = 0

    @property
    def accounted(self) -> int:
        return self.verdicted + self.dropped + self.deadletters

    def minus(self, base: NodeCount) -> NodeCount:
        return NodeCount(
            self.verdicted - base.verdicted, self.dropped - base.dropped, self.deadletters - base.deadletters
        )


class NodeCounters:
    """Follows one node's metrics topic; `wait_accounted` blocks until it has dealt with N frames."""

    def __init__(self, url: str, node_id: str) -> None:
        self._latest = NodeCount()
        self._changed = threading.Condition()
        self._seen = 0
        self._conn = MqttConnection(MqttSettings(url=url), client_id=f"bench-counters-{time.monotonic_ns()}")
        self._topic = node_topic(node_id, NodeChannel.METRICS)

    def start(self, timeout: float = 10.0) -> NodeCounters:
        receipt = self._conn.subscribe(self._topic, self._on_metrics, qos=1)
        self._conn.start(wait=True)
        if not (receipt.wait(timeout) and receipt.granted):
            self._conn.stop()
            raise ConnectionError(f"subscription to {self._topic} refused")
        return self

    def stop(self) -> None:
        self._conn.stop()

    def _on_metrics(self, message: Message) -> None:
        try:
            values = decode_message(message.payload, NodeMetrics).values
            count = NodeCount(
                int(values.get("frames_total", 0)),
                int(values.get("frames_dropped", 0)),
                int(values.get("deadletters", 0)),
            )
        except ValueError:
            return
        with self._changed:
            self._latest, self._seen = count, self._seen + 1
            self._changed.notify_all()

    def latest(self, fresh_within_s: float | None = None) -> NodeCount:
        """The newest counters; with `fresh_within_s`, first wait (that long at most) for a new report."""
        with self._changed:
            if fresh_within_s is not None:
                seen = self._seen
                self._changed.wait_for(lambda: self._seen > seen, timeout=fresh_within_s)
            return self._latest

    def wait_accounted(self, base: NodeCount, frames: int, *, stall_s: float = STALL_S) -> NodeCount:
        """Counters since `base` once verdicted + dropped + dead-lettered >= `frames`, or they stalled."""
        give_up = time.monotonic() + MAX_WAIT_S
        last, moved = self.latest().minus(base), time.monotonic()
        while last.accounted < frames:
            now = time.monotonic()
            if now - moved > stall_s or now > give_up:
                break
            current = self.latest(fresh_within_s=NODE_METRICS_INTERVAL_S * 4).minus(base)
            if current != last:
                last, moved = current, time.monotonic()
        return last
