"""`thermoscreen train thermal`: cross-validate, train on all data, export, write manifest and report."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.model.manifest import Calibration, Ensemble, EnsembleMember, InconclusiveRule, Preprocessing
from contract.sensor import MLX_COLS, MLX_ROWS
from training.calibration import ECE_BINS
from training.cross_validation import (
    MODELS,
    PRIMARY,
    SUBSETS,
    CvResult,
    CvSettings,
    EnsembleRule,
    choose_rule,
    compare_to_baselines,
    run_cross_validation,
    summarize_cv,
    summarize_ensemble,
)
from training.folds import frames_of, patient_strata, repeated_stratified_folds
from training.litert_runner import TfliteModel
from training.metrics import METRIC_NAMES, binary_metrics, summarize
from training.sessions import BAND_SHARE, MAX_MEMBER_SPREAD, SESSION_FRAMES, SESSION_SHIFT_PX, session_readings
from training.thermal_data import FloatArray, ThermogramSet, augmented_device_frames, device_frames, load_thermograms

LABELS = ["healthy", "sick"]
#: Readings per frame (independent noise and device offset) for the int8-vs-float agreement.
AGREEMENT_READINGS = 5


@dataclass
class ThermalRunOptions:
    data: Path
    out: Path
    report_dir: Path | None = None
    epochs: int = 60
    folds: int = 5
    repeats: int = 2
    members: int = 5
    seed: int = 0
    cross_validate: bool = True
    sensitivity_target: float = 0.9
    threads: int = 2
    version: str | None = None
    command: str = ""
    progress: bool = True


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _check_trainable(data: ThermogramSet, opts: ThermalRunOptions) -> None:
    counts = np.bincount(data.labels, minlength=2)
    if counts.min() < 2:
        raise ValueError(f"{opts.data}: need at least 2 healthy and 2 sick frames, got {counts[0]} and {counts[1]}")
    if opts.cross_validate:
        patients = np.unique(data.patient_id).size
        if patients < 2 * opts.folds:
            raise ValueError(f"{opts.data}: {patients} patients are too few for {opts.folds}-fold cross-validation")
        if counts.min() < opts.folds:
            raise ValueError(f"{opts.data}: fewer frames of one class ({counts.min()}) than folds ({opts.folds})")
        inner = patients - -(-patients // opts.folds)
        if inner < 2 * opts.members or counts.min() * (opts.folds - 1) // opts.folds < opts.members:
            raise ValueError(
                f"{opts.data}: {patients} patients are too few for {opts.members} members inside {opts.folds}-fold CV"
            )
    if np.unique(data.patient_id).size < 2 * opts.members or counts.min() < opts.members:
        raise ValueError(f"{opts.data}: too few patients of each class for {opts.members} ensemble members")


def _at_threshold(cv: CvResult, data: ThermogramSet, threshold: float) -> dict[str, dict[str, float | None]]:
    """The CV ensembles' out-of-fold scores, all at the one shipped threshold: mean over repeats per subset.

    Shows what a single fixed threshold does across re-trained ensembles (their calibrations differ).
    """
    out: dict[str, dict[str, float | None]] = {}
    for subset in SUBSETS:
        mask = np.ones(data.n, bool) if subset == "all" else data.dynamic_protocol == 0
        per_repeat = [binary_metrics(data.labels[mask], scores[mask], threshold) for scores in cv.oof_scores[PRIMARY]]
        out[subset] = {name: summarize([m[name] for m in per_repeat])["mean"] for name in METRIC_NAMES if name != "auc"}
    return {s: {k: (None if v is None else round(v, 4)) for k, v in m.items()} for s, m in out.items()}


@dataclass
class FinalEnsemble:
    """The shipped members (trained on all patients but one inner fold each) and what their OOF predictions chose."""

    members: list[Any]
    descriptions: list[EnsembleMember]
    rule: EnsembleRule
    oof_logits: npt.NDArray[np.float64]


def _train_final_members(data: ThermogramSet, opts: ThermalRunOptions, config: Any, eval_seed: int) -> FinalEnsemble:
    """K members on the K folds of all patients; calibration, threshold and band from their out-of-fold predictions."""
    from training.ensemble import member_logits
    from training.thermal_model import train_thermal_cnn

    patients, strata = patient_strata(data.patient_id, data.strata)
    frames = device_frames(data.frames_c, eval_seed)
    sessions = session_readings(data.frames_c, SESSION_FRAMES, eval_seed + 1)
    oof = np.full(data.n, np.nan)
    oof_sessions = np.full((data.n, SESSION_FRAMES), np.nan)
    members, descriptions = [], []
    for k, fold in enumerate(repeated_stratified_folds(strata, opts.members, 1, opts.seed + 500)):
        fit = frames_of(data.patient_id, patients[fold.train])
        val = frames_of(data.patient_id, patients[fold.test])
        seed = opts.seed * 1000 + 900 + k
        model = train_thermal_cnn(
            data.frames_c[fit], data.labels[fit], config, seed=seed, label=f"member {k + 1}", progress=opts.progress
        )
        oof[val] = member_logits(model, frames[val])
        oof_sessions[val] = member_logits(model, sessions[val].reshape(-1, MLX_ROWS, MLX_COLS)).reshape(val.size, -1)
        members.append(model)
        descriptions.append(
            EnsembleMember(
                name=f"member{k + 1}",
                seed=seed,
                trained_on=f"{fit.size} frames: all patients but inner fold {k + 1} of {opts.members} ({val.size})",
            )
        )
    rule = choose_rule(oof, oof_sessions, data.labels, opts.sensitivity_target)
    return FinalEnsemble(members, descriptions, rule, oof)


def _export_check(
    files: dict[Any, Path], out: Path, keras_model: Any, data: ThermogramSet, eval_seed: int
) -> dict[str, Any]:
    """Keras vs float .tflite (member logits), and int8 vs float verdicts through the node's own ModelRunner."""
    from contract.model.model_runner import ModelRunner
    from training.thermal_model import model_input

    x = model_input(device_frames(data.frames_c, eval_seed))
    keras_logits = np.asarray(keras_model.predict(x, verbose=0, batch_size=256), dtype=np.float64)
    float_logits = TfliteModel(files["float32"]).predict(x)
    readings = np.concatenate([device_frames(data.frames_c, eval_seed + k) for k in range(AGREEMENT_READINGS)])
    float_runner = ModelRunner.load(out, variant="float32")
    int8_runner = ModelRunner.load(out, variant="int8")
    p_float, spread_float = float_runner.predict_celsius_with_spread(readings)
    p_int8, _ = int8_runner.predict_celsius_with_spread(readings)
    threshold = float_runner.threshold
    return {
        "keras_vs_float_tflite_max_abs_logit_diff": float(f"{np.max(np.abs(keras_logits - float_logits)):.3g}"),
        "int8_agreement": round(float(np.mean((p_float >= threshold) == (p_int8 >= threshold))), 4),
        "int8_max_abs_diff": round(float(np.max(np.abs(p_float - p_int8))), 4),
        "int8_mean_abs_diff": round(float(np.mean(np.abs(p_float - p_int8))), 4),
        "agreement_readings": int(p_float.size),
        "mean_member_spread_training_frames": round(float(np.mean(spread_float if spread_float is not None else 0)), 4),
        "float_bytes": files["float32"].stat().st_size,
        "int8_bytes": files["int8"].stat().st_size,
    }


