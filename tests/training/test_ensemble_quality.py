"""The ensemble model set, its calibration and its inconclusive rule, as the node serves them (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.frame import Frame
from contract.messages import Verdict, decode_message
from contract.model.manifest import load_manifest
from contract.model.model_runner import ModelRunner, stable_sigmoid
from contract.model.preprocessing import preprocess
from contract.session_rule import is_inconclusive
from inference_node.verdicts import VerdictEncoder
from tests.training.conftest import TrainedThermal
from training.litert_runner import TfliteModel
from training.thermal_data import device_frames, load_thermograms


def test_manifest_lists_members_calibration_and_a_band_around_the_threshold(trained_thermal: TrainedThermal) -> None:
    manifest = load_manifest(trained_thermal.model_dir, verify=True)
    assert manifest.ensemble is not None and [m.name for m in manifest.ensemble.members] == [
        "member1",
        "member2",
        "member3",
    ]
    assert len({m.seed for m in manifest.ensemble.members}) == 3
    assert manifest.calibration is not None and manifest.calibration.slope > 0
    rule = manifest.inconclusive
    assert rule is not None and rule.band_low <= manifest.threshold <= rule.band_high
    assert rule.max_member_spread is not None and rule.max_member_spread > 0
    cv = manifest.metrics["cross_validation"]
    assert {"single_cnn", "sessions", "pooled_ece", "pooled_inconclusive_share", "ece_binning"} <= set(cv)


def test_runner_averages_member_logits_and_applies_the_calibration(
    trained_thermal: TrainedThermal, synthetic_npz: Path
) -> None:
    """The runner's probability is sigmoid(slope * mean member logit + intercept) of the raw .tflite outputs."""
    manifest = load_manifest(trained_thermal.model_dir)
    assert manifest.calibration is not None
    frames = device_frames(load_thermograms(synthetic_npz).frames_c, 4)
    raw = TfliteModel(trained_thermal.model_dir / "model.tflite").predict(preprocess(frames, manifest.preprocessing))
    expected = stable_sigmoid(manifest.calibration.slope * raw.mean(axis=1) + manifest.calibration.intercept)
    runner = ModelRunner.load(trained_thermal.model_dir, variant="float32")
    p, spread = runner.predict_celsius_with_spread(frames)
    assert p == pytest.approx(expected, abs=1e-6)
    assert spread is not None and spread == pytest.approx(raw.std(axis=1), abs=1e-5)
    assert runner.predict_celsius(frames) == pytest.approx(p)  # the public API serves the combined probability


def test_verdicts_of_an_ensemble_carry_spread_and_rule_and_the_fast_path_matches(
    trained_thermal: TrainedThermal,
) -> None:
    runner = ModelRunner.load(trained_thermal.model_dir)
    rule = runner.inconclusive_rule
    assert rule is not None
    encoder = VerdictEncoder("node-1", runner)
    frame = Frame("dev-1", 7, 1_000, np.zeros((24, 32), np.int16))
    cases = [(rule.band_low, 0.1), (min(1.0, rule.band_high + 0.01), 0.1), (0.999, 5.0), (0.0, 0.0)]
    for probability, spread in cases:
        _, payload = encoder.encode(frame, probability, 1.0, spread)
        decoded = decode_message(payload, Verdict)
        assert decoded == encoder.verdict(frame, probability, 1.0, spread)
        assert decoded.member_spread == spread and decoded.band_low == rule.band_low
        expected = is_inconclusive(probability, spread, rule.band_low, rule.band_high, rule.max_member_spread)
        assert decoded.inconclusive is expected
    assert decode_message(encoder.encode(frame, rule.band_low, 1.0, 0.0)[1], Verdict).inconclusive
    assert decode_message(encoder.encode(frame, 0.999, 1.0, 5.0)[1], Verdict).inconclusive  # members disagree


def test_report_holds_session_calibration_and_shortcut_figures(trained_thermal: TrainedThermal) -> None:
    report = json.loads((trained_thermal.report_dir / "model_report.json").read_text())
    per_fold = report["ensemble"]["per_fold"]
    for key in (
        "session_auc",
        "session_sensitivity",
        "session_specificity",
        "session_inconclusive_share",
        "ece",
        "marker_shift_ensemble",
        "marker_auc_ensemble",
        "share_members_disagree",
    ):
        assert per_fold[key]["n"] == 2, key
    assert 0.0 <= report["ensemble"]["pooled_inconclusive_share"]["mean"] <= 1.0
    assert "single CNN" in (trained_thermal.report_dir / "model_report.md").read_text()


def test_runner_refuses_a_manifest_whose_members_do_not_match_the_outputs(
    trained_thermal: TrainedThermal, tmp_path: Path
) -> None:
    import shutil

    from contract.model.manifest import ManifestError

    model = shutil.copytree(trained_thermal.model_dir, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["ensemble"]["members"] = manifest["ensemble"]["members"][:2]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="is not 2 member logits per frame"):
        ModelRunner.load(model)
    manifest["ensemble"]["members"] = manifest["ensemble"]["members"][:1]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="members"):
        ModelRunner.load(model)


def test_an_inconclusive_band_that_misses_the_threshold_is_refused(
    trained_thermal: TrainedThermal, tmp_path: Path
) -> None:
    import shutil

    from contract.model.manifest import ManifestError

    model = shutil.copytree(trained_thermal.model_dir, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["inconclusive"]["band_low"] = manifest["inconclusive"]["band_high"] = 0.999
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="does not contain threshold"):
        ModelRunner.load(model)
