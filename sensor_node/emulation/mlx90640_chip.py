"""An I2C bus with one emulated MLX90640 on it, for the unmodified `adafruit_mlx90640` driver.

Why: the real driver is the code that runs on the Pi, so tests and demos should run *it*, not
a re-implementation. This object offers the bus methods the driver (through
`adafruit_bus_device.I2CDevice`) calls: `try_lock`, `unlock`, `writeto`, `readfrom_into`,
`writeto_then_readfrom`. Behind them sit

* an EEPROM image with simple, valid calibration constants: gain 1, no thermal gradient
  compensation (TGC 0), no KsTa/KsTo corrections, chess-pattern calibration, no faulty
  pixels, a small per-pixel offset/sensitivity/Kta pattern so pixels are not all alike;
* frame RAM for both subpages, computed by inverting the driver's own temperature equations
  for the requested scene (`set_scene`), so the driver reports that scene back (rounding of
  the raw 16-bit words costs about 0.02 C at body temperature);
* the status register 0x8000 (bit 3: new data, bit 0: subpage) and the control register
  0x800D (refresh rate, resolution, chess mode), with subpages completing on the chip's own
  clock at the configured refresh rate, as on the real chip.

`stalled = True` makes the chip stop reporting new data, to exercise the driver's unbounded
data-ready poll and the guard around it.
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contract.sensor import MAX_AMBIENT_C, MAX_OBJECT_C, MIN_AMBIENT_C, MIN_OBJECT_C, MLX_COLS, MLX_ROWS

MLX90640_ADDRESS = 0x33
EEPROM_START = 0x2400
EEPROM_WORDS = 832
RAM_START = 0x0400
RAM_WORDS = 832
STATUS_REGISTER = 0x8000
CONTROL_REGISTER = 0x800D
I2C_CONFIG_REGISTER = 0x800F
STATUS_NEW_DATA = 0x0008
STATUS_OVERWRITE_ENABLE = 0x0010
#: Subpage mode on, 2 Hz, 18-bit resolution, chess pattern: the factory default.
DEFAULT_CONTROL = 0x1901
ROWS, COLS = MLX_ROWS, MLX_COLS
PIXELS = ROWS * COLS
#: Constants the driver uses in its temperature calculation (adafruit_mlx90640 1.3.9).
DRIVER_EMISSIVITY = 0.95
DRIVER_OPENAIR_TA_SHIFT = 8.0
SCALEALPHA = 0.000001
#: Refresh-rate codes of the control register (bits 9:7), in subpages per second.
REFRESH_HZ_BY_CODE = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: VPTAT word the emulated chip reports; VBE is solved for the requested ambient.
VPTAT_WORD = 1500

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _u16(value: int) -> int:
    if not -32768 <= value <= 65535:
        raise ValueError(f"value {value} does not fit a 16-bit word")
    return value & 0xFFFF


@dataclass(frozen=True)
class Calibration:
    """Calibration constants written to the emulated EEPROM (datasheet encodings in comments).

    The defaults are typical of real parts where that does not complicate the inversion.
    """

    offset_ref: int = -60  # word 17, signed
    alpha_ref: int = 4096  # word 33
    alpha_scale_code: int = 4  # word 32 bits 15:12; pixel alpha scale 2^(code+30)
    gain_ee: int = 6144  # word 48, signed
    vptat25: int = 12273  # word 49
    kt_ptat_code: int = 339  # word 50 bits 9:0, KtPTAT = code / 8
    kv_ptat_code: int = 22  # word 50 bits 15:10, KvPTAT = code / 4096
    alpha_ptat_code: int = 4  # word 16 bits 15:12, alphaPTAT = code / 4 + 8
    kvdd_vdd25_word: int = 0x9D68  # word 51: kVdd = -99 * 32, vdd25 = -13056
    kta_rc: int = 50  # words 54/55, all four row/column classes (signed 8-bit)
    kta_scale1_code: int = 6  # word 56 bits 7:4, Kta scale 2^(code+8)
    kv_rc: int = 4  # word 52, all four classes (signed 4-bit)
    kv_scale_code: int = 3  # word 56 bits 11:8
    resolution_code: int = 2  # word 56 bits 13:12 (18-bit, as in DEFAULT_CONTROL)
    pixel_seed: int = 0  # per-pixel offset/alpha/Kta pattern
    serial: tuple[int, int, int] = (0x1234, 0x5678, 0x9ABC)


def eeprom_image(cal: Calibration) -> npt.NDArray[np.uint16]:
    """The 832 EEPROM words for `cal`; accepted by the driver's parameter extraction."""
    ee = [0] * EEPROM_WORDS
    ee[7], ee[8], ee[9] = cal.serial  # device id words at 0x2407..0x2409
    ee[10] = 0x0000  # bit 11 clear: calibrated in chess mode (matches DEFAULT_CONTROL)
    # occupational offsets: alphaPTAT nibble, row/column/remainder scales all 0
    ee[16] = (cal.alpha_ptat_code & 0xF) << 12
    ee[17] = _u16(cal.offset_ref)
    # words 18..31: per-row and per-column offset corrections, all zero
    ee[32] = (cal.alpha_scale_code & 0xF) << 12  # accuracy scales 0
    ee[33] = cal.alpha_ref
    # words 34..47: per-row and per-column sensitivity corrections, all zero
    ee[48] = _u16(cal.gain_ee)
    ee[49] = cal.vptat25
    ee[50] = ((cal.kv_ptat_code & 0x3F) << 10) | (cal.kt_ptat_code & 0x3FF)
    ee[51] = cal.kvdd_vdd25_word
    kv = cal.kv_rc & 0xF
    ee[52] = (kv << 12) | (kv << 8) | (kv << 4) | kv
    ee[53] = 0  # interleaved/chess corrections: unused in chess mode
    kta = cal.kta_rc & 0xFF
    ee[54] = (kta << 8) | kta
    ee[55] = (kta << 8) | kta
    ee[56] = ((cal.resolution_code & 0x3) << 12) | ((cal.kv_scale_code & 0xF) << 8) | ((cal.kta_scale1_code & 0xF) << 4)
    ee[57] = 300  # compensation pixel alpha (unused with TGC 0)
    ee[58] = _u16(cal.offset_ref) & 0x03FF  # compensation pixel offset, same delta on both subpages
    ee[59] = 0  # compensation pixel Kta/Kv
    ee[60] = 0  # KsTa 0, TGC 0
    ee[61] = 0  # KsTo ranges 0 and 1
    ee[62] = 0  # KsTo ranges 2 and 3
    ee[63] = 0x1000 | (8 << 8) | (4 << 4)  # step 10 C: corner temperatures 40 and 120 C (unused with KsTo 0)
    rng = np.random.default_rng(cal.pixel_seed)
    offsets = rng.integers(-8, 8, PIXELS)
    alphas = rng.integers(1, 24, PIXELS)  # never 0, so no pixel word is 0 ("broken")
    ktas = rng.integers(-2, 2, PIXELS)
    for p in range(PIXELS):
        # bits 15:10 offset, 9:4 alpha, 3:1 Kta, bit 0 outlier flag (never set)
        ee[64 + p] = ((int(offsets[p]) & 0x3F) << 10) | ((int(alphas[p]) & 0x3F) << 4) | ((int(ktas[p]) & 0x7) << 1)
    return np.asarray(ee, dtype=np.uint16)


