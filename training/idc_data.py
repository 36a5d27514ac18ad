"""The Kaggle "Breast Histopathology Images" (IDC) layout: `<patient_id>/<0|1>/<name>_class<0|1>.png`.

Only file names are held in memory (the real set has 277k patches); pixels are streamed by
tf.data at training time. The split is BY PATIENT: each patient gives ~1,700 patches that look
alike, so a patch-level split would leak.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PATCH_SIZE = 50
CLASS_DIRS = ("0", "1")
_NAME = re.compile(r"^.+_class([01])\.png$")


@dataclass(frozen=True)
class PatchIndex:
    """Every patch's path, label and patient, in a stable (sorted) order."""

    paths: list[str]
    labels: npt.NDArray[np.uint8]
    patients: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: npt.NDArray[np.int64]) -> PatchIndex:
        return PatchIndex([self.paths[i] for i in index], self.labels[index], self.patients[index])


def scan_idc_tree(root: str | Path) -> PatchIndex:
    """Index `root/<patient>/<0|1>/*_class<0|1>.png`; one-line errors for anything else that looks wrong."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such IDC data directory")
    paths: list[str] = []
    labels: list[int] = []
    patients: list[str] = []
    patient_dirs = sorted(
        (e for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name
    )
    for patient in patient_dirs:
        class_dirs = [c for c in CLASS_DIRS if (Path(patient.path) / c).is_dir()]
        if not class_dirs:
            raise ValueError(
                f"{patient.path}: not a patient directory (no 0/ or 1/ inside); --data must be the folder that "
                "holds the patient directories"
            )
        for class_dir in class_dirs:
            folder = Path(patient.path) / class_dir
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if entry.name.startswith(".") or not entry.name.lower().endswith(".png"):
                    continue
                match = _NAME.match(entry.name)
                if match is None:
                    raise ValueError(f"{entry.path}: name does not end in _class0.png or _class1.png")
                if match.group(1) != class_dir:
                    raise ValueError(f"{entry.path}: class{match.group(1)} patch inside the {class_dir}/ directory")
                paths.append(entry.path)
                labels.append(int(class_dir))
                patients.append(patient.name)
    if not paths:
        raise ValueError(f"{base}: no <patient>/<0|1>/*_class<0|1>.png patches found")
    return PatchIndex(paths, np.asarray(labels, dtype=np.uint8), np.asarray(patients, dtype=np.str_))


def split_patients(
    patients: npt.ArrayLike, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, npt.NDArray[np.str_]]:
    """Shuffle the distinct patients and cut them into train/validation/test (each non-empty with >= 3 patients)."""
    unique = np.unique(np.asarray(patients).astype(str))
    if unique.size < 3:
        raise ValueError(f"need at least 3 patients for a train/validation/test split, got {unique.size}")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(unique.size)
    shuffled = unique[order]
    n_val = max(1, round(fractions[1] * unique.size))
    n_test = max(1, round(fractions[2] * unique.size))
    n_train = unique.size - n_val - n_test
    return {
        "train": np.sort(shuffled[:n_train]),
        "validation": np.sort(shuffled[n_train : n_train + n_val]),
        "test": np.sort(shuffled[n_train + n_val :]),
    }


def split_index(index: PatchIndex, seed: int) -> dict[str, PatchIndex]:
    """The patch index cut by patient into train/validation/test."""
    groups = split_patients(index.patients, seed)
    return {name: index.subset(np.flatnonzero(np.isin(index.patients, members))) for name, members in groups.items()}
