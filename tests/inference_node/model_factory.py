"""Builds tiny thermal models for the inference tests (run in a subprocess: it imports TensorFlow).

A few-layer CNN on 24x32x1 with one sigmoid output, untrained (seeded random weights): the
tests check plumbing (quantisation, batching, swap), not accuracy. Each model directory holds
float32 and/or full-int8 `.tflite` files, a `manifest.json` with their sha256, and
`expected.npz` (preprocessed inputs and Keras's outputs for them) so the LiteRT runner can be
checked against the framework that produced the model.

    python -m tests.inference_node.model_factory OUT_DIR
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from contract.model.manifest import Manifest, ModelFile, Preprocessing, sha256_file
from contract.model.preprocessing import frame_standardize
from contract.sensor import emulate_mlx_frame
from sensor_node.synthetic_scene import random_patient, torso_scene

INPUT_SHAPE = (24, 32, 1)


def sample_frames_c(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """(n, 24, 32) emulated MLX90640 frames in degrees C from synthetic patients."""
    rng = np.random.default_rng(seed)
    frames = [
        emulate_mlx_frame(torso_scene(96, 128, random_patient(rng, sick=bool(i % 2)), rng), rng) for i in range(n)
    ]
    return np.stack(frames).astype(np.float32)


def _build_keras(seed: int) -> object:
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid", bias_initializer=keras.initializers.Constant(0.3)),
        ]
    )


def _convert(model: object, int8: bool, calibration: npt.NDArray[np.float32]) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:

        def representative() -> object:
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def write_model_dir(out: Path, *, version: str, seed: int, variants: tuple[str, ...]) -> Manifest:
    """Build, convert and describe one model in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    inputs = frame_standardize(sample_frames_c(32, seed=seed + 100))
    model = _build_keras(seed)
    expected = np.asarray(model(inputs), dtype=np.float32).reshape(-1)  # type: ignore[operator]
    np.savez(out / "expected.npz", inputs=inputs, probabilities=expected)
    files: dict[str, ModelFile] = {}
    for variant in variants:
        name = f"thermal_{variant}.tflite"
        (out / name).write_bytes(_convert(model, variant == "int8", inputs))
        files[variant] = ModelFile(path=name, sha256=sha256_file(out / name), dtype=variant)
    manifest = Manifest(
        task="thermal_screening",
        version=version,
        created=datetime.now(UTC).isoformat(),
        input_shape=list(INPUT_SHAPE),
        preprocessing=Preprocessing(kind="frame_standardize"),
        labels=["normal", "abnormal"],
        threshold=float(np.median(expected)),
        threshold_rule="median of the test inputs (test model, untrained)",
        files=files,
        default_variant="float32",
        provenance={"source": "tests/inference_node/model_factory.py", "seed": seed},
    )
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return manifest


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    write_model_dir(root / "v1", version="test-1", seed=1, variants=("float32", "int8"))
    write_model_dir(root / "v2", version="test-2", seed=2, variants=("float32",))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
