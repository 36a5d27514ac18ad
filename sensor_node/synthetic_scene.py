"""Synthetic thermal scenes: a warm torso with two breasts, optional hot spot and asymmetry.

Needs no data, so demos and tests run anywhere. `synthetic_thermograms` writes sets in the
format of the DMR-IR `.npz` (temperatures in centi-degrees, labels per patient), so the whole
training and evaluation path can be exercised without the real thermograms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SceneParams:
    """What a synthetic patient looks like to the camera."""

    background_c: float = 22.0
    skin_c: float = 33.0
    hot_spot_c: float = 0.0  # extra warmth of a lesion-like spot (0 = none)
    hot_spot_side: int = 0  # -1 = patient's right (image left), +1 = left
    asymmetry_c: float = 0.0  # whole-breast warming of one side
    shift_x: float = 0.0  # fraction of the width
    shift_y: float = 0.0


def torso_scene(height: int, width: int, params: SceneParams, rng: np.random.Generator | None = None) -> FloatArray:
    """A (height, width) scene in degrees C."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x + 0.5) / width - 0.5 - params.shift_x  # -0.5..0.5
    w = (y + 0.5) / height - 0.5 - params.shift_y
    torso = np.clip(1.0 - (np.abs(u) / 0.38) ** 6, 0.0, 1.0) * (w > -0.45)
    scene = params.background_c + (params.skin_c - 1.5 - params.background_c) * torso
    for side in (-1, 1):
        cu, cw = side * 0.17, 0.12
        r2 = ((u - cu) / 0.13) ** 2 + ((w - cw) / 0.16) ** 2
        breast = np.exp(-r2 * 1.5) * torso
        warm = 1.2 + (
            params.asymmetry_c if side == params.hot_spot_side or (params.hot_spot_side == 0 and side == 1) else 0
        )
        scene = scene + warm * breast
        # inframammary fold: a cooler crescent under each breast
        fold = np.exp(-(((u - cu) / 0.12) ** 2) - ((w - cw - 0.17) / 0.025) ** 2) * torso
        scene = scene - 1.0 * fold
    if params.hot_spot_c > 0 and params.hot_spot_side != 0:
        cu = params.hot_spot_side * 0.17 + (rng.uniform(-0.05, 0.05) if rng is not None else 0.0)
        cw = 0.12 + (rng.uniform(-0.05, 0.05) if rng is not None else 0.0)
        spot = np.exp(-(((u - cu) / 0.045) ** 2 + ((w - cw) / 0.045) ** 2))
        scene = scene + params.hot_spot_c * spot * torso
    if rng is not None:
        # skin texture: smooth low-amplitude variation (vessels, sweat)
        texture = rng.normal(0.0, 0.15, (max(2, height // 8), max(2, width // 8)))
        tiled = np.resize(np.kron(texture, np.ones((8, 8))), scene.shape)
        scene = scene + tiled * torso
    result: FloatArray = np.asarray(scene, dtype=np.float32)
    return result


def random_patient(rng: np.random.Generator, sick: bool) -> SceneParams:
    """Draw a patient; sick ones get a hot spot and asymmetry on one side, with overlap in strength."""
    side = int(rng.choice([-1, 1]))
    return SceneParams(
        background_c=float(rng.uniform(19.0, 25.0)),
        skin_c=float(rng.uniform(31.5, 34.5)),
        hot_spot_c=float(rng.uniform(0.8, 2.5)) if sick else 0.0,
        hot_spot_side=side if sick else 0,
        asymmetry_c=float(rng.uniform(0.2, 0.9)) if sick else float(rng.uniform(-0.2, 0.3)),
        shift_x=float(rng.uniform(-0.04, 0.04)),
        shift_y=float(rng.uniform(-0.04, 0.04)),
    )


def synthetic_thermograms(
    n: int, *, height: int = 96, width: int = 128, seed: int = 0, sick_fraction: float = 0.4
) -> dict[str, npt.NDArray[np.generic]]:
    """Arrays in the DMR-IR `.npz` layout: temperature_centi_c, label, patient_id, dynamic_protocol."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < sick_fraction).astype(np.uint8)
    if n >= 2:  # both classes present
        labels[0], labels[1] = 0, 1
    temps = np.empty((n, height, width), dtype=np.uint16)
    for i in range(n):
        scene = torso_scene(height, width, random_patient(rng, bool(labels[i])), rng)
        temps[i] = np.clip(np.rint(scene * 100), 0, 65535).astype(np.uint16)
    return {
        "temperature_centi_c": temps,
        "label": labels,
        "patient_id": np.arange(1, n + 1, dtype=np.int64),
        "dynamic_protocol": np.zeros(n, dtype=np.uint8),
    }


def write_synthetic_npz(path: str | Path, n: int, **kwargs: int | float) -> Path:
    """Write a synthetic thermogram set in the DMR-IR format; returns the path."""
    arrays = synthetic_thermograms(n, **kwargs)  # type: ignore[arg-type]
    out = Path(path)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out
