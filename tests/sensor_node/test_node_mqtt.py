"""The sensor node against a real Mosquitto: sessions, privacy, outages, spool bounds, status."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from contract.frame import SensorKind
from contract.ids import make_patient_ref
from contract.messages import DeviceState, RfidEventKind, SessionEndReason
from devtools.local_mosquitto import LocalMosquitto
from sensor_node.config import SensorConfig
from sensor_node.rfid import EmulatedReaderTaps, NoTaps, ScriptedTaps, TapSource
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from tests.sensor_node.conftest import (
    SITE_KEY,
    RunningNode,
    events_of,
    fast_config,
    frames_of,
    persistent_subscriber,
    statuses_of,
    unique_by_seq,
    wait_until,
    went_offline,
)

UID = bytes.fromhex("04a1b2c3")
StartNode = Callable[[SensorConfig, TapSource], RunningNode]


def uid_spellings(uid: bytes) -> list[str]:
    simple_id = int.from_bytes(uid + bytes([uid[0] ^ uid[1] ^ uid[2] ^ uid[3]]), "big")  # the old SimpleMFRC522 id
    return [uid.hex(), uid.hex().upper(), ":".join(f"{b:02x}" for b in uid), str(simple_id), str(int.from_bytes(uid))]


def test_session_arrives_complete_and_the_uid_never_leaves_the_device(
    mosquitto: LocalMosquitto, run_node: StartNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/#", got)
    script = ScriptedTaps()
    taps = EmulatedReaderTaps(script, poll_interval_s=0.01, gone_after_s=0.5, tap_s=0.05)  # the real driver
    running = run_node(fast_config(tmp_path, mosquitto.url, source={"kind": "emulated", "rate_hz": 16}), taps)
    script.push(UID)
    got.wait_until(lambda msgs: len(frames_of(msgs)) >= 12, 15, "12 frames of the session")
    script.push(UID)  # the same card again ends the session
    got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "session_end")
    running.stop()
    messages = got.wait_until(went_offline, 10, "offline status")
    sub.stop()

    start, end = events_of(messages)
    frames = unique_by_seq(frames_of(messages))
    assert start.event is RfidEventKind.SESSION_START and end.event is RfidEventKind.SESSION_END
    assert end.reason is SessionEndReason.CARD and end.session_id == start.session_id
    assert start.patient_ref == make_patient_ref(UID, SITE_KEY)
    assert end.frame_count is not None and len(frames) == end.frame_count >= 12
    assert [f.seq for f in frames] == list(range(start.seq + 1, end.seq))  # complete, in order
    assert all(f.session_id == start.session_id and f.patient_ref == start.patient_ref for f in frames)
    assert all(f.sensor is SensorKind.EMULATED_MLX90640 and f.shape == (24, 32) for f in frames)
    assert 25 < float(frames[0].temperatures_c.max()) < 45

    payloads = [m.payload for m in messages]
    assert not any(UID in payload for payload in payloads)
    texts = [p.decode("utf-8") for p in payloads if p.startswith(b"{")] + [caplog.text]
    for spelling in uid_spellings(UID):
        assert not any(spelling in text for text in texts), f"raw UID spelled {spelling!r} leaked"
    assert "started for patient_ref" in caplog.text  # the logs do talk about sessions, by pseudonym


def test_broker_restart_mid_session_loses_and_reorders_nothing(
    persistent_mosquitto: LocalMosquitto, run_node: StartNode, tmp_path: Path
) -> None:
    sub = persistent_subscriber(persistent_mosquitto.url, "test-collector")
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    taps = ScriptedTaps()
    running = run_node(fast_config(tmp_path, persistent_mosquitto.url), taps)
    taps.push(UID)
    got.wait_until(lambda msgs: len(frames_of(msgs)) >= 10, 10, "frames before the outage")
    persistent_mosquitto.stop()
    spool = running.node.spool
    wait_until(lambda: spool.depth >= 20, 10, "frames spooled during the outage")
    persistent_mosquitto.start()
    received_before = len(frames_of(got.messages))
    got.wait_until(lambda msgs: len(frames_of(msgs)) >= received_before + 30, 20, "frames after the outage")
    taps.push(UID)
    got.wait_until(lambda msgs: any(e.event is RfidEventKind.SESSION_END for e in events_of(msgs)), 10, "end")
    running.stop()
    sub.stop()

    events = {e.event: e for e in events_of(got.messages)}
    start, end = events[RfidEventKind.SESSION_START], events[RfidEventKind.SESSION_END]
    frames = unique_by_seq(frames_of(got.messages))
    seqs = [f.seq for f in frames]
    assert seqs == list(range(start.seq + 1, end.seq)), "frames missing or out of order after de-duplication"
    assert len(frames) == end.frame_count
    assert running.node.counters.frames_spooled == end.frame_count
    assert spool.dropped_frames == 0


def test_full_spool_during_outage_drops_frames_keeps_events_and_says_so(
    persistent_mosquitto: LocalMosquitto, run_node: StartNode, tmp_path: Path
) -> None:
    sub = persistent_subscriber(persistent_mosquitto.url, "test-collector")
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    persistent_mosquitto.stop()  # the device starts while the broker is down
    taps = ScriptedTaps()
    config = fast_config(tmp_path, persistent_mosquitto.url, spool={"max_items": 10}, source={"rate_hz": 100.0})
    running = run_node(config, taps)
    taps.push(UID)
    wait_until(lambda: running.node.spool.dropped_frames >= 20, 10, "frames dropped from the full spool")
    persistent_mosquitto.start()
    got.wait_until(lambda msgs: any((s.spool_dropped_frames or 0) >= 20 for s in statuses_of(msgs)), 10, "status")
    taps.push(UID)
    got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "session_end")
    running.stop()
    sub.stop()
    start, end = events_of(got.messages)
    assert start.event is RfidEventKind.SESSION_START and start.seq == 0  # events are never dropped
    assert end.event is RfidEventKind.SESSION_END and end.frame_count == running.node.counters.frames_spooled
    frames = unique_by_seq(frames_of(got.messages))
    dropped = running.node.spool.dropped_frames
    assert len(frames) == end.frame_count - dropped
    assert frames[0].seq > 1 and [f.seq for f in frames] == sorted(f.seq for f in frames)  # oldest went first
    online = [s for s in statuses_of(got.messages) if s.state is DeviceState.ONLINE]
    assert online[-1].source == "synthetic" and online[-1].spool_dropped_frames == dropped


def test_timeout_ends_session_and_anonymous_capture_publishes_without_identity(
    mosquitto: LocalMosquitto, run_node: StartNode, tmp_path: Path
) -> None:
    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/+/+", got)
    taps = ScriptedTaps()
    timed = run_node(fast_config(tmp_path / "a", mosquitto.url, session={"timeout_s": 0.5}), taps)
    taps.push(UID)
    got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "session ended by timeout")
    timed.stop()
    start, end = events_of(got.messages)
    assert end.reason is SessionEndReason.TIMEOUT and end.session_id == start.session_id
    assert timed.node.counters.frames_outside_session > 0  # frames before the scan were not published
    assert len(frames_of(got.messages)) == end.frame_count

    anonymous = run_node(
        fast_config(tmp_path / "b", mosquitto.url, device={"id": "pi-2"}, session={"anonymous_capture": True}),
        NoTaps(),
    )
    got.wait_until(lambda msgs: any(m.topic == "thermo/v1/pi-2/frame" for m in msgs), 10, "anonymous frames")
    anonymous.stop()
    sub.stop()
    anonymous_frames = [f for f in frames_of(got.messages) if f.device_id == "pi-2"]
    assert anonymous_frames and all(f.session_id is None and f.patient_ref is None for f in anonymous_frames)


def test_a_stalled_broker_gets_the_window_again_with_the_same_sequence_numbers(
    mosquitto: LocalMosquitto, run_node: StartNode, tmp_path: Path
) -> None:
    """SIGSTOP keeps the TCP connection up but answers nothing: the ack timeout resends the window."""
    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/frame", got)
    taps = ScriptedTaps()
    running = run_node(fast_config(tmp_path, mosquitto.url, spool={"ack_timeout_s": 0.3}), taps)
    taps.push(UID)
    got.wait_for(3, 10)
    assert mosquitto.pid is not None
    os.kill(mosquitto.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: running.node.publisher.stats.resent > 0, 10, "a resend of the unacknowledged window")
    finally:
        os.kill(mosquitto.pid, signal.SIGCONT)
    spooled_while_stalled = running.node.counters.frames_spooled
    got.wait_until(
        lambda msgs: {f.seq for f in frames_of(msgs)} >= set(range(1, spooled_while_stalled + 1)), 10, "every frame"
    )
    running.stop()
    sub.stop()
    frames = frames_of(got.messages)
    by_seq: dict[int, bytes] = {}
    for frame, message in zip(frames, got.messages, strict=True):
        assert by_seq.setdefault(frame.seq, message.payload) == message.payload  # a duplicate is the same message
    assert len(frames) > len(by_seq)  # the resend produced duplicates, which consumers drop by seq


def test_mqtts_url_with_ca_file_and_username(
    tmp_path: Path, run_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the secured broker (TLS, password file, ACL), so the username and its password
    are really checked: a wrong password is refused, the right one publishes frames."""
    from devtools.secure_broker import SecureBroker, connect_outcome

    with SecureBroker(tmp_path) as broker:
        creds = broker.add_device("pi-1")
        refusal = connect_outcome(broker.settings(creds), "not-the-password")
        assert refusal is not None and "Not authorized" in refusal, refusal
        monkeypatch.setenv("THERMOSCREEN_MQTT_PASSWORD", creds.password)
        mqtt = {"url": broker.tls_url, "username": creds.username, "ca_file": str(broker.ca_file)}
        running = run_node(
            fast_config(tmp_path, broker.tls_url, mqtt=mqtt, session={"anonymous_capture": True}), NoTaps()
        )
        wait_until(lambda: running.node.publisher.stats.acked >= 5, 15, "frames acknowledged over TLS")
        running.stop()
        assert running.node.connection.settings.tls
