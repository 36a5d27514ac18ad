"""Publishes computed session verdicts to `thermo/v1/<device>/session_verdict` as a queue sink.

Why a sink: a session verdict is queued (durably) before it is published, and leaves the
queue only after the broker's PUBACK, so a crash or a broker outage delays the device's
result but never loses it (it may be published twice; devices key results by session_id).
"""

from __future__ import annotations

from collections.abc import Sequence

from cloud_bridge.channels import Kind, SessionOutcome
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.sink import SinkError
from contract.messages import encode_message
from contract.topics import session_verdict_topic
from transport.connection import MqttConnection, PublishReceipt


class SessionVerdictPublisher:
    name = "publish"
    kinds: frozenset[str] | None = frozenset({Kind.SESSION_OUTCOME})

    def __init__(self, connection: MqttConnection, *, ack_timeout_s: float = 10.0) -> None:
        self._conn = connection
        self._timeout = ack_timeout_s

    def write(self, items: Sequence[QueuedItem]) -> int:
        if not self._conn.connected.is_set():
            raise SinkError("not connected to the broker")
        receipts: list[PublishReceipt] = []
        for item in items:
            verdict = SessionOutcome.model_validate_json(item.payload).verdict
            receipts.append(
                self._conn.publish(session_verdict_topic(verdict.device_id), encode_message(verdict), qos=1)
            )
        for receipt in receipts:
            if not receipt.wait(self._timeout):
                raise SinkError(f"no PUBACK for a session verdict within {self._timeout:.0f} s")
            if not receipt.accepted:
                raise SinkError(f"broker refused a session verdict: reason code 0x{receipt.reason_code or 0:02x}")
        return len(items)

    def close(self) -> None:
        """The connection belongs to the bridge."""
