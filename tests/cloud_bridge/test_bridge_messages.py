"""Dead letters, session verdicts and the bridge's own status/metrics, against a real Mosquitto."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import pytest

from cloud_bridge.archive import Archive, VerdictRecord
from cloud_bridge.service import Bridge
from contract.frame import encode_frame
from contract.messages import (
    DeadLetter,
    DeviceState,
    NodeMetrics,
    NodeStatus,
    SessionVerdict,
    decode_message,
    encode_message,
)
from contract.topics import frame_topic, rfid_topic, verdict_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait


def test_malformed_messages_go_to_the_dead_letter_topic_and_are_not_stored(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    """The TSDB is shared by the session's tests: only this run's device (a fresh id) is counted."""
    bad = f"dl-bad-{secrets.token_hex(4)}"
    config = bridge_config(bridge_dir, mosquitto.url, influx_url=running_victoria.url)
    good = make_session("dl-good", 2, seed=5)
    other = make_session("dl-other", 1, seed=6)
    bad_frame = bytearray(encode_frame(good.frames[0]))
    bad_frame[-1] ^= 0x7F  # a pixel far out of range
    malformed = [
        (frame_topic(bad), b"not a frame at all"),
        (frame_topic(bad), bytes(bad_frame[:-7])),  # truncated
        (verdict_topic(bad), encode_message(other.verdicts[0])),  # device differs from the topic
        (rfid_topic(bad), b'{"v": 1, "event": "session_start"}'),
        (f"thermo/v1/{bad}/verdict", b'{"v": 3}'),  # messages v1 and v2 are read; v3 does not exist
    ]
    watcher = connect(mosquitto.url)
    letters = Collector()
    subscribe_and_wait(watcher, "thermo/v1/deadletter/bridge", letters)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        publish_all(publisher, malformed)
        publish_all(publisher, good.ordered_messages())
        got = [decode_message(m.payload, DeadLetter) for m in letters.wait_for(len(malformed), 15.0)]
        assert bridge.wait_idle(30.0)
        summary = bridge.summary()
    finally:
        publisher.stop()
        bridge.stop()
        watcher.stop()
    assert summary.deadletters == len(malformed)
    assert [(d.topic, d.component) for d in got] == [(t, "bridge") for t, _ in malformed]
    reasons = [d.reason for d in got]
    assert "not a thermoscreen frame" in reasons[0]
    assert "frame length" in reasons[1] or "truncated" in reasons[1]
    assert "differs from the topic" in reasons[2]
    assert "device_id" in reasons[3] or "Field required" in reasons[3]
    assert "unsupported message version" in reasons[4]
    assert got[0].payload_size == len(malformed[0][1])
    # Nothing of the malformed messages is stored; the valid ones after them are.
    with Archive(config.archive.path) as archive:
        assert archive.counts() == {"sessions": 1, "verdicts": 2, "frames": 2}
    keys, _ = running_victoria.wait_for_points('{device_id="dl-good",__name__="frame_stats_mean_c"}', 2)
    assert len(keys) == 2
    assert running_victoria.export_keys(f'{{device_id="{bad}",__name__!~"deadletter_.*"}}')[0] == set()
    assert running_victoria.export_keys('{device_id="dl-other"}')[0] == set()
    selector = f'{{__name__="deadletter_count",component="bridge",device_id="{bad}"}}'
    dead, repeated = running_victoria.wait_for_points(selector, len(malformed))
    assert len(dead) == len(malformed) and repeated == 0


def _expected_probability(probabilities: list[float]) -> float:
    mean = sum(math.log(p / (1 - p)) for p in probabilities) / len(probabilities)
    return 1 / (1 + math.exp(-mean))


def test_session_verdict_is_computed_stored_and_published_when_the_session_ends(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url, influx_url=running_victoria.url)
    flagged_probs = [0.9, 0.3, 0.8, 0.7]
    complete = make_session("sv-1", 4, probabilities=flagged_probs, seed=1)
    # The device reports 5 frames but only 3 get verdicts: the bridge waits the grace period.
    partial = make_session("sv-2", 3, probabilities=[0.1, 0.2, 0.45], seed=2, frame_count=5)
    watcher = connect(mosquitto.url)
    results = Collector()
    subscribe_and_wait(watcher, "thermo/v1/+/session_verdict", results)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        publish_all(publisher, complete.ordered_messages())
        publish_all(publisher, partial.ordered_messages())
        verdicts = {
            v.session_id: v for v in (decode_message(m.payload, SessionVerdict) for m in results.wait_for(2, 20.0))
        }
        assert bridge.wait_idle(30.0)
    finally:
        publisher.stop()
        bridge.stop()
        watcher.stop()
    first, second = verdicts[complete.session_id], verdicts[partial.session_id]
    assert first.device_id == "sv-1" and first.patient_ref == complete.patient_ref
    assert first.frames == 4 and first.rule == "mean-logit-v1" and first.model_version == "synthetic-test-1"
    assert first.probability == pytest.approx(_expected_probability(flagged_probs))
    assert first.flagged and first.threshold == 0.5
    assert second.frames == 3 and not second.flagged
    assert second.probability == pytest.approx(_expected_probability([0.1, 0.2, 0.45]))
    with Archive(config.archive.path) as archive:
        record = archive.session(complete.session_id)
        assert record is not None and record.has_verdict
        assert record.probability == pytest.approx(first.probability) and record.flagged
        assert record.started_ns == complete.start.ts_ns and record.ended_ns == complete.end.ts_ns
        assert record.frames_reported == 4 and record.end_reason == "card"
        assert archive.pending_sessions() == []
    keys, _ = running_victoria.wait_for_points('{__name__="session_probability",device_id=~"sv-.*"}', 2)
    assert {k[2] for k in keys} == {complete.end.ts_ns // 1_000_000, partial.end.ts_ns // 1_000_000}
    series = running_victoria.export('{__name__="session_flagged",device_id="sv-1"}')
    assert series[0].values == [1.0]


def test_bridge_publishes_retained_status_and_queue_metrics(mosquitto: LocalMosquitto, bridge_dir: Path) -> None:
    config = bridge_config(bridge_dir, mosquitto.url)
    bridge = Bridge(config).start()
    watcher = connect(mosquitto.url)
    status, metrics = Collector(), Collector()
    try:
        subscribe_and_wait(watcher, "thermo/v1/nodes/bridge/status", status)
        subscribe_and_wait(watcher, "thermo/v1/nodes/bridge/metrics", metrics)
        online = decode_message(status.wait_for(1, 10.0)[0].payload, NodeStatus)
        assert online.state == DeviceState.ONLINE and online.role.value == "bridge"
        assert status.messages[0].retain
        sample = decode_message(metrics.wait_for(1, 10.0)[0].payload, NodeMetrics)
    finally:
        bridge.stop()
    # A clean stop publishes `offline` (the last will covers a crash).
    offline = wait_until(
        lambda: [decode_message(m.payload, NodeStatus) for m in status.messages],
        lambda msgs: msgs[-1].state == DeviceState.OFFLINE,
        10.0,
        "offline status",
    )
    watcher.stop()
    assert offline[-1].node_id == "bridge"
    assert set(sample.values) == {
        "queue_depth",
        "oldest_age_s",
        "dropped",
        "sink_errors",
        "stored",
        "messages_per_s",
        "deadletters",
        "points_written",
    }


def test_ended_sessions_without_a_verdict_are_resumed_after_a_restart(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    """A bridge that died between a session's end and its verdict computes it when it comes back."""
    config = bridge_config(bridge_dir, mosquitto.url)
    session = make_session("resume-1", 3, probabilities=[0.6, 0.7, 0.8], seed=12)
    with Archive(config.archive.path, readonly=False) as archive:
        archive.put_session_start(
            session_id=session.session_id,
            device_id="resume-1",
            patient_ref=session.patient_ref,
            started_ns=session.start.ts_ns,
        )
        archive.put_session_end(
            session_id=session.session_id,
            device_id="resume-1",
            patient_ref=session.patient_ref,
            ended_ns=session.end.ts_ns,
            frames_reported=3,
            end_reason="card",
        )
        archive.put_verdicts(
            VerdictRecord(
                v.device_id,
                v.seq,
                v.session_id,
                v.patient_ref,
                v.capture_ns,
                v.probability,
                v.flagged,
                v.threshold,
                v.model_version,
                v.node_id,
                v.latency_ms,
            )
            for v in session.verdicts
        )
        archive.commit()
    watcher = connect(mosquitto.url)
    results = Collector()
    subscribe_and_wait(watcher, "thermo/v1/resume-1/session_verdict", results)
    bridge = Bridge(config).start()
    try:
        verdict = decode_message(results.wait_for(1, 15.0)[0].payload, SessionVerdict)
        assert bridge.wait_idle(10.0)
    finally:
        bridge.stop()
        watcher.stop()
    assert verdict.session_id == session.session_id and verdict.frames == 3 and verdict.flagged
    assert verdict.probability == pytest.approx(_expected_probability([0.6, 0.7, 0.8]))
    with Archive(config.archive.path) as archive:
        assert archive.pending_sessions() == []
