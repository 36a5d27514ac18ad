"""Synthetic and replay sources: what an MLX90640 would report, with no hardware and no real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.frame import SensorKind
from contract.sensor import block_average
from sensor_node.config import SensorConfig
from sensor_node.sources import ReplaySource, SyntheticSource, device_seed, open_source
from sensor_node.synthetic_scene import synthetic_thermograms, write_synthetic_npz


def test_synthetic_source_shows_a_warm_torso_with_sensor_noise() -> None:
    source = SyntheticSource(seed=1, refresh_hz=4.0, frames_per_subject=3)
    first, ambient = source.read()
    second, _ = source.read()
    assert first.shape == (24, 32) and first.dtype == np.float32 and ambient == 24.0
    assert source.sensor_kind is SensorKind.SYNTHETIC
    centre, edge = float(first[8:20, 10:22].mean()), float(first[:, :2].mean())
    assert centre > edge + 5  # the body is warmer than the room
    noise = float(np.std(first - second))
    assert 0.05 < noise < 0.5  # about 0.14 K RMS at 4 Hz, per frame
    before = source.read()[0]
    source.next_subject()
    after = source.read()[0]
    assert float(np.abs(before - after).mean()) > 0.2  # a different person


def test_device_offset_is_stable_per_device_and_differs_between_devices(tmp_path: Path) -> None:
    """The same thermogram replayed on two devices: the scene is identical, so the mean residual
    against the block-averaged scene is each device's offset (noise averages out over 768 pixels)."""
    path = write_synthetic_npz(tmp_path / "thermograms.npz", 1, height=120, width=160, seed=5)
    scene = block_average(synthetic_thermograms(1, height=120, width=160, seed=5)["temperature_centi_c"][0] / 100)

    def residuals(device: str) -> list[np.ndarray]:
        config = SensorConfig.model_validate(
            {"device": {"id": device}, "source": {"kind": "replay", "replay": {"path": str(path)}}}
        )
        source = open_source(config)
        return [source.read()[0] - scene for _ in range(8)]

    first, again, other = residuals("pi-1"), residuals("pi-1"), residuals("pi-2")
    offset_1, offset_2 = (float(np.mean(r)) for r in (first, other))
    noise = float(np.std(first[0] - first[1]))  # pixel noise between two frames of one device
    assert 0.02 < noise < 0.5
    assert device_seed("pi-1") == device_seed("pi-1") != device_seed("pi-2")
    assert offset_1 == float(np.mean(again))  # stable: the same device gives the same offset
    assert abs(offset_1) <= 1.0 + noise and abs(offset_2) <= 1.0 + noise  # within the +-1 C accuracy
    assert abs(offset_1 - offset_2) > noise, (offset_1, offset_2, noise)  # two devices really differ


def test_replay_source_block_averages_thermograms_from_an_npz(tmp_path: Path) -> None:
    path = write_synthetic_npz(tmp_path / "thermograms.npz", 3, height=120, width=160, seed=4)
    source = ReplaySource(path, seed=0, refresh_hz=2.0, frames_per_thermogram=2)
    assert source.count == 3 and source.sensor_kind is SensorKind.REPLAY
    expected = block_average(synthetic_thermograms(3, height=120, width=160, seed=4)["temperature_centi_c"][0] / 100)
    frames = [source.read()[0] for _ in range(2)]
    assert source.index == 0
    for frame in frames:
        residual = frame - expected
        assert abs(float(residual.mean())) <= 1.0 + 0.05  # the device offset is within +-1 C
        assert float(np.std(residual)) < 0.25  # noise about 0.1 K RMS at 2 Hz
    source.read()
    assert source.index == 1  # the next thermogram after frames_per_thermogram
    source.next_subject()
    assert source.index == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"not a zip", "not a readable .npz"), (None, "replay file not found")],
)
def test_replay_rejects_bad_files(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=needle):
        ReplaySource(path, seed=0, refresh_hz=2.0)
    np.savez(tmp_path / "other.npz", pixels=np.zeros((2, 30, 40)))
    with pytest.raises(ValueError, match="no 'temperature_centi_c' array"):
        ReplaySource(tmp_path / "other.npz", seed=0, refresh_hz=2.0)


def test_replay_of_the_real_thermograms(dmr_ir_path: Path) -> None:
    source = ReplaySource(dmr_ir_path, seed=0, refresh_hz=2.0)
    temps, _ = source.read()
    assert source.count > 100 and temps.shape == (24, 32)
    assert 20 < float(np.median(temps)) < 40
