"""The device shows its session verdict: a stderr line, its retained status, and an optional LED/buzzer."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from contract.ids import LEGACY_INCARNATION, new_session_id
from contract.messages import DeviceStatus, ScreeningResult, SessionVerdict, decode_message, encode_message
from contract.topics import session_verdict_topic, status_topic
from devtools.local_mosquitto import LocalMosquitto
from sensor_node.config import ResultSettings
from sensor_node.result_display import WORDING, Indicator, ResultDisplay, ShownResult
from sensor_node.rfid import NoTaps
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from tests.sensor_node.conftest import RunningNode, fast_config
from transport.connection import Message


def _verdict(device_id: str, *, flagged: bool, incarnation: str = LEGACY_INCARNATION) -> SessionVerdict:
    return SessionVerdict(
        device_id=device_id, session_id=new_session_id(), patient_ref="0123456789abcdef", frames=20,
        probability=0.8 if flagged else 0.2, flagged=flagged, threshold=0.5, rule="mean_logit",
        model_version="thermal-test", ts_ns=time.time_ns(), incarnation=incarnation,
    )  # fmt: skip


def test_a_session_verdict_sent_to_the_device_is_shown_and_lands_in_its_retained_status(
    tmp_path: Path, mosquitto: LocalMosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    running = RunningNode(fast_config(tmp_path, mosquitto.url), NoTaps())
    try:
        node = running.node
        assert node.connection.connected.wait(10)
        statuses = Collector()
        observer = connect(mosquitto.url)
        subscribe_and_wait(observer, status_topic("pi-1"), statuses)
        verdict = _verdict("pi-1", flagged=True, incarnation=node.incarnation)
        observer.publish(session_verdict_topic("pi-1"), encode_message(verdict), qos=1).wait(5)

        def shown(messages: list[Message]) -> bool:
            return any(decode_message(m.payload, DeviceStatus).last_result is ScreeningResult.REFER for m in messages)

        messages = statuses.wait_until(shown, timeout=10, what="a status with the result")
        status = next(s for s in (decode_message(m.payload, DeviceStatus) for m in messages) if s.last_result)
        assert status.last_session_id == verdict.session_id
        assert node.results.last == ShownResult(verdict.session_id, ScreeningResult.REFER)
        observer.stop()
    finally:
        running.stop()
    err = capsys.readouterr().err
    assert f"session {verdict.session_id[:8]}: refer for clinical follow-up (a screening aid, not a diagnosis)" in err


def test_verdicts_for_another_device_or_incarnation_or_malformed_are_not_shown() -> None:
    shown: list[ShownResult] = []
    out = io.StringIO()
    display = ResultDisplay("pi-1", "00000000000000aa", Indicator(ResultSettings()), shown.append, out=out)
    assert display.handle(encode_message(_verdict("pi-2", flagged=True))) is None
    assert display.handle(encode_message(_verdict("pi-1", flagged=True, incarnation="00000000000000bb"))) is None
    assert display.handle(b'{"v": 2, "device_id": "pi-1"}') is None
    assert shown == [] and out.getvalue() == ""
    ok = display.handle(encode_message(_verdict("pi-1", flagged=False, incarnation="00000000000000aa")))
    assert ok is not None and ok.result is ScreeningResult.NO_FINDING
    assert out.getvalue().strip().endswith(WORDING[ScreeningResult.NO_FINDING])
    assert "healthy" not in out.getvalue()


def test_the_led_is_lit_for_a_referral_only_and_the_buzzer_beeps() -> None:
    """gpiozero's own MockFactory (its documented test pin factory) stands in for the Pi's GPIO."""
    factory = MockFactory()
    indicator = Indicator(ResultSettings(led_pin=17, buzzer_pin=27, show_s=0.3), pin_factory=factory)
    led_pin, buzzer_pin = factory.pin(17), factory.pin(27)
    try:
        indicator.show(ScreeningResult.REFER)
        assert led_pin.state
        deadline = time.monotonic() + 2
        while buzzer_pin.state is False and time.monotonic() < deadline:
            time.sleep(0.01)
        assert buzzer_pin.state  # the beep started
        time.sleep(0.5)
        assert not led_pin.state  # off after show_s
        indicator.show(ScreeningResult.NO_FINDING)
        assert not led_pin.state
    finally:
        indicator.close()
