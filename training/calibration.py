"""Platt scaling of the ensemble's mean logit, and the expected calibration error (ECE).

Why Platt (two parameters) rather than isotonic: the calibration set is one cross-validation's
out-of-fold predictions, about a hundred patients; isotonic regression would fit a step per
handful of patients. The fit is scikit-learn's logistic regression on the one logit feature,
with a very weak penalty (C = 1e4) so that it is essentially the maximum-likelihood fit.

ECE: 10 equal-width probability bins on [0, 1] (the last bin closed), the frame- or
session-weighted mean of |fraction positive - mean probability| per bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contract.model.model_runner import stable_sigmoid

#: Equal-width bins of the expected calibration error and the reliability diagram.
ECE_BINS = 10
#: Inverse penalty of the Platt fit: large, so it is the plain maximum-likelihood logistic fit.
PLATT_C = 1e4


@dataclass(frozen=True)
class Platt:
    slope: float
    intercept: float
    #: True when no monotone fit existed (the identity stands in, and the report says so).
    identity_fallback: bool = False

    def apply(self, logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
        z = np.asarray(logits, dtype=np.float64)
        return stable_sigmoid(self.slope * z + self.intercept)


def fit_platt_or_identity(logits: npt.ArrayLike, labels: npt.ArrayLike) -> Platt:
    """`fit_platt`, or the identity (flagged) when the logits do not rank: a bad model stays visibly bad."""
    try:
        return fit_platt(logits, labels)
    except ValueError:
        return Platt(1.0, 0.0, identity_fallback=True)


def fit_platt(logits: npt.ArrayLike, labels: npt.ArrayLike) -> Platt:
    """P(sick) = sigmoid(slope * logit + intercept), fitted on out-of-fold logits.

    Raises ValueError when the fitted slope is not positive: the logits then rank no better
    than chance and no monotone calibration exists.
    """
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(labels).astype(int).reshape(-1)
    if np.unique(y).size < 2:
        raise ValueError("calibration needs out-of-fold predictions of both classes")
    fit = LogisticRegression(C=PLATT_C, max_iter=1000).fit(z, y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if slope <= 0:
        raise ValueError(f"calibration slope {slope:.3g} is not positive: the out-of-fold logits do not rank")
    return Platt(slope, intercept)


def reliability_bins(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per equal-width bin with any predictions: count, mean probability, fraction positive."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(chosen.sum()),
                    "mean_probability": float(p[chosen].mean()),
                    "fraction_positive": float(y[chosen].mean()),
                }
            )
    return out


def expected_calibration_error(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Sum over bins of (count / N) * |fraction positive - mean probability|; NaN without predictions."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return float("nan")
    rows = reliability_bins(p, labels, bins)
    return float(sum(r["count"] / p.size * abs(r["fraction_positive"] - r["mean_probability"]) for r in rows))
