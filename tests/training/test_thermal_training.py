"""Thermal training end to end on synthetic data: CV report, export, LiteRT reload, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.model.manifest import load_manifest
from contract.model.preprocessing import preprocess
from tests.training.conftest import TrainedThermal
from training.cross_validation import MODELS, PRIMARY, SUBSETS
from training.litert_runner import TfliteModel
from training.metrics import METRIC_NAMES
from training.thermal_data import device_frames, load_thermograms


def test_manifest_validates_and_describes_the_model(trained_thermal: TrainedThermal) -> None:
    manifest = load_manifest(trained_thermal.model_dir, verify=True)
    assert manifest.task == "thermal_screening"
    assert manifest.input_shape == [24, 32, 1]
    assert manifest.labels == ["healthy", "sick"]
    assert manifest.preprocessing.kind == "frame_standardize"
    assert set(manifest.files) == {"float32", "int8"}
    assert 0.0 <= manifest.threshold <= 1.0 and "sensitivity >= 0.90" in manifest.threshold_rule
    assert manifest.provenance["data_file"] == "synthetic.npz" and len(manifest.provenance["data_sha256"]) == 64
    assert manifest.metrics["cross_validation"]["all"]["auc"]["n"] == 2
    assert manifest.metrics["export"]["int8_agreement"] >= 0.9


def test_int8_model_is_full_integer(trained_thermal: TrainedThermal) -> None:
    int8 = TfliteModel(trained_thermal.model_dir / "model_int8.tflite")
    assert int8.input["dtype"] == np.int8 and int8.output["dtype"] == np.int8
    scale, _ = int8.input["quantization"]
    assert scale > 0


def test_litert_float_and_int8_agree_on_emulated_frames(trained_thermal: TrainedThermal, synthetic_npz: Path) -> None:
    manifest = load_manifest(trained_thermal.model_dir)
    data = load_thermograms(synthetic_npz)
    x = preprocess(device_frames(data.frames_c, 11), manifest.preprocessing)
    z_float = TfliteModel(trained_thermal.model_dir / "model.tflite").predict(x)
    z_int8 = TfliteModel(trained_thermal.model_dir / "model_int8.tflite").predict(x)
    assert z_float.shape == (30, 3)  # one logit per member
    assert np.max(np.abs(z_float - z_int8)) < 0.5


def test_report_holds_every_metric_for_every_model_and_subset(trained_thermal: TrainedThermal) -> None:
    report = json.loads((trained_thermal.report_dir / "model_report.json").read_text())
    for model in MODELS:
        for subset in SUBSETS:
            for metric in (*METRIC_NAMES, "pooled_auc"):
                stat = report["cross_validation"][model][subset][metric]
                assert set(stat) == {"mean", "std", "min", "max", "n"}
    assert set(report["comparison"]) == {f"{b}/{s}" for b in MODELS if b != PRIMARY for s in SUBSETS}
    assert report["export"]["keras_vs_float_tflite_max_abs_logit_diff"] < 1e-4
    markdown = (trained_thermal.report_dir / "model_report.md").read_text()
    assert "not a diagnosis" in markdown and "| LR 6 stats |" in markdown and "beat" in markdown
    for name in ("roc.png", "reliability.png"):
        assert (trained_thermal.report_dir / name).read_bytes().startswith(b"\x89PNG")
    assert "![Reliability diagram](reliability.png)" in markdown and "equal-width bins" in markdown


@pytest.mark.slow
def test_keras_and_litert_predictions_match(tmp_path: Path, synthetic_npz: Path) -> None:
    """An independently trained model, exported and reloaded through LiteRT, predicts what Keras predicts."""
    from training.export import export_tflite
    from training.tf_setup import import_tensorflow

    import_tensorflow(2, seed=4)
    from training.thermal_model import ThermalTrainingConfig, model_input, train_thermal_cnn

    data = load_thermograms(synthetic_npz)
    model = train_thermal_cnn(data.frames_c, data.labels, ThermalTrainingConfig(epochs=1), seed=4, progress=False)
    x = model_input(device_frames(data.frames_c, 2))
    files = export_tflite(model, tmp_path, x[:20])
    keras_p = np.asarray(model.predict(x, verbose=0)).ravel()
    lite_p = TfliteModel(files["float32"]).predict(x).ravel()
    int8_p = TfliteModel(files["int8"]).predict(x).ravel()
    assert lite_p == pytest.approx(keras_p, abs=1e-5)
    assert int8_p == pytest.approx(keras_p, abs=0.08)


def test_training_refuses_a_set_without_both_classes(tmp_path: Path) -> None:
    from sensor_node.synthetic_scene import synthetic_thermograms
    from training.thermal_pipeline import ThermalRunOptions, run_thermal_training

    arrays = synthetic_thermograms(12, height=48, width=64, seed=0)
    arrays["label"][:] = 0
    np.savez(tmp_path / "one_class.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need at least 2 healthy and 2 sick frames"):
        run_thermal_training(ThermalRunOptions(data=tmp_path / "one_class.npz", out=tmp_path / "m", progress=False))
    assert not (tmp_path / "m").exists()
