"""The session verdict rule: mean of logits, one model version, one verdict per frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit
from scipy.special import logit as scipy_logit

from contract.messages import Verdict
from contract.session_rule import combine


def _v(seq: int, p: float, model: str = "m1", threshold: float = 0.5) -> Verdict:
    return Verdict(
        device_id="d",
        seq=seq,
        capture_ns=1000 + seq,
        session_id="5" * 32,
        probability=p,
        label="x",
        flagged=p >= threshold,
        threshold=threshold,
        model_version=model,
        node_id="n",
        latency_ms=1.0,
    )


def test_uniform_sessions_keep_their_probability_and_mixed_ones_average_logits() -> None:
    assert combine([_v(i, 0.3) for i in range(5)]).probability == pytest.approx(0.3)  # type: ignore[union-attr]
    mixed = combine([_v(0, 0.2), _v(1, 0.8), _v(2, 0.9)])
    assert mixed is not None
    expected = float(expit(np.mean(scipy_logit([0.2, 0.8, 0.9]))))  # computed independently of the module
    assert expected == pytest.approx(0.6753, abs=1e-4)  # mean logit 0.732
    assert mixed.probability == pytest.approx(expected) and mixed.flagged and mixed.frames == 3


def test_a_frame_verdicted_twice_counts_once_and_extremes_stay_finite() -> None:
    result = combine([_v(0, 1.0), _v(0, 1.0), _v(1, 0.0)])
    assert result is not None and result.frames == 2
    assert math.isfinite(result.probability) and result.probability == pytest.approx(0.5)


def test_the_model_with_most_frames_decides_and_brings_its_threshold() -> None:
    result = combine([_v(0, 0.9, "old", 0.8), _v(1, 0.6, "new", 0.7), _v(2, 0.65, "new", 0.7)])
    assert result is not None and result.model_version == "new" and result.threshold == 0.7
    assert result.frames == 2 and not result.flagged


def test_no_verdicts_no_session_verdict() -> None:
    assert combine([]) is None
