"""The model shipped in `contract/model/shipped/thermal/`: loadable by the inference node, verified, small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.model.manifest import load_manifest
from contract.model.preprocessing import preprocess
from contract.model.shipped import shipped_model_dir
from sensor_node.synthetic_scene import synthetic_thermograms
from tests.training.test_int8_agreement import MAX_ABS_DIFF, MIN_AGREEMENT
from training.litert_runner import TfliteModel
from training.thermal_data import device_frames

SHIPPED = shipped_model_dir()


def test_shipped_manifest_validates_with_sha256() -> None:
    manifest = load_manifest(SHIPPED, verify=True)
    assert manifest.task == "thermal_screening"
    assert manifest.input_shape == [24, 32, 1] and manifest.labels == ["healthy", "sick"]
    assert manifest.preprocessing.kind == "frame_standardize"
    assert set(manifest.files) == {"float32", "int8"}
    assert manifest.provenance["data_file"] == "dmr_ir.npz" and manifest.provenance["frames"] == 129
    cv = manifest.metrics["cross_validation"]
    assert cv["all"]["auc"]["mean"] is not None and cv["protocol0"]["auc"]["mean"] is not None


def test_shipped_files_are_under_one_megabyte() -> None:
    total = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert total < 1_000_000


def test_shipped_model_runs_in_litert() -> None:
    manifest = load_manifest(SHIPPED)
    arrays = synthetic_thermograms(6, height=48, width=64, seed=2)
    frames = device_frames(arrays["temperature_centi_c"].astype(np.float32) / 100.0, 0)
    x = preprocess(frames, manifest.preprocessing)
    for variant, entry in manifest.files.items():
        model = TfliteModel(SHIPPED / entry.path)
        assert model.input_dtype == (np.int8 if variant == "int8" else np.float32)
        logits = model.predict(x)
        assert manifest.ensemble is not None and logits.shape == (6, len(manifest.ensemble.members))
        assert np.all(np.isfinite(logits))


def test_shipped_model_is_signed_with_the_pinned_key_and_a_default_node_serves_it() -> None:
    from contract.model.manifest import ManifestError
    from contract.model.model_runner import ModelRunner
    from contract.model.shipped import SHIPPED_MODEL_PUBLIC_KEY
    from inference_node.config import InferenceConfig

    assert InferenceConfig().model_public_keys == [SHIPPED_MODEL_PUBLIC_KEY]
    load_manifest(SHIPPED, verify=True, trusted_keys=[SHIPPED_MODEL_PUBLIC_KEY])
    runner = ModelRunner.load(SHIPPED, trusted_keys=[SHIPPED_MODEL_PUBLIC_KEY])
    runner.warm_up()
    assert runner.threshold == load_manifest(SHIPPED).threshold and 0.0 < runner.threshold < 1.0
    other = "ed25519:" + "A" * 43 + "="
    with pytest.raises(ManifestError, match="does not verify with any trusted key"):
        load_manifest(SHIPPED, trusted_keys=[other])


def test_no_private_key_is_shipped() -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in [*SHIPPED.iterdir(), *(repo / "inference_node").iterdir()]:
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_keygen_and_sign_an_existing_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from contract.model.manifest import ManifestError
    from thermoscreen.cli import main

    key = tmp_path / "keys" / "signing.key"
    assert main(["train", "keygen", "--out", str(key)]) == 0
    public = capsys.readouterr().out.strip()
    assert public.startswith("ed25519:") and (key.stat().st_mode & 0o077) == 0
    assert main(["train", "keygen", "--out", str(key)]) == 2, "never overwrites a signing key"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already exists" in err

    model = tmp_path / "thermal"
    shutil.copytree(SHIPPED, model)
    with pytest.raises(ManifestError, match="does not verify"):
        load_manifest(model, trusted_keys=[public])
    assert main(["train", "sign", "--model-dir", str(model), "--signing-key", str(key)]) == 0
    load_manifest(model, trusted_keys=[public])
    assert b"PRIVATE KEY" not in (model / "manifest.json.sig").read_bytes()

    capsys.readouterr()
    assert main(["train", "sign", "--model-dir", str(model), "--signing-key", str(tmp_path / "none.key")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "none.key" in err and "cannot read signing key" in err


def test_shipped_model_set_is_a_calibrated_ensemble_with_an_inconclusive_band() -> None:
    manifest = load_manifest(SHIPPED, verify=True)
    assert manifest.ensemble is not None and len(manifest.ensemble.members) == 5
    assert manifest.calibration is not None and manifest.calibration.slope > 0
    rule = manifest.inconclusive
    assert rule is not None and rule.band_low < manifest.threshold < rule.band_high
    cv = manifest.metrics["cross_validation"]
    assert cv["pooled_ece"]["mean"] is not None and cv["single_cnn"]["all"]["auc"]["mean"] is not None
    assert manifest.metrics["export"]["int8_agreement"] >= 0.99


def _evaluate_keys(result: dict[str, object]) -> None:
    for key in ("auc", "auc_protocol0", "recall", "specificity", "int8_agreement", "ece", "inconclusive_share"):
        assert key in result, key
    assert result["members"] == 5 and result["calibrated"] is True
    share = result["inconclusive_share"]
    assert isinstance(share, float) and 0.0 <= share <= 1.0


def test_evaluate_reports_ece_and_the_inconclusive_share_on_synthetic_thermograms(tmp_path: Path) -> None:
    from sensor_node.synthetic_scene import write_synthetic_npz
    from training.evaluation import evaluate_thermal_model

    npz = write_synthetic_npz(tmp_path / "synthetic.npz", 20, height=48, width=64, seed=8)
    _evaluate_keys(evaluate_thermal_model(SHIPPED, npz))


def test_evaluate_on_the_real_thermograms(dmr_ir_path: Path) -> None:
    """On its own training set (so optimistic): every figure present, the int8 file agrees."""
    from training.evaluation import evaluate_thermal_model

    result = evaluate_thermal_model(SHIPPED, dmr_ir_path)
    _evaluate_keys(result)
    assert result["n"] == 129 and result["session_frames"] == 16
    assert isinstance(result["int8_agreement"], float) and result["int8_agreement"] >= MIN_AGREEMENT
    # Verdict agreement alone is blunt on 129 frames (0.992 with the int8 input scaled by 1.15);
    # the probability gap is not (0.0069 as shipped, 0.072 with that break).
    assert result["int8_max_abs_diff"] <= MAX_ABS_DIFF
