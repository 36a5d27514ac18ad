"""`thermoscreen train` and `thermoscreen evaluate` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.training.conftest import TrainedThermal
from tests.training.litert_reference import REFERENCE_ATOL, reference_probabilities

REQUIRED_KEYS = {
    "auc",
    "auc_protocol0",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "balanced_accuracy",
    "n",
    "int8_agreement",
    "ece",
    "inconclusive_share",
    "session_auc",
    "session_sensitivity",
    "session_specificity",
    "session_auc_protocol0",
}


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def pairwise_auc(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.float64]) -> float:
    """AUC as the Mann-Whitney probability that a sick frame outscores a healthy one (ties count half).

    Written out here, independently of `training.metrics.roc_auc` (no sklearn in this venv).
    """
    sick, healthy = scores[labels == 1], scores[labels == 0]
    wins = (sick[:, None] > healthy[None, :]).sum() + 0.5 * (sick[:, None] == healthy[None, :]).sum()
    return float(wins / (sick.size * healthy.size))


def test_evaluate_prints_one_json_object_without_tensorflow(
    trained_thermal: TrainedThermal, synthetic_npz: Path
) -> None:
    from contract.model.manifest import load_manifest
    from contract.model.model_runner import ModelRunner
    from training.thermal_data import device_frames, load_thermograms

    out = run_cli("evaluate", "--model", str(trained_thermal.model_dir), "--data", str(synthetic_npz), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # exactly one object: json.loads rejects trailing data
    assert set(result) >= REQUIRED_KEYS
    assert result["n"] == 30 and result["auc_protocol0"] == result["auc"]  # synthetic frames are all protocol 0
    # The same readings (seed 0) scored here by the node's runner must give the JSON's figures.
    manifest = load_manifest(trained_thermal.model_dir)
    data = load_thermograms(synthetic_npz)
    readings = device_frames(data.frames_c, result["seed"])
    p = {v: ModelRunner.load(trained_thermal.model_dir, variant=v).predict_celsius(readings) for v in manifest.files}
    # The int8 figures must not come only from the runner under test: score both files independently too.
    reference = {v: reference_probabilities(trained_thermal.model_dir, v, readings) for v in manifest.files}
    for variant, scores in p.items():
        assert np.allclose(scores, reference[variant], rtol=0.0, atol=REFERENCE_ATOL), variant
    int8_diff = float(np.max(np.abs(reference["float32"] - reference["int8"])))
    assert result["int8_max_abs_diff"] == round(int8_diff, 4)
    verdicts = {v: scores >= manifest.threshold for v, scores in reference.items()}
    agreement = float(np.mean(verdicts["float32"] == verdicts["int8"]))
    assert result["int8_agreement"] == round(agreement, 4)
    assert result["auc"] == round(pairwise_auc(data.labels, p[manifest.default_variant]), 4)
    assert result["auc_int8"] == round(pairwise_auc(data.labels, p["int8"]), 4)
    positives = verdicts[manifest.default_variant]
    assert result["recall"] == round(float(positives[data.labels == 1].mean()), 4)
    assert result["specificity"] == round(float((~positives[data.labels == 0]).mean()), 4)
    assert result["accuracy"] == round(float(np.mean(positives == (data.labels == 1))), 4)
    from training.calibration import expected_calibration_error

    assert result["ece"] == round(expected_calibration_error(p[manifest.default_variant], data.labels), 4)
    assert 0.0 <= result["inconclusive_share"] <= 1.0 and result["members"] == 3
    probe = (
        "import sys; from training.evaluation import evaluate_thermal_model; "
        f"evaluate_thermal_model({str(trained_thermal.model_dir)!r}, {str(synthetic_npz)!r}); "
        "print('tensorflow' in sys.modules)"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert imported.stdout.strip() == "False"  # LiteRT, not Keras


def test_evaluate_protocol0_auc_is_null_without_both_classes(trained_thermal: TrainedThermal, tmp_path: Path) -> None:
    from sensor_node.synthetic_scene import synthetic_thermograms

    arrays = synthetic_thermograms(10, height=48, width=64, seed=9)
    arrays["dynamic_protocol"] = (arrays["label"] == 1).astype(np.uint8)  # every sick frame is dynamic
    np.savez(tmp_path / "confounded.npz", **arrays)  # type: ignore[arg-type]
    out = run_cli(
        "evaluate", "--model", str(trained_thermal.model_dir), "--data", str(tmp_path / "confounded.npz"), "--json"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["auc_protocol0"] is None and result["n"] == 10


@pytest.mark.slow
def test_train_thermal_cli_shows_progress_and_writes_a_loadable_model(synthetic_npz: Path, tmp_path: Path) -> None:
    out = run_cli(
        "train",
        "thermal",
        "--data",
        str(synthetic_npz),
        "--out",
        str(tmp_path / "m"),
        "--no-cv",
        "--epochs",
        "2",
        "--seed",
        "3",
    )
    assert out.returncode == 0, out.stderr
    assert "[member 1] epoch 1/2" in out.stderr and "[member 5] epoch 2/2" in out.stderr  # the 5 final members
    assert out.stdout == ""
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "model.tflite",
        "model_int8.tflite",
        "manifest.json",
        "model_report.md",
        "model_report.json",
    }
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert "no cross-validation" in manifest["threshold_rule"]
    assert manifest["provenance"]["command"].startswith("thermoscreen train thermal --data")


def test_bad_paths_and_shapes_give_one_line_errors(trained_thermal: TrainedThermal, tmp_path: Path) -> None:
    flat = tmp_path / "flat.npz"
    np.savez(flat, temperature_centi_c=np.zeros((4, 10, 10), np.uint16), label=np.zeros(4, np.uint8))
    cases = [
        (("evaluate", "--model", str(tmp_path / "nomodel"), "--data", str(flat), "--json"), "no such model directory"),
        (("evaluate", "--model", str(trained_thermal.model_dir), "--data", str(tmp_path / "x.npz")), "no such"),
        (("evaluate", "--model", str(trained_thermal.model_dir), "--data", str(flat)), "smaller than the sensor"),
        (("evaluate", "--model", str(tmp_path), "--data", str(flat)), "no manifest.json"),
        (("train", "thermal", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o")), "no such"),
        (("train", "thermal", "--data", str(flat), "--out", str(tmp_path / "o"), "--no-cv"), "smaller than the sensor"),
        (("train", "idc", "--data", str(tmp_path / "nodir"), "--out", str(tmp_path / "o")), "no such IDC data"),
    ]
    for args, needle in cases:
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = [line for line in out.stderr.splitlines() if line.startswith("thermoscreen ")]
        assert len(lines) == 1 and needle in lines[0] and ": error: " in lines[0], out.stderr
        assert out.stdout == ""
