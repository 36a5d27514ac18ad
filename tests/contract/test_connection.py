"""The paho wrapper against a real Mosquitto started with the project's broker config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from contract import Frame, decode_frame, encode_frame
from contract import topics as t
from contract.messages import DeviceState, DeviceStatus, decode_message, encode_message
from devtools.local_mosquitto import LocalMosquitto
from tests.contract.test_messages_and_topics import SAMPLES
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from transport.connection import Message, MqttConnection, MqttConnectionError, MqttSettings, Will

TOPIC_FOR = {
    "DeviceStatus": t.status_topic("pi-1"),
    "RfidEvent": t.rfid_topic("pi-1"),
    "Verdict": t.verdict_topic("pi-1"),
    "SessionVerdict": t.session_verdict_topic("pi-1"),
    "NodeStatus": t.node_topic("node-a", t.NodeChannel.STATUS),
    "NodeMetrics": t.node_topic("bridge-1", t.NodeChannel.METRICS),
    "DeadLetter": t.deadletter_topic("inference"),
    "ModelSwap": t.ADMIN_MODEL_TOPIC,
}


def test_every_message_type_through_the_broker(mosquitto: LocalMosquitto) -> None:
    sub, pub = connect(mosquitto.url), connect(mosquitto.url)
    try:
        got = Collector()
        subscribe_and_wait(sub, "thermo/v1/#", got)
        frame = Frame.from_celsius(
            np.random.default_rng(1).uniform(25, 36, (24, 32)), device_id="pi-1", seq=3, capture_ns=7
        )
        receipts = [pub.publish(t.frame_topic("pi-1"), encode_frame(frame))]
        for message in SAMPLES:
            receipts.append(pub.publish(TOPIC_FOR[type(message).__name__], encode_message(message)))
        assert all(r.wait(5) and r.accepted for r in receipts)
        msgs = got.wait_for(1 + len(SAMPLES))
        by_topic = {m.topic: m for m in msgs}
        assert decode_frame(by_topic[t.frame_topic("pi-1")].payload) == frame
        for message in SAMPLES:
            received = by_topic[TOPIC_FOR[type(message).__name__]]
            assert decode_message(received.payload, type(message)) == message
    finally:
        sub.stop()
        pub.stop()


def test_retained_status_reaches_late_subscriber(mosquitto: LocalMosquitto) -> None:
    pub = connect(mosquitto.url)
    status = DeviceStatus(state=DeviceState.ONLINE, ts_ns=time.time_ns())
    assert pub.publish(t.status_topic("pi-2"), encode_message(status), retain=True).wait(5)
    pub.stop()
    late = connect(mosquitto.url)
    try:
        got = Collector()
        subscribe_and_wait(late, t.status_topic("pi-2"), got)
        (msg,) = got.wait_for(1)
        assert msg.retain
        assert decode_message(msg.payload, DeviceStatus).state is DeviceState.ONLINE
    finally:
        late.stop()


CHILD = textwrap.dedent(
    """
    import sys, time
    from contract import topics as t
    from transport.connection import MqttConnection, MqttSettings, Will
    from contract.messages import DeviceState, DeviceStatus, encode_message
    topic = t.status_topic("pi-will")
    will = Will(topic, encode_message(DeviceStatus(state=DeviceState.OFFLINE)))
    conn = MqttConnection(MqttSettings(url=sys.argv[1], keepalive_s=5), will=will).start()
    conn.publish(topic, encode_message(DeviceStatus(state=DeviceState.ONLINE)), retain=True).wait(5)
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_last_will_publishes_offline_when_process_is_killed(mosquitto: LocalMosquitto) -> None:
    watcher = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(watcher, t.status_topic("pi-will"), got)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mosquitto.url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        got.wait_until(lambda ms: any(decode_message(m.payload, DeviceStatus).state == "online" for m in ms))
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        msgs = got.wait_until(
            lambda ms: any(decode_message(m.payload, DeviceStatus).state == "offline" for m in ms), timeout=15
        )
        assert decode_message(msgs[-1].payload, DeviceStatus).state is DeviceState.OFFLINE
    finally:
        if child.poll() is None:
            child.kill()
        watcher.stop()


def test_clean_disconnect_does_not_fire_the_will(mosquitto: LocalMosquitto) -> None:
    watcher = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(watcher, "thermo/v1/+/status", got)
    topic = t.status_topic("pi-clean")
    conn = connect(mosquitto.url, will=Will(topic, encode_message(DeviceStatus(state=DeviceState.OFFLINE))))
    conn.publish(topic, b"{}", qos=1).wait(5)
    conn.stop()
    probe = connect(mosquitto.url)
    probe.publish("thermo/v1/marker/status", b"{}").wait(5)
    msgs = got.wait_for(2)
    probe.stop()
    watcher.stop()
    assert [m.topic for m in msgs] == [topic, "thermo/v1/marker/status"]


