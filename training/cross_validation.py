"""Nested, repeated stratified k-fold cross-validation by patient: the ensemble, the single CNN
and the README's baselines on the same outer folds.

Per outer fold the training patients are split once more (stratified) into `members` inner
folds. Member k is fitted on the other inner folds; its predictions on its own inner fold are
out-of-fold ("validation") predictions. On those validation predictions alone the ensemble's
Platt calibration, its session threshold (the highest reaching the sensitivity target on
replayed validation sessions) and its inconclusive band are chosen; the outer test patients,
whom no member saw, are then scored by the mean of the K members' logits. The single CNN is
member 1 with its threshold from its own inner fold, and the baselines are fitted on the same
patients as member 1, so every comparison is on identical patients.
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

from contract.model.model_runner import stable_sigmoid
from training.baselines import LogisticRegression, frame_statistics, pixel_features
from training.calibration import Platt, expected_calibration_error, fit_platt_or_identity
from training.folds import Fold, frames_of, patient_strata, repeated_stratified_folds
from training.metrics import (
    METRIC_NAMES,
    binary_metrics,
    corrected_resampled_t,
    roc_auc,
    summarize,
    threshold_for_sensitivity,
)
from training.sessions import (
    MAX_MEMBER_SPREAD,
    SESSION_FRAMES,
    Band,
    choose_band,
    judge_sessions,
    session_metrics,
    session_readings,
)
from training.thermal_data import FloatArray, ThermogramSet, clean_sensor_frames, device_frames, paste_marker

#: Model keys, in report order, with their descriptions.
MODELS: dict[str, str] = {
    "ensemble": "ensemble of the K inner-fold CNNs (mean logit, Platt-calibrated)",
    "cnn": "single thermal CNN (inner-fold member 1; frame_standardize, emulated MLX90640 frames)",
    "logreg_stats": "logistic regression on 6 frame statistics (block-averaged 24x32, absolute C)",
    "logreg_pixels": "logistic regression on the 768 pixels (block-averaged 24x32, absolute C)",
}
#: The model the others are compared with.
PRIMARY = "ensemble"
SUBSETS: dict[str, str] = {
    "all": "whole set",
    "protocol0": "dynamic_protocol == 0 (no capture-protocol confound)",
}

#: (fit frames, fit labels, scored frame sets, run number, tag) -> one member's logits per scored set.
CnnTrainer = Callable[[FloatArray, npt.NDArray[np.uint8], list[FloatArray], int, str], list[npt.NDArray[np.float64]]]


@dataclass
class CvSettings:
    folds: int = 5
    repeats: int = 2
    seed: int = 0
    sensitivity_target: float = 0.9
    members: int = 5
    session_frames: int = SESSION_FRAMES


@dataclass
class CvResult:
    settings: CvSettings
    fold_rows: list[dict[str, Any]] = field(default_factory=list)
    #: model -> (repeats, N) out-of-fold probabilities
    oof_scores: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    #: per outer fold: the ensemble's session metrics, calibration, band, marker-shortcut shift
    ensemble_rows: list[dict[str, Any]] = field(default_factory=list)
    #: (repeats, N) out-of-fold session probabilities of the ensemble, and whether inconclusive
    session_scores: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))
    session_inconclusive: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty((0, 0), bool))
    seconds: float = 0.0


@dataclass
class Scored:
    """What the trained models say about one outer fold's frames."""

    val_logits: npt.NDArray[np.float64]  # inner out-of-fold, per outer-train frame
    val_sessions: npt.NDArray[np.float64]  # (outer-train frames, session frames), inner out-of-fold
    test_logits: npt.NDArray[np.float64]  # (members, test frames)
    test_sessions: npt.NDArray[np.float64]  # (members, test frames, session frames)
    test_marker: npt.NDArray[np.float64]  # (members, test frames) with a pasted marker square


@dataclass(frozen=True)
class EnsembleRule:
    """Everything chosen on validation predictions: calibration, threshold, inconclusive band."""

    platt: Platt
    threshold: float
    band: Band


