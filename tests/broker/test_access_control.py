"""Who may connect, publish and read, against a real Mosquitto 2.0 started from `broker init` output.

What Mosquitto 2.0.11 really does, as these tests pin down:
- a denied QoS 1 publish gets PUBACK 0x87 "not authorized" and reaches nobody;
- subscriptions are never refused (the acl_file plugin does not check them: SUBACK grants
  QoS 1), but each message is checked against the subscriber's read rights on delivery, so a
  subscription outside the account's rights delivers nothing;
- SIGHUP re-reads the password file and ACL.

Ordering, not sleeping, proves that something did *not* arrive: a sentinel message sent after
the forbidden one on the same connection arrives in order, so once it is in, the forbidden
one would have been too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from broker.provisioning import Credentials
from contract import Frame, encode_frame
from contract import topics as t
from contract.ids import make_patient_ref, new_session_id
from contract.messages import RfidEvent, encode_message
from devtools.secure_broker import SecureBroker, connect_outcome
from tests.mqtt_helpers import Collector, subscribe_and_wait
from transport.connection import NOT_AUTHORIZED, MqttConnection


def _frame(device_id: str, seq: int, patient_ref: str | None = None, session_id: str | None = None) -> bytes:
    temps = np.random.default_rng(seq).uniform(28, 35, (24, 32))
    frame = Frame.from_celsius(
        temps, device_id=device_id, seq=seq, capture_ns=seq, session_id=session_id, patient_ref=patient_ref
    )
    return encode_frame(frame)


def _publish(conn: MqttConnection, topic: str, payload: bytes, retain: bool = False) -> int:
    receipt = conn.publish(topic, payload, qos=1, retain=retain)
    assert receipt.wait(5), f"no PUBACK for {topic}"
    assert receipt.reason_code is not None
    return receipt.reason_code


#: PUBACK "no matching subscribers": accepted, just nobody listening.
NO_SUBSCRIBERS = 0x10
ACCEPTED = {0, NO_SUBSCRIBERS}


def _topics(collector: Collector) -> list[str]:
    return [m.topic for m in collector.messages]


# -- authentication -----------------------------------------------------------------------
def test_anonymous_connection_refused_on_both_listeners(secure_broker: SecureBroker) -> None:
    for url in (secure_broker.tls_url, secure_broker.local_url):
        reason = connect_outcome(secure_broker.settings(None, url=url), None)
        assert reason is not None and "Not authorized" in reason, (url, reason)


def test_wrong_password_refused(secure_broker: SecureBroker) -> None:
    dev = secure_broker.add_device("pi-a")
    reason = connect_outcome(secure_broker.settings(dev), dev.password + "x")
    assert reason is not None and "Not authorized" in reason
    assert connect_outcome(secure_broker.settings(dev), dev.password) is None


def test_plaintext_connection_to_tls_port_fails(secure_broker: SecureBroker) -> None:
    dev = secure_broker.add_device("pi-a")
    plain_to_tls = secure_broker.settings(dev, url=f"mqtt://127.0.0.1:{secure_broker.tls_port}")
    assert connect_outcome(plain_to_tls, dev.password) is not None
    assert "wrong version number" in secure_broker.log_text()  # the broker saw a non-TLS hello


def test_tls_with_an_unknown_ca_fails(secure_broker: SecureBroker, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = SecureBroker(tmp_path_factory.mktemp("other"))  # a second CA, never started
    dev = secure_broker.add_device("pi-a")
    settings = secure_broker.settings(dev, ca_file=other.ca_file)
    reason = connect_outcome(settings, dev.password)
    assert reason == "connection failed (broker down or TLS error)", reason  # refused, not "no answer"
    # The wrapper does not pass on the TLS error text; the broker names it: our client rejected its certificate.
    assert "tlsv1 alert unknown ca" in secure_broker.log_text()
    assert connect_outcome(secure_broker.settings(dev), dev.password) is None


def test_loopback_listener_still_requires_the_password(secure_broker: SecureBroker) -> None:
    dev = secure_broker.add_device("pi-a")
    local = secure_broker.settings(dev, url=secure_broker.local_url)
    reason = connect_outcome(local, "wrong")
    assert reason is not None and "Not authorized" in reason, reason  # CONNACK refusal, not a timeout
    assert connect_outcome(local, dev.password) is None
    config = secure_broker.files.config.read_text()
    assert f"listener {secure_broker.port} 127.0.0.1\n" in config


def test_removed_device_cannot_connect_after_reload(secure_broker: SecureBroker) -> None:
    dev = secure_broker.add_device("pi-a")
    keep = secure_broker.add_device("pi-b")
    live = secure_broker.connect(dev)
    try:
        secure_broker.remove("pi-a")  # reloads and waits for the broker's "Reloading config."
        reason = connect_outcome(secure_broker.settings(dev), dev.password)
        assert reason is not None and "Not authorized" in reason
        assert connect_outcome(secure_broker.settings(keep), keep.password) is None
        # Mosquitto also cuts off the connection that was open before the reload.
        assert _wait_disconnected(live, 5)
        log = secure_broker.log_text()
        assert "Client pi-a disconnected." in log[log.rindex("Reloading config.") :]
    finally:
        live.stop()


def _wait_disconnected(conn: MqttConnection, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while conn.connected.is_set():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- devices ------------------------------------------------------------------------------
def test_device_cannot_publish_on_another_devices_topics(secure_broker: SecureBroker) -> None:
    a, b = secure_broker.add_device("pi-a"), secure_broker.add_device("pi-b")
    bridge = secure_broker.add_service("bridge", "main")
    conn_a, conn_b, conn_bridge = secure_broker.connect(a), secure_broker.connect(b), secure_broker.connect(bridge)
    try:
        seen_by_b, seen_by_bridge = Collector(), Collector()
        subscribe_and_wait(conn_b, t.verdict_topic("pi-b"), seen_by_b)
        subscribe_and_wait(conn_bridge, f"{t.ROOT}/#", seen_by_bridge)
        forged = (t.frame_topic("pi-b"), t.rfid_topic("pi-b"), t.status_topic("pi-b"), t.verdict_topic("pi-b"))
        for topic in (*forged, t.receipts_topic("main"), t.receipts_topic("pi-a")):  # nor a bridge's receipts
            assert _publish(conn_a, topic, b"forged") == NOT_AUTHORIZED, topic
        assert _publish(conn_a, t.frame_topic("pi-a"), _frame("pi-a", 1)) == 0  # its own: accepted
        seen_by_bridge.wait_until(lambda msgs: t.frame_topic("pi-a") in [m.topic for m in msgs], 5, "own frame")
        assert _topics(seen_by_bridge) == [t.frame_topic("pi-a")]
        assert seen_by_b.messages == []
    finally:
        for conn in (conn_a, conn_b, conn_bridge):
            conn.stop()


def test_device_reads_only_its_own_verdicts(secure_broker: SecureBroker) -> None:
    a, _ = secure_broker.add_device("pi-a"), secure_broker.add_device("pi-b")
    inference = secure_broker.add_service("inference", "gpu-1")
    conn_a, conn_inf = secure_broker.connect(a), secure_broker.connect(inference)
    try:
        got = Collector()
        # Mosquitto grants the subscriptions (SUBACK 0x01) but filters every delivery by read rights.
        for topic_filter in (
            t.verdict_topic("pi-b"),
            t.session_verdict_topic("pi-b"),
            t.ALL_VERDICTS,
            "$share/g/" + t.verdict_topic("pi-b"),
            "#",
        ):
            subscribe_and_wait(conn_a, topic_filter, got)
        assert _publish(conn_inf, t.verdict_topic("pi-b"), b"for b") == 0
        assert _publish(conn_inf, t.verdict_topic("pi-a"), b"for a") == 0  # the sentinel
        got.wait_until(lambda msgs: any(m.payload == b"for a" for m in msgs), 5, "own verdict")
        assert {m.topic for m in got.messages} == {t.verdict_topic("pi-a")}
        assert all(m.payload == b"for a" for m in got.messages)
    finally:
        conn_a.stop()
        conn_inf.stop()


def test_device_in_the_inference_share_group_receives_no_frames(secure_broker: SecureBroker) -> None:
    """Confidentiality holds; availability does not fully (docs/security.md, "Known limits")."""
    a, b = secure_broker.add_device("pi-a"), secure_broker.add_device("pi-b")
    admin = secure_broker.add_service("admin", "ops")
    inference = secure_broker.add_service("inference", "gpu-1")
    conn_a, conn_b, conn_admin = secure_broker.connect(a), secure_broker.connect(b), secure_broker.connect(admin)
    conn_inf = secure_broker.connect(inference)
    try:
        seen_by_a, everything = Collector(), Collector()
        subscribe_and_wait(conn_a, t.shared("inference", t.ALL_FRAMES), seen_by_a)
        subscribe_and_wait(conn_a, t.verdict_topic("pi-a"), seen_by_a)  # a topic pi-a may read
        subscribe_and_wait(conn_admin, f"{t.ROOT}/#", everything)
        for seq in range(5):
            assert _publish(conn_b, t.frame_topic("pi-b"), _frame("pi-b", seq)) == 0
        everything.wait_for(5)  # the broker routed all five frames before the sentinel below
        # The sentinel goes to pi-a itself, after the frames: once it arrives, any frame pi-a
        # was going to get would already be there (one connection delivers in order).
        assert _publish(conn_inf, t.verdict_topic("pi-a"), b"sentinel") == 0
        seen_by_a.wait_until(lambda msgs: any(m.payload == b"sentinel" for m in msgs), 5, "sentinel on pi-a")
        assert [(m.topic, m.payload) for m in seen_by_a.messages] == [(t.verdict_topic("pi-a"), b"sentinel")]
        assert "pi-a 1 $share/inference/thermo/v1/+/frame" in secure_broker.log_text()  # audit trail
    finally:
        for conn in (conn_a, conn_b, conn_admin, conn_inf):
            conn.stop()


def test_device_cannot_take_over_a_service_session(secure_broker: SecureBroker) -> None:
    """Client ids are replaced by usernames, so a device using the bridge's id does not knock it off."""
    a = secure_broker.add_device("pi-a")
    bridge = secure_broker.add_service("bridge", "main")
    conn_bridge = secure_broker.connect(bridge, client_id="bridge-main", clean_start=False, session_expiry_s=600)
    conn_a = MqttConnection(secure_broker.settings(a, client_id="bridge-main"), password=a.password).start()
    try:
        got = Collector()
        subscribe_and_wait(conn_bridge, f"{t.ROOT}/#", got)
        assert _publish(conn_a, t.frame_topic("pi-a"), _frame("pi-a", 1)) == 0
        got.wait_for(1)
        assert conn_bridge.connected.is_set()
        assert conn_bridge.connect_count == 1
        assert "as pi-a (" in secure_broker.log_text()
        assert "as bridge.main (" in secure_broker.log_text()
    finally:
        conn_a.stop()
        conn_bridge.stop()


