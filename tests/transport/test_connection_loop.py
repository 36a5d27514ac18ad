"""The wrapper's network loop on a real Mosquitto: many packets per wake-up, PUBACKs in one write.

What must not change: every message arrives once, and exactly the acknowledged ones are gone
from a persistent session (the unacknowledged ones come back after a reconnect).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any

from devtools.local_mosquitto import LocalMosquitto
from transport.connection import ACKS_PER_WRITE, Message, MqttConnection, MqttSettings, _coalesce_acks

TOPIC = "thermo/v1/loop-test/frame"


def _consumer(broker: LocalMosquitto, inbox: queue.SimpleQueue[Message]) -> MqttConnection:
    settings = MqttSettings(url=broker.url, clean_start=False, session_expiry_s=300, max_inflight=1000)
    conn = MqttConnection(settings, client_id="loop-test-consumer", manual_ack=True)
    conn.subscribe(TOPIC, inbox.put, qos=1)
    return conn.start()


def _take(inbox: queue.SimpleQueue[Message], n: int, timeout: float) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(inbox.get(timeout=0.2))
        except queue.Empty:
            continue
    return got


def test_acked_messages_are_gone_and_unacked_ones_come_back(mosquitto: LocalMosquitto) -> None:
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    consumer = _consumer(mosquitto, inbox)
    publisher = MqttConnection(MqttSettings(url=mosquitto.url, max_inflight=1000), client_id="loop-test-pub").start()
    try:
        n = 800  # within the in-flight window: the broker sends no more until some are acked
        receipts = [publisher.publish(TOPIC, f"m{i}".encode(), qos=1) for i in range(n)]
        assert all(r.wait(30.0) and r.accepted for r in receipts)
        first = _take(inbox, n, 30.0)
        assert [m.payload for m in first] == [f"m{i}".encode() for i in range(n)]  # all, once, in order
        acked, kept = first[: n - 100], first[n - 100 :]

        # Acked in one go from another thread, as the bridge's ingest does after its commit.
        def ack_all() -> None:
            for m in acked:
                m.ack()

        worker = threading.Thread(target=ack_all)
        worker.start()
        worker.join()
        time.sleep(1.0)  # the acks reach the broker (a duration, then the reconnect shows what it kept)
        consumer.stop()
        assert kept, "some messages stay unacknowledged"
        consumer = _consumer(mosquitto, inbox)
        again = _take(inbox, len(kept), 30.0)
        assert sorted(m.payload for m in again) == sorted(m.payload for m in kept)
        for m in again:
            m.ack()
        assert _take(inbox, 1, 1.0) == []
    finally:
        consumer.stop()
        publisher.stop()


def _ack(mid: int) -> dict[str, Any]:
    packet = bytes([0x40, 2, mid >> 8, mid & 0xFF])
    return {"command": 0x40, "mid": mid, "qos": 0, "pos": 0, "to_process": 4, "packet": packet, "info": None}


def _publish(mid: int, qos: int) -> dict[str, Any]:
    packet = bytes([0x30 | qos << 1, 3]) + b"p%02d" % mid
    return {"command": 0x30 | qos << 1, "mid": mid, "qos": qos, "pos": 0, "to_process": 5, "packet": packet}


def test_acks_and_qos1_publishes_at_the_head_are_merged_in_order_and_others_left_alone() -> None:
    qos0 = {**_publish(9, 0), "info": object()}  # completed when written: never merged
    out = collections.deque([_ack(1), {**_publish(2, 1), "info": object()}, _ack(3), qos0, _ack(4)])
    _coalesce_acks(out)
    assert len(out) == 3
    merged = out[0]
    assert merged["packet"] == _ack(1)["packet"] + _publish(2, 1)["packet"] + _ack(3)["packet"]
    assert merged["to_process"] == 13 and merged["pos"] == 0
    assert out[1] is qos0 and out[2]["mid"] == 4
    # A partly written head is never touched; nor is a queue that starts with a QoS 0 publish.
    partial = collections.deque([{**_ack(5), "pos": 2, "to_process": 2}, _ack(6)])
    _coalesce_acks(partial)
    assert len(partial) == 2 and partial[0]["pos"] == 2
    _coalesce_acks(out := collections.deque([qos0, _ack(7), _ack(8)]))
    assert len(out) == 3
    # At most ACKS_PER_WRITE packets go in one write.
    many = collections.deque(_ack(i + 1) for i in range(ACKS_PER_WRITE + 3))
    _coalesce_acks(many)
    assert len(many) == 4 and many[0]["to_process"] == 4 * ACKS_PER_WRITE


def test_publishes_written_in_one_go_all_arrive_once_and_are_all_acknowledged(mosquitto: LocalMosquitto) -> None:
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    listener = MqttConnection(MqttSettings(url=mosquitto.url), client_id="loop-test-listener")
    listener.subscribe(TOPIC, inbox.put, qos=1)
    listener.start()
    publisher = MqttConnection(MqttSettings(url=mosquitto.url, max_inflight=1000), client_id="loop-test-burst").start()
    try:
        payloads = [bytes([k % 256]) * (100 + k) for k in range(600)]  # 100 B .. 700 B: many per write
        receipts = [publisher.publish(TOPIC, p, qos=1) for p in payloads]
        assert all(r.wait(30.0) and r.accepted for r in receipts)
        got = _take(inbox, len(payloads), 30.0)
        assert [m.payload for m in got] == payloads
        assert _take(inbox, 1, 0.5) == []
    finally:
        publisher.stop()
        listener.stop()
