"""The numpy logistic regression baselines: optimality of the fit and the README's six statistics."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines import LogisticRegression, frame_statistics, pixel_features


def test_fit_is_the_penalised_optimum() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] - 0.5 * x[:, 2] + rng.normal(scale=0.7, size=120) > 0).astype(float)
    model = LogisticRegression(c=1.0).fit(x, y)
    z = (x - model.mean_) / model.scale_
    p = model.predict_proba(x)
    grad_w = z.T @ (p - y) + model.coef_ / 1.0
    grad_b = np.sum(p - y)
    assert np.max(np.abs(grad_w)) < 1e-6 and abs(grad_b) < 1e-6
    assert model.coef_[0] > 0 > model.coef_[2]


def test_separable_pixels_stay_finite_under_the_penalty() -> None:
    rng = np.random.default_rng(1)
    frames = rng.normal(30, 1, (40, 12, 16))
    labels = np.r_[np.zeros(20), np.ones(20)]
    frames[20:, 5:8, 3:6] += 2.0
    model = LogisticRegression().fit(pixel_features(frames), labels)
    proba = model.predict_proba(pixel_features(frames))
    assert np.all(np.isfinite(proba)) and np.all(proba[20:] > proba[:20].max() - 1e-9)


def test_frame_statistics_columns() -> None:
    frame = np.zeros((1, 2, 4))
    frame[0] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    stats = frame_statistics(frame)[0]
    values = frame.ravel()
    assert stats[:4] == pytest.approx([1, 8, values.mean(), values.std()])
    assert stats[4] == pytest.approx(2.0)  # |1-4|,|2-3|,... mirrored: mean of 3,1,1,3
    assert stats[5] == pytest.approx(np.percentile(values, 90))
    with pytest.raises(ValueError, match="expected"):
        frame_statistics(np.zeros((2, 3)))