def test_persistent_session_keeps_queued_messages(secure_broker: SecureBroker) -> None:
    """With usernames as client ids, a service's persistent session still survives a reconnect."""
    a = secure_broker.add_device("pi-a")
    bridge = secure_broker.add_service("bridge", "main")
    persistent: dict[str, Any] = {"clean_start": False, "session_expiry_s": 600}
    first = secure_broker.connect(bridge, **persistent)
    subscribe_and_wait(first, t.ALL_FRAMES, Collector())
    first.stop()
    conn_a = secure_broker.connect(a)
    try:
        for seq in range(3):
            assert _publish(conn_a, t.frame_topic("pi-a"), _frame("pi-a", seq)) == 0
    finally:
        conn_a.stop()
    got = Collector()
    second = MqttConnection(secure_broker.settings(bridge, **persistent), password=bridge.password)
    second.subscribe(t.ALL_FRAMES, got)
    second.start()
    try:
        assert len(got.wait_for(3)) == 3
    finally:
        second.stop()


# -- services -----------------------------------------------------------------------------
def test_inference_reads_frames_and_writes_verdicts_but_not_frames(secure_broker: SecureBroker) -> None:
    a = secure_broker.add_device("pi-a")
    inference = secure_broker.add_service("inference", "gpu-1")
    conn_a, conn_inf = secure_broker.connect(a), secure_broker.connect(inference)
    try:
        frames, verdicts = Collector(), Collector()
        subscribe_and_wait(conn_inf, t.shared("inference", t.ALL_FRAMES), frames)
        subscribe_and_wait(conn_a, t.verdict_topic("pi-a"), verdicts)
        assert _publish(conn_a, t.frame_topic("pi-a"), _frame("pi-a", 7)) == 0
        assert frames.wait_for(1)[0].topic == t.frame_topic("pi-a")
        assert _publish(conn_inf, t.verdict_topic("pi-a"), b"verdict") == 0
        assert verdicts.wait_for(1)[0].payload == b"verdict"
        allowed = [
            t.node_topic("gpu-1", t.NodeChannel.STATUS),
            t.node_topic("gpu-1", t.NodeChannel.METRICS),
            t.deadletter_topic("inference"),
        ]
        denied = [
            t.frame_topic("pi-a"),
            t.rfid_topic("pi-a"),
            t.session_verdict_topic("pi-a"),
            t.node_topic("gpu-2", t.NodeChannel.STATUS),
            t.deadletter_topic("bridge"),
            t.receipts_topic("gpu-1"),
            t.ADMIN_MODEL_TOPIC,
        ]
        assert all(_publish(conn_inf, topic, b"x") in ACCEPTED for topic in allowed)
        assert [_publish(conn_inf, topic, b"x") for topic in denied] == [NOT_AUTHORIZED] * len(denied)
    finally:
        conn_a.stop()
        conn_inf.stop()


