"""Thermogram sets in the DMR-IR `.npz` layout, turned into what the device's MLX90640 publishes.

Frames are reduced once to twice the sensor resolution (48x64), so augmentation can shift by
half a sensor pixel; every frame the model sees then goes through
`contract.sensor.emulate_mlx_frame` (24x32 block average, sensor noise, device
offset), the same code the sensor node's replay source uses.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.sensor import MLX_COLS, MLX_ROWS, block_average, emulate_mlx_frame, random_device_offset

FloatArray = npt.NDArray[np.float32]

#: Intermediate resolution factor over the sensor's 24x32 (when the source is large enough).
OVERSAMPLE = 2
#: Refresh rates drawn during augmentation (noise grows with the rate).
AUGMENT_REFRESH_HZ = (1.0, 2.0, 4.0)
#: Most DMR-IR frames show a cold marker square below the breasts (bottom centre), more often
#: and deeper in healthy patients' frames; a model trained without care learns "marker =
#: healthy" (a synthetic frame with such a square pasted in dropped from p 0.77 to 0.17). Pasting
#: one into this share of training frames of both classes makes its presence uninformative.
MARKER_PASTE_PROBABILITY = 0.6


@dataclass(frozen=True)
class ThermogramSet:
    """Frames at `OVERSAMPLE`x sensor resolution in degrees C, with per-frame labels and patients."""

    source_name: str
    source_sha256: str
    frames_c: FloatArray
    labels: npt.NDArray[np.uint8]
    patient_id: npt.NDArray[np.int64]
    dynamic_protocol: npt.NDArray[np.uint8]
    source_shape: tuple[int, int]

    @property
    def n(self) -> int:
        return int(self.labels.size)

    @property
    def strata(self) -> npt.NDArray[np.int64]:
        """label x protocol: 0 healthy/old, 1 healthy/dynamic, 2 sick/old, 3 sick/dynamic."""
        return (self.labels.astype(np.int64) * 2 + self.dynamic_protocol.astype(np.int64)).astype(np.int64)

    def subset(self, index: npt.ArrayLike) -> ThermogramSet:
        idx = np.asarray(index, dtype=np.int64)
        return ThermogramSet(
            self.source_name,
            self.source_sha256,
            self.frames_c[idx],
            self.labels[idx],
            self.patient_id[idx],
            self.dynamic_protocol[idx],
            self.source_shape,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _array(arrays: np.lib.npyio.NpzFile, key: str, path: Path) -> npt.NDArray[Any]:
    try:
        return np.asarray(arrays[key])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: array {key!r} is unreadable ({exc})") from None


def _vector(arrays: np.lib.npyio.NpzFile, key: str, n: int, path: Path, default: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if key not in arrays.files:
        return default
    value = _array(arrays, key, path)
    if value.shape != (n,):
        raise ValueError(f"{path}: array {key!r} has shape {value.shape}, expected ({n},) to match the frames")
    return value


def load_thermograms(path: str | Path) -> ThermogramSet:
    """Read and validate a thermogram `.npz`; one-line ValueError/OSError naming the file and the problem."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such thermogram file")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ValueError(f"{file}: not a thermogram .npz ({exc})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{file}: not a thermogram .npz (a single array, expected named arrays)")
    with arrays:
        for key in ("temperature_centi_c", "label"):
            if key not in arrays.files:
                raise ValueError(f"{file}: missing array {key!r} (has {', '.join(arrays.files) or 'none'})")
        temps = _array(arrays, "temperature_centi_c", file)
        if temps.ndim != 3:
            raise ValueError(f"{file}: temperature_centi_c has shape {temps.shape}, expected (N, H, W)")
        n, height, width = temps.shape
        if n < 1:
            raise ValueError(f"{file}: temperature_centi_c holds no frames")
        if height < MLX_ROWS or width < MLX_COLS:
            raise ValueError(f"{file}: frames are {height}x{width}, smaller than the sensor's {MLX_ROWS}x{MLX_COLS}")
        if not np.issubdtype(temps.dtype, np.number):
            raise ValueError(f"{file}: temperature_centi_c has dtype {temps.dtype}, expected numbers")
        labels = _vector(arrays, "label", n, file, np.zeros(0))
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{file}: label must be 0 (healthy) or 1 (sick)")
        patients = _vector(arrays, "patient_id", n, file, np.arange(n, dtype=np.int64))
        protocol = _vector(arrays, "dynamic_protocol", n, file, np.zeros(n, dtype=np.uint8))
        factor = OVERSAMPLE if height >= MLX_ROWS * OVERSAMPLE and width >= MLX_COLS * OVERSAMPLE else 1
        frames = np.stack(
            [block_average(temps[i].astype(np.float32) / 100.0, MLX_ROWS * factor, MLX_COLS * factor) for i in range(n)]
        )
    if not np.isfinite(frames).all():
        raise ValueError(f"{file}: temperature_centi_c holds non-finite values")
    return ThermogramSet(
        source_name=file.name,
        source_sha256=_sha256(file),
        frames_c=frames.astype(np.float32),
        labels=labels.astype(np.uint8),
        patient_id=patients.astype(np.int64),
        dynamic_protocol=protocol.astype(np.uint8),
        source_shape=(int(height), int(width)),
    )


