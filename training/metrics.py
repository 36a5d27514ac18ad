"""Screening metrics in numpy: ROC AUC, confusion-matrix rates at a threshold, threshold choice.

A score >= threshold means "refer" (positive). Undefined rates (no positives, no predicted
positives) are NaN, so that fold averages skip them instead of counting them as zero.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

METRIC_NAMES: tuple[str, ...] = (
    "auc",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "balanced_accuracy",
    "f1",
)


def _as_binary(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    return y, s


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks with ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [values.size]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with a single class."""
    y, s = _as_binary(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    y, s = _as_binary(labels, scores)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    last_of_tie = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [s.size - 1])) if s.size else np.array([], int)
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = np.cumsum(~y_sorted)[last_of_tie]
    fpr = np.concatenate(([0.0], fps / n_neg))
    tpr = np.concatenate(([0.0], tps / n_pos))
    return fpr, tpr


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def binary_metrics(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> dict[str, float]:
    """AUC plus accuracy, precision, recall (sensitivity), specificity, balanced accuracy and F1 at `threshold`."""
    y, s = _as_binary(labels, scores)
    predicted = s >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    tn = int(np.sum(~predicted & ~y))
    fn = int(np.sum(~predicted & y))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    balanced = (recall + specificity) / 2.0 if not (math.isnan(recall) or math.isnan(specificity)) else math.nan
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "auc": roc_auc(y, s),
        "accuracy": _ratio(tp + tn, y.size),
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "balanced_accuracy": balanced,
        "f1": f1,
    }


def threshold_for_sensitivity(labels: npt.ArrayLike, scores: npt.ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity on these (validation) scores reaches `target`.

    Highest, so that specificity is as good as the sensitivity target allows. Without any
    positive the rule is undefined and 0.5 is returned.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"sensitivity target must be in (0, 1], got {target}")
    y, s = _as_binary(labels, scores)
    positives = np.sort(s[y])[::-1]
    if positives.size == 0:
        return 0.5
    needed = math.ceil(target * positives.size - 1e-9)
    return float(positives[max(needed, 1) - 1])


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Mean, standard deviation, min and max over folds, ignoring NaN; None where nothing is defined."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def balanced_class_weights(labels: npt.ArrayLike) -> dict[int, float]:
    """Inverse-frequency weights that make both classes count the same in the loss (n / (2 * count))."""
    y = np.asarray(labels).astype(int).ravel()
    counts = np.bincount(y, minlength=2).astype(float)
    return {c: float(y.size / (2.0 * counts[c])) if counts[c] else 1.0 for c in (0, 1)}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), for the Student t distribution (no scipy here)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def corrected_resampled_t(differences: npt.ArrayLike, test_train_ratio: float) -> tuple[float, float]:
    """Nadeau & Bengio's corrected resampled t-test over CV folds: (t, two-sided p).

    Folds share training patients, so the plain t-test's variance is too small; the correction
    inflates it by `1/J + n_test/n_train`.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    var = float(d.var(ddof=1))
    if var == 0.0:
        return (math.inf if d.mean() > 0 else -math.inf if d.mean() < 0 else 0.0), (0.0 if d.mean() else 1.0)
    t = float(d.mean()) / math.sqrt((1.0 / d.size + test_train_ratio) * var)
    return t, student_t_two_sided_p(t, d.size - 1)