def test_bridge_rights(secure_broker: SecureBroker) -> None:
    bridge = secure_broker.add_service("bridge", "main")
    conn = secure_broker.connect(bridge)
    try:
        allowed = [
            t.session_verdict_topic("pi-a"),
            t.node_topic("main", t.NodeChannel.STATUS),
            t.node_topic("main", t.NodeChannel.METRICS),
            t.deadletter_topic("bridge"),
            t.deadletter_topic("main"),
            t.receipts_topic("main"),  # several bridges: its frame receipts, under its own node id only
        ]
        denied = [
            t.receipts_topic("main-2"),
            t.frame_topic("pi-a"),
            t.verdict_topic("pi-a"),
            t.status_topic("pi-a"),
            t.node_topic("gpu-1", t.NodeChannel.STATUS),
            t.deadletter_topic("inference"),
            t.deadletter_topic("other"),
            t.ADMIN_MODEL_TOPIC,
        ]
        assert all(_publish(conn, topic, b"x") in ACCEPTED for topic in allowed)
        assert [_publish(conn, topic, b"x") for topic in denied] == [NOT_AUTHORIZED] * len(denied)
    finally:
        conn.stop()


def test_only_admin_publishes_model_swaps(secure_broker: SecureBroker) -> None:
    accounts: dict[str, Credentials] = {
        "device": secure_broker.add_device("pi-a"),
        "inference": secure_broker.add_service("inference", "gpu-1"),
        "bridge": secure_broker.add_service("bridge", "main"),
        "admin": secure_broker.add_service("admin", "ops"),
    }
    conns = {role: secure_broker.connect(creds) for role, creds in accounts.items()}
    try:
        swaps = Collector()
        subscribe_and_wait(conns["inference"], t.ADMIN_MODEL_TOPIC, swaps)
        codes = {role: _publish(conn, t.ADMIN_MODEL_TOPIC, role.encode()) for role, conn in conns.items()}
        assert codes == {"device": NOT_AUTHORIZED, "inference": NOT_AUTHORIZED, "bridge": NOT_AUTHORIZED, "admin": 0}
        assert [m.payload for m in swaps.wait_for(1)] == [b"admin"]
        assert _publish(conns["admin"], t.frame_topic("pi-a"), b"x") == NOT_AUTHORIZED
    finally:
        for conn in conns.values():
            conn.stop()


