"""The sensor contract: what an MLX90640 is and reports. Used by the wire frame, the device, replay AND training.

Its geometry (24x32) and temperature ranges are defined here and only here; every other module
imports them, so a frame, a row of the schema and a training input cannot disagree in shape or range.

Sharing this one module is how training sees exactly what inference will see: the 32x24
geometry (block averaging of a higher-resolution thermogram), the sensor's temporal noise
(about 0.1 K RMS at 2 Hz, growing with the refresh rate) and a per-device absolute offset
within the datasheet's +-1 C accuracy.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

MLX_ROWS = 24
MLX_COLS = 32
#: The frame shape (rows, cols) of the MLX90640.
MLX_SHAPE = (MLX_ROWS, MLX_COLS)
#: Object (pixel) temperature range of the MLX90640, degrees C.
MIN_OBJECT_C = -40.0
MAX_OBJECT_C = 300.0
#: Ambient (sensor die) temperature range of the MLX90640, degrees C.
MIN_AMBIENT_C = -40.0
MAX_AMBIENT_C = 85.0
#: The same ranges in the centi-degrees the binary frame carries (derived, not restated).
CENTI_PER_C = 100
MIN_PIXEL_CENTI = round(MIN_OBJECT_C * CENTI_PER_C)
MAX_PIXEL_CENTI = round(MAX_OBJECT_C * CENTI_PER_C)
MIN_AMBIENT_CENTI = round(MIN_AMBIENT_C * CENTI_PER_C)
MAX_AMBIENT_CENTI = round(MAX_AMBIENT_C * CENTI_PER_C)
#: Datasheet accuracy of the absolute temperature, degrees C.
MLX_ACCURACY_C = 1.0
#: Temporal noise at the 2 Hz default refresh rate, kelvin RMS.
NOISE_RMS_AT_2HZ = 0.1
REFRESH_RATES_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

FloatArray = npt.NDArray[np.float32]


def noise_rms_k(refresh_hz: float) -> float:
    """Noise grows with the square root of the refresh rate (shorter integration), 0.1 K at 2 Hz."""
    if refresh_hz <= 0:
        raise ValueError(f"refresh rate must be positive, got {refresh_hz}")
    return NOISE_RMS_AT_2HZ * math.sqrt(max(refresh_hz, 0.5) / 2.0)


def block_average(temperature_c: npt.ArrayLike, rows: int = MLX_ROWS, cols: int = MLX_COLS) -> FloatArray:
    """Average a (H, W) image down to (rows, cols); H and W are cropped to multiples first."""
    img = np.asarray(temperature_c, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D thermogram, got shape {img.shape}")
    h, w = img.shape
    if h < rows or w < cols:
        raise ValueError(f"thermogram {h}x{w} is smaller than the sensor's {rows}x{cols}")
    bh, bw = h // rows, w // cols
    top, left = (h - bh * rows) // 2, (w - bw * cols) // 2
    cropped = img[top : top + bh * rows, left : left + bw * cols]
    result: FloatArray = cropped.reshape(rows, bh, cols, bw).mean(axis=(1, 3), dtype=np.float32)
    return result


def random_device_offset(rng: np.random.Generator) -> float:
    """A per-device calibration offset drawn within the +-1 C accuracy."""
    return float(rng.uniform(-MLX_ACCURACY_C, MLX_ACCURACY_C))


def emulate_mlx_frame(
    temperature_c: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    refresh_hz: float = 2.0,
    offset_c: float = 0.0,
) -> FloatArray:
    """The 24x32 frame an MLX90640 with `offset_c` would report for this scene at `refresh_hz`."""
    frame = block_average(temperature_c)
    noise = rng.normal(0.0, noise_rms_k(refresh_hz), frame.shape).astype(np.float32)
    return (frame + np.float32(offset_c) + noise).astype(np.float32)
