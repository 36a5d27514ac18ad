"""Synthetic IDC patches in the exact Kaggle layout, so the IDC path is tested without the real set.

Pink stroma with purple nuclei; IDC-positive patches have more, larger and darker nuclei.
Like the real set, a few patches at the slide's edge are smaller than 50x50.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.idc_data import PATCH_SIZE


def synthetic_patch(
    rng: np.random.Generator, positive: bool, height: int = PATCH_SIZE, width: int = PATCH_SIZE
) -> npt.NDArray[np.uint8]:
    """One (height, width, 3) uint8 RGB patch."""
    base = np.array([232.0, 182.0, 208.0]) + rng.normal(0, 6, 3)
    img = np.tile(base, (height, width, 1)) + rng.normal(0, 5, (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    count = int(rng.integers(18, 30) if positive else rng.integers(3, 10))
    radius = (2.6, 4.2) if positive else (1.6, 2.8)
    nucleus = np.array([95.0, 45.0, 140.0]) if positive else np.array([150.0, 95.0, 175.0])
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(*radius)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        img[mask] = nucleus + rng.normal(0, 8, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_idc_tree(
    root: str | Path, *, patients: int = 20, patches_per_patient: int = 40, seed: int = 0, edge_fraction: float = 0.05
) -> int:
    """Write `<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<c>.png`; returns the number of patches."""
    from PIL import Image

    if patients < 1 or patches_per_patient < 1:
        raise ValueError("need at least one patient and one patch per patient")
    out = Path(root)
    rng = np.random.default_rng(seed)
    written = 0
    for p in range(patients):
        patient_id = str(8863 + 37 * p)
        positive_rate = float(rng.uniform(0.1, 0.5))
        for k in range(patches_per_patient):
            label = int(rng.random() < positive_rate)
            folder = out / patient_id / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            height = width = PATCH_SIZE
            if rng.random() < edge_fraction:
                height = int(rng.integers(20, PATCH_SIZE))
            patch = synthetic_patch(rng, bool(label), height, width)
            x, y = (k % 20) * PATCH_SIZE + 1, (k // 20) * PATCH_SIZE + 1
            Image.fromarray(patch, mode="RGB").save(folder / f"{patient_id}_idx5_x{x}_y{y}_class{label}.png")
            written += 1
    return written
