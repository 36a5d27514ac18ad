"""`thermoscreen train thermal`: cross-validate, train on all data, export, write manifest and report."""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.model.manifest import Preprocessing
from contract.sensor import MLX_COLS, MLX_ROWS
from training.cross_validation import (
    MODELS,
    SUBSETS,
    CvResult,
    CvSettings,
    compare_to_baselines,
    run_cross_validation,
    summarize_cv,
)
from training.litert_runner import TfliteModel
from training.metrics import METRIC_NAMES, binary_metrics, summarize, threshold_for_sensitivity
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
    repeats: int = 3
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


def _at_threshold(cv: CvResult, data: ThermogramSet, threshold: float) -> dict[str, dict[str, float | None]]:
    """The fold models' out-of-fold scores, all at the one shipped threshold: mean over repeats per subset.

    Shows what a single fixed threshold does across re-trained models (their score scales differ).
    """
    out: dict[str, dict[str, float | None]] = {}
    for subset in SUBSETS:
        mask = np.ones(data.n, bool) if subset == "all" else data.dynamic_protocol == 0
        per_repeat = [binary_metrics(data.labels[mask], scores[mask], threshold) for scores in cv.oof_scores["cnn"]]
        out[subset] = {name: summarize([m[name] for m in per_repeat])["mean"] for name in METRIC_NAMES if name != "auc"}
    return {s: {k: (None if v is None else round(v, 4)) for k, v in m.items()} for s, m in out.items()}


def run_thermal_training(opts: ThermalRunOptions) -> dict[str, Any]:
    """The whole run; returns the report (also written as JSON/Markdown/PNG when `report_dir` is set)."""
    from training.tf_setup import import_tensorflow

    started = dt.datetime.now(dt.UTC)
    if opts.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {opts.epochs}")
    data = load_thermograms(opts.data)  # bad input fails here, before the slow TensorFlow import
    _check_trainable(data, opts)
    tf = import_tensorflow(opts.threads, opts.seed)
    import keras

    from training.export import export_tflite, write_manifest
    from training.thermal_model import (
        MIN_STD_C,
        ThermalTrainingConfig,
        model_input,
        predict_probability,
        train_thermal_cnn,
    )

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
        out = [predict_probability(model, s) for s in scored]
        keras.backend.clear_session()
        return out

    cv: CvResult | None = None
    report: dict[str, Any] = {}
    if opts.cross_validate:
        settings = CvSettings(opts.folds, opts.repeats, opts.seed, opts.sensitivity_target)
        cv = run_cross_validation(data, settings, train_and_score, eval_seed)
        report["cross_validation"] = summarize_cv(cv, data)
        report["comparison"] = compare_to_baselines(cv)
        report["cv_seconds"] = round(cv.seconds, 1)

    keras.backend.clear_session()
    model = train_thermal_cnn(data.frames_c, data.labels, config, seed=opts.seed, label="final", progress=opts.progress)
    frames = device_frames(data.frames_c, eval_seed)
    keras_scores = predict_probability(model, frames)
    if cv is not None:
        threshold = float(statistics.median(cv.thresholds["cnn"]))
        rule = (
            f"median over {len(cv.thresholds['cnn'])} cross-validation folds of the highest threshold reaching "
            f"sensitivity >= {opts.sensitivity_target:.2f} on the fold's validation patients (never its test patients)"
        )
    else:
        threshold = threshold_for_sensitivity(data.labels, keras_scores, opts.sensitivity_target)
        rule = (
            f"highest threshold reaching sensitivity >= {opts.sensitivity_target:.2f} on the training frames "
            "(no cross-validation: optimistic)"
        )

    rng = np.random.default_rng(opts.seed + 17)
    representative = model_input(
        np.concatenate([augmented_device_frames(data.frames_c, rng) for _ in range(max(1, -(-200 // data.n)))])
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    files = export_tflite(model, opts.out, representative)

    float_model, int8_model = TfliteModel(files["float32"]), TfliteModel(files["int8"])
    float_scores = float_model.predict(model_input(frames)).reshape(-1)
    readings = np.concatenate([device_frames(data.frames_c, eval_seed + k) for k in range(AGREEMENT_READINGS)])
    x_readings = model_input(readings)
    p_float = float_model.predict(x_readings).reshape(-1)
    p_int8 = int8_model.predict(x_readings).reshape(-1)
    export_check = {
        "keras_vs_float_tflite_max_abs_diff": float(f"{np.max(np.abs(keras_scores - float_scores)):.3g}"),
        "int8_agreement": round(float(np.mean((p_float >= threshold) == (p_int8 >= threshold))), 4),
        "int8_max_abs_diff": round(float(np.max(np.abs(p_float - p_int8))), 4),
        "int8_mean_abs_diff": round(float(np.mean(np.abs(p_float - p_int8))), 4),
        "agreement_readings": int(p_float.size),
        "float_bytes": files["float32"].stat().st_size,
        "int8_bytes": files["int8"].stat().st_size,
    }
    resubstitution = binary_metrics(data.labels, float_scores, threshold)
    if cv is not None:
        report["cv_at_shipped_threshold"] = _at_threshold(cv, data, threshold)

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
        "training": {**asdict(config), "seed": opts.seed, "class_weights": "balanced", "trained_on": "all frames"},
        "command": opts.command,
        "git_commit": _git_commit(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    metrics: dict[str, Any] = {"export": export_check}
    if cv is not None:
        cnn = report["cross_validation"]["cnn"]
        metrics["cross_validation"] = {
            "design": f"{opts.repeats}x repeated stratified {opts.folds}-fold CV by patient",
            "sensitivity_target": opts.sensitivity_target,
            **{subset: {name: cnn[subset][name] for name in (*METRIC_NAMES, "pooled_auc")} for subset in SUBSETS},
            "cnn_vs_baselines": {key: value["verdict"] for key, value in report["comparison"].items()},
            "baselines": {
                m: {s: {"auc": report["cross_validation"][m][s]["auc"]} for s in SUBSETS} for m in MODELS if m != "cnn"
            },
        }
    version = opts.version or f"thermal-{started:%Y%m%d}-{data.source_sha256[:8]}"
    write_manifest(
        opts.out,
        files,
        task="thermal_screening",
        version=version,
        input_shape=[MLX_ROWS, MLX_COLS, 1],
        preprocessing=Preprocessing(kind="frame_standardize", min_std_c=MIN_STD_C),
        labels=LABELS,
        threshold=round(threshold, 6),
        threshold_rule=rule,
        provenance=provenance,
        metrics=metrics,
    )

    report.update(
        {
            "model_version": version,
            "created": started.replace(microsecond=0).isoformat(),
            "settings": {
                "epochs": opts.epochs,
                "folds": opts.folds,
                "repeats": opts.repeats,
                "seed": opts.seed,
                "sensitivity_target": opts.sensitivity_target,
                "validation_fraction": CvSettings.validation_fraction,
                "cross_validated": opts.cross_validate,
            },
            "models": MODELS,
            "subsets": SUBSETS,
            "threshold": round(threshold, 6),
            "threshold_rule": rule,
            "export": export_check,
            "final_model_resubstitution": {k: round(v, 4) for k, v in resubstitution.items()},
            "provenance": provenance,
        }
    )
    if opts.report_dir is not None:
        from training.report import write_thermal_report

        write_thermal_report(report, cv, data, opts.report_dir)
    return report