def choose_rule(
    val_logits: npt.NDArray[np.float64],
    val_sessions: npt.NDArray[np.float64],
    labels: npt.NDArray[np.uint8],
    target: float,
) -> EnsembleRule:
    """Calibration on out-of-fold frame logits; threshold and band on the replayed out-of-fold sessions."""
    platt = fit_platt_or_identity(val_logits, labels)
    sessions = judge_sessions(platt.apply(val_sessions), None, 0.5, None)
    session_p = np.asarray([s.probability for s in sessions])
    threshold = threshold_for_sensitivity(labels, session_p, target)
    low, high = choose_band(session_p, threshold)
    return EnsembleRule(platt, threshold, Band(low, high, MAX_MEMBER_SPREAD))


def ensemble_probability(
    member_logits: npt.NDArray[np.float64], platt: Platt
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(members, ...) logits -> calibrated probability of their mean, and their spread (population std)."""
    return platt.apply(member_logits.mean(axis=0)), member_logits.std(axis=0)


def _baseline_scores(
    features: npt.NDArray[np.float64], labels: npt.NDArray[np.uint8], fit: npt.NDArray[np.int64], scored: list[Any]
) -> list[npt.NDArray[np.float64]]:
    model = LogisticRegression(c=1.0).fit(features[fit], labels[fit])
    return [model.predict_proba(features[idx]) for idx in scored]


@dataclass
class _Inputs:
    """Every frame set the folds score, computed once."""

    test_frames: FloatArray
    sessions: FloatArray
    marker_frames: FloatArray
    features: dict[str, npt.NDArray[np.float64]]


def _inputs(data: ThermogramSet, settings: CvSettings, eval_seed: int) -> _Inputs:
    rng = np.random.default_rng(eval_seed + 3)
    marked = np.stack([paste_marker(f, rng) for f in data.frames_c]).astype(np.float32)
    clean = clean_sensor_frames(data.frames_c)
    return _Inputs(
        test_frames=device_frames(data.frames_c, eval_seed),
        sessions=session_readings(data.frames_c, settings.session_frames, eval_seed + 1),
        marker_frames=device_frames(marked, eval_seed),
        features={"logreg_stats": frame_statistics(clean), "logreg_pixels": pixel_features(clean)},
    )


def _score_outer_fold(
    data: ThermogramSet,
    inputs: _Inputs,
    settings: CvSettings,
    train_cnn: CnnTrainer,
    *,
    train: npt.NDArray[np.int64],
    test: npt.NDArray[np.int64],
    number: int,
    tag: str,
) -> tuple[Scored, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]]:
    """Train the K members of one outer fold; returns their scores and each member's (fit, val) frames."""
    patients, strata = patient_strata(data.patient_id[train], data.strata[train])
    position = {int(f): i for i, f in enumerate(train)}
    frames_s = settings.session_frames
    val_logits = np.full(train.size, np.nan)
    val_sessions = np.full((train.size, frames_s), np.nan)
    test_logits, test_sessions, test_marker = [], [], []
    splits = []
    inner = repeated_stratified_folds(strata, settings.members, 1, settings.seed + 1000 + number)
    for k, fold in enumerate(inner):
        fit = train[frames_of(data.patient_id[train], patients[fold.train])]
        val = train[frames_of(data.patient_id[train], patients[fold.test])]
        splits.append((fit, val))
        scored = [
            inputs.test_frames[val],
            inputs.sessions[val].reshape(-1, *inputs.sessions.shape[2:]),
            inputs.test_frames[test],
            inputs.sessions[test].reshape(-1, *inputs.sessions.shape[2:]),
            inputs.marker_frames[test],
        ]
        out = train_cnn(data.frames_c[fit], data.labels[fit], scored, number * settings.members + k, f"{tag} m{k + 1}")
        rows = [position[int(f)] for f in val]
        val_logits[rows] = out[0]
        val_sessions[rows] = out[1].reshape(val.size, frames_s)
        test_logits.append(out[2])
        test_sessions.append(out[3].reshape(test.size, frames_s))
        test_marker.append(out[4])
    scored_all = Scored(val_logits, val_sessions, np.stack(test_logits), np.stack(test_sessions), np.stack(test_marker))
    return scored_all, splits


def _fold_row(fold: Fold, model: str, subset: str, threshold: float, n_fit: int) -> dict[str, Any]:
    return {
        "repeat": fold.repeat,
        "fold": fold.fold,
        "model": model,
        "subset": subset,
        "threshold": threshold,
        "n_fit": n_fit,
    }


def _record(
    result: CvResult,
    data: ThermogramSet,
    fold: Fold,
    test: npt.NDArray[np.int64],
    *,
    model: str,
    scores: npt.NDArray[np.float64],
    threshold: float,
    n_fit: int,
) -> None:
    labels = data.labels
    result.thresholds[model].append(threshold)
    result.oof_scores[model][fold.repeat, test] = scores
    for subset in SUBSETS:
        mask = np.ones(test.size, bool) if subset == "all" else data.dynamic_protocol[test] == 0
        row = _fold_row(fold, model, subset, threshold, n_fit)
        row.update({"n": int(mask.sum()), "n_sick": int(labels[test][mask].sum())})
        row.update(binary_metrics(labels[test][mask], scores[mask], threshold))
        result.fold_rows.append(row)


def _ensemble_row(
    data: ThermogramSet,
    test: npt.NDArray[np.int64],
    scored: Scored,
    rule: EnsembleRule,
    single: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """The ensemble's session verdicts, calibration and marker shortcut on one outer fold's test patients."""
    labels = data.labels[test]
    p_sessions, spread_sessions = ensemble_probability(scored.test_sessions, rule.platt)
    sessions = judge_sessions(p_sessions, spread_sessions, rule.threshold, rule.band)
    p_frames, spread_frames = ensemble_probability(scored.test_logits, rule.platt)
    p_marker, _ = ensemble_probability(scored.test_marker, rule.platt)
    single_marker = stable_sigmoid(scored.test_marker[0])
    near = np.asarray([rule.band.low <= s.probability <= rule.band.high for s in sessions])
    apart = np.asarray([s.member_spread is not None and s.member_spread > MAX_MEMBER_SPREAD for s in sessions])
    p0 = data.dynamic_protocol[test] == 0
    row: dict[str, Any] = {f"session_{k}": v for k, v in session_metrics(labels, sessions).items()}
    p0_sessions = [s for s, keep in zip(sessions, p0, strict=True) if keep]
    row.update({f"session_{k}_protocol0": v for k, v in session_metrics(labels[p0], p0_sessions).items()})
    row.update(
        {
            "session_threshold": rule.threshold,
            "band_low": rule.band.low,
            "band_high": rule.band.high,
            "share_near_threshold": float(near.mean()),
            "share_members_disagree": float(apart.mean()),
            "platt_slope": rule.platt.slope,
            "platt_intercept": rule.platt.intercept,
            "platt_identity_fallback": float(rule.platt.identity_fallback),
            "ece": expected_calibration_error(p_frames, labels),
            "ece_sessions": expected_calibration_error([s.probability for s in sessions], labels),
            "mean_member_spread": float(spread_frames.mean()),
            "marker_shift_ensemble": float(np.mean(p_marker - p_frames)),
            "marker_shift_single": float(np.mean(single_marker - single)),
            "marker_auc_ensemble": roc_auc(labels, p_marker),
            "marker_auc_single": roc_auc(labels, single_marker),
        }
    )
    return row


def run_cross_validation(data: ThermogramSet, settings: CvSettings, train_cnn: CnnTrainer, eval_seed: int) -> CvResult:
    """Score every model on every outer fold; `train_cnn` fits a CNN and returns its logits for each scored set."""
    started = time.monotonic()
    labels = data.labels
    inputs = _inputs(data, settings, eval_seed)
    patients, strata = patient_strata(data.patient_id, data.strata)
    result = CvResult(settings)
    result.oof_scores = {m: np.full((settings.repeats, data.n), np.nan) for m in MODELS}
    result.thresholds = {m: [] for m in MODELS}
    result.session_scores = np.full((settings.repeats, data.n), np.nan)
    result.session_inconclusive = np.zeros((settings.repeats, data.n), bool)
    total = settings.folds * settings.repeats
    for number, fold in enumerate(repeated_stratified_folds(strata, settings.folds, settings.repeats, settings.seed)):
        train = frames_of(data.patient_id, patients[fold.train])
        test = frames_of(data.patient_id, patients[fold.test])
        tag = f"cv {number + 1}/{total} r{fold.repeat + 1}f{fold.fold + 1}"
        print(f"[{tag}] outer train {train.size}, test {test.size} frames", file=sys.stderr, flush=True)
        scored, splits = _score_outer_fold(
            data, inputs, settings, train_cnn, train=train, test=test, number=number, tag=tag
        )
        rule = choose_rule(scored.val_logits, scored.val_sessions, labels[train], settings.sensitivity_target)
        p_test, _ = ensemble_probability(scored.test_logits, rule.platt)
        _record(result, data, fold, test, model="ensemble", scores=p_test, threshold=rule.threshold, n_fit=train.size)
        fit1, val1 = splits[0]
        position = {int(f): i for i, f in enumerate(train)}
        single_val = stable_sigmoid(scored.val_logits[[position[int(f)] for f in val1]])
        single = stable_sigmoid(scored.test_logits[0])
        single_threshold = threshold_for_sensitivity(labels[val1], single_val, settings.sensitivity_target)
        _record(result, data, fold, test, model="cnn", scores=single, threshold=single_threshold, n_fit=fit1.size)
        for name, feats in inputs.features.items():
            val_scores, test_scores = _baseline_scores(feats, labels, fit1, [val1, test])
            threshold = threshold_for_sensitivity(labels[val1], val_scores, settings.sensitivity_target)
            _record(result, data, fold, test, model=name, scores=test_scores, threshold=threshold, n_fit=fit1.size)
        row = _ensemble_row(data, test, scored, rule, single)
        result.ensemble_rows.append({"repeat": fold.repeat, "fold": fold.fold, **row})
        p_s, spread_s = ensemble_probability(scored.test_sessions, rule.platt)
        judged = judge_sessions(p_s, spread_s, rule.threshold, rule.band)
        result.session_scores[fold.repeat, test] = [s.probability for s in judged]
        result.session_inconclusive[fold.repeat, test] = [s.inconclusive for s in judged]
        print(
            f"[{tag}] test AUC ensemble {roc_auc(labels[test], p_test):.3f}, "
            f"single {roc_auc(labels[test], single):.3f}, session AUC {row['session_auc']:.3f}, "
            f"inconclusive {row['session_inconclusive_share']:.2f}",
            file=sys.stderr,
            flush=True,
        )
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


def compare_to_baselines(result: CvResult, alpha: float = 0.05, primary: str = PRIMARY) -> dict[str, Any]:
    """Per other model and subset: fold AUC differences (primary - other), folds the primary wins, a
    corrected resampled t-test, and a plain verdict: "beats" only when it leads and the test says so."""
    out: dict[str, Any] = {}
    for baseline in (m for m in MODELS if m != primary):
        for subset in SUBSETS:
            cnn = [r for r in result.fold_rows if r["model"] == primary and r["subset"] == subset]
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


def _pooled_session_auc(result: CvResult, data: ThermogramSet, mask: npt.NDArray[np.bool_]) -> list[float]:
    return [roc_auc(data.labels[mask], result.session_scores[r][mask]) for r in range(result.settings.repeats)]


def _stat(values: list[float]) -> dict[str, Any]:
    return {k: (_clean(v) if isinstance(v, float) else v) for k, v in summarize(values).items()}


def summarize_ensemble(result: CvResult, data: ThermogramSet) -> dict[str, Any]:
    """The ensemble's session-level, calibration, inconclusive and marker-shortcut figures over the outer folds."""
    rows = result.ensemble_rows
    keys = [k for k in rows[0] if k not in {"repeat", "fold"}] if rows else []
    per_fold = {k: _stat([float(r[k]) for r in rows if not math.isnan(float(r[k]))]) for k in keys}
    everyone = np.ones(data.n, bool)
    p0 = data.dynamic_protocol == 0
    pooled_ece = [
        expected_calibration_error(result.oof_scores[PRIMARY][r], data.labels) for r in range(result.settings.repeats)
    ]
    pooled_ece_p0 = [
        expected_calibration_error(result.oof_scores[PRIMARY][r][p0], data.labels[p0])
        for r in range(result.settings.repeats)
    ]
    return {
        "per_fold": per_fold,
        "pooled_session_auc": _stat(_pooled_session_auc(result, data, everyone)),
        "pooled_session_auc_protocol0": _stat(_pooled_session_auc(result, data, p0)),
        "pooled_ece": _stat(pooled_ece),
        "pooled_ece_protocol0": _stat(pooled_ece_p0),
        "pooled_inconclusive_share": _stat(
            [float(result.session_inconclusive[r].mean()) for r in range(len(pooled_ece))]
        ),
    }
