"""A storage bridge's receipts: which frames it committed, for the sessions bridge (a queue sink).

Why a sink: the receipt must never name a frame that could still be lost, and must never be
skipped. As a queue consumer it reads only committed frames, and its cursor moves only after
the broker's PUBACK, so a crash or an outage re-sends receipts (the sessions bridge ignores
frames it knows already) but never leaves one out. A frame's verdict usually reaches the
sessions bridge before the receipt does; provenance holds it until then (`hold_s`).

Frames are grouped per (device, incarnation, session, patient) as they come, so a device's
run of frames costs its seq numbers (a few bytes each) instead of ~1.6 KB of pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloud_bridge.channels import Kind, expect
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.sink import SinkError
from contract.frame import Frame
from contract.messages import MAX_RECEIPT_FRAMES, FrameReceipts, ReceiptGroup, encode_message
from contract.topics import receipts_topic
from transport.connection import MqttConnection, PublishReceipt

#: (device, incarnation, session, patient_ref): the frames of one group share these.
GroupKey = tuple[str, str, str | None, str | None]


def receipt_messages(bridge_id: str, frames: Sequence[tuple[Frame, int]]) -> list[FrameReceipts]:
    """(frame, received_ns) pairs in queue order -> receipts of at most MAX_RECEIPT_FRAMES frames each."""
    messages: list[FrameReceipts] = []
    groups: list[ReceiptGroup] = []
    key: GroupKey | None = None
    seqs: list[int] = []
    received = 0
    in_message = 0

    def close_group() -> None:
        if key is not None and seqs:
            device, incarnation, session, patient = key
            groups.append(
                ReceiptGroup(
                    device_id=device,
                    incarnation=incarnation,
                    session_id=session,
                    patient_ref=patient,
                    seqs=list(seqs),
                    received_ns=received,
                )
            )

    for frame, received_ns in frames:
        this = (frame.device_id, frame.incarnation, frame.session_id, frame.patient_ref)
        if in_message == MAX_RECEIPT_FRAMES:
            close_group()
            messages.append(FrameReceipts(bridge_id=bridge_id, groups=groups))
            groups, key, seqs, in_message = [], None, [], 0
        if this != key:
            close_group()
            key, seqs = this, []
        seqs.append(frame.seq)
        received = received_ns
        in_message += 1
    close_group()
    if groups:
        messages.append(FrameReceipts(bridge_id=bridge_id, groups=groups))
    return messages


class ReceiptPublisher:
    name = "receipts"
    kinds: frozenset[str] | None = frozenset({Kind.FRAME})

    def __init__(
        self, connection: MqttConnection, bridge_id: str, *, decoded: DecodedCache, ack_timeout_s: float = 10.0
    ) -> None:
        self._conn = connection
        self._topic = receipts_topic(bridge_id)
        self._bridge_id = bridge_id
        self._decoded = decoded
        self._timeout = ack_timeout_s

    def write(self, items: Sequence[QueuedItem]) -> int:
        if not self._conn.connected.is_set():
            raise SinkError("not connected to the broker")
        frames = [(expect(self._decoded.decode(i.kind, i.payload), Frame), i.received_ns) for i in items]
        receipts: list[PublishReceipt] = [
            self._conn.publish(self._topic, encode_message(message), qos=1)
            for message in receipt_messages(self._bridge_id, frames)
        ]
        for receipt in receipts:
            if not receipt.wait(self._timeout):
                raise SinkError(f"no PUBACK for a frame receipt within {self._timeout:.0f} s")
            if not receipt.accepted:
                raise SinkError(f"broker refused a frame receipt: reason code 0x{receipt.reason_code or 0:02x}")
        return len(receipts)

    def close(self) -> None:
        """The connection belongs to the bridge."""
