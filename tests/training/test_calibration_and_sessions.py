"""Calibration, ECE, the inconclusive band and replayed sessions: small exact cases (numpy, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.messages import Verdict
from contract.session_rule import combine, is_inconclusive
from training.calibration import expected_calibration_error, fit_platt, fit_platt_or_identity, reliability_bins
from training.sessions import Band, choose_band, judge_sessions, session_metrics, session_readings


def test_ece_of_hand_made_cases() -> None:
    # all at 0.95 but half sick: one bin, |0.5 - 0.95|
    assert expected_calibration_error([0.95] * 4, [1, 1, 0, 0]) == pytest.approx(0.45)
    # two bins each exactly calibrated
    assert expected_calibration_error([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0]) == pytest.approx(0.0)
    # p = 1.0 falls in the last (closed) bin
    bins = reliability_bins([1.0, 0.0], [1, 0])
    assert [b["count"] for b in bins] == [1, 1] and bins[-1]["high"] == 1.0


def test_platt_recovers_a_known_logistic_and_refuses_an_inverted_one() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    platt = fit_platt(z, y)
    assert platt.slope == pytest.approx(0.5, abs=0.05) and platt.intercept == pytest.approx(-1.0, abs=0.08)
    with pytest.raises(ValueError, match="not positive"):
        fit_platt(-z, y)
    assert fit_platt_or_identity(-z, y).identity_fallback


def test_band_holds_the_declared_share_around_the_threshold() -> None:
    p = np.linspace(0.01, 0.99, 1001)
    low, high = choose_band(p, 0.5, share=0.1)
    inside = (p >= low) & (p <= high)
    assert low <= 0.5 <= high and inside.mean() == pytest.approx(0.1, abs=0.005)


def test_session_rule_inconclusive_near_threshold_or_when_members_disagree() -> None:
    def v(seq: int, p: float, spread: float) -> Verdict:
        return Verdict(
            device_id="d", seq=seq, capture_ns=seq, probability=p, label="x", flagged=p >= 0.5, threshold=0.5,
            model_version="m", node_id="n", latency_ms=0.0, member_spread=spread, band_low=0.4, band_high=0.6,
            max_member_spread=1.0,
        )  # fmt: skip

    near = combine([v(1, 0.45, 0.1), v(2, 0.55, 0.1)])
    assert near is not None and near.inconclusive and near.member_spread == pytest.approx(0.1)
    clear = combine([v(1, 0.9, 0.2), v(2, 0.95, 0.4)])
    assert clear is not None and not clear.inconclusive and clear.flagged
    apart = combine([v(1, 0.9, 1.5), v(2, 0.95, 1.5)])
    assert apart is not None and apart.inconclusive
    assert not is_inconclusive(0.5, None, None, None, None)  # a model without a rule is never inconclusive


def test_replayed_sessions_have_one_offset_and_frame_noise() -> None:
    scene = np.full((1, 48, 64), 30.0, np.float32)
    sessions = session_readings(scene, 16, seed=1)
    assert sessions.shape == (1, 16, 24, 32)
    means = sessions[0].mean(axis=(1, 2))
    assert np.ptp(means) < 0.05  # one device offset for the session
    assert abs(float(means.mean()) - 30.0) <= 1.0 + 0.05  # within the +-1 C accuracy
    assert float(sessions[0].std(axis=0).mean()) > 0.05  # fresh noise per frame


def test_judged_sessions_use_the_contract_rule() -> None:
    p = np.array([[0.9, 0.8], [0.1, 0.2], [0.5, 0.52]])
    spread = np.array([[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]])
    sessions = judge_sessions(p, spread, 0.5, Band(0.45, 0.55, 1.0))
    assert [s.flagged for s in sessions] == [True, False, True]
    assert [s.inconclusive for s in sessions] == [False, False, True]
    metrics = session_metrics(np.array([1, 0, 1]), sessions)
    assert metrics["auc"] == 1.0 and metrics["inconclusive_share"] == pytest.approx(1 / 3)
    assert metrics["sensitivity_conclusive"] == 1.0 and metrics["specificity_conclusive"] == 1.0


def test_the_bridge_refuses_verdicts_whose_inconclusive_fields_disagree() -> None:
    from cloud_bridge.provenance import inconclusive_inconsistency

    base = Verdict(
        device_id="d", seq=1, capture_ns=1, probability=0.5, label="x", flagged=True, threshold=0.5,
        model_version="m", node_id="n", latency_ms=0.0,
    )  # fmt: skip
    assert inconclusive_inconsistency(base) is None  # a v2 verdict without the new fields
    ruled = base.model_copy(update={"band_low": 0.4, "band_high": 0.6, "max_member_spread": 1.0, "member_spread": 0.1})
    assert inconclusive_inconsistency(ruled) is not None  # 0.5 lies in the band: must be inconclusive
    assert inconclusive_inconsistency(ruled.model_copy(update={"inconclusive": True})) is None
    far = ruled.model_copy(update={"probability": 0.9, "inconclusive": True})
    assert "contradicts" in (inconclusive_inconsistency(far) or "")
    apart = ruled.model_copy(update={"probability": 0.9, "member_spread": 3.0, "inconclusive": True})
    assert inconclusive_inconsistency(apart) is None
    assert inconclusive_inconsistency(base.model_copy(update={"band_low": 0.6, "band_high": 0.7})) is not None
