"""Repeated stratified k-fold cross-validation by patient: the CNN and the README's baselines on the same folds.

Per outer fold the training patients are split once more (stratified) into a fitting part
and a validation part. Every model is fitted on the fitting part; its screening threshold is
the highest one that reaches the sensitivity target on the validation part; the test fold is
then scored at that threshold. So no test patient ever influences a model or its threshold,
and the three models are compared on identical patients.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from training.baselines import LogisticRegression, frame_statistics, pixel_features
from training.folds import frames_of, patient_strata, repeated_stratified_folds, stratified_holdout
from training.metrics import (
    METRIC_NAMES,
    binary_metrics,
    corrected_resampled_t,
    roc_auc,
    summarize,
    threshold_for_sensitivity,
)
from training.thermal_data import FloatArray, ThermogramSet, clean_sensor_frames, device_frames

#: Model keys, in report order, with their descriptions.
MODELS: dict[str, str] = {
    "cnn": "thermal CNN (frame_standardize, emulated MLX90640 frames)",
    "logreg_stats": "logistic regression on 6 frame statistics (block-averaged 24x32, absolute C)",
    "logreg_pixels": "logistic regression on the 768 pixels (block-averaged 24x32, absolute C)",
}
SUBSETS: dict[str, str] = {
    "all": "whole set",
    "protocol0": "dynamic_protocol == 0 (no capture-protocol confound)",
}

#: (fit frames, fit labels, scored frames) -> probability of sick for the scored frames, shape (N,)
CnnTrainer = Callable[[FloatArray, npt.NDArray[np.uint8], list[FloatArray], int, str], list[npt.NDArray[np.float64]]]


@dataclass
class CvSettings:
    folds: int = 5
    repeats: int = 3
    seed: int = 0
    sensitivity_target: float = 0.9
    validation_fraction: float = 0.2


@dataclass
class CvResult:
    settings: CvSettings
    fold_rows: list[dict[str, Any]] = field(default_factory=list)
    #: model -> (repeats, N) out-of-fold probabilities
    oof_scores: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def _baseline_scores(
    features: npt.NDArray[np.float64], labels: npt.NDArray[np.uint8], fit: npt.NDArray[np.int64], scored: list[Any]
) -> list[npt.NDArray[np.float64]]:
    model = LogisticRegression(c=1.0).fit(features[fit], labels[fit])
    return [model.predict_proba(features[idx]) for idx in scored]


def run_cross_validation(data: ThermogramSet, settings: CvSettings, train_cnn: CnnTrainer, eval_seed: int) -> CvResult:
    """Score every model on every fold; `train_cnn` fits a CNN and returns P(sick) for each scored set."""
    started = time.monotonic()
    labels = data.labels
    test_frames = device_frames(data.frames_c, eval_seed)
    clean = clean_sensor_frames(data.frames_c)
    features = {"logreg_stats": frame_statistics(clean), "logreg_pixels": pixel_features(clean)}
    patients, strata = patient_strata(data.patient_id, data.strata)
    result = CvResult(settings)
    result.oof_scores = {m: np.full((settings.repeats, data.n), np.nan) for m in MODELS}
    result.thresholds = {m: [] for m in MODELS}
    holdout_rng = np.random.default_rng(settings.seed + 1)
    total = settings.folds * settings.repeats
    for number, fold in enumerate(repeated_stratified_folds(strata, settings.folds, settings.repeats, settings.seed)):
        keep, held = stratified_holdout(strata[fold.train], settings.validation_fraction, holdout_rng)
        fit = frames_of(data.patient_id, patients[fold.train][keep])
        val = frames_of(data.patient_id, patients[fold.train][held])
        test = frames_of(data.patient_id, patients[fold.test])
        tag = f"cv {number + 1}/{total} r{fold.repeat + 1}f{fold.fold + 1}"
        print(f"[{tag}] fit {fit.size}, validation {val.size}, test {test.size} frames", file=sys.stderr, flush=True)
        scores: dict[str, list[npt.NDArray[np.float64]]] = {
            "cnn": train_cnn(data.frames_c[fit], labels[fit], [test_frames[val], test_frames[test]], number, tag)
        }
        for name, feats in features.items():
            scores[name] = _baseline_scores(feats, labels, fit, [val, test])
        for model, (val_scores, test_scores) in scores.items():
            threshold = threshold_for_sensitivity(labels[val], val_scores, settings.sensitivity_target)
            result.thresholds[model].append(threshold)
            result.oof_scores[model][fold.repeat, test] = test_scores
            for subset in SUBSETS:
                mask = np.ones(test.size, bool) if subset == "all" else data.dynamic_protocol[test] == 0
                row: dict[str, Any] = {
                    "repeat": fold.repeat,
                    "fold": fold.fold,
                    "model": model,
                    "subset": subset,
                    "threshold": threshold,
                    "n": int(mask.sum()),
                    "n_fit": int(fit.size),
                    "n_sick": int(labels[test][mask].sum()),
                }
                row.update(binary_metrics(labels[test][mask], test_scores[mask], threshold))
                result.fold_rows.append(row)
        cnn_auc = roc_auc(labels[test], scores["cnn"][1])
        base_auc = roc_auc(labels[test], scores["logreg_stats"][1])
        print(f"[{tag}] test AUC cnn {cnn_auc:.3f}, 6-stat baseline {base_auc:.3f}", file=sys.stderr, flush=True)
    result.seconds = time.monotonic() - started
    return result


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def summarize_cv(result: CvResult, data: ThermogramSet) -> dict[str, Any]:
    """JSON-ready summary: per model and subset, mean/std/min/max over folds, pooled out-of-fold AUC per repeat."""
    summary: dict[str, Any] = {}
    for model in MODELS:
        per_subset: dict[str, Any] = {}
        for subset in SUBSETS:
            rows = [r for r in result.fold_rows if r["model"] == model and r["subset"] == subset]
            metrics = {
                name: {
                    k: (_clean(v) if isinstance(v, float) else v) for k, v in summarize([r[name] for r in rows]).items()
                }
                for name in METRIC_NAMES
            }
            mask = np.ones(data.n, bool) if subset == "all" else data.dynamic_protocol == 0
            pooled = [
                roc_auc(data.labels[mask], result.oof_scores[model][r][mask]) for r in range(result.settings.repeats)
            ]
            metrics["pooled_auc"] = {
                k: (_clean(v) if isinstance(v, float) else v) for k, v in summarize(pooled).items()
            }
            per_subset[subset] = metrics
        per_subset["threshold"] = {
            k: (_clean(v) if isinstance(v, float) else v) for k, v in summarize(result.thresholds[model]).items()
        }
        summary[model] = per_subset
    return summary


def compare_to_baselines(result: CvResult, alpha: float = 0.05) -> dict[str, Any]:
    """Per baseline and subset: fold AUC differences (CNN - baseline), folds the CNN wins, a corrected
    resampled t-test, and a plain verdict: "beats" only when the CNN leads and the test says so."""
    out: dict[str, Any] = {}
    for baseline in (m for m in MODELS if m != "cnn"):
        for subset in SUBSETS:
            cnn = [r for r in result.fold_rows if r["model"] == "cnn" and r["subset"] == subset]
            base = [r["auc"] for r in result.fold_rows if r["model"] == baseline and r["subset"] == subset]
            pairs = [(c, b) for c, b in zip(cnn, base, strict=True) if not (math.isnan(c["auc"]) or math.isnan(b))]
            diffs = np.asarray([c["auc"] - b for c, b in pairs])
            ratio = float(np.mean([c["n"] / c["n_fit"] for c, _ in pairs])) if pairs else math.nan
            t, p = corrected_resampled_t(diffs, ratio)
            wins = int(np.sum(diffs > 0))
            mean_diff = float(diffs.mean()) if diffs.size else math.nan
            leads = bool(diffs.size and mean_diff > 0 and wins > diffs.size / 2)
            significant = bool(leads and not math.isnan(p) and p < alpha)
            verdict = "beats" if significant else "leads, not significantly" if leads else "does not beat"
            out[f"{baseline}/{subset}"] = {
                "mean_auc_difference": _clean(mean_diff),
                "std_auc_difference": _clean(float(diffs.std(ddof=1))) if diffs.size > 1 else None,
                "cnn_wins": wins,
                "folds": int(diffs.size),
                "corrected_t": _clean(t),
                "p_value": _clean(p),
                "cnn_leads": leads,
                "cnn_beats_baseline": significant,
                "verdict": verdict,
            }
    return out
