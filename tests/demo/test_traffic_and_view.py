"""The broker-side counts (TrafficMonitor, on a real Mosquitto) and the live view drawn from them."""

from __future__ import annotations

import io
import time

import numpy as np

from contract import topics as t
from contract.frame import Frame, encode_frame
from contract.ids import make_patient_ref, new_session_id
from contract.messages import (
    DeviceState,
    DeviceStatus,
    NodeMetrics,
    NodeRole,
    NodeStatus,
    RfidEvent,
    RfidEventKind,
    SessionEndReason,
    SessionVerdict,
    Verdict,
    encode_message,
)
from devtools.live_view import SCREENING_AID, LiveView, ViewContext, progress_line, render_view
from devtools.local_mosquitto import LocalMosquitto
from devtools.traffic import TrafficMonitor, TrafficSnapshot, frame_key
from tests.mqtt_helpers import connect
from transport.connection import MqttSettings

DEVICE = "pi-7"
PATIENT = make_patient_ref(b"\x04\xa2\x19\x7c", b"k" * 32)


def _frame(seq: int, session_id: str) -> bytes:
    temps = np.full((24, 32), 31.5)
    return encode_frame(
        Frame.from_celsius(
            temps, device_id=DEVICE, seq=seq, capture_ns=time.time_ns(), session_id=session_id, patient_ref=PATIENT
        )
    )


def _verdict(seq: int, session_id: str, node: str, p: float) -> bytes:
    return encode_message(
        Verdict(
            device_id=DEVICE,
            seq=seq,
            capture_ns=time.time_ns(),
            session_id=session_id,
            patient_ref=PATIENT,
            probability=p,
            label="sick" if p >= 0.5 else "healthy",
            flagged=p >= 0.5,
            threshold=0.5,
            model_version="m-1",
            node_id=node,
            latency_ms=3.0,
        )
    )


def test_frame_key_reads_the_header() -> None:
    sid = new_session_id()
    assert frame_key(_frame(41, sid))[:2] == (DEVICE, 41)


def test_monitor_counts_distinct_frames_verdicts_and_sessions(mosquitto: LocalMosquitto) -> None:
    monitor = TrafficMonitor(MqttSettings(url=mosquitto.url)).start()
    pub = connect(mosquitto.url)
    sid = new_session_id()
    try:
        now = time.time_ns()
        pub.publish(t.status_topic(DEVICE), encode_message(DeviceStatus(state=DeviceState.ONLINE, spool_depth=0)))
        pub.publish(
            t.node_topic("infer-1", t.NodeChannel.STATUS),
            encode_message(NodeStatus(node_id="infer-1", role=NodeRole.INFERENCE, state=DeviceState.ONLINE)),
        )
        pub.publish(
            t.node_topic("main", t.NodeChannel.METRICS),
            encode_message(
                NodeMetrics(node_id="main", role=NodeRole.BRIDGE, ts_ns=now, values={"queue_depth": 7.0, "stored": 9})
            ),
        )
        start = RfidEvent(
            event=RfidEventKind.SESSION_START, device_id=DEVICE, session_id=sid, patient_ref=PATIENT, ts_ns=now, seq=0
        )
        pub.publish(t.rfid_topic(DEVICE), encode_message(start))
        for seq in (1, 2, 3, 3):  # seq 3 delivered twice: counted once
            pub.publish(t.frame_topic(DEVICE), _frame(seq, sid))
        for seq, p in ((1, 0.9), (2, 0.2), (2, 0.2)):
            pub.publish(t.verdict_topic(DEVICE), _verdict(seq, sid, "infer-1", p))
        assert monitor.wait_until(lambda s: s.verdicts_received == 3 and s.frames_received == 4, 10)
        snap = monitor.snapshot()
        assert (snap.frames_published, snap.verdicts, snap.unverdicted, snap.flagged_verdicts) == (3, 2, 1, 1)
        assert not snap.all_verdicted
        device = snap.device(DEVICE)
        assert device is not None and device.session_id == sid and device.state == "online"

        pub.publish(t.verdict_topic(DEVICE), _verdict(3, sid, "infer-1", 0.7))
        end = start.model_copy(
            update={"event": RfidEventKind.SESSION_END, "seq": 4, "frame_count": 3, "reason": SessionEndReason.CARD}
        )
        pub.publish(t.rfid_topic(DEVICE), encode_message(end))
        assert monitor.wait_until(lambda s: s.sessions_ended == 1, 10)
        assert monitor.snapshot().sessions_awaiting_verdict == 1
        verdict = SessionVerdict(
            device_id=DEVICE,
            session_id=sid,
            patient_ref=PATIENT,
            frames=3,
            probability=0.6,
            flagged=True,
            threshold=0.5,
            rule="mean",
            model_version="m-1",
            ts_ns=time.time_ns(),
        )
        pub.publish(t.session_verdict_topic(DEVICE), encode_message(verdict))
        assert monitor.wait_until(lambda s: s.all_verdicted and s.session_verdicts == 1, 10)
        final = monitor.snapshot()
    finally:
        pub.stop()
        monitor.stop()
    assert final.sessions_flagged == 1 and final.device(DEVICE) is not None
    node = final.node("infer-1")
    assert node is not None and node.verdicts == 3 and node.state == "online"
    bridge = final.node("main")
    assert bridge is not None and bridge.role == "bridge" and bridge.metrics["queue_depth"] == 7.0

    ctx = ViewContext(title="thermoscreen demo", broker="broker test", expected_devices=2)
    text = "\n".join(render_view(final, ctx, elapsed_s=12, duration_s=30))
    assert "00:12 / 00:30" in text and SCREENING_AID in text
    assert "devices online 1/2" in text and "frames 3" in text and "verdicts 3" in text
    assert f"patient {PATIENT}" in text and "FLAGGED: refer for follow-up" in text
    assert "queue 7" in text
    assert "\x1b" not in text
    line = progress_line(final, ctx, elapsed_s=5, duration_s=30)
    assert "\n" not in line and "frames 3" in line and "bridge queue 7" in line
    _check_live_view_output(final, ctx)


def _check_live_view_output(snap: TrafficSnapshot, ctx: ViewContext) -> None:
    """On a terminal the picture is redrawn in place; in a pipe it is one line per interval."""
    tty = io.StringIO()
    view = LiveView(lambda: snap, ctx, tty, interactive=True)
    view.draw(snap, 1, 30)
    view.draw(snap, 2, 30)
    drawn = len(render_view(snap, ctx, elapsed_s=1, duration_s=30))
    assert f"\x1b[{drawn}F" in tty.getvalue()  # the second picture starts where the first did
    pipe = io.StringIO()
    checks: list[float] = []
    LiveView(lambda: snap, ctx, pipe, interactive=False, line_interval_s=0.2, check=lambda: checks.append(1)).run(0.5)
    lines = pipe.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and all(line.startswith("demo ") for line in lines)
    assert checks, "the liveness check runs while the view is shown"
