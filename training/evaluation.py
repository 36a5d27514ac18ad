"""Evaluate a shipped thermal model directory on a thermogram `.npz` exactly as the inference node runs it.

The frames go through the same emulation as training; each variant (float32 and int8) is
loaded and scored by the inference node's own `ModelRunner` (manifest and sha256 checks,
preprocessing, int8 quantisation, ensemble combination and calibration, LiteRT), and the
verdicts use the manifest's threshold. Per-frame figures (AUC, ECE) come from one reading
per thermogram; session figures from replayed sessions judged by the contract's session
rule with the manifest's inconclusive rule. No TensorFlow is imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.model.manifest import Manifest, load_manifest
from contract.sensor import MLX_COLS, MLX_ROWS
from training.calibration import ECE_BINS, expected_calibration_error
from training.metrics import binary_metrics, roc_auc
from training.sessions import SESSION_FRAMES, Band, judge_sessions, session_metrics, session_readings
from training.thermal_data import FloatArray, ThermogramSet, device_frames, load_thermograms

THERMAL_INPUT_SHAPE = [MLX_ROWS, MLX_COLS, 1]


def load_thermal_manifest(model_dir: str | Path) -> Manifest:
    """The verified manifest of a thermal screening model directory."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model directory")
    manifest = load_manifest(directory, verify=True)
    if manifest.task != "thermal_screening":
        raise ValueError(f"{directory}: model task is {manifest.task}, expected thermal_screening")
    if manifest.input_shape != THERMAL_INPUT_SHAPE:
        raise ValueError(f"{directory}: model input shape {manifest.input_shape}, expected {THERMAL_INPUT_SHAPE}")
    return manifest


def tflite_probabilities(
    model_dir: Path, manifest: Manifest, frames_c: FloatArray
) -> dict[str, npt.NDArray[np.float64]]:
    """P(labels[1]) per frame (temperatures in C) from every variant in the manifest."""
    from contract.model.model_runner import ModelRunner

    return {
        variant: ModelRunner.load(model_dir, variant=variant).predict_celsius(frames_c).astype(np.float64)
        for variant in manifest.files
    }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def session_figures(model_dir: Path, manifest: Manifest, data: ThermogramSet, seed: int) -> dict[str, Any]:
    """Replayed sessions of every thermogram through the default variant, judged by the contract's session rule."""
    from contract.model.model_runner import ModelRunner

    readings = session_readings(data.frames_c, SESSION_FRAMES, seed + 1)
    runner = ModelRunner.load(model_dir, variant=manifest.default_variant)
    p, spread = runner.predict_celsius_with_spread(readings.reshape(-1, MLX_ROWS, MLX_COLS))
    rule = manifest.inconclusive
    band = None if rule is None else Band(rule.band_low, rule.band_high, rule.max_member_spread)
    shape = (data.n, SESSION_FRAMES)
    sessions = judge_sessions(
        p.reshape(shape), None if spread is None else spread.reshape(shape), runner.threshold, band
    )
    p0 = data.dynamic_protocol == 0
    whole = session_metrics(data.labels, sessions)
    old = session_metrics(data.labels[p0], [s for s, keep in zip(sessions, p0, strict=True) if keep])
    out = {f"session_{k}": _json_float(v) for k, v in whole.items() if k != "inconclusive_share"}
    out["inconclusive_share"] = _json_float(whole["inconclusive_share"])
    out["session_auc_protocol0"] = _json_float(old["auc"])
    out["inconclusive_share_protocol0"] = _json_float(old["inconclusive_share"])
    out["session_frames"] = SESSION_FRAMES
    out["ece_sessions"] = _json_float(expected_calibration_error([s.probability for s in sessions], data.labels))
    return out


def evaluate_thermal_model(model_dir: str | Path, data_path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Screening metrics at the manifest threshold, AUC on the whole set and on dynamic_protocol == 0."""
    directory = Path(model_dir)
    manifest = load_thermal_manifest(directory)
    data = load_thermograms(data_path)
    frames = device_frames(data.frames_c, seed)
    probabilities = tflite_probabilities(directory, manifest, frames)
    scores = probabilities[manifest.default_variant]
    labels = data.labels
    metrics = binary_metrics(labels, scores, manifest.threshold)
    p0 = data.dynamic_protocol == 0
    result: dict[str, Any] = {name: _json_float(value) for name, value in metrics.items()}
    result["auc_protocol0"] = _json_float(roc_auc(labels[p0], scores[p0]))
    result["ece"] = _json_float(expected_calibration_error(scores, labels))
    result["ece_protocol0"] = _json_float(expected_calibration_error(scores[p0], labels[p0]))
    result["ece_binning"] = f"{ECE_BINS} equal-width bins"
    result.update(session_figures(directory, manifest, data, seed))
    p0_metrics = binary_metrics(labels[p0], scores[p0], manifest.threshold) if p0.any() else {}
    result["recall_protocol0"] = _json_float(p0_metrics.get("recall", math.nan))
    result["specificity_protocol0"] = _json_float(p0_metrics.get("specificity", math.nan))
    verdicts = {v: p >= manifest.threshold for v, p in probabilities.items()}
    if "float32" in verdicts and "int8" in verdicts:
        result["int8_agreement"] = round(float(np.mean(verdicts["float32"] == verdicts["int8"])), 4)
        result["int8_max_abs_diff"] = round(float(np.max(np.abs(probabilities["float32"] - probabilities["int8"]))), 4)
        result["auc_int8"] = _json_float(roc_auc(labels, probabilities["int8"]))
    else:
        result["int8_agreement"] = None
    result.update(
        {
            "n": data.n,
            "n_sick": int(labels.sum()),
            "n_protocol0": int(p0.sum()),
            "threshold": manifest.threshold,
            "variant": manifest.default_variant,
            "model_version": manifest.version,
            "data_file": data.source_name,
            "seed": seed,
            "members": len(manifest.ensemble.members) if manifest.ensemble is not None else 1,
            "calibrated": manifest.calibration is not None,
            "note": "screening aid, not a diagnosis",
        }
    )
    return result