def test_service_username_cannot_pose_as_a_device(secure_broker: SecureBroker) -> None:
    """Device patterns apply to services too, but `<role>.<name>` can never be a device id."""
    secure_broker.add_device("pi-a")
    inference = secure_broker.add_service("inference", "pi-a")  # a node named like a device
    conn = secure_broker.connect(inference)
    try:
        assert _publish(conn, t.frame_topic("pi-a"), b"x") == NOT_AUTHORIZED
        # What the patterns do grant it names no device: "inference.pi-a" is not a device id.
        assert _publish(conn, f"{t.ROOT}/inference.pi-a/frame", b"x") == NO_SUBSCRIBERS
        with pytest.raises(ValueError, match="invalid device id"):
            t.parse_topic(f"{t.ROOT}/inference.pi-a/frame")
    finally:
        conn.stop()


# -- secrets ------------------------------------------------------------------------------
def test_site_key_never_on_the_wire_or_in_the_log(secure_broker: SecureBroker) -> None:
    dev = secure_broker.add_device("pi-a")
    admin = secure_broker.add_service("admin", "ops")
    site_key = secure_broker.site_key
    conn_dev, conn_admin = secure_broker.connect(dev), secure_broker.connect(admin)
    try:
        everything = Collector()
        subscribe_and_wait(conn_admin, "#", everything)
        ref = make_patient_ref(b"\x04\xa2\x19\x7c", site_key)
        session = new_session_id()
        start = RfidEvent(event="session_start", device_id="pi-a", session_id=session, patient_ref=ref, ts_ns=1, seq=1)
        assert _publish(conn_dev, t.rfid_topic("pi-a"), encode_message(start)) == 0
        for seq in range(3):
            assert _publish(conn_dev, t.frame_topic("pi-a"), _frame("pi-a", seq, ref, session)) == 0
        messages = everything.wait_for(4)
    finally:
        conn_dev.stop()
        conn_admin.stop()
    secrets = [site_key, site_key.hex().encode(), site_key.hex().upper().encode()]
    for message in messages:
        for secret in secrets:
            assert secret not in message.payload and secret.decode("latin-1") not in message.topic
    log = secure_broker.log_text().encode()
    assert all(secret not in log for secret in secrets)
    assert dev.password.encode() not in log and admin.password.encode() not in log


