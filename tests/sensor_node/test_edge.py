"""Edge mode: the device scores its own session with the shipped LiteRT model and shows a provisional result.

Real parts throughout: the shipped signed model on LiteRT, the real node and spool, a real
Mosquitto for the online case. In the online case the test publishes the cloud's session
verdict itself, as the bridge does (tests/cloud_bridge covers the bridge producing it).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from contract.frame import decode_frame
from contract.messages import (
    DeviceState,
    DeviceStatus,
    ScreeningResult,
    SessionVerdict,
    Verdict,
    decode_message,
    encode_message,
)
from contract.model.manifest import load_manifest
from contract.model.model_runner import ModelRunner
from contract.model.shipped import SHIPPED_MODEL_PUBLIC_KEY, shipped_model_dir
from contract.session_rule import Combined, combine
from contract.topics import session_verdict_topic, status_topic
from devtools.local_mosquitto import LocalMosquitto, free_port
from inference_node.config import InferenceConfig
from sensor_node.config import EdgeSettings, ResultSettings, SensorConfig
from sensor_node.edge import EdgeScorer, ProvisionalResult, load_edge_model
from sensor_node.node import SensorNode
from sensor_node.result_display import PROVISIONAL_NOTE, REPLACES_NOTE, WORDING, Indicator, ResultDisplay, ShownResult
from sensor_node.rfid import ScriptedTaps
from sensor_node.sources import open_source
from sensor_node.spool import RowKind, Spool
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from tests.sensor_node.conftest import SITE_KEY, fast_config, frames_of, statuses_of, wait_until
from transport.connection import Message

UID = bytes.fromhex("04a1b2c3")
#: Frames travel in centi-degrees; the device scored the unrounded ones, so probabilities differ a little.
ROUNDING_TOLERANCE = 0.01


def edge_config(tmp_path: Path, url: str) -> SensorConfig:
    return fast_config(tmp_path, url, edge={"model_dir": str(shipped_model_dir())}, source={"rate_hz": 40.0, "seed": 5})


def start_edge_node(config: SensorConfig, taps: ScriptedTaps) -> SensorNode:
    spool = Spool(config.spool_path, max_items=config.spool.max_items, max_bytes=config.spool.max_bytes)
    node = SensorNode(
        config,
        source=open_source(config),
        taps=taps,
        site_key=SITE_KEY,
        spool=spool,
        edge_model=load_edge_model(config.edge),
    )
    node.start()
    return node


def run_one_session(node: SensorNode, taps: ScriptedTaps, frames: int) -> None:
    taps.push(UID)
    wait_until(lambda: node.counters.frames_spooled >= frames, 20, f"{frames} session frames")
    taps.push(UID)  # the same card again ends the session
    wait_until(lambda: node.counters.sessions_ended >= 1, 10, "the session end")


def frame_verdict(seq: int, probability: float, spread: float | None, runner: ModelRunner) -> Verdict:
    """The verdict an inference node would publish for this score (band and spread limit included)."""
    rule = runner.inconclusive_rule
    return Verdict(
        device_id="pi-1", seq=seq, capture_ns=seq + 1, probability=probability, label="x",
        flagged=probability >= runner.threshold, threshold=runner.threshold, model_version=runner.version,
        node_id="test", latency_ms=0.0, member_spread=spread,
        band_low=rule.band_low if rule else None, band_high=rule.band_high if rule else None,
        max_member_spread=rule.max_member_spread if rule else None,
    )  # fmt: skip


def bridge_combined(frames_c: list[np.ndarray]) -> Combined:
    """What the bridge's rule (contract.session_rule.combine) makes of the shipped model's scores."""
    runner = ModelRunner.load(shipped_model_dir(), trusted_keys=[SHIPPED_MODEL_PUBLIC_KEY])
    probabilities, spreads = runner.predict_celsius_with_spread(np.stack(frames_c))
    spread_list = [None] * len(probabilities) if spreads is None else [float(x) for x in spreads]
    pairs = zip(probabilities.tolist(), spread_list, strict=True)
    verdicts = [frame_verdict(i, p, sp, runner) for i, (p, sp) in enumerate(pairs)]
    combined = combine(verdicts)
    assert combined is not None
    return combined


def outcome_of(combined: Combined) -> ScreeningResult:
    if combined.inconclusive:
        return ScreeningResult.INCONCLUSIVE
    return ScreeningResult.REFER if combined.flagged else ScreeningResult.NO_FINDING


def test_offline_the_device_shows_a_provisional_result_of_the_shipped_model_at_session_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taps = ScriptedTaps()
    node = start_edge_node(edge_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}"), taps)  # nobody listens
    try:
        run_one_session(node, taps, frames=40)
        wait_until(lambda: node.results.provisional is not None, 10, "the provisional result")
        assert node.edge is not None
        provisional = node.edge.last_result
        assert provisional is not None
        assert not node.connection.connected.is_set()  # offline all along
        status = node._status(DeviceState.ONLINE)
        rows, _ = node.spool.peek_after(0, 10_000)
    finally:
        node.shutdown()
    frames = [decode_frame(r.payload) for r in rows if r.kind is RowKind.FRAME]
    session_frames = [f for f in frames if f.session_id == provisional.session_id]
    assert len(session_frames) == provisional.frames >= 40 and provisional.frames_unscored == 0
    combined = bridge_combined([f.temperatures_c for f in session_frames])
    assert provisional.probability == pytest.approx(combined.probability, abs=ROUNDING_TOLERANCE)
    # The same outcome as the bridge's, inconclusive band included (the rounding could only matter
    # for a probability within the tolerance of an edge of the band or the threshold).
    assert provisional.result is outcome_of(combined)
    assert status.provisional_session_id == provisional.session_id
    assert status.provisional_result is provisional.result
    assert status.last_result is None and status.last_session_id is None  # no cloud verdict yet
    err = capsys.readouterr().err
    line = f"session {provisional.session_id[:8]}: {PROVISIONAL_NOTE}: {WORDING[provisional.result]}"
    assert line in err and "a screening aid, not a diagnosis" in line


def _cloud_verdict(device_id: str, session_id: str, incarnation: str, *, flagged: bool) -> SessionVerdict:
    return SessionVerdict(
        device_id=device_id, session_id=session_id, patient_ref="0123456789abcdef", frames=40,
        probability=0.9 if flagged else 0.1, flagged=flagged, threshold=0.5, rule="mean-logit-v1",
        model_version="thermal-cloud", ts_ns=time.time_ns(), incarnation=incarnation,
    )  # fmt: skip


def test_online_the_retained_status_carries_the_provisional_result_until_the_cloud_verdict_replaces_it(
    tmp_path: Path, mosquitto: LocalMosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    observer = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(observer, "thermo/#", got)
    taps = ScriptedTaps()
    node = start_edge_node(edge_config(tmp_path, mosquitto.url), taps)
    try:
        assert node.connection.connected.wait(10)
        run_one_session(node, taps, frames=40)

        def provisional_status(messages: list[Message]) -> bool:
            return any(s.provisional_result is not None for s in statuses_of(messages))

        messages = got.wait_until(provisional_status, 15, "a status with the provisional result")
        status = next(s for s in statuses_of(messages) if s.provisional_result is not None)
        assert node.edge is not None and node.edge.last_result is not None
        provisional = node.edge.last_result
        assert status.provisional_session_id == provisional.session_id and status.last_result is None
        # The cloud disagrees on purpose: its verdict, not the device's, is the one that stays.
        cloud_flagged = provisional.result is ScreeningResult.NO_FINDING
        verdict = _cloud_verdict("pi-1", provisional.session_id, node.incarnation, flagged=cloud_flagged)
        observer.publish(session_verdict_topic("pi-1"), encode_message(verdict), qos=1).wait(5)

        def replaced(messages: list[Message]) -> bool:
            return any(s.last_session_id == provisional.session_id for s in statuses_of(messages))

        messages = got.wait_until(replaced, 15, "a status with the cloud verdict")
        final = next(s for s in statuses_of(messages) if s.last_session_id == provisional.session_id)
        cloud_result = ScreeningResult.REFER if cloud_flagged else ScreeningResult.NO_FINDING
        assert final.last_result is cloud_result
        assert final.provisional_session_id is None and final.provisional_result is None
        retained = Collector()
        late = connect(mosquitto.url)
        subscribe_and_wait(late, status_topic("pi-1"), retained)
        latest = decode_message(retained.wait_for(1, 10)[-1].payload, DeviceStatus)
        assert latest.last_session_id == provisional.session_id and latest.provisional_result is None
        late.stop()
    finally:
        node.shutdown()
    observer.stop()
    frames = [f for f in frames_of(got.messages) if f.session_id == provisional.session_id]
    assert len({f.seq for f in frames}) == provisional.frames  # every session frame was also published
    # The device publishes frames, events and status; never a verdict of its own.
    assert not any(m.topic.endswith("/verdict") for m in got.messages)
    published_verdicts = [m for m in got.messages if m.topic == session_verdict_topic("pi-1")]
    assert [decode_message(m.payload, SessionVerdict) for m in published_verdicts] == [verdict]
    err = capsys.readouterr().err
    assert f"session {provisional.session_id[:8]}: {PROVISIONAL_NOTE}" in err
    assert f"session {provisional.session_id[:8]}: {REPLACES_NOTE}: {WORDING[cloud_result]}" in err


def test_a_provisional_result_after_the_cloud_verdict_of_its_session_is_not_shown() -> None:
    shown: list[ShownResult] = []
    display = ResultDisplay("pi-1", "00000000000000aa", Indicator(ResultSettings()), shown.append, out=io.StringIO())
    verdict = _cloud_verdict("pi-1", "a" * 32, "00000000000000aa", flagged=True)
    assert display.handle(encode_message(verdict)) is not None
    assert display.show_provisional("a" * 32, ScreeningResult.NO_FINDING) is None
    assert display.shown() == (ShownResult("a" * 32, ScreeningResult.REFER), None)
    other = display.show_provisional("b" * 32, ScreeningResult.NO_FINDING)  # a later session: shown
    assert other is not None and display.shown()[1] == other and shown[-1] == other


def test_frames_beyond_the_pending_bound_are_left_unscored_and_the_result_says_so() -> None:
    """`submit` never waits: with the worker not yet running, the 5th..10th frames are counted, not queued."""
    runner = load_edge_model(EdgeSettings(model_dir=shipped_model_dir()))
    results: list[ProvisionalResult] = []
    scorer = EdgeScorer(runner, EdgeSettings(model_dir=shipped_model_dir(), max_pending_frames=4), results.append)
    frame = np.full((24, 32), 30.0, dtype=np.float32)
    frame[8:16, 10:20] = 34.0
    started = time.perf_counter()
    for _ in range(10):
        scorer.submit("c" * 32, frame)
    assert time.perf_counter() - started < 0.5
    scorer.end_session("c" * 32)
    scorer.start().close()
    (result,) = results
    assert (result.frames, result.frames_unscored) == (4, 6)
    single = float(runner.predict_celsius(frame[None])[0])
    assert result.probability == pytest.approx(single, rel=1e-6)  # a uniform session keeps its probability
    assert result.model_version == runner.version and result.threshold == runner.threshold


def test_edge_mode_and_the_inference_node_trust_the_shipped_model_key_by_default() -> None:
    assert EdgeSettings().model_public_keys == InferenceConfig().model_public_keys == [SHIPPED_MODEL_PUBLIC_KEY]
    load_manifest(shipped_model_dir(), verify=True, trusted_keys=EdgeSettings().model_public_keys)
    assert not EdgeSettings().enabled and SensorConfig().edge.model_dir is None  # off by default


def test_a_provisional_referral_lights_the_led_and_the_cloud_no_finding_turns_it_off() -> None:
    """gpiozero's own MockFactory (its documented test pin factory) stands in for the Pi's GPIO."""
    factory = MockFactory()
    indicator = Indicator(ResultSettings(led_pin=17, show_s=30.0), pin_factory=factory)
    display = ResultDisplay("pi-1", "00000000000000aa", indicator, lambda shown: None, out=io.StringIO())
    try:
        assert display.show_provisional("d" * 32, ScreeningResult.REFER) is not None
        assert factory.pin(17).state
        verdict = _cloud_verdict("pi-1", "d" * 32, "00000000000000aa", flagged=False)
        assert display.handle(encode_message(verdict)) is not None
        assert not factory.pin(17).state
        assert display.shown() == (ShownResult("d" * 32, ScreeningResult.NO_FINDING), None)
    finally:
        display.close()
