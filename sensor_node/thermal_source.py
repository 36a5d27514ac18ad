"""The one interface every thermal source implements, and the errors they raise.

The node only ever sees `ThermalSource`: a real MLX90640, the real driver on an emulated chip,
a replayed thermogram file or a synthetic scene, chosen by configuration.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from contract.frame import SensorKind
from contract.sensor import REFRESH_RATES_HZ

TemperatureArray = npt.NDArray[np.float32]


class SensorTimeout(TimeoutError):  # noqa: N818 - the name the node and its docs use
    """The sensor did not deliver a frame in time (e.g. the MLX90640 never set data-ready)."""


class ThermalSource(Protocol):
    """A 24x32 thermal camera, real or not."""

    @property
    def sensor_kind(self) -> SensorKind:
        """What goes into the frame's `sensor` field."""
        ...

    def read(self) -> tuple[TemperatureArray, float]:
        """The next frame: (24x32 float32 degrees C, ambient degrees C). May block until the chip has it."""
        ...

    def next_subject(self) -> None:
        """A new person stepped in front of the camera (session start); real cameras ignore it."""
        ...

    def close(self) -> None:
        """Release the bus or file."""
        ...


def refresh_for_rate(rate_hz: float) -> float:
    """The MLX90640 refresh rate (subpages/s) for `rate_hz` full frames/s: the lowest >= 2 x rate.

    The driver reads two subpages per frame, so the chip must refresh twice as fast as frames
    are wanted; higher refresh rates are noisier (`mlx_emulation.noise_rms_k`), so no faster.
    """
    for refresh in REFRESH_RATES_HZ:
        if refresh >= 2 * rate_hz:
            return refresh
    return REFRESH_RATES_HZ[-1]
