"""ModelRunner against real .tflite files: float32 vs Keras, int8 quantisation, batching, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from contract.model.manifest import ManifestError, sha256_file
from contract.model.model_runner import ModelRunner, batch_buckets
from tests.conftest import REPO_ROOT
from tests.inference_node.conftest import ModelDirs, copy_model


def _expected(model_dir: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    data = np.load(model_dir / "expected.npz")
    return data["inputs"], data["probabilities"]


def test_float32_runner_matches_keras(test_models: ModelDirs) -> None:
    runner = ModelRunner.load(test_models.v1, variant="float32")
    inputs, keras_out = _expected(test_models.v1)
    assert runner.variant == "float32" and runner.input_dtype == "float32"
    assert runner.runtime == "ai_edge_litert.interpreter"
    np.testing.assert_allclose(runner.predict_preprocessed(inputs), keras_out, atol=1e-5)


def test_int8_runner_quantises_and_stays_close_to_float(test_models: ModelDirs) -> None:
    runner = ModelRunner.load(test_models.v1, variant="int8")
    inputs, keras_out = _expected(test_models.v1)
    assert runner.input_dtype == "int8"
    got = runner.predict_preprocessed(inputs)
    assert got.dtype == np.float64 and np.all((got >= 0) & (got <= 1))
    # Full-int8: inputs quantised with the interpreter's scale/zero point, output dequantised.
    np.testing.assert_allclose(got, keras_out, atol=0.03)
    assert not np.allclose(got, got[0]), "int8 model gives different answers for different frames"


def test_auto_variant_is_the_manifest_default(test_models: ModelDirs) -> None:
    assert ModelRunner.load(test_models.v1).variant == "float32"


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_any_batch_size_gives_the_single_frame_answers(test_models: ModelDirs, variant: str) -> None:
    runner = ModelRunner.load(test_models.v1, variant=variant, max_batch=8)
    assert runner.dynamic_batch and runner.buckets == [1, 2, 4, 8]
    inputs, _ = _expected(test_models.v1)
    one_by_one = np.concatenate([runner.predict_preprocessed(inputs[i : i + 1]) for i in range(len(inputs))])
    for n in (1, 3, 8, 17, len(inputs)):  # padded buckets and chunks bigger than the largest bucket
        np.testing.assert_allclose(runner.predict_preprocessed(inputs[:n]), one_by_one[:n], atol=1e-6)


def test_batch_buckets() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(20) == [1, 2, 4, 8, 16, 20]


def test_refuses_a_file_whose_sha256_does_not_match(test_models: ModelDirs, tmp_path: Path) -> None:
    model = copy_model(test_models.v1, tmp_path / "m")
    path = model / "thermal_float32.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        ModelRunner.load(model)


def test_refuses_a_truncated_model_even_with_a_matching_sha256(test_models: ModelDirs, tmp_path: Path) -> None:
    model = copy_model(test_models.v1, tmp_path / "m")
    path = model / "thermal_float32.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["float32"]["sha256"] = sha256_file(path)
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="does not load"):
        ModelRunner.load(model)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda m: m.update(task="idc_histopathology", preprocessing={"kind": "rgb_unit"}),
            "not a thermal frame model",
        ),
        (lambda m: m.update(input_shape=[32, 24, 1]), r"input_shape \[32, 24, 1\] is not the sensor's"),
        (lambda m: m.update(threshold=1.0), r"threshold 1.0 is not strictly inside \(0, 1\)"),
        (lambda m: m.update(threshold=0.0), r"threshold 0.0 is not strictly inside \(0, 1\)"),
        (lambda m: m.update(labels=["a", "a"]), "not two distinct names"),
        (lambda m: m["files"]["float32"].update(path="../v2/thermal_float32.tflite"), "without '..'"),
        (lambda m: m["files"]["float32"].update(path="/etc/passwd"), "must be relative"),
        (lambda m: m["files"].update(float32={**m["files"]["int8"], "dtype": "float32"}), "manifest declares float32"),
        (lambda m: m["files"].pop("int8"), "no int8 model"),
        (lambda m: m.update(version="bad version!"), "version"),
    ],
)
def test_refuses_inconsistent_manifests(test_models: ModelDirs, tmp_path: Path, edit: object, needle: str) -> None:
    model = copy_model(test_models.v1, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    edit(manifest)  # type: ignore[operator]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=needle):
        ModelRunner.load(model, variant="int8" if needle == "no int8 model" else "auto")


def test_missing_model_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        ModelRunner.load(tmp_path / "nowhere")


def test_inference_path_never_imports_tensorflow(test_models: ModelDirs) -> None:
    """The worker must run on LiteRT alone (a Pi has no TensorFlow)."""
    code = f"""
import json, sys
from inference_node.node import InferenceNode
from contract.model.model_runner import ModelRunner
from tests.inference_node.model_factory import sample_frames_c
runner = ModelRunner.load({str(test_models.v1)!r}, variant="int8")
runner.warm_up()
p = runner.predict_celsius(sample_frames_c(4))
print(json.dumps({{"tf": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
                  "keras": "keras" in sys.modules, "runtime": runner.runtime, "n": len(p)}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"tf": [], "keras": False, "runtime": "ai_edge_litert.interpreter", "n": 4}
