"""The inconclusive fields: v2 messages without them still decode; the device shows one wording for them."""

from __future__ import annotations

import json

from contract.messages import ScreeningResult, SessionVerdict, Verdict, decode_message
from sensor_node.result_display import WORDING, result_of

SESSION_V2 = {
    "v": 2, "device_id": "dev-1", "session_id": "a" * 32, "patient_ref": "b" * 16, "frames": 4, "probability": 0.7,
    "flagged": True, "threshold": 0.5, "rule": "mean-logit-v1", "model_version": "m-1", "ts_ns": 5,
}  # fmt: skip
VERDICT_V2 = {
    "v": 2, "device_id": "dev-1", "seq": 1, "capture_ns": 2, "probability": 0.7, "label": "sick", "flagged": True,
    "threshold": 0.5, "model_version": "m-1", "node_id": "n-1", "latency_ms": 1.0,
}  # fmt: skip


def test_v2_messages_without_the_new_fields_decode_with_defaults() -> None:
    verdict = decode_message(json.dumps(VERDICT_V2).encode(), Verdict)
    assert verdict.inconclusive is False and verdict.member_spread is None and verdict.band_low is None
    session = decode_message(json.dumps(SESSION_V2).encode(), SessionVerdict)
    assert session.inconclusive is False and session.member_spread is None
    assert result_of(session) is ScreeningResult.REFER


def test_an_inconclusive_session_asks_for_a_new_capture_whatever_its_flag() -> None:
    session = decode_message(json.dumps({**SESSION_V2, "inconclusive": True}).encode(), SessionVerdict)
    assert result_of(session) is ScreeningResult.INCONCLUSIVE
    assert ScreeningResult.INCONCLUSIVE.value == "inconclusive_repeat_capture"
    assert "repeat the capture" in WORDING[ScreeningResult.INCONCLUSIVE]
    assert "not a diagnosis" in WORDING[ScreeningResult.INCONCLUSIVE]
