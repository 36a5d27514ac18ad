"""Input preprocessing shared by training and inference (numpy only), named in the manifest."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from contract.model.manifest import Preprocessing

FloatArray = npt.NDArray[np.float32]


def frame_standardize(frames_c: npt.ArrayLike, min_std_c: float = 0.1) -> FloatArray:
    """(N, H, W) temperatures in C -> (N, H, W, 1): per-frame zero mean, unit spread.

    Removes the device's absolute offset (+-1 C) and scales by the frame's own contrast.
    """
    x = np.asarray(frames_c, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) frames, got shape {x.shape}")
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(x.std(axis=(1, 2), keepdims=True), np.float32(min_std_c))
    out: FloatArray = ((x - mean) / std)[..., None].astype(np.float32)
    return out


def rgb_unit(images: npt.ArrayLike) -> FloatArray:
    """(N, H, W, 3) uint8 RGB -> float32 in 0..1."""
    x = np.asarray(images)
    out: FloatArray = (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    return out


def preprocess(batch: npt.ArrayLike, spec: Preprocessing) -> FloatArray:
    """Apply the manifest's preprocessing to a batch."""
    if spec.kind == "frame_standardize":
        return frame_standardize(batch, spec.min_std_c)
    return rgb_unit(batch)
