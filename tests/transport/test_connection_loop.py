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
from transport.connection import (
    ACKS_PER_WRITE,
    Message,
    MqttConnection,
    MqttSettings,
    PublishReceipt,
    _coalesce_acks,
    ack_in_order,
)

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


def test_acks_at_the_head_are_merged_in_order_and_other_packets_are_left_alone() -> None:
    publish: dict[str, Any] = {"command": 0x32, "mid": 9, "qos": 1, "pos": 0, "to_process": 3, "packet": b"pub"}
    publish["info"] = object()
    out = collections.deque([_ack(1), _ack(2), _ack(3), publish, _ack(4)])
    _coalesce_acks(out)
    assert len(out) == 3
    merged = out[0]
    assert merged["packet"] == _ack(1)["packet"] + _ack(2)["packet"] + _ack(3)["packet"]
    assert merged["to_process"] == 12 and merged["pos"] == 0
    assert out[1] is publish and out[2]["mid"] == 4
    # A partly written head is never touched; nor is a queue that starts with a publish.
    partial = collections.deque([{**_ack(5), "pos": 2, "to_process": 2}, _ack(6)])
    _coalesce_acks(partial)
    assert len(partial) == 2 and partial[0]["pos"] == 2
    _coalesce_acks(out := collections.deque([publish, _ack(7), _ack(8)]))
    assert len(out) == 3
    # At most ACKS_PER_WRITE acks go in one write.
    many = collections.deque(_ack(i + 1) for i in range(ACKS_PER_WRITE + 3))
    _coalesce_acks(many)
    assert len(many) == 4 and many[0]["to_process"] == 4 * ACKS_PER_WRITE


def test_acks_in_order_in_one_group_are_gone_and_the_unacked_ones_come_back(mosquitto: LocalMosquitto) -> None:
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    consumer = _consumer(mosquitto, inbox)
    publisher = MqttConnection(MqttSettings(url=mosquitto.url, max_inflight=1000), client_id="loop-test-pub").start()
    try:
        n = ACKS_PER_WRITE + 300  # more than one queued packet of PUBACKs
        receipts = [publisher.publish(TOPIC, f"g{i}".encode(), qos=1) for i in range(n)]
        assert all(r.wait(30.0) and r.accepted for r in receipts)
        first = _take(inbox, n, 30.0)
        assert len(first) == n and all(m._client is not None for m in first)
        acked, kept = first[:-50], first[-50:]
        threading.Thread(target=ack_in_order, args=(acked,)).start()  # as ingest does, off the network thread
        time.sleep(1.0)  # the acks reach the broker (a duration, then the reconnect shows what it kept)
        consumer.stop()
        consumer = _consumer(mosquitto, inbox)
        again = _take(inbox, len(kept), 30.0)
        assert sorted(m.payload for m in again) == sorted(m.payload for m in kept)
        ack_in_order(again)
        assert _take(inbox, 1, 1.0) == []
    finally:
        consumer.stop()
        publisher.stop()


class _CountingSocket:
    """Stands in for paho's socket-pair writer and counts the wake-up bytes sent through it."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.sends = sock, 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return int(self.sock.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_auto_acks_leave_without_a_wake_up_and_none_come_back(mosquitto: LocalMosquitto) -> None:
    """An auto-acking QoS 1 subscriber (an inference node): paho queues each PUBACK on its own
    network thread; they must still reach the broker (nothing redelivered after a reconnect)
    without a socket-pair wake-up each."""
    settings = MqttSettings(url=mosquitto.url, clean_start=False, session_expiry_s=300, max_inflight=20)
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
    subscriber = MqttConnection(settings, client_id="loop-test-auto")
    subscriber.subscribe(TOPIC, inbox.put, qos=1)
    subscriber.start()
    publisher = MqttConnection(MqttSettings(url=mosquitto.url), client_id="loop-test-auto-pub").start()
    try:
        client = subscriber._client
        counting = _CountingSocket(client._sockpairW)
        client._sockpairW = counting  # type: ignore[assignment]
        n = 60  # three times the in-flight window: unacknowledged, the broker would stop at 20
        for i in range(n):
            assert publisher.publish(TOPIC, f"a{i}".encode(), qos=1).wait(10.0)
            time.sleep(0.01)  # each arrives while the network thread waits in select
        got = _take(inbox, n, 30.0)
        assert [m.payload for m in got] == [f"a{i}".encode() for i in range(n)]
        assert counting.sends < n // 2, f"{counting.sends} wake-ups for {n} auto-acks"
        time.sleep(0.5)  # the last PUBACKs reach the broker (a duration, then the reconnect shows it)
        subscriber.stop()
        subscriber = MqttConnection(settings, client_id="loop-test-auto")
        subscriber.subscribe(TOPIC, inbox.put, qos=1)
        subscriber.start()
        assert _take(inbox, 1, 2.0) == [], "an auto-acked message came back: its PUBACK never left"
    finally:
        subscriber.stop()
        publisher.stop()


def test_a_publish_from_a_handler_leaves_without_a_wake_up(mosquitto: LocalMosquitto) -> None:
    """A node scoring a lone frame publishes its verdict from the handler, on paho's network
    thread: each reply must reach the broker (its receipt completes, a listener gets it) without
    a socket-pair wake-up each."""
    receipts: list[PublishReceipt] = []
    echo = MqttConnection(MqttSettings(url=mosquitto.url), client_id="loop-test-echo")
    echo.subscribe(TOPIC, lambda m: receipts.append(echo.publish(f"{TOPIC}/reply", m.payload, qos=1)), qos=1)
    echo.start()
    replies: queue.SimpleQueue[Message] = queue.SimpleQueue()
    listener = MqttConnection(MqttSettings(url=mosquitto.url), client_id="loop-test-echo-listen")
    listener.subscribe(f"{TOPIC}/reply", replies.put, qos=1)
    listener.start()
    publisher = MqttConnection(MqttSettings(url=mosquitto.url), client_id="loop-test-echo-pub").start()
    try:
        client = echo._client
        counting = _CountingSocket(client._sockpairW)
        client._sockpairW = counting  # type: ignore[assignment]
        n = 40
        for i in range(n):
            assert publisher.publish(TOPIC, f"e{i}".encode(), qos=1).wait(10.0)
            time.sleep(0.01)  # each arrives while the network thread waits in select
        got = _take(replies, n, 30.0)
        assert [m.payload for m in got] == [f"e{i}".encode() for i in range(n)]
        assert len(receipts) == n and all(r.wait(10.0) and r.accepted for r in receipts)
        assert counting.sends < n // 2, f"{counting.sends} wake-ups for {n} replies published on the network thread"
    finally:
        publisher.stop()
        listener.stop()
        echo.stop()