def test_reconnects_and_resubscribes_after_broker_restart(mosquitto: LocalMosquitto) -> None:
    fast = MqttSettings(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.5)
    sub = MqttConnection(fast).start()
    pub = MqttConnection(fast).start()
    try:
        got = Collector()
        receipt = sub.subscribe("thermo/v1/pi-3/rfid", got)
        assert receipt.wait(5)
        mosquitto.restart()
        for conn in (sub, pub):
            deadline = time.monotonic() + 15
            while conn.connect_count < 2 and time.monotonic() < deadline:
                conn.connected.wait(0.1)
            assert conn.connect_count >= 2, "client did not reconnect"
        assert sub.subscribed.wait(5), "subscription not renewed after reconnect"
        # the subscription was renewed on reconnect: a message published now arrives
        assert pub.publish("thermo/v1/pi-3/rfid", b"after-restart").wait(5)
        (msg,) = got.wait_for(1)
        assert msg.payload == b"after-restart"
    finally:
        sub.stop()
        pub.stop()


def test_qos1_publish_while_broker_down_is_delivered_after_restart(mosquitto: LocalMosquitto) -> None:
    fast = MqttSettings(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.2)
    sub = MqttConnection(fast, client_id="durable-sub").start()
    got = Collector()
    assert sub.subscribe("thermo/v1/pi-4/frame", got).wait(5)
    # The publisher comes back a second later than the subscriber, so the subscription is
    # renewed on the fresh (non-persistent) broker before the queued message is sent.
    slow = MqttSettings(url=mosquitto.url, reconnect_min_s=1.5, reconnect_max_s=1.5)
    pub = MqttConnection(slow).start()
    try:
        mosquitto.stop()
        pub.connected.clear()
        receipt = pub.publish("thermo/v1/pi-4/frame", b"queued", qos=1)
        assert not receipt.done
        mosquitto.start()
        assert sub.subscribed.wait(10), "subscriber did not renew its subscription"
        assert receipt.wait(15), "queued QoS 1 publish never acknowledged after restart"
        assert got.wait_for(1)[0].payload == b"queued"
    finally:
        sub.stop()
        pub.stop()


def test_manual_ack_and_shared_subscription(mosquitto: LocalMosquitto) -> None:
    """Each message to exactly one group member; of the manual-ack member's share, exactly the
    messages it did not ack come back when it reconnects to its persistent session (an ack()
    that did nothing would bring them all back; one that acked on receipt, none)."""
    persistent = MqttSettings(url=mosquitto.url, clean_start=False, session_expiry_s=300)
    a_got, b_got, again = Collector(), Collector(), Collector()
    withheld: set[int] = set()

    def ack_every_other(message: Message) -> None:  # by arrival: the group deals round-robin
        if len(a_got.messages) % 2 == 0:
            message.ack()
        else:
            withheld.add(int(message.payload))
        a_got(message)

    a = MqttConnection(persistent, client_id="manual-ack-a", manual_ack=True)
    a.subscribe(t.shared("workers", t.ALL_FRAMES), ack_every_other)  # sent on connect
    a.start()
    assert a.subscribed.wait(5)
    b = connect(mosquitto.url)
    assert b.subscribe(t.shared("workers", t.ALL_FRAMES), b_got).wait(5)
    pub = connect(mosquitto.url)
    try:
        for i in range(40):
            pub.publish(t.frame_topic("pi-5"), json.dumps(i).encode())
        deadline = time.monotonic() + 10
        while len(a_got.messages) + len(b_got.messages) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        received = sorted(int(m.payload) for m in a_got.messages + b_got.messages)
        assert received == list(range(40)), "each message to exactly one group member"
        assert a_got.messages and b_got.messages, "both members got a share"
        a_share = {int(m.payload) for m in a_got.messages}
        assert withheld and withheld != a_share, "a acked some of its share and withheld others"
        a.stop()
        # The same client id, the same session: the broker resends what a never acknowledged.
        a = MqttConnection(persistent, client_id="manual-ack-a", manual_ack=True)
        a.subscribe(t.shared("workers", t.ALL_FRAMES), again)
        a.start()
        redelivered = {int(m.payload) for m in again.wait_for(len(withheld), 10.0)}
        time.sleep(0.5)  # a duration, not a synchronisation: room for an extra (wrong) redelivery
        assert redelivered == withheld and len(again.messages) == len(withheld)
        assert not {int(m.payload) for m in b_got.messages} & withheld
    finally:
        for c in (a, b, pub):
            c.stop()


def test_unreachable_broker_gives_one_line_error() -> None:
    settings = MqttSettings(url="mqtt://127.0.0.1:1", connect_timeout_s=1)
    with pytest.raises(MqttConnectionError, match=r"cannot connect to MQTT broker mqtt://127\.0\.0\.1:1"):
        MqttConnection(settings).start()


def test_settings_reject_bad_urls() -> None:
    with pytest.raises(ValueError, match="mqtt:// or mqtts://"):
        MqttSettings(url="http://x")
    with pytest.raises(ValueError, match="extra"):
        MqttSettings.model_validate({"url": "mqtt://x", "password": "secret"})
