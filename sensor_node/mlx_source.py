"""The MLX90640 through the unmodified `adafruit_mlx90640` driver, on a real or emulated I2C bus.

Two quirks of the driver (1.3.9) are handled here rather than patched:

* Its data-ready poll (`while dataReady == 0: read status`) has no timeout and no sleep. The
  bus is wrapped in `DeadlineI2C`, which raises `SensorTimeout` on the first transaction after
  a deadline, so a chip that never becomes ready gives a clear error instead of a hang; it
  also sleeps briefly after each "not ready" status read, so the poll does not burn a core.
* Its calibration lives in class-level lists shared by every instance (and the faulty-pixel
  lists grow with each construction). Construction is serialised, those lists are cleared
  first, and each instance gets private copies, so two chips in one process stay apart.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import numpy as np

from contract.frame import SensorKind
from contract.sensor import MAX_OBJECT_C, MIN_OBJECT_C, MLX_SHAPE
from sensor_node.thermal_source import SensorTimeout, TemperatureArray

MLX90640_ADDRESS = 0x33
STATUS_ADDRESS = b"\x80\x00"
STATUS_NEW_DATA = 0x0008
#: Class-level lists of adafruit_mlx90640.MLX90640 that hold one chip's calibration.
_SHARED_CALIBRATION = (
    "ksTo",
    "ct",
    "alpha",
    "offset",
    "kta",
    "kv",
    "cpAlpha",
    "cpOffset",
    "brokenPixels",
    "outlierPixels",
)
_CONSTRUCTION_LOCK = threading.Lock()
#: RAM words the driver's `_GetTa` uses (VBE, VPTAT, VDD), relative to 0x0400.
_TA_WORDS = (768, 800, 810)
_MIN_C, _MAX_C = MIN_OBJECT_C, MAX_OBJECT_C
#: getFrame calls per read until both subpages were seen.
MAX_FRAME_ATTEMPTS = 3
#: The driver reports faulty pixels as -273.15 C.
_FAULTY_BELOW_C = -200.0


class I2CBus(Protocol):
    """The subset of `busio.I2C` that `adafruit_bus_device.I2CDevice` calls."""

    def try_lock(self) -> bool: ...
    def unlock(self) -> None: ...
    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None: ...
    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None: ...
    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: Any,
        buffer_in: Any,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None: ...


class DeadlineI2C:
    """Wraps an I2C bus: after `arm(seconds)`, any transaction past the deadline raises SensorTimeout."""

    def __init__(self, bus: I2CBus, *, not_ready_sleep_s: float = 0.001) -> None:
        self.bus = bus
        self.not_ready_sleep_s = not_ready_sleep_s
        self._deadline: float | None = None
        self._what = ""

    def arm(self, seconds: float, what: str) -> None:
        self._deadline = time.monotonic() + seconds
        self._what = what

    def disarm(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._deadline = None
            raise SensorTimeout(self._what)

    def try_lock(self) -> bool:
        self._check()
        return self.bus.try_lock()

    def unlock(self) -> None:
        self.bus.unlock()

    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._check()
        self.bus.writeto(address, buffer, start=start, end=end)

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._check()
        self.bus.readfrom_into(address, buffer, start=start, end=end)

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: Any,
        buffer_in: Any,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        self._check()
        self.bus.writeto_then_readfrom(
            address, buffer_out, buffer_in, out_start=out_start, out_end=out_end, in_start=in_start, in_end=in_end
        )
        out = bytes(buffer_out[out_start : len(buffer_out) if out_end is None else out_end])
        stop = len(buffer_in) if in_end is None else in_end
        if out == STATUS_ADDRESS and stop - in_start == 2 and not buffer_in[in_start + 1] & STATUS_NEW_DATA:
            time.sleep(self.not_ready_sleep_s)  # the driver polls without pause


def _construct_driver(bus: DeadlineI2C, address: int) -> Any:
    import adafruit_mlx90640

    cls = adafruit_mlx90640.MLX90640
    with _CONSTRUCTION_LOCK:
        cls.brokenPixels.clear()
        cls.outlierPixels.clear()
        driver = cls(bus, address)
        for name in _SHARED_CALIBRATION:
            setattr(driver, name, list(getattr(driver, name)))
    return driver


def _refresh_code(refresh_hz: float) -> int:
    codes = {0.5: 0, 1.0: 1, 2.0: 2, 4.0: 3, 8.0: 4, 16.0: 5, 32.0: 6, 64.0: 7}
    try:
        return codes[float(refresh_hz)]
    except KeyError:
        raise ValueError(f"MLX90640 refresh rate {refresh_hz} Hz is not one of {sorted(codes)}") from None


def repair_pixels(temps: TemperatureArray) -> TemperatureArray:
    """Replace pixels the driver marks faulty (-273.15) or NaN; clip the rest to -40..300 C.

    A faulty pixel takes the mean of its valid 8-neighbours; if it has none, the frame median.
    """
    bad = ~np.isfinite(temps) | (temps < _FAULTY_BELOW_C)
    if not bad.any():
        return np.clip(temps, _MIN_C, _MAX_C).astype(np.float32)
    fixed = temps.copy()
    valid = np.where(bad, np.nan, temps)
    median = float(np.nanmedian(valid)) if (~bad).any() else 25.0
    for r, c in zip(*np.nonzero(bad), strict=True):
        window = valid[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        good = window[np.isfinite(window)]
        fixed[r, c] = float(good.mean()) if good.size else median
    return np.clip(fixed, _MIN_C, _MAX_C).astype(np.float32)


class Mlx90640Source:
    """A `ThermalSource` reading an MLX90640 with the adafruit driver over `bus`."""

    def __init__(
        self,
        bus: I2CBus,
        *,
        refresh_hz: float,
        frame_timeout_s: float,
        sensor_kind: SensorKind = SensorKind.MLX90640,
        address: int = MLX90640_ADDRESS,
    ) -> None:
        self._bus = DeadlineI2C(bus)
        self._frame_timeout_s = frame_timeout_s
        self._kind = sensor_kind
        self._bus.arm(frame_timeout_s, f"MLX90640 at 0x{address:02x} did not answer within {frame_timeout_s} s")
        try:
            self._driver = _construct_driver(self._bus, address)
            self._driver.refresh_rate = _refresh_code(refresh_hz)
        finally:
            self._bus.disarm()
        self._buffer = [0.0] * 768
        self._subpages_seen: set[int] = set()
        self._observe_subpages()

    def _observe_subpages(self) -> None:
        """Record which subpage each half-frame came from (the driver does not say).

        A host that is slow for the refresh rate can get the same subpage twice in one
        `getFrame`, leaving half the pixels stale (or never written on the first frame).
        """
        read_half = self._driver._GetFrameData

        def recording(frame_data: list[int]) -> int:
            status = int(read_half(frame_data))
            self._subpages_seen.add(frame_data[833])
            return status

        self._driver._GetFrameData = recording

    @property
    def sensor_kind(self) -> SensorKind:
        return self._kind

    @property
    def driver(self) -> Any:
        """The adafruit_mlx90640.MLX90640 instance (for diagnostics)."""
        return self._driver

    def read(self) -> tuple[TemperatureArray, float]:
        why = (
            f"MLX90640 reported no new data within {self._frame_timeout_s:g} s "
            "(status register 0x8000 data-ready bit never set: check wiring, power and I2C speed)"
        )
        self._subpages_seen.clear()
        try:
            for _ in range(MAX_FRAME_ATTEMPTS):
                self._bus.arm(self._frame_timeout_s, why)
                self._driver.getFrame(self._buffer)
                if len(self._subpages_seen) == 2:
                    break
            else:
                raise RuntimeError(
                    f"MLX90640 delivered only subpage {sorted(self._subpages_seen)} in {MAX_FRAME_ATTEMPTS} frames: "
                    "the host does not keep up with the refresh rate (lower it or raise the I2C speed)"
                )
            ambient = self._ambient()
        finally:
            self._bus.disarm()
        temps = np.asarray(self._buffer, dtype=np.float32).reshape(MLX_SHAPE)
        return repair_pixels(temps), ambient

    def _ambient(self) -> float:
        """The die temperature from the last subpage, computed by the driver's own `_GetTa`."""
        frame = [0] * 834
        word = [0]
        for index in _TA_WORDS:
            self._driver._I2CReadWords(0x0400 + index, word)
            frame[index] = word[0]
        self._driver._I2CReadWords(0x800D, word)
        frame[832] = word[0]
        return float(self._driver._GetTa(frame))

    def next_subject(self) -> None:
        """A real camera sees whoever is there."""

    def close(self) -> None:
        deinit = getattr(self._bus.bus, "deinit", None)
        if callable(deinit):
            deinit()


def open_hardware_mlx90640(*, refresh_hz: float, frame_timeout_s: float, address: int) -> Mlx90640Source:
    """The MLX90640 on the Pi's I2C bus via Blinka (`board.I2C()`); clear error where there is none.

    The bus speed is the kernel's (`dtparam=i2c_arm_baudrate=1000000` in /boot/firmware/config.txt
    for refresh rates above 8 Hz).
    """
    try:
        import board

        bus = board.I2C()
    except Exception as exc:  # Blinka raises assorted errors on machines without I2C
        raise RuntimeError(
            f"cannot open the I2C bus for the MLX90640 ({type(exc).__name__}: {exc}); "
            "on a Raspberry Pi enable I2C (raspi-config) and install the 'sensor' extra, "
            "elsewhere use source kind 'emulated', 'replay' or 'synthetic'"
        ) from None
    try:
        return Mlx90640Source(bus, refresh_hz=refresh_hz, frame_timeout_s=frame_timeout_s, address=address)
    except ValueError as exc:  # I2CDevice's probe: "No I2C device at address: 0x33"
        raise RuntimeError(f"MLX90640 not found on I2C: {exc}") from None
