"""Metrics, threshold rule and stratified patient folds, checked against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.folds import (
    frames_of,
    patient_strata,
    repeated_stratified_folds,
    stratified_fold_ids,
    stratified_holdout,
)
from training.metrics import binary_metrics, roc_auc, roc_curve, summarize, threshold_for_sensitivity


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return float(wins / (pos.size * neg.size))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda pairs: len({p[0] for p in pairs}) == 2
    )
)
def test_auc_matches_pairwise_count_with_ties(pairs: list[tuple[bool, int]]) -> None:
    labels = np.array([p[0] for p in pairs], dtype=int)
    scores = np.array([p[1] for p in pairs], dtype=float)
    assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores))
    fpr, tpr = roc_curve(labels, scores)
    trapezoids = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    assert trapezoids == pytest.approx(brute_force_auc(labels, scores))


def test_auc_of_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_binary_metrics_at_threshold() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05])
    m = binary_metrics(labels, scores, 0.5)  # tp 2, fn 1, fp 1, tn 3
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["f1"] == pytest.approx(2 / 3)
    assert math.isnan(binary_metrics(labels, scores, 0.95)["precision"])  # nothing flagged: undefined, not 0


def test_threshold_reaches_sensitivity_target_and_is_the_highest_such() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200) * 0.6 + labels * 0.3
    for target in (0.5, 0.8, 0.9, 1.0):
        t = threshold_for_sensitivity(labels, scores, target)
        assert binary_metrics(labels, scores, t)["recall"] >= target
        higher = np.nextafter(t, 2.0)
        assert binary_metrics(labels, scores, higher)["recall"] < target
    assert threshold_for_sensitivity([0, 0], [0.2, 0.4], 0.9) == 0.5


def test_summarize_skips_nan() -> None:
    s = summarize([0.5, math.nan, 0.7])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.6)
    assert summarize([math.nan])["mean"] is None


def test_stratified_folds_partition_every_sample_once_per_repeat() -> None:
    strata = np.array([0] * 76 + [2] * 22 + [3] * 31)  # the DMR-IR label x protocol mix
    folds = list(repeated_stratified_folds(strata, 5, 3, seed=7))
    assert len(folds) == 15
    for repeat in range(3):
        tests = np.concatenate([f.test for f in folds if f.repeat == repeat])
        assert np.array_equal(np.sort(tests), np.arange(strata.size))
    for f in folds:
        assert np.intersect1d(f.train, f.test).size == 0
        for value, total in ((0, 76), (2, 22), (3, 31)):
            assert abs(int(np.sum(strata[f.test] == value)) - total / 5) <= 1
    sizes = [f.test.size for f in folds]
    assert max(sizes) - min(sizes) <= 1
    again = list(repeated_stratified_folds(strata, 5, 3, seed=7))
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))


def test_fold_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="cannot split 3 samples into 5 folds"):
        stratified_fold_ids([0, 1, 0], 5, np.random.default_rng(0))


def test_holdout_takes_each_stratum() -> None:
    strata = np.array([0] * 40 + [1] * 10)
    keep, held = stratified_holdout(strata, 0.2, np.random.default_rng(1))
    assert np.intersect1d(keep, held).size == 0 and keep.size + held.size == 50
    assert int(np.sum(strata[held] == 0)) == 8 and int(np.sum(strata[held] == 1)) == 2


def test_patients_with_several_frames_stay_together() -> None:
    patients = np.array([5, 5, 6, 7, 7, 7, 8, 9])
    strata = np.array([0, 2, 0, 0, 0, 0, 2, 2])
    unique, per_patient = patient_strata(patients, strata)
    assert unique.tolist() == [5, 6, 7, 8, 9]
    assert per_patient.tolist() == [2, 0, 0, 2, 2]
    assert frames_of(patients, [5, 7]).tolist() == [0, 1, 3, 4, 5]


def test_balanced_class_weights_equalise_the_classes() -> None:
    from training.metrics import balanced_class_weights

    labels = np.array([0] * 76 + [1] * 53)
    weights = balanced_class_weights(labels)
    assert weights[0] * 76 == pytest.approx(weights[1] * 53) == pytest.approx(129 / 2)


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [(2.145, 14, 0.05), (1.0, 10, 0.3409), (3.0, 2, 0.0955), (0.0, 5, 1.0), (-2.228, 10, 0.05)],
)
def test_student_t_p_values_match_tables(t: float, df: int, p: float) -> None:
    from training.metrics import student_t_two_sided_p

    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=5e-4)


def test_corrected_resampled_t_is_more_cautious_than_the_plain_t() -> None:
    from training.metrics import corrected_resampled_t

    diffs = np.array([0.05, 0.10, -0.02, 0.08, 0.04, 0.07, 0.01, 0.09, 0.03, 0.06])
    plain_t = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(diffs.size))
    t, p = corrected_resampled_t(diffs, 0.25)
    assert 0 < t < plain_t
    assert t == pytest.approx(diffs.mean() / np.sqrt((1 / 10 + 0.25) * diffs.var(ddof=1)))
    assert 0.0 < p < 1.0
    assert math.isnan(corrected_resampled_t([0.1], 0.25)[1])
