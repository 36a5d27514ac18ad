"""Moves spooled messages to the broker in order, deleting each only after its PUBACK.

A window of up to `window` messages is in flight at once (throughput over a round trip) while
rows are always handed to the client in spool order, so order per device is kept. Rows leave
the spool strictly from the head: only the contiguous prefix of acknowledged messages is
deleted. While disconnected nothing new is sent; paho keeps the in-flight messages and
retransmits them (DUP) after reconnecting, and their receipts complete then. After a restart
the spool's rows are simply sent again. A message whose head receipt stays unanswered for
`ack_timeout_s` while connected is sent again with the window behind it. Every resend
carries the same payload, so duplicates keep their sequence number.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from sensor_node.spool import Spool, SpoolRow
from transport.connection import MqttConnection, PublishReceipt

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    row: SpoolRow
    receipt: PublishReceipt
    sent_mono: float


@dataclass
class PublisherStats:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    resent: int = 0


class SpoolPublisher:
    """A thread that drains a `Spool` through an `MqttConnection`."""

    def __init__(
        self,
        spool: Spool,
        connection: MqttConnection,
        *,
        window: int = 32,
        ack_timeout_s: float = 30.0,
        idle_poll_s: float = 0.25,
        ack_poll_s: float = 0.005,
    ) -> None:
        self.spool = spool
        self.connection = connection
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.idle_poll_s = idle_poll_s
        self.ack_poll_s = ack_poll_s
        self.stats = PublisherStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-publisher", daemon=True)
        self._inflight: deque[_InFlight] = deque()
        self._last_sent_id = 0

    def start(self) -> SpoolPublisher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # keep going: the spool still holds every unacknowledged row
                log.exception("spool publisher error; retrying in 1 s")
                self._stop.wait(1.0)

    def _step(self) -> None:
        conn = self.connection
        self._reap()
        if not conn.connected.is_set():
            conn.connected.wait(self.idle_poll_s)
            return
        now = time.monotonic()
        free = self.window - len(self._inflight)
        if free > 0:
            rows, last_id = self.spool.peek_after(self._last_sent_id, free)
            for row in rows:
                self._inflight.append(_InFlight(row, self._send(row), now))
                self._last_sent_id = row.id
                self.stats.sent += 1
            if not rows:  # everything up to last_id was sent or dropped from the spool
                self._last_sent_id = max(self._last_sent_id, last_id)
        head = self._inflight[0] if self._inflight else None
        if head is not None and not head.receipt.done and now - head.sent_mono > self.ack_timeout_s:
            log.warning("no PUBACK for seq %d after %.0f s: sending the window again", head.row.seq, self.ack_timeout_s)
            for item in self._inflight:
                item.receipt, item.sent_mono = self._send(item.row), now
                self.stats.resent += 1
        if head is not None and len(self._inflight) >= self.window:
            head.receipt.wait(self.idle_poll_s)
        else:
            self.spool.wait_for_rows(self._last_sent_id, self.ack_poll_s if head is not None else self.idle_poll_s)

    def _send(self, row: SpoolRow) -> PublishReceipt:
        return self.connection.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)

    def _reap(self) -> None:
        """Delete the acknowledged prefix of the in-flight window from the spool."""
        last_done: int | None = None
        count = 0
        while self._inflight and self._inflight[0].receipt.done:
            item = self._inflight.popleft()
            if not item.receipt.accepted:
                self.stats.rejected += 1
                log.error(
                    "broker rejected seq %d on %s with reason code 0x%02x; dropping it (check the broker ACL)",
                    item.row.seq,
                    item.row.topic,
                    item.receipt.reason_code or 0,
                )
            last_done = item.row.id
            count += 1
        if last_done is not None:
            self.spool.ack_through(last_done)
            self.stats.acked += count
