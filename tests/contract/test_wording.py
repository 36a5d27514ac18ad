"""Each screening result is worded once (contract.wording) and every place that shows one uses it."""

from __future__ import annotations

import pytest

from cloud_bridge.archive import SessionRecord
from cloud_bridge.report_data import outcome
from cloud_bridge.report_html import DISCLAIMER
from contract.messages import ScreeningResult
from contract.wording import DISCLAIMER as WORDING_DISCLAIMER
from contract.wording import RESULT_LABEL, RESULT_SENTENCE, result_of_verdict
from devtools.live_view import RESULT_TEXT, ViewContext, render_view
from devtools.traffic import SessionResult, TrafficSnapshot
from sensor_node.result_display import WORDING


def test_every_result_has_a_label_and_a_sentence_in_a_screening_aid_s_words() -> None:
    assert set(RESULT_LABEL) == set(RESULT_SENTENCE) == set(ScreeningResult)
    for result in ScreeningResult:
        assert RESULT_SENTENCE[result].startswith(RESULT_LABEL[result].split(" for ")[0])
        assert "not a diagnosis" in RESULT_SENTENCE[result]
        for word in ("healthy", "sick", "cancer"):
            assert word not in RESULT_SENTENCE[result] and word not in RESULT_LABEL[result]
    assert RESULT_LABEL[ScreeningResult.INCONCLUSIVE] == "inconclusive: repeat the capture"
    for result in ScreeningResult:
        assert RESULT_LABEL[result] in WORDING_DISCLAIMER.lower()
    assert DISCLAIMER.startswith(WORDING_DISCLAIMER)


@pytest.mark.parametrize(
    ("flagged", "inconclusive", "expected"),
    [
        (True, False, ScreeningResult.REFER),
        (False, False, ScreeningResult.NO_FINDING),
        (True, True, ScreeningResult.INCONCLUSIVE),
        (False, True, ScreeningResult.INCONCLUSIVE),
        (True, None, ScreeningResult.REFER),  # a row from before the inconclusive rule
        (False, None, ScreeningResult.NO_FINDING),
    ],
)
def test_result_of_a_verdict(flagged: bool, inconclusive: bool | None, expected: ScreeningResult) -> None:
    assert result_of_verdict(flagged=flagged, inconclusive=inconclusive) is expected


def test_the_device_the_report_and_the_live_view_use_the_contract_s_words() -> None:
    assert WORDING is RESULT_SENTENCE
    for result in ScreeningResult:
        assert RESULT_TEXT[result].endswith(RESULT_LABEL[result])
    row = SessionRecord(
        session_id="a" * 32, device_id="dev-01", patient_ref="0123456789abcdef", started_ns=1, ended_ns=2,
        frames_reported=3, end_reason="card", frames=3, probability=0.52, flagged=True, threshold=0.5,
        rule="mean-logit-v1", model_version="m-1", verdict_ns=3, member_spread=0.2, inconclusive=True,
    )  # fmt: skip
    assert outcome(row).wording == RESULT_LABEL[ScreeningResult.INCONCLUSIVE]


def _session(session_id: str, *, flagged: bool, inconclusive: bool) -> SessionResult:
    return SessionResult(
        device_id="dev-01", session_id=session_id, patient_ref="0123456789abcdef", frames=8, probability=0.52,
        flagged=flagged, threshold=0.5, model_version="m-1", seen_ns=10**18, inconclusive=inconclusive,
    )  # fmt: skip


def test_live_view_lines_say_inconclusive() -> None:
    recent = (
        _session("1" * 32, flagged=True, inconclusive=False),
        _session("2" * 32, flagged=True, inconclusive=True),
        _session("3" * 32, flagged=False, inconclusive=False),
    )
    snap = TrafficSnapshot(
        at=0.0, frames_published=24, frames_received=24, verdicts=24, verdicts_received=24, flagged_verdicts=12,
        frames_per_s=1.0, verdicts_per_s=1.0, unverdicted=0, sessions_started=3, sessions_ended=3,
        sessions_awaiting_verdict=0, session_verdicts=3, sessions_flagged=1, sessions_inconclusive=1, deadletters=0,
        recent_sessions=recent, devices=(), nodes=(),
    )  # fmt: skip
    lines = render_view(snap, ViewContext("demo", "broker", 1), elapsed_s=1, duration_s=2)
    ends = [line.rsplit(")  ", 1)[-1] for line in lines if "patient 0123456789abcdef" in line]
    assert ends == [
        "no finding",
        "REPEAT: inconclusive: repeat the capture",
        "FLAGGED: refer for follow-up",
    ]  # newest first
    assert "(1 flagged, 1 inconclusive)" in "\n".join(lines)


def test_the_dashboards_map_outcomes_to_the_contract_s_labels() -> None:
    from dashboards.panels import DISCLAIMER_MARKDOWN, OUTCOME_CODES, outcome_mappings

    (mapping,) = outcome_mappings()
    options = mapping.options
    assert isinstance(options, dict)
    texts = {code: result.text for code, result in options.items()}
    assert texts == {str(code): RESULT_LABEL[result] for code, result in OUTCOME_CODES.items()}
    assert set(OUTCOME_CODES.values()) == set(ScreeningResult)
    for result in ScreeningResult:
        assert RESULT_LABEL[result] in DISCLAIMER_MARKDOWN.lower()