def clean_sensor_frames(frames_c: FloatArray) -> FloatArray:
    """Block-averaged 24x32 frames without noise or offset (what the README's baselines see)."""
    return np.stack([block_average(f) for f in frames_c]).astype(np.float32)


def device_frames(frames_c: FloatArray, seed: int) -> FloatArray:
    """One reproducible MLX90640 reading per frame at 2 Hz, each from a device with its own offset."""
    rng = np.random.default_rng(seed)
    return np.stack([emulate_mlx_frame(f, rng, offset_c=random_device_offset(rng)) for f in frames_c]).astype(
        np.float32
    )


def shift_frame(frame: FloatArray, dy: int, dx: int) -> FloatArray:
    """Translate by whole pixels, repeating the edge into the uncovered border."""
    h, w = frame.shape
    padded = np.pad(frame, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    out: FloatArray = padded[top : top + h, left : left + w]
    return out


def paste_marker(frame: FloatArray, rng: np.random.Generator) -> FloatArray:
    """A cold square like the DMR-IR capture marker, near the bottom centre (any frame resolution)."""
    h, w = frame.shape
    size = max(1, round(h * rng.uniform(0.06, 0.1)))
    top = min(h - size, round(h * rng.uniform(0.8, 0.9)))
    left = round(w * rng.uniform(0.44, 0.52)) - size // 2
    out = frame.copy()
    cold = float(np.percentile(frame, 5)) + float(rng.uniform(0.0, 4.0))
    out[top : top + size, left : left + size] = cold
    return out


def augmented_device_frames(frames_c: FloatArray, rng: np.random.Generator, max_shift_px: int = 2) -> FloatArray:
    """A fresh augmented sensor reading per frame: shift, mirror, marker square, refresh-rate noise, device offset.

    Shifts are in intermediate pixels (half a sensor pixel at 48x64). The mirror keeps the
    label: labels are per patient, not per breast.
    """
    out = np.empty((len(frames_c), MLX_ROWS, MLX_COLS), dtype=np.float32)
    for i, frame in enumerate(frames_c):
        dy, dx = (int(v) for v in rng.integers(-max_shift_px, max_shift_px + 1, size=2))
        moved = shift_frame(frame, dy, dx)
        if rng.random() < 0.5:
            moved = moved[:, ::-1]
        if rng.random() < MARKER_PASTE_PROBABILITY:
            moved = paste_marker(moved, rng)
        rate = float(rng.choice(AUGMENT_REFRESH_HZ))
        out[i] = emulate_mlx_frame(moved, rng, refresh_hz=rate, offset_c=random_device_offset(rng))
    return out
