"""Loading thermogram sets: the same emulation as the sensor node, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.sensor import block_average
from sensor_node.synthetic_scene import synthetic_thermograms
from training.thermal_data import (
    augmented_device_frames,
    clean_sensor_frames,
    device_frames,
    load_thermograms,
)


def test_loads_synthetic_set_at_twice_sensor_resolution(synthetic_npz: Path) -> None:
    data = load_thermograms(synthetic_npz)
    assert data.frames_c.shape == (30, 48, 64)
    assert data.n == 30 and set(np.unique(data.labels)) == {0, 1}
    raw = np.load(synthetic_npz)
    expected = block_average(raw["temperature_centi_c"][4] / 100.0)
    assert np.allclose(clean_sensor_frames(data.frames_c)[4], expected, atol=1e-4)
    assert data.strata.tolist() == (data.labels * 2).tolist()  # synthetic frames are all protocol 0


def test_device_frames_are_reproducible_emulated_readings(synthetic_npz: Path) -> None:
    data = load_thermograms(synthetic_npz)
    a, b = device_frames(data.frames_c, 5), device_frames(data.frames_c, 5)
    assert a.shape == (30, 24, 32) and np.array_equal(a, b)
    clean = clean_sensor_frames(data.frames_c)
    offsets = (a - clean).mean(axis=(1, 2))
    assert np.all(np.abs(offsets) <= 1.05)  # the +-1 C device offset
    residual = (a - clean) - offsets[:, None, None]
    assert 0.05 < float(residual.std()) < 0.2  # the ~0.1 K sensor noise


def test_augmentation_varies_per_draw_and_keeps_shape(synthetic_npz: Path) -> None:
    data = load_thermograms(synthetic_npz)
    rng = np.random.default_rng(0)
    first, second = augmented_device_frames(data.frames_c, rng), augmented_device_frames(data.frames_c, rng)
    assert first.shape == second.shape == (30, 24, 32)
    assert not np.allclose(first, second)
    assert np.array_equal(
        augmented_device_frames(data.frames_c, np.random.default_rng(3)),
        augmented_device_frames(data.frames_c, np.random.default_rng(3)),
    )


def test_small_frames_are_used_at_sensor_resolution(tmp_path: Path) -> None:
    arrays = synthetic_thermograms(4, height=24, width=32, seed=0)
    np.savez(tmp_path / "s.npz", **arrays)  # type: ignore[arg-type]
    assert load_thermograms(tmp_path / "s.npz").frames_c.shape == (4, 24, 32)


def _bad(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"label": np.zeros(2, np.uint8)}, "missing array 'temperature_centi_c'"),
        ({"temperature_centi_c": np.zeros((2, 48, 64), np.uint16)}, "missing array 'label'"),
        ({"temperature_centi_c": np.zeros((48, 64), np.uint16), "label": np.zeros(1)}, "expected (N, H, W)"),
        ({"temperature_centi_c": np.zeros((2, 10, 64), np.uint16), "label": np.zeros(2)}, "smaller than the sensor"),
        ({"temperature_centi_c": np.zeros((2, 48, 64), np.uint16), "label": np.zeros(3)}, "expected (2,)"),
        ({"temperature_centi_c": np.zeros((2, 48, 64), np.uint16), "label": np.array([0, 2])}, "0 (healthy) or 1"),
        (
            {"temperature_centi_c": np.zeros((2, 48, 64)), "label": np.zeros(2), "dynamic_protocol": np.zeros(5)},
            "dynamic_protocol",
        ),
    ],
)
def test_bad_arrays_give_one_line_errors(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        load_thermograms(_bad(tmp_path, **arrays))
    message = str(info.value)
    assert needle in message and "\n" not in message and "bad.npz" in message


def test_missing_and_non_npz_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such thermogram file"):
        load_thermograms(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"not a thermogram \.npz"):
        load_thermograms(junk)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 48, 64)))
    with pytest.raises(ValueError, match=r"not a thermogram \.npz"):
        load_thermograms(single)
