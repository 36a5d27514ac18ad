"""The shipped int8 model gives the float32 model's verdicts (README: 99.8%), scored as the node scores them.

Both files of the shipped model (`contract/model/shipped/thermal/`) go through the inference
node's own `ModelRunner` (sha256 check,
preprocessing, int8 quantisation, LiteRT). On the real DMR-IR thermograms (where `../shared` has
them) the test repeats the training pipeline's own agreement recipe and must reproduce the
manifest's figure; on synthetic emulated frames it runs everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from contract.model.manifest import load_manifest
from contract.model.model_runner import ModelRunner
from contract.model.shipped import shipped_model_dir
from sensor_node.synthetic_scene import synthetic_thermograms
from tests.training.litert_reference import REFERENCE_ATOL, reference_probabilities
from training.thermal_data import FloatArray, device_frames, load_thermograms
from training.thermal_pipeline import AGREEMENT_READINGS

SHIPPED = shipped_model_dir()
#: The lowest verdict agreement we accept for shipping the int8 file as a drop-in.
MIN_AGREEMENT = 0.99
#: The largest |p_int8 - p_float| we accept on one reading (the manifest records 0.0079).
MAX_ABS_DIFF = 0.05
#: `run_thermal_training` scores its agreement readings from seed + 7919; the shipped model used seed 0.
SHIPPED_EVAL_SEED = 0 + 7919


def both_variants(readings_c: FloatArray) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """P(sick) per reading from the shipped float32 and int8 files."""
    p_float = ModelRunner.load(SHIPPED, variant="float32").predict_celsius(readings_c)
    p_int8 = ModelRunner.load(SHIPPED, variant="int8").predict_celsius(readings_c)
    return p_float, p_int8


def verdict_agreement(p_float: npt.NDArray[np.float64], p_int8: npt.NDArray[np.float64], threshold: float) -> float:
    return float(np.mean((p_float >= threshold) == (p_int8 >= threshold)))


def test_int8_agrees_with_float_on_the_real_thermograms_as_the_manifest_says(dmr_ir_path: Path) -> None:
    manifest = load_manifest(SHIPPED, verify=True)
    recorded = manifest.metrics["export"]
    data = load_thermograms(dmr_ir_path)
    readings = np.concatenate([device_frames(data.frames_c, SHIPPED_EVAL_SEED + k) for k in range(AGREEMENT_READINGS)])
    p_float, p_int8 = both_variants(readings)
    agreement = verdict_agreement(p_float, p_int8, manifest.threshold)
    assert p_float.size == recorded["agreement_readings"]
    assert agreement >= MIN_AGREEMENT
    assert round(agreement, 4) == recorded["int8_agreement"]
    assert round(float(np.max(np.abs(p_float - p_int8))), 4) == recorded["int8_max_abs_diff"]


def test_int8_agrees_with_float_on_synthetic_emulated_frames() -> None:
    manifest = load_manifest(SHIPPED)
    arrays = synthetic_thermograms(64, height=48, width=64, seed=5)
    frames_c = arrays["temperature_centi_c"].astype(np.float32) / 100.0
    readings = np.concatenate([device_frames(frames_c, 11 + k) for k in range(4)])
    p_float, p_int8 = both_variants(readings)
    # The node's runner, against both files scored without it (its quantisation is what is checked here).
    assert np.allclose(p_int8, reference_probabilities(SHIPPED, "int8", readings), rtol=0.0, atol=REFERENCE_ATOL)
    assert np.allclose(p_float, reference_probabilities(SHIPPED, "float32", readings), rtol=0.0, atol=REFERENCE_ATOL)
    assert verdict_agreement(p_float, p_int8, manifest.threshold) >= MIN_AGREEMENT
    # Synthetic scenes are not DMR-IR patients: the shipped threshold may flag them all, which would make
    # agreement there trivial. At the threshold that splits these readings in half both verdicts occur.
    split = float(np.median(p_float))
    assert 0.3 < float(np.mean(p_float >= split)) <= 0.7
    assert verdict_agreement(p_float, p_int8, split) >= MIN_AGREEMENT - 0.02
    assert float(np.max(np.abs(p_float - p_int8))) <= MAX_ABS_DIFF
