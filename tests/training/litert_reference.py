"""P(sick) from a model directory, computed without the inference node's `ModelRunner`.

Tests that check the node's int8 scores against the float32 ones must not get both sides
from the code under test: a wrong input quantisation in `ModelRunner` would then move the
expected value with the actual one. Here each file goes through `training.litert_runner`
(its own quantise/dequantise code, straight from the interpreter's tensor details) and the
ensemble mean, logit clip and Platt calibration are written out with numpy from the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from contract.model.manifest import load_manifest
from contract.model.model_runner import LOGIT_LIMIT
from contract.model.preprocessing import preprocess
from contract.session_rule import LOGIT_EPS
from training.litert_runner import TfliteModel

#: A manifest's file variants (the key type of `Manifest.files`).
Variant = Literal["float32", "int8"]
#: How far the node's probability may sit from this reference. Measured at most 1.2e-16 (float
#: rounding) for both files of the shipped model and of the test-trained one; an int8 input
#: scaled by 1.15 in `ModelRunner` moves it by 0.005 (test-trained) to 0.07 (shipped, DMR-IR).
REFERENCE_ATOL = 1e-9


def reference_probabilities(model_dir: Path, variant: Variant, frames_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(N, H, W) temperatures in C -> (N,) probabilities of labels[1] from the manifest's `variant` file."""
    manifest = load_manifest(model_dir)
    x = preprocess(frames_c, manifest.preprocessing)
    raw = TfliteModel(model_dir / manifest.files[variant].path).predict(x).astype(np.float64)
    if manifest.ensemble is None and manifest.calibration is None:
        return raw.reshape(raw.shape[0], -1)[:, 0]
    if manifest.ensemble is not None:
        z = np.clip(raw, -LOGIT_LIMIT, LOGIT_LIMIT).mean(axis=1)
    else:
        p = np.clip(raw[:, 0], LOGIT_EPS, 1.0 - LOGIT_EPS)
        z = np.log(p / (1.0 - p))
    if manifest.calibration is not None:
        z = manifest.calibration.slope * z + manifest.calibration.intercept
    probabilities: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
    return probabilities
