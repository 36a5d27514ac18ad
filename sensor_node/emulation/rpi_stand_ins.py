"""Stand-in `RPi.GPIO` and `spidev` modules that connect the real `mfrc522` package to an emulated chip.

These are stand-ins, not emulations of the Pi: a build machine has no SPI bus or GPIO header
(the real `RPi.GPIO` refuses to import off a Pi and `spidev` finds no /dev/spidev*). They
implement just what `mfrc522` 0.0.7 calls - `GPIO.getmode/setmode/setup/output/cleanup` and
`spidev.SpiDev().open/xfer2/close` - and route SPI transfers for (bus, device) to whatever
`EmulatedMfrc522` was attached there. `stand_ins_installed(...)` puts them into
`sys.modules` (and makes `mfrc522` re-import against them) for the duration of a block;
`install_stand_ins(...)` does so for the rest of the process (the sensor's 'emulated' reader).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any, Protocol


class SpiChip(Protocol):
    def xfer2(self, data: list[int]) -> list[int]: ...


_attached: dict[tuple[int, int], SpiChip] = {}
_attached_lock = threading.Lock()


def attach(chip: SpiChip, bus: int = 0, device: int = 0) -> None:
    """Put `chip` on SPI (bus, device): `spidev.SpiDev().open(bus, device)` then reaches it."""
    with _attached_lock:
        _attached[(bus, device)] = chip


def detach(bus: int = 0, device: int = 0) -> None:
    with _attached_lock:
        _attached.pop((bus, device), None)


class StandInSpiDev:
    """What `spidev.SpiDev` offers to `mfrc522`, backed by an attached emulated chip."""

    def __init__(self) -> None:
        self.max_speed_hz = 500_000
        self.mode = 0
        self._chip: SpiChip | None = None

    def open(self, bus: int, device: int) -> None:
        with _attached_lock:
            chip = _attached.get((bus, device))
        if chip is None:
            raise FileNotFoundError(2, f"No such file or directory: '/dev/spidev{bus}.{device}' (stand-in)")
        self._chip = chip

    def xfer2(self, data: list[int]) -> list[int]:
        if self._chip is None:
            raise OSError(9, "Bad file descriptor (stand-in SpiDev is not open)")
        return self._chip.xfer2(list(data))

    def close(self) -> None:
        self._chip = None


class _StandInGpio:
    """The `RPi.GPIO` calls `mfrc522` makes; pin levels are recorded for tests."""

    BOARD = 10
    BCM = 11
    OUT = 0
    IN = 1
    HIGH = 1
    LOW = 0

    def __init__(self) -> None:
        self.mode: int | None = None
        self.pins: dict[int, int] = {}

    def getmode(self) -> int | None:
        return self.mode

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setwarnings(self, flag: bool) -> None:
        """Warnings are not modelled."""

    def setup(self, pin: int, direction: int, **_: Any) -> None:
        self.pins.setdefault(pin, 0)

    def output(self, pin: int, value: int) -> None:
        self.pins[pin] = int(bool(value))

    def input(self, pin: int) -> int:
        return self.pins.get(pin, 0)

    def cleanup(self, *_: Any) -> None:
        self.pins.clear()
        self.mode = None


def _build_modules() -> dict[str, types.ModuleType]:
    gpio_state = _StandInGpio()
    gpio = types.ModuleType("RPi.GPIO", "Stand-in RPi.GPIO (thermoscreen emulation; no GPIO here).")
    for name in ("BOARD", "BCM", "OUT", "IN", "HIGH", "LOW"):
        setattr(gpio, name, getattr(_StandInGpio, name))
    for name in ("getmode", "setmode", "setwarnings", "setup", "output", "input", "cleanup"):
        setattr(gpio, name, getattr(gpio_state, name))
    gpio.state = gpio_state  # type: ignore[attr-defined]
    rpi = types.ModuleType("RPi", "Stand-in RPi package (thermoscreen emulation).")
    rpi.GPIO = gpio  # type: ignore[attr-defined]
    rpi.__path__ = []
    spidev = types.ModuleType("spidev", "Stand-in spidev (thermoscreen emulation; no SPI here).")
    spidev.SpiDev = StandInSpiDev  # type: ignore[attr-defined]
    return {"RPi": rpi, "RPi.GPIO": gpio, "spidev": spidev}


_REPLACED = ("RPi", "RPi.GPIO", "spidev")
_DEPENDENT_PREFIX = "mfrc522"


def _dependent_modules() -> list[str]:
    return [name for name in sys.modules if name == _DEPENDENT_PREFIX or name.startswith(_DEPENDENT_PREFIX + ".")]


def install_stand_ins() -> None:
    """Use the stand-ins for the rest of this process (before `mfrc522` is imported)."""
    for name in _dependent_modules():
        del sys.modules[name]
    sys.modules.update(_build_modules())


@contextlib.contextmanager
def stand_ins_installed() -> Iterator[None]:
    """Within the block, `import mfrc522` gets the real package wired to the stand-ins."""
    saved = {name: sys.modules.get(name) for name in (*_REPLACED, *_dependent_modules())}
    install_stand_ins()
    try:
        yield
    finally:
        for name in [*_REPLACED, *_dependent_modules()]:
            sys.modules.pop(name, None)
        for name, module in saved.items():
            if module is not None:
                sys.modules[name] = module
