"""The load generator's cheap frame path: a patched template is byte for byte the frame it stands for,
and one loop thread drives all devices' connections on a real broker.

Why it matters: the generator no longer encodes each frame; if the header layout in
contract/frame.py moved, patched templates would carry wrong seq or capture times and the
benches would measure nonsense. The check compares against `encode_frame` itself.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from contract.frame import Frame, SensorKind, decode_frame, encode_frame
from contract.ids import new_incarnation, new_session_id
from contract.topics import ALL_FRAMES, verdict_topic
from devtools.load_generator import DeviceAccount, FrameTemplates, LoadGenerator
from devtools.load_loop import DeviceLoop
from devtools.local_mosquitto import LocalMosquitto
from devtools.traffic import frame_header
from transport.connection import Message, MqttConnection, MqttSettings


def _frames(device_id: str) -> list[Frame]:
    rng = np.random.default_rng(3)
    session, incarnation = new_session_id(), new_incarnation()
    return [
        Frame(
            device_id=device_id,
            seq=0,
            capture_ns=0,
            centi=rng.integers(2500, 3700, size=(24, 32), dtype=np.int16),
            ambient_c=24.0,
            sensor=SensorKind.SYNTHETIC,
            session_id=session,
            patient_ref="0123456789abcdef",
            incarnation=incarnation,
        )
        for _ in range(3)
    ]


@pytest.mark.parametrize("device_id", ["d", "load-17", "x" * 32])
def test_a_patched_template_equals_the_encoded_frame(device_id: str) -> None:
    frames = _frames(device_id)
    templates = FrameTemplates(frames)
    for index, seq, capture_ns in ((0, 1, 1_700_000_000_000_000_000), (2, 2**63 - 1, 5), (1, 42, 2**63 - 1)):
        payload = templates.frame(index, seq, capture_ns)
        assert payload == encode_frame(dataclasses.replace(frames[index], seq=seq, capture_ns=capture_ns))
        decoded = decode_frame(payload)
        assert (decoded.seq, decoded.capture_ns) == (seq, capture_ns)
        np.testing.assert_array_equal(decoded.centi, frames[index].centi)


def test_each_frame_is_its_own_bytes_object() -> None:
    templates = FrameTemplates(_frames("load-1"))
    first = templates.frame(0, 1, 10)
    second = templates.frame(0, 2, 20)
    assert isinstance(first, bytes) and first != second
    assert decode_frame(first).seq == 1, "building the next frame must not change one already handed to paho"


def test_no_images_is_refused() -> None:
    with pytest.raises(ValueError, match="no images"):
        FrameTemplates([])


def _answer_frames(responder: MqttConnection, message: Message) -> None:
    """Stand-in for the inference node (the thing under test is the generator): one verdict per frame."""
    device, incarnation, seq, capture_ns = frame_header(message.payload)
    body = {"seq": seq, "capture_ns": capture_ns, "incarnation": incarnation}
    responder.publish(verdict_topic(device), json.dumps(body).encode(), qos=1)


def test_one_loop_thread_drives_every_device_and_gets_every_verdict(mosquitto: LocalMosquitto) -> None:
    """A real Mosquitto; 20 devices at 20 frames/s each from one loop thread, every frame acked and answered."""
    responder = MqttConnection(MqttSettings(url=mosquitto.url), client_id="fake-node").start()
    frames_seen = responder.subscribe(ALL_FRAMES, lambda m: _answer_frames(responder, m), qos=1)
    assert frames_seen.wait(5.0) and frames_seen.granted
    accounts = [DeviceAccount(f"loop-{i}", "unused") for i in range(20)]  # the dev broker takes any login
    threads_before = threading.active_count()
    generator = LoadGenerator(accounts, MqttSettings(url=mosquitto.url, qos=1), rate=20.0, single_loop=True)
    try:
        generator.connect(timeout=20.0)
        # One loop thread for 20 connections (the threaded mode starts one per device).
        assert threading.active_count() - threads_before <= 2
        generator.start()
        time.sleep(1.5)  # load for a while: a duration, not a synchronisation
        result = generator.stop(drain_s=5.0, window=None)
    finally:
        responder.stop()
    assert result["offered"] >= 20 * 20  # 1.5 s at 400 frames/s asked
    assert result["skipped_ticks"] == 0
    assert result["acked"] == result["offered"] + 2 * len(accounts)  # frames + session start and end
    assert result["unacked"] == 0 and result["rejected"] == 0
    assert result["verdicts"] == result["offered"] and result["verdicts_missing"] == 0
    assert result["verdict_duplicates"] == 0 and result["missing_verdicts"] == {}
    assert result["p99_ms"] is not None and result["reconnects"] == 0


def test_a_loop_that_died_fails_calls_at_once_instead_of_hanging() -> None:
    loop = DeviceLoop()

    def broken_pacer() -> float:
        raise ValueError("pacer bug")

    loop.on_tick = broken_pacer
    loop.start()
    try:
        deadline = time.monotonic() + 5.0
        while loop.error is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the loop thread's end, bounded by the deadline
        assert isinstance(loop.error, ValueError)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="pacer bug"):
            loop.run(lambda: 1)
        assert time.monotonic() - started < 1.0
    finally:
        loop.close()
