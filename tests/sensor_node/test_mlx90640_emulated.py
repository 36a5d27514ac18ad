"""The unmodified adafruit_mlx90640 driver against the emulated chip, and the guards around the driver."""

from __future__ import annotations

import time

import adafruit_mlx90640
import numpy as np
import pytest

from contract.frame import SensorKind
from sensor_node.config import SensorConfig
from sensor_node.emulation.mlx90640_chip import Calibration, EmulatedMlx90640
from sensor_node.mlx_source import Mlx90640Source, repair_pixels
from sensor_node.sources import EmulatedMlxSource, open_source
from sensor_node.synthetic_scene import SceneParams, torso_scene
from sensor_node.thermal_source import SensorTimeout, refresh_for_rate

TOLERANCE_C = 0.2


class StepClock:
    """Chip time that advances a fixed step per look, so tests do not depend on the machine's load."""

    def __init__(self, step_s: float = 0.001) -> None:
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def scene_with_extremes() -> np.ndarray:
    """A torso with a hot spot, plus pixels at the ends of the sensor's range."""
    scene = torso_scene(24, 32, SceneParams(hot_spot_c=2.0, hot_spot_side=1, asymmetry_c=0.5))
    scene = scene.astype(np.float64)
    scene[0, 0], scene[0, 1], scene[23, 31], scene[12, 0] = -40.0, 0.0, 300.0, 100.0
    return scene


def test_driver_reads_back_the_scene_within_tolerance() -> None:
    chip = EmulatedMlx90640(clock=StepClock())
    driver = adafruit_mlx90640.MLX90640(chip)
    driver.refresh_rate = adafruit_mlx90640.RefreshRate.REFRESH_64_HZ
    scene = scene_with_extremes()
    chip.set_scene(scene, ambient_c=29.5)
    buffer = [0.0] * 768
    driver.getFrame(buffer)
    got = np.asarray(buffer).reshape(24, 32)
    assert np.abs(got - scene).max() < TOLERANCE_C
    assert driver.serial_number == list(chip.calibration.serial)
    assert chip.refresh_hz == 64.0  # the driver's refresh-rate write reached the control register


def test_source_reports_scene_and_ambient_through_the_driver() -> None:
    chip = EmulatedMlx90640(clock=StepClock())
    camera = Mlx90640Source(chip, refresh_hz=64.0, frame_timeout_s=5.0, sensor_kind=SensorKind.EMULATED_MLX90640)
    for ambient in (-10.0, 24.0, 60.0):
        scene = np.clip(scene_with_extremes() + ambient / 10, -40.0, 300.0)
        chip.set_scene(scene, ambient_c=ambient)
        temps, ambient_read = camera.read()
        assert temps.shape == (24, 32) and temps.dtype == np.float32
        assert np.abs(temps - scene).max() < TOLERANCE_C
        assert abs(ambient_read - ambient) < TOLERANCE_C


def test_two_chips_in_one_process_keep_their_own_calibration() -> None:
    """The driver keeps calibration in class-level lists; the source gives each instance its own."""
    chip_a = EmulatedMlx90640(Calibration(offset_ref=-60, alpha_ref=4096, pixel_seed=1), clock=StepClock())
    chip_b = EmulatedMlx90640(Calibration(offset_ref=-20, alpha_ref=3500, pixel_seed=2), clock=StepClock())
    camera_a = Mlx90640Source(chip_a, refresh_hz=64.0, frame_timeout_s=5.0)
    camera_b = Mlx90640Source(chip_b, refresh_hz=64.0, frame_timeout_s=5.0)
    scene_a = scene_with_extremes()
    scene_b = np.clip(scene_a + 1.0, -40.0, 300.0)
    chip_a.set_scene(scene_a, 25.0)
    chip_b.set_scene(scene_b, 25.0)
    temps_a, _ = camera_a.read()
    temps_b, _ = camera_b.read()
    assert np.abs(temps_a - scene_a).max() < TOLERANCE_C
    assert np.abs(temps_b - scene_b).max() < TOLERANCE_C


def test_a_chip_that_never_becomes_ready_raises_sensor_timeout() -> None:
    chip = EmulatedMlx90640()
    camera = Mlx90640Source(chip, refresh_hz=64.0, frame_timeout_s=0.3)
    chip.set_scene(scene_with_extremes(), 25.0)
    camera.read()
    chip.stalled = True
    started = time.monotonic()
    with pytest.raises(SensorTimeout, match="data-ready"):
        camera.read()
    assert time.monotonic() - started < 2.0
    polls_while_stalled = chip.transactions
    chip.stalled = False  # the sensor recovers: the next read works again
    temps, _ = camera.read()
    assert np.abs(temps - scene_with_extremes()).max() < TOLERANCE_C
    assert chip.transactions > polls_while_stalled


def test_a_host_too_slow_for_the_refresh_rate_never_gets_half_stale_frames() -> None:
    """With the chip's time running fast against the host, subpages get skipped; the source notices."""
    scene = scene_with_extremes()
    good = failed = 0
    for step in np.linspace(0.001, 0.006, 12):
        chip = EmulatedMlx90640(clock=StepClock(float(step)))
        camera = Mlx90640Source(chip, refresh_hz=64.0, frame_timeout_s=5.0)
        chip.set_scene(scene, 25.0)
        for _ in range(3):
            try:
                temps, _ = camera.read()
            except RuntimeError as exc:  # the driver's "Too many retries", or both halves never seen
                assert "retries" in str(exc) or "subpage" in str(exc)
                failed += 1
                continue
            assert np.abs(temps - scene).max() < TOLERANCE_C
            good += 1
    assert good > 0 and failed > 0


def test_a_missing_chip_is_a_clear_error() -> None:
    chip = EmulatedMlx90640(address=0x34)
    with pytest.raises(ValueError, match="No I2C device at address: 0x33"):
        Mlx90640Source(chip, refresh_hz=2.0, frame_timeout_s=1.0)


def test_emulated_source_from_config_runs_the_real_driver() -> None:
    config = SensorConfig.model_validate({"device": {"id": "pi-7"}, "source": {"kind": "emulated", "rate_hz": 16}})
    source = open_source(config)
    try:
        assert isinstance(source, EmulatedMlxSource)
        assert source.sensor_kind is SensorKind.EMULATED_MLX90640
        assert source.chip.refresh_hz == 32.0
        temps, ambient = source.read()
        assert temps.shape == (24, 32)
        assert 28 < float(np.median(temps)) < 38  # a warm torso in front of a cooler room
        assert abs(ambient - 24.0) < TOLERANCE_C
        assert source.chip.transactions > 4
    finally:
        source.close()


def test_refresh_rate_is_twice_the_frame_rate() -> None:
    assert refresh_for_rate(2.0) == 4.0
    assert refresh_for_rate(8.0) == 16.0
    assert refresh_for_rate(0.25) == 0.5
    assert refresh_for_rate(30.0) == 64.0


def test_faulty_pixels_are_replaced_by_their_neighbours() -> None:
    temps = np.full((24, 32), 30.0, dtype=np.float32)
    temps[5, 5] = -273.15
    temps[0, 0] = np.nan
    fixed = repair_pixels(temps)
    assert fixed[5, 5] == pytest.approx(30.0)
    assert fixed[0, 0] == pytest.approx(30.0)
