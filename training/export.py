"""Keras model -> float32 and full-integer int8 `.tflite`, and the `manifest.json` beside them.

The int8 model takes int8 input and gives int8 output; the runtime quantises the
preprocessed input and dequantises the probability with the tensors' (scale, zero point).
Its calibration ("representative") data come from the training set only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt

from contract.model.manifest import (
    Calibration,
    Ensemble,
    InconclusiveRule,
    Manifest,
    ModelFile,
    Preprocessing,
    load_manifest,
    sha256_file,
)
from training.tf_setup import import_tensorflow

FLOAT_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"
MANIFEST_FILE = "manifest.json"
#: Calibration frames used for int8 quantisation (more gives nothing on such small nets).
MAX_REPRESENTATIVE = 200


def _convert(model: keras.Model, representative: npt.NDArray[np.float32] | None) -> bytes:
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        samples = representative[:MAX_REPRESENTATIVE].astype(np.float32)

        def calibration() -> Iterator[list[npt.NDArray[np.float32]]]:
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter prints its SavedModel summary on stdout (keep stdout clean for --json output) and
    # warns that int8 input statistics are missing (they come from the representative data).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result: bytes = converter.convert()
    return result


def export_tflite(
    model: keras.Model, out_dir: Path, representative: npt.NDArray[np.float32]
) -> dict[Literal["float32", "int8"], Path]:
    """Write `model.tflite` and `model_int8.tflite` into `out_dir`; returns their paths."""
    if len(representative) == 0:
        raise ValueError("int8 export needs at least one representative training input")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[Literal["float32", "int8"], Path] = {"float32": out_dir / FLOAT_FILE, "int8": out_dir / INT8_FILE}
    paths["float32"].write_bytes(_convert(model, None))
    paths["int8"].write_bytes(_convert(model, representative))
    return paths


def write_manifest(
    out_dir: Path,
    files: dict[Literal["float32", "int8"], Path],
    *,
    task: Literal["thermal_screening", "idc_histopathology"],
    version: str,
    input_shape: list[int],
    preprocessing: Preprocessing,
    labels: list[str],
    threshold: float,
    threshold_rule: str,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
    default_variant: Literal["float32", "int8"] = "float32",
    ensemble: Ensemble | None = None,
    calibration: Calibration | None = None,
    inconclusive: InconclusiveRule | None = None,
) -> Manifest:
    """Build the pydantic `Manifest` (so it is valid by construction), write it, and read it back verified."""
    manifest = Manifest(
        task=task,
        version=version,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        input_shape=input_shape,
        preprocessing=preprocessing,
        labels=labels,
        threshold=threshold,
        threshold_rule=threshold_rule,
        files={
            variant: ModelFile(path=path.name, sha256=sha256_file(path), dtype=variant)
            for variant, path in files.items()
        },
        default_variant=default_variant,
        ensemble=ensemble,
        calibration=calibration,
        inconclusive=inconclusive,
        provenance=provenance,
        metrics=metrics,
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return load_manifest(out_dir, verify=True)