def test_only_the_bridge_reoffers_frames_and_the_inference_share_group_reads_them(secure_broker: SecureBroker) -> None:
    a = secure_broker.add_device("pi-a")
    bridge = secure_broker.add_service("bridge", "bridge")
    inference = secure_broker.add_service("inference", "gpu-1")
    conn_a, conn_b, conn_inf = secure_broker.connect(a), secure_broker.connect(bridge), secure_broker.connect(inference)
    try:
        offered = Collector()
        subscribe_and_wait(conn_inf, t.shared("inference", t.ALL_REOFFERS), offered)
        assert _publish(conn_b, t.reoffer_topic("pi-a"), _frame("pi-a", 3)) == 0
        assert offered.wait_for(1)[0].topic == t.reoffer_topic("pi-a")
        # Neither a device nor an inference node may offer frames (nor the bridge write a device's).
        assert _publish(conn_a, t.reoffer_topic("pi-a"), _frame("pi-a", 4)) == NOT_AUTHORIZED
        assert _publish(conn_inf, t.reoffer_topic("pi-a"), _frame("pi-a", 5)) == NOT_AUTHORIZED
        assert _publish(conn_b, t.frame_topic("pi-a"), _frame("pi-a", 6)) == NOT_AUTHORIZED
        time.sleep(0.3)
        assert len(offered.messages) == 1
    finally:
        conn_a.stop()
        conn_b.stop()
        conn_inf.stop()
