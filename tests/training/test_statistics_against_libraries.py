"""The project's own statistics agree with the libraries that own them (scikit-learn, scipy).

Training keeps its numpy implementations (no scikit-learn on the training path); these tests
hold them to the reference implementations: to 1e-9 where the computation is deterministic
(AUC, ROC, the t distribution), to 1e-6 where both sides iterate to an optimum (the logistic
regression).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from training.baselines import LogisticRegression
from training.metrics import (
    corrected_resampled_t,
    regularized_incomplete_beta,
    roc_auc,
    roc_curve,
    student_t_two_sided_p,
)

SEEDS = range(8)


def _scored(seed: int, n: int = 120, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes, always
    scores = rng.normal(labels * 0.8, 1.0)
    if ties:
        scores = np.round(scores, 1)  # many tied scores: the half-credit rule matters
    return labels, scores


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_auc_equals_scikit_learn(seed: int, ties: bool) -> None:
    labels, scores = _scored(seed, ties=ties)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_equals_scikit_learn(seed: int, ties: bool) -> None:
    labels, scores = _scored(seed, ties=ties)
    fpr, tpr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-9)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-9)


@pytest.mark.parametrize(("a", "b", "x"), [(0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (7.0, 0.5, 0.01), (14.0, 0.5, 0.999)])
def test_incomplete_beta_equals_scipy(a: float, b: float, x: float) -> None:
    assert regularized_incomplete_beta(a, b, x) == pytest.approx(float(special.betainc(a, b, x)), abs=1e-9)


@pytest.mark.parametrize("df", [1, 2, 4, 14, 29])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.7, 2.6, 6.0, -2.1])
def test_two_sided_t_p_value_equals_scipy(t: float, df: int) -> None:
    assert student_t_two_sided_p(t, df) == pytest.approx(2.0 * float(stats.t.sf(abs(t), df)), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_corrected_resampled_t_test_equals_an_independent_computation(seed: int) -> None:
    """Nadeau & Bengio (2003): t = mean / sqrt((1/J + n_test/n_train) * s^2), p from scipy's t with J-1 df."""
    rng = np.random.default_rng(seed)
    differences = rng.normal(0.02, 0.05, 15)
    ratio = 26 / 103  # 5-fold CV of 129 patients
    t, p = corrected_resampled_t(differences, ratio)
    expected_t = differences.mean() / math.sqrt((1 / differences.size + ratio) * differences.var(ddof=1))
    assert t == pytest.approx(expected_t, abs=1e-9)
    assert p == pytest.approx(2.0 * float(stats.t.sf(abs(expected_t), differences.size - 1)), abs=1e-9)
    # The correction only ever widens the plain paired t-test's p value.
    assert p >= float(stats.ttest_1samp(differences, 0.0).pvalue) - 1e-12


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [0.1, 1.0])
def test_logistic_regression_equals_scikit_learn_on_standardised_features(seed: int, c: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(150, 6)) * rng.uniform(0.5, 20, 6) + rng.uniform(-30, 30, 6)
    y = ((x[:, 0] - x[:, 0].mean()) / x[:, 0].std() + rng.normal(0, 1.5, 150) > 0).astype(int)
    ours = LogisticRegression(c=c).fit(x, y)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    theirs = SkLogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_[0], atol=1e-6)
    assert ours.intercept_ == pytest.approx(float(theirs.intercept_[0]), abs=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(z)[:, 1], atol=1e-6)