def run_thermal_training(opts: ThermalRunOptions) -> dict[str, Any]:
    """The whole run; returns the report (also written as JSON/Markdown/PNG when `report_dir` is set)."""
    from training.tf_setup import import_tensorflow

    started = dt.datetime.now(dt.UTC)
    if opts.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {opts.epochs}")
    if opts.members < 2:
        raise ValueError(f"--members must be at least 2, got {opts.members}")
    data = load_thermograms(opts.data)  # bad input fails here, before the slow TensorFlow import
    _check_trainable(data, opts)
    tf = import_tensorflow(opts.threads, opts.seed)
    import keras

    from training.ensemble import ensemble_model, member_logits
    from training.export import export_tflite, write_manifest
    from training.thermal_model import MIN_STD_C, ThermalTrainingConfig, model_input, train_thermal_cnn

    config = ThermalTrainingConfig(epochs=opts.epochs)
    eval_seed = opts.seed + 7919
    print(
        f"thermal: {data.n} frames ({int(data.labels.sum())} sick, "
        f"{int((data.dynamic_protocol == 0).sum())} protocol-0) from {data.source_name}",
        file=sys.stderr,
        flush=True,
    )

    def train_and_score(
        frames: FloatArray, labels: npt.NDArray[np.uint8], scored: list[FloatArray], number: int, tag: str
    ) -> list[npt.NDArray[np.float64]]:
        model = train_thermal_cnn(
            frames, labels, config, seed=opts.seed * 1000 + number + 1, label=tag, progress=opts.progress
        )
        out = [member_logits(model, s) for s in scored]
        keras.backend.clear_session()
        return out

    cv: CvResult | None = None
    report: dict[str, Any] = {}
    if opts.cross_validate:
        settings = CvSettings(opts.folds, opts.repeats, opts.seed, opts.sensitivity_target, opts.members)
        cv = run_cross_validation(data, settings, train_and_score, eval_seed)
        report["cross_validation"] = summarize_cv(cv, data)
        report["comparison"] = compare_to_baselines(cv)
        report["ensemble"] = summarize_ensemble(cv, data)
        report["cv_seconds"] = round(cv.seconds, 1)

    keras.backend.clear_session()
    final = _train_final_members(data, opts, config, eval_seed)
    threshold = final.rule.threshold
    rule = (
        f"highest threshold reaching sensitivity >= {opts.sensitivity_target:.2f} on {SESSION_FRAMES}-frame replayed "
        f"sessions of all patients, each scored by the one member that did not see it (calibrated, mean-logit rule)"
    )
    if cv is None:
        rule += "; no cross-validation in this run, so no held-out metrics"
    rng = np.random.default_rng(opts.seed + 17)
    representative = model_input(
        np.concatenate([augmented_device_frames(data.frames_c, rng) for _ in range(max(1, -(-200 // data.n)))])
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    combined = ensemble_model(final.members)
    files = export_tflite(combined, opts.out, representative)
    calibration = Calibration(
        slope=round(final.rule.platt.slope, 6),
        intercept=round(final.rule.platt.intercept, 6),
        fitted_on=(
            "IDENTITY: the out-of-fold logits did not rank, no monotone calibration exists"
            if final.rule.platt.identity_fallback
            else f"out-of-fold member logits of all {data.n} frames (each scored by the member that did not see it)"
        ),
    )
    inconclusive = InconclusiveRule(
        band_low=round(final.rule.band.low, 6),
        band_high=round(final.rule.band.high, 6),
        max_member_spread=MAX_MEMBER_SPREAD,
        rule=f"session probability within the {BAND_SHARE:.0%} of out-of-fold sessions nearest the threshold "
        f"(symmetric in logit), or member logit spread > {MAX_MEMBER_SPREAD}",
    )
    provenance: dict[str, Any] = {
        "data_file": data.source_name,
        "data_sha256": data.source_sha256,
        "frames": data.n,
        "patients": int(np.unique(data.patient_id).size),
        "sick": int(data.labels.sum()),
        "healthy": int(data.n - data.labels.sum()),
        "protocol0": int((data.dynamic_protocol == 0).sum()),
        "dynamic_all_sick": bool(np.all(data.labels[data.dynamic_protocol == 1] == 1)),
        "source_resolution": list(data.source_shape),
        "emulation": "contract.sensor.emulate_mlx_frame (24x32 block average, 0.1 K noise at 2 Hz, "
        "+-1 C device offset)",
        "augmentation": "per epoch: shift +-1 sensor px in half-px steps, left-right mirror, a cold "
        "marker-like square pasted at the bottom centre of 60% of frames of both classes (the DMR-IR "
        "capture marker is a label shortcut), refresh 1/2/4 Hz noise, "
        "device offset",
        "training": {
            **asdict(config),
            "seed": opts.seed,
            "class_weights": "balanced",
            "trained_on": f"{opts.members} members, each on all patients but one of {opts.members} stratified folds",
        },
        "session_replay": f"{SESSION_FRAMES} frames per thermogram, one device offset per session, 2 Hz noise, "
        f"shifts up to {SESSION_SHIFT_PX} intermediate px",
        "command": opts.command,
        "git_commit": _git_commit(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    version = opts.version or f"thermal-{started:%Y%m%d}-{data.source_sha256[:8]}"

    def manifest_with(metrics: dict[str, Any]) -> None:
        write_manifest(
            opts.out,
            files,
            task="thermal_screening",
            version=version,
            input_shape=[MLX_ROWS, MLX_COLS, 1],
            preprocessing=Preprocessing(kind="frame_standardize", min_std_c=MIN_STD_C),
            labels=LABELS,
            threshold=threshold,
            threshold_rule=rule,
            provenance=provenance,
            metrics=metrics,
            ensemble=Ensemble(members=final.descriptions),
            calibration=calibration,
            inconclusive=inconclusive,
        )

    manifest_with({})
    export_check = _export_check(files, opts.out, combined, data, eval_seed)
    metrics: dict[str, Any] = {"export": export_check}
    if cv is not None:
        report["cv_at_shipped_threshold"] = _at_threshold(cv, data, threshold)
        metrics["cross_validation"] = _manifest_cv_metrics(report, opts)
    manifest_with(metrics)
    resubstitution = binary_metrics(data.labels, final.rule.platt.apply(final.oof_logits), threshold)

    report.update(
        {
            "model_version": version,
            "created": started.replace(microsecond=0).isoformat(),
            "settings": {
                "epochs": opts.epochs,
                "folds": opts.folds,
                "repeats": opts.repeats,
                "members": opts.members,
                "seed": opts.seed,
                "sensitivity_target": opts.sensitivity_target,
                "session_frames": SESSION_FRAMES,
                "band_share": BAND_SHARE,
                "max_member_spread": MAX_MEMBER_SPREAD,
                "cross_validated": opts.cross_validate,
            },
            "models": MODELS,
            "subsets": SUBSETS,
            "threshold": round(threshold, 6),
            "threshold_rule": rule,
            "calibration": calibration.model_dump(),
            "inconclusive": inconclusive.model_dump(),
            "export": export_check,
            "final_members_out_of_fold": {k: round(v, 4) for k, v in resubstitution.items()},
            "provenance": provenance,
        }
    )
    if opts.report_dir is not None:
        from training.report import write_thermal_report

        write_thermal_report(report, cv, data, opts.report_dir)
    return report


def _manifest_cv_metrics(report: dict[str, Any], opts: ThermalRunOptions) -> dict[str, Any]:
    """The cross-validation figures the manifest carries: ensemble and single CNN per subset, sessions, ECE."""
    summary = report["cross_validation"]
    ens = report["ensemble"]
    return {
        "design": f"nested: {opts.repeats}x repeated stratified {opts.folds}-fold CV by patient (outer), "
        f"{opts.members} inner folds per outer training set (the members)",
        "sensitivity_target": opts.sensitivity_target,
        **{
            subset: {name: summary[PRIMARY][subset][name] for name in (*METRIC_NAMES, "pooled_auc")}
            for subset in SUBSETS
        },
        "single_cnn": {
            s: {"auc": summary["cnn"][s]["auc"], "pooled_auc": summary["cnn"][s]["pooled_auc"]} for s in SUBSETS
        },
        "sessions": {
            key: ens["per_fold"][key]
            for key in ens["per_fold"]
            if key.startswith("session_") or key.startswith("share_")
        },
        "pooled_session_auc": ens["pooled_session_auc"],
        "pooled_ece": ens["pooled_ece"],
        "ece_binning": f"{ECE_BINS} equal-width probability bins",
        "pooled_inconclusive_share": ens["pooled_inconclusive_share"],
        "ensemble_vs_others": {key: value["verdict"] for key, value in report["comparison"].items()},
        "baselines": {
            m: {s: {"auc": summary[m][s]["auc"]} for s in SUBSETS} for m in MODELS if m not in {"cnn", PRIMARY}
        },
    }
