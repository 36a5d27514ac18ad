"""The marker-square augmentation that keeps the model from reading the DMR-IR capture marker."""

from __future__ import annotations

import numpy as np

from sensor_node.synthetic_scene import random_patient, torso_scene
from training.thermal_data import MARKER_PASTE_PROBABILITY, augmented_device_frames, paste_marker


def test_paste_marker_puts_a_cold_square_at_the_bottom_centre() -> None:
    rng = np.random.default_rng(0)
    frame = torso_scene(48, 64, random_patient(rng, sick=False), rng)
    marked = paste_marker(frame, rng)
    changed = np.argwhere(marked != frame)
    assert changed.size > 0
    rows, cols = changed[:, 0], changed[:, 1]
    assert rows.min() >= 0.75 * 48 and cols.min() >= 0.3 * 64 and cols.max() <= 0.7 * 64
    assert marked[rows, cols].max() < np.median(frame)  # colder than the skin
    assert frame.shape == marked.shape and not np.shares_memory(frame, marked)


def test_augmentation_pastes_markers_into_a_share_of_frames() -> None:
    rng = np.random.default_rng(1)
    frames = np.stack([torso_scene(48, 64, random_patient(rng, sick=bool(i % 2)), None) for i in range(200)])
    out = augmented_device_frames(frames, np.random.default_rng(2), max_shift_px=0)
    # a marker makes the bottom-centre block much colder than the frame's median skin
    bottom = out[:, 19:23, 13:19].min(axis=(1, 2))
    skin = np.median(out, axis=(1, 2))
    share = float(np.mean(skin - bottom > 3.0))
    assert abs(share - MARKER_PASTE_PROBABILITY) < 0.15