@dataclass(frozen=True)
class DriverView:
    """The calibration as the driver derives it from the EEPROM, including its quantisation."""

    k_vdd: int
    vdd25: int
    kv_ptat: float
    kt_ptat: float
    vptat25: int
    alpha_ptat: float
    gain_ee: int
    resolution_ee: int
    offset: IntArray
    kta: FloatArray
    kv: FloatArray
    alpha_compensated: FloatArray

    @classmethod
    def from_eeprom(cls, words: npt.NDArray[np.uint16]) -> DriverView:
        """Decode the EEPROM as adafruit_mlx90640 1.3.9 does, for the constants this emulator uses."""
        ee = [int(w) for w in words]
        if ee[60] & 0xFF or ee[60] >> 8 or ee[61] or ee[62]:
            raise ValueError("the emulator supports TGC, KsTa and KsTo of 0 only")
        k_vdd = _signed(ee[51] >> 8, 8) * 32
        vdd25 = (((ee[51] & 0xFF) - 256) << 5) - 8192
        kv_ptat = _signed(ee[50] >> 10, 6) / 4096
        kt_ptat = _signed(ee[50] & 0x3FF, 10) / 8
        alpha_ptat = (ee[16] & 0xF000) / 2**14 + 8
        p = np.arange(PIXELS)
        rows, cols = p // COLS, p % COLS
        pix = np.asarray(ee[64 : 64 + PIXELS], dtype=np.int64)
        # offsets
        occ_rem, occ_col_scale, occ_row_scale = ee[16] & 0xF, (ee[16] >> 4) & 0xF, (ee[16] >> 8) & 0xF
        occ_row = np.array([_signed((ee[18 + i // 4] >> (4 * (i % 4))) & 0xF, 4) for i in range(ROWS)])
        occ_col = np.array([_signed((ee[24 + j // 4] >> (4 * (j % 4))) & 0xF, 4) for j in range(COLS)])
        off6 = (pix & 0xFC00) >> 10
        off6 = np.where(off6 > 31, off6 - 64, off6)
        offset = (
            off6 * (1 << occ_rem)
            + _signed(ee[17], 16)
            + (occ_row[rows] << occ_row_scale)
            + (occ_col[cols] << occ_col_scale)
        )
        # Kta, re-quantised to 8 bits of mantissa the way the driver does
        split = 2 * (p // 32 - (p // 64) * 2) + p % 2
        kta_rc = np.array(
            [_signed(ee[54] >> 8, 8), _signed(ee[55] >> 8, 8), _signed(ee[54] & 0xFF, 8), _signed(ee[55] & 0xFF, 8)]
        )
        kta_scale1, kta_scale2 = ((ee[56] & 0xF0) >> 4) + 8, ee[56] & 0xF
        kta3 = (pix & 0x000E) >> 1
        kta3 = np.where(kta3 > 3, kta3 - 8, kta3)
        kta_temp = (kta3 * (1 << kta_scale2) + kta_rc[split]) / 2.0**kta_scale1
        kta = _requantise(kta_temp, 64)
        kv_t = np.array([_signed((ee[52] >> shift) & 0xF, 4) for shift in (12, 4, 8, 0)])
        kv = _requantise(kv_t[split] / 2.0 ** ((ee[56] & 0x0F00) >> 8), 64)
        # sensitivity: the driver stores 1e-6/alpha as integers scaled to >= 2^15, then inverts back
        acc_rem, acc_col_scale, acc_row_scale = ee[32] & 0xF, (ee[32] >> 4) & 0xF, (ee[32] >> 8) & 0xF
        alpha_scale = ((ee[32] & 0xF000) >> 12) + 30
        acc_row = np.array([_signed((ee[34 + i // 4] >> (4 * (i % 4))) & 0xF, 4) for i in range(ROWS)])
        acc_col = np.array([_signed((ee[40 + j // 4] >> (4 * (j % 4))) & 0xF, 4) for j in range(COLS)])
        a6 = (pix & 0x03F0) >> 4
        a6 = np.where(a6 > 31, a6 - 64, a6)
        alpha_raw = (
            a6 * (1 << acc_rem) + ee[33] + (acc_row[rows] << acc_row_scale) + (acc_col[cols] << acc_col_scale)
        ) / 2.0**alpha_scale
        alpha_temp = SCALEALPHA / alpha_raw
        top, scale = float(alpha_temp.max()), 0
        while top < 32768:
            top *= 2
            scale += 1
        alpha_int = np.floor(alpha_temp * 2.0**scale + 0.5)
        alpha_compensated = SCALEALPHA * 2.0**scale / alpha_int
        return cls(
            k_vdd=k_vdd,
            vdd25=vdd25,
            kv_ptat=kv_ptat,
            kt_ptat=kt_ptat,
            vptat25=ee[49],
            alpha_ptat=alpha_ptat,
            gain_ee=_signed(ee[48], 16),
            resolution_ee=(ee[56] & 0x3000) >> 12,
            offset=offset.astype(np.int64),
            kta=kta,
            kv=kv,
            alpha_compensated=alpha_compensated,
        )

    def vdd(self, vdd_word: int, control: int) -> float:
        resolution_ram = (control & 0x0C00) >> 10
        correction = 2.0**self.resolution_ee / 2.0**resolution_ram
        return (correction * _signed(vdd_word, 16) - self.vdd25) / self.k_vdd + 3.3

    def ta(self, vptat: int, vbe: int, vdd: float) -> float:
        """Ambient (die) temperature from the PTAT words, as the driver's `_GetTa`."""
        ptat, ptat_art = _signed(vptat, 16), _signed(vbe, 16)
        art = (ptat / (ptat * self.alpha_ptat + ptat_art)) * 2.0**18
        return (art / (1 + self.kv_ptat * (vdd - 3.3)) - self.vptat25) / self.kt_ptat + 25

    def vbe_for(self, ambient_c: float, vdd: float) -> int:
        """The VBE word that makes the driver compute `ambient_c` (to within 0.01 C)."""
        art = ((ambient_c - 25) * self.kt_ptat + self.vptat25) * (1 + self.kv_ptat * (vdd - 3.3))
        return round(VPTAT_WORD * 2.0**18 / art - VPTAT_WORD * self.alpha_ptat)

    def raw_pixels_for(self, scene_c: FloatArray, ta: float, vdd: float) -> IntArray:
        """Raw pixel words (signed) that the driver turns back into `scene_c`, gain word = gainEE."""
        tr = ta - DRIVER_OPENAIR_TA_SHIFT
        ta4 = (ta + 273.15) ** 4
        tr4 = (tr + 273.15) ** 4
        ta_tr = tr4 - (tr4 - ta4) / DRIVER_EMISSIVITY
        to4 = (np.asarray(scene_c, dtype=np.float64).reshape(PIXELS) + 273.15) ** 4
        ir = (to4 - ta_tr) * self.alpha_compensated * DRIVER_EMISSIVITY
        offset_term = self.offset * (1 + self.kta * (ta - 25)) * (1 + self.kv * (vdd - 3.3))
        raw: IntArray = np.rint(ir + offset_term).astype(np.int64)
        return raw


def _requantise(values: FloatArray, floor: float) -> FloatArray:
    """The driver's re-scaling of Kta/Kv: scale by 2^k until the largest magnitude reaches `floor`."""
    top = float(np.abs(values).max())
    if top == 0:
        raise ValueError("all Kta (or Kv) coefficients are 0: the driver would loop forever")
    scale = 0
    while top < floor:
        top *= 2
        scale += 1
    scaled = values * 2.0**scale
    rounded = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
    result: FloatArray = rounded / 2.0**scale
    return result


class EmulatedMlx90640:
    """An I2C bus with one emulated MLX90640 at `address` (see the module docstring)."""

    def __init__(
        self,
        calibration: Calibration | None = None,
        *,
        address: int = MLX90640_ADDRESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.calibration = calibration or Calibration()
        self.eeprom = eeprom_image(self.calibration)
        self.view = DriverView.from_eeprom(self.eeprom)
        #: When True the chip never reports new data (a hung or disconnected sensor).
        self.stalled = False
        #: Bus transactions served, for tests and benchmarks.
        self.transactions = 0
        self._clock = clock
        self._bus_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._ram = np.zeros(RAM_WORDS, dtype=np.uint16)
        self._control = DEFAULT_CONTROL
        self._i2c_config = 0
        self._pointer = 0
        self._new_data = False
        self._subpage = 1
        self._epoch = clock()
        self._consumed = 0
        self._scene = np.full((ROWS, COLS), 25.0, dtype=np.float64)
        self._ambient_c = 25.0

    # -- the scene ----------------------------------------------------------------------------
    def set_scene(self, temperatures_c: npt.ArrayLike, ambient_c: float) -> None:
        """What the chip looks at from now on: 24x32 object temperatures and its die temperature."""
        scene = np.asarray(temperatures_c, dtype=np.float64)
        if scene.shape != (ROWS, COLS):
            raise ValueError(f"scene must be {ROWS}x{COLS}, got {scene.shape}")
        if not np.all(np.isfinite(scene)) or scene.min() < MIN_OBJECT_C or scene.max() > MAX_OBJECT_C:
            raise ValueError(f"scene temperatures must be finite and within {MIN_OBJECT_C}..{MAX_OBJECT_C} C")
        if not (math.isfinite(ambient_c) and MIN_AMBIENT_C <= ambient_c <= MAX_AMBIENT_C):
            raise ValueError(f"ambient {ambient_c} C outside {MIN_AMBIENT_C}..{MAX_AMBIENT_C} C")
        with self._state_lock:
            self._scene = scene.copy()
            self._ambient_c = float(ambient_c)

    @property
    def refresh_hz(self) -> float:
        return REFRESH_HZ_BY_CODE[(self._control >> 7) & 0x7]

    def frame_ram(self, subpage: int) -> npt.NDArray[np.uint16]:
        """The RAM image for one subpage of the current scene (all pixels carry the scene)."""
        vdd_word = _u16(self.view.vdd25)
        vdd = self.view.vdd(vdd_word, self._control)
        vbe = self.view.vbe_for(self._ambient_c, vdd)
        ta = self.view.ta(VPTAT_WORD, vbe, vdd)
        raw = self.view.raw_pixels_for(self._scene, ta, vdd)
        ram = np.zeros(RAM_WORDS, dtype=np.uint16)
        ram[:PIXELS] = np.clip(raw, -32768, 32767).astype(np.int16).view(np.uint16)
        ram[768] = _u16(vbe)
        ram[800] = VPTAT_WORD
        ram[776] = ram[808] = _u16(self.calibration.offset_ref)  # compensation pixels
        ram[778] = _u16(self.view.gain_ee)  # gain word equal to gainEE: gain 1
        ram[810] = vdd_word  # supply exactly 3.3 V
        return ram

    # -- chip timing ----------------------------------------------------------------------------
    def _completed(self, now: float) -> int:
        return int((now - self._epoch) * self.refresh_hz)

    def _status_word(self) -> int:
        now = self._clock()
        if not self._new_data and not self.stalled and self._completed(now) > self._consumed:
            # a subpage finished since the last clear: it alternates, as in chess/subpage mode
            self._subpage ^= 1
            self._ram = self.frame_ram(self._subpage)
            self._new_data = True
        return STATUS_OVERWRITE_ENABLE | (STATUS_NEW_DATA if self._new_data else 0) | self._subpage

    def _read_word(self, address: int) -> int:
        if EEPROM_START <= address < EEPROM_START + EEPROM_WORDS:
            return int(self.eeprom[address - EEPROM_START])
        if RAM_START <= address < RAM_START + RAM_WORDS:
            return int(self._ram[address - RAM_START])
        if address == STATUS_REGISTER:
            return self._status_word()
        if address == CONTROL_REGISTER:
            return self._control
        if address == I2C_CONFIG_REGISTER:
            return self._i2c_config
        return 0

    def _read_words(self, address: int, count: int) -> bytes:
        if address >= RAM_START and address + count <= RAM_START + RAM_WORDS:
            block = self._ram[address - RAM_START : address - RAM_START + count]
        elif address >= EEPROM_START and address + count <= EEPROM_START + EEPROM_WORDS:
            block = self.eeprom[address - EEPROM_START : address - EEPROM_START + count]
        else:
            block = np.asarray([self._read_word(address + i) for i in range(count)], dtype=np.uint16)
        return block.astype(">u2").tobytes()

    def _write_word(self, address: int, value: int) -> None:
        if address == STATUS_REGISTER:
            if not value & STATUS_NEW_DATA:
                self._new_data = False
                self._consumed = self._completed(self._clock())
        elif address == CONTROL_REGISTER:
            if (value ^ self._control) & 0x0380:  # refresh rate changed: restart the measurement clock
                self._epoch, self._consumed = self._clock(), 0
            self._control = value
        elif address == I2C_CONFIG_REGISTER:
            self._i2c_config = value
        # EEPROM and RAM writes are ignored, as on the chip without the erase/write sequence

    def _check_address(self, address: int) -> None:
        if address != self.address:
            raise OSError(errno.EREMOTEIO, f"no I2C device answers at 0x{address:02x}")

    # -- the I2C bus interface (busio.I2C) -------------------------------------------------------
    def try_lock(self) -> bool:
        return self._bus_lock.acquire(blocking=False)

    def unlock(self) -> None:
        if self._bus_lock.locked():
            self._bus_lock.release()

    def scan(self) -> list[int]:
        return [self.address]

    def deinit(self) -> None:
        """Nothing to release."""

    def writeto(self, address: int, buffer: bytes | bytearray, *, start: int = 0, end: int | None = None) -> None:
        self._check_address(address)
        data = bytes(buffer[start : len(buffer) if end is None else end])
        with self._state_lock:
            self.transactions += 1
            if len(data) == 0:  # probe
                return
            if len(data) == 2:
                self._pointer = (data[0] << 8) | data[1]
            elif len(data) == 4:
                self._write_word((data[0] << 8) | data[1], (data[2] << 8) | data[3])
            else:
                raise OSError(errno.EIO, f"MLX90640 write of {len(data)} bytes (expected 2 or 4)")

    def readfrom_into(self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None) -> None:
        self._check_address(address)
        stop = len(buffer) if end is None else end
        with self._state_lock:
            self.transactions += 1
            data = self._read_words(self._pointer, (stop - start + 1) // 2)
            buffer[start:stop] = data[: stop - start]

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: bytes | bytearray,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        self._check_address(address)
        out = bytes(buffer_out[out_start : len(buffer_out) if out_end is None else out_end])
        stop = len(buffer_in) if in_end is None else in_end
        if len(out) != 2:
            raise OSError(errno.EIO, f"MLX90640 register address must be 2 bytes, got {len(out)}")
        with self._state_lock:
            self.transactions += 1
            self._pointer = (out[0] << 8) | out[1]
            data = self._read_words(self._pointer, (stop - in_start + 1) // 2)
            buffer_in[in_start:stop] = data[: stop - in_start]
