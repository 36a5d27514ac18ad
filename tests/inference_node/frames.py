"""Publishing test frames and reading verdicts back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from contract.frame import Frame, encode_frame
from contract.messages import Verdict, decode_message
from contract.topics import frame_topic
from transport.connection import Message, MqttConnection, PublishReceipt

SESSION = "0123456789abcdef0123456789abcdef"
PATIENT = "fedcba9876543210"


def make_frame(images: npt.NDArray[np.float32], device: str, seq: int, *, session: bool = True) -> Frame:
    return Frame.from_celsius(
        images[seq % len(images)],
        device_id=device,
        seq=seq,
        capture_ns=time.time_ns(),
        session_id=SESSION if session else None,
        patient_ref=PATIENT if session else None,
    )


def publish_frames(
    conn: MqttConnection, images: npt.NDArray[np.float32], device: str, seqs: Iterable[int], *, session: bool = True
) -> list[PublishReceipt]:
    return [
        conn.publish(frame_topic(device), encode_frame(make_frame(images, device, s, session=session)), qos=1)
        for s in seqs
    ]


def all_acked(receipts: list[PublishReceipt], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for receipt in receipts:
        assert receipt.wait(max(0.0, deadline - time.monotonic())), "broker did not acknowledge a frame"
        assert receipt.accepted


def verdicts(messages: list[Message]) -> list[Verdict]:
    return [decode_message(m.payload, Verdict) for m in messages if m.topic.endswith("/verdict")]


def count_verdicts(messages: list[Message]) -> int:
    return sum(1 for m in messages if m.topic.endswith("/verdict"))


def json_payloads(messages: list[Message], suffix: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]
