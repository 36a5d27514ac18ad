"""Stratified k-fold splits in numpy (no scikit-learn), by patient.

The thermogram set has one frame per patient, so an index split is a patient split. Folds
are stratified on a `strata` key (here label x capture protocol), so every test fold holds
protocol-0 sick frames and the confound-free subset can be scored in each fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Fold:
    """One outer fold: `repeat` and `fold` number, the training and the test indices."""

    repeat: int
    fold: int
    train: IndexArray
    test: IndexArray


def stratified_fold_ids(strata: npt.ArrayLike, k: int, rng: np.random.Generator) -> IndexArray:
    """A fold number 0..k-1 per sample; each stratum is dealt round-robin after a shuffle.

    The round-robin starts where the previous stratum stopped, so fold sizes differ by at most one.
    """
    keys = np.asarray(strata)
    if keys.ndim != 1:
        raise ValueError(f"strata must be 1-D, got shape {keys.shape}")
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if keys.size < k:
        raise ValueError(f"cannot split {keys.size} samples into {k} folds")
    fold_ids = np.empty(keys.size, dtype=np.int64)
    start = int(rng.integers(k))
    for value in np.unique(keys):
        members = np.flatnonzero(keys == value)
        rng.shuffle(members)
        fold_ids[members] = (start + np.arange(members.size)) % k
        start = (start + members.size) % k
    return fold_ids


def repeated_stratified_folds(strata: npt.ArrayLike, k: int, repeats: int, seed: int) -> Iterator[Fold]:
    """`repeats` independent stratified k-fold partitions, reproducible from `seed`."""
    if repeats < 1:
        raise ValueError(f"need at least 1 repeat, got {repeats}")
    rng = np.random.default_rng(seed)
    for repeat in range(repeats):
        fold_ids = stratified_fold_ids(strata, k, rng)
        for fold in range(k):
            yield Fold(repeat, fold, np.flatnonzero(fold_ids != fold), np.flatnonzero(fold_ids == fold))


def stratified_holdout(
    strata: npt.ArrayLike, fraction: float, rng: np.random.Generator
) -> tuple[IndexArray, IndexArray]:
    """Split indices into (keep, held_out) with about `fraction` of each stratum held out (at least one)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    keys = np.asarray(strata)
    held: list[IndexArray] = []
    for value in np.unique(keys):
        members = np.flatnonzero(keys == value)
        rng.shuffle(members)
        n_held = min(members.size - 1, max(1, round(fraction * members.size))) if members.size > 1 else 0
        held.append(members[:n_held])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(keys.size), held_out)
    return keep.astype(np.int64), held_out.astype(np.int64)


def patient_strata(patients: npt.ArrayLike, strata: npt.ArrayLike) -> tuple[npt.NDArray[np.generic], IndexArray]:
    """(unique patients, one stratum per patient: the largest of its frames' strata).

    Folds are drawn over patients, never frames, so a patient with several frames is wholly on
    one side of every split.
    """
    ids = np.asarray(patients)
    keys = np.asarray(strata, dtype=np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    per_patient = np.zeros(unique.size, dtype=np.int64)
    np.maximum.at(per_patient, inverse, keys)
    return unique, per_patient


def frames_of(patients: npt.ArrayLike, chosen: npt.ArrayLike) -> IndexArray:
    """Indices of the frames whose patient is in `chosen`."""
    return np.flatnonzero(np.isin(np.asarray(patients), np.asarray(chosen))).astype(np.int64)
