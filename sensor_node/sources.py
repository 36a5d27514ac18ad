"""The thermal sources that need no hardware, and the factory that picks one from the config.

* `SyntheticSource`: a warm torso with two breasts (`synthetic_scene`), seen through the
  MLX90640 model (`mlx_emulation`: block averaging, noise, device offset). Needs no data.
* `ReplaySource`: thermograms from a DMR-IR style `.npz`, through the same MLX90640 model.
* `EmulatedMlxSource`: a synthetic scene handed to an emulated chip and read back through the
  real adafruit driver, so the device's I2C code path runs without a camera.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from contract.frame import SensorKind
from contract.sensor import MAX_OBJECT_C, MIN_OBJECT_C, MLX_COLS, MLX_ROWS, emulate_mlx_frame, random_device_offset
from sensor_node.config import SensorConfig, SourceKind
from sensor_node.synthetic_scene import random_patient, torso_scene
from sensor_node.thermal_source import TemperatureArray, ThermalSource

SCENE_HEIGHT, SCENE_WIDTH = 96, 128
MIN_C, MAX_C = MIN_OBJECT_C, MAX_OBJECT_C


def device_seed(device_id: str) -> int:
    """A stable seed per device, so its emulated offset stays the same across restarts."""
    return int.from_bytes(hashlib.sha256(device_id.encode("ascii")).digest()[:8], "little")


class SyntheticSource:
    """Synthetic subjects as an MLX90640 would see them; a new subject per session or every N frames."""

    def __init__(
        self,
        *,
        seed: int,
        refresh_hz: float,
        ambient_c: float = 24.0,
        sick_fraction: float = 0.4,
        frames_per_subject: int = 64,
        sensor_kind: SensorKind = SensorKind.SYNTHETIC,
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self._offset_c = random_device_offset(self._rng)
        self._refresh_hz = refresh_hz
        self._ambient_c = ambient_c
        self._sick_fraction = sick_fraction
        self._frames_per_subject = frames_per_subject
        self._kind = sensor_kind
        self._frames_left = 0
        self._scene: npt.NDArray[np.float32] | None = None
        self.subject_sick = False

    @property
    def sensor_kind(self) -> SensorKind:
        return self._kind

    def next_subject(self) -> None:
        self.subject_sick = bool(self._rng.random() < self._sick_fraction)
        params = random_patient(self._rng, self.subject_sick)
        self._scene = torso_scene(SCENE_HEIGHT, SCENE_WIDTH, params, self._rng)
        self._frames_left = self._frames_per_subject

    def read(self) -> tuple[TemperatureArray, float]:
        if self._scene is None or self._frames_left <= 0:
            self.next_subject()
        self._frames_left -= 1
        scene = self._scene
        assert scene is not None
        frame = emulate_mlx_frame(scene, self._rng, refresh_hz=self._refresh_hz, offset_c=self._offset_c)
        return np.clip(frame, MIN_C, MAX_C), self._ambient_c

    def close(self) -> None:
        """Nothing to release."""


class ReplaySource:
    """Thermograms from a DMR-IR style `.npz`, each held for `frames_per_thermogram` frames, looping."""

    def __init__(
        self,
        path: Path,
        *,
        seed: int,
        refresh_hz: float,
        ambient_c: float = 24.0,
        frames_per_thermogram: int = 16,
    ) -> None:
        self._thermograms = _load_thermograms(path)
        self._rng = np.random.default_rng(seed)
        self._offset_c = random_device_offset(self._rng)
        self._refresh_hz = refresh_hz
        self._ambient_c = ambient_c
        self._frames_per = frames_per_thermogram
        self._index = -1
        self._frames_left = 0

    @property
    def sensor_kind(self) -> SensorKind:
        return SensorKind.REPLAY

    @property
    def count(self) -> int:
        return int(self._thermograms.shape[0])

    @property
    def index(self) -> int:
        """Which thermogram the last frame came from."""
        return self._index

    def next_subject(self) -> None:
        self._index = (self._index + 1) % self.count
        self._frames_left = self._frames_per

    def read(self) -> tuple[TemperatureArray, float]:
        if self._index < 0 or self._frames_left <= 0:
            self.next_subject()
        self._frames_left -= 1
        scene = self._thermograms[self._index].astype(np.float32) / np.float32(100.0)
        frame = emulate_mlx_frame(scene, self._rng, refresh_hz=self._refresh_hz, offset_c=self._offset_c)
        return np.clip(frame, MIN_C, MAX_C), self._ambient_c

    def close(self) -> None:
        """The thermograms are in memory; nothing to release."""


def _load_thermograms(path: Path) -> np.ndarray:
    """The `temperature_centi_c` array (N x H x W centi-degrees) of a DMR-IR style `.npz`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            temps = np.asarray(data["temperature_centi_c"]) if "temperature_centi_c" in names else None
    except FileNotFoundError:
        raise ValueError(f"{path}: replay file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ValueError(f"{path}: not a readable .npz thermogram file ({reason})") from None
    if temps is None:
        raise ValueError(f"{path}: no 'temperature_centi_c' array (found {', '.join(names) or 'none'})")
    if temps.ndim != 3 or temps.shape[0] < 1 or temps.shape[1] < MLX_ROWS or temps.shape[2] < MLX_COLS:
        raise ValueError(
            f"{path}: temperature_centi_c must be N x H x W with H >= {MLX_ROWS}, W >= {MLX_COLS}, got {temps.shape}"
        )
    return temps


class EmulatedMlxSource:
    """Synthetic scenes shown to an emulated MLX90640 and read back through the real adafruit driver."""

    def __init__(self, scenes: SyntheticSource, *, refresh_hz: float, frame_timeout_s: float) -> None:
        from sensor_node.emulation.mlx90640_chip import EmulatedMlx90640
        from sensor_node.mlx_source import Mlx90640Source

        self.chip = EmulatedMlx90640()
        self._scenes = scenes
        self._camera = Mlx90640Source(
            self.chip,
            refresh_hz=refresh_hz,
            frame_timeout_s=frame_timeout_s,
            sensor_kind=SensorKind.EMULATED_MLX90640,
        )

    @property
    def sensor_kind(self) -> SensorKind:
        return SensorKind.EMULATED_MLX90640

    def next_subject(self) -> None:
        self._scenes.next_subject()

    def read(self) -> tuple[TemperatureArray, float]:
        scene, ambient = self._scenes.read()
        self.chip.set_scene(scene, ambient)
        return self._camera.read()

    def close(self) -> None:
        self._camera.close()


def open_source(config: SensorConfig) -> ThermalSource:
    """The thermal source the config asks for (hardware and driver imports happen only here)."""
    src = config.source
    seed = src.seed if src.seed is not None else device_seed(config.device.id)
    refresh = config.refresh_hz
    if src.kind is SourceKind.MLX90640:
        from sensor_node.mlx_source import open_hardware_mlx90640

        return open_hardware_mlx90640(
            refresh_hz=refresh, frame_timeout_s=config.frame_timeout_s, address=src.i2c_address
        )
    if src.kind is SourceKind.REPLAY:
        assert src.replay.path is not None  # checked by the config model
        return ReplaySource(
            src.replay.path,
            seed=seed,
            refresh_hz=refresh,
            ambient_c=src.ambient_c,
            frames_per_thermogram=src.replay.frames_per_thermogram,
        )
    synthetic = SyntheticSource(
        seed=seed,
        refresh_hz=refresh,
        ambient_c=src.ambient_c,
        sick_fraction=src.synthetic.sick_fraction,
        frames_per_subject=src.synthetic.frames_per_subject,
    )
    if src.kind is SourceKind.EMULATED:
        return EmulatedMlxSource(synthetic, refresh_hz=refresh, frame_timeout_s=config.frame_timeout_s)
    return synthetic
