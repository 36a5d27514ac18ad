"""The project's own MFRC522 driver: whole card UIDs (4, 7 or 10 bytes) over a small SPI transport.

Why our own: the `mfrc522` package reads cascade level 1 only, so a 7-byte card (NTAG,
Ultralight, DESFire) read as the cascade tag 0x88 plus 3 bytes - about 16 bits of identity,
and two patients could share a pseudonym. It is also GPL, unmaintained and RPi.GPIO-only
(no Pi 5). Written from the MFRC522 datasheet (registers, commands, FIFO, timer, CRC
coprocessor) and ISO/IEC 14443-3 (REQA/WUPA, anticollision and SELECT per cascade level
with SEL 0x93/0x95/0x97, cascade tag 0x88, BCC, SAK bit 0x04 = UID not complete, HLTA).

Layers: `SpiTransport` moves bytes (Blinka's `busio.SPI` + a `digitalio` chip select on the
device, an emulated chip in tests), `ResetLine` drives NRSTPD (a gpiozero output), and
`Mfrc522` does everything else, so the emulated chip runs under this very code.

A UID is returned only after every cascade level was selected with a CRC-checked SAK and
every BCC matched; anything less raises `RfidError` (the caller retries on its next poll).
So a card pulled away mid-read, two cards answering at once, or a bit error can cost a poll
but can never produce a wrong UID.

CollReg's CollPos is read as the datasheet words it, the bit position in the received frame,
counted in the FIFO's bit layout (RxAlign included). Were a chip to count otherwise, the
resolved bits would not match any card: SELECT goes unanswered and the poll is retried, the
UID is still never wrong. (Not yet run against a physical MFRC522 here: no Pi on this host.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# -- MFRC522 registers (datasheet section 9.2) -------------------------------------------------
COMMAND_REG = 0x01
COM_IRQ_REG = 0x04
DIV_IRQ_REG = 0x05
ERROR_REG = 0x06
FIFO_DATA_REG = 0x09
FIFO_LEVEL_REG = 0x0A
CONTROL_REG = 0x0C
BIT_FRAMING_REG = 0x0D
COLL_REG = 0x0E
MODE_REG = 0x11
TX_CONTROL_REG = 0x14
TX_ASK_REG = 0x15
CRC_RESULT_H_REG = 0x21
CRC_RESULT_L_REG = 0x22
T_MODE_REG = 0x2A
T_PRESCALER_REG = 0x2B
T_RELOAD_H_REG = 0x2C
T_RELOAD_L_REG = 0x2D
VERSION_REG = 0x37
# -- commands (CommandReg bits 3..0) and flags -------------------------------------------------
CMD_IDLE = 0x00
CMD_CALC_CRC = 0x03
CMD_TRANSCEIVE = 0x0C
CMD_SOFT_RESET = 0x0F
COMMAND_POWER_DOWN = 0x10
IRQ_SET = 0x80  # ComIrqReg/DivIrqReg bit 7: 1 sets the marked bits, 0 clears them
IRQ_RX = 0x20
IRQ_IDLE = 0x10
IRQ_TIMER = 0x01
DIV_IRQ_CRC = 0x04
ERR_BUFFER_OVERFLOW = 0x10
ERR_COLLISION = 0x08
ERR_PARITY = 0x02
ERR_PROTOCOL = 0x01
FIFO_FLUSH = 0x80
START_SEND = 0x80
RX_LAST_BITS_MASK = 0x07
COLL_VALUES_AFTER_COLL = 0x80
COLL_POS_NOT_VALID = 0x20
COLL_POS_MASK = 0x1F
ANTENNA_ON = 0x03  # TxControlReg Tx1RFEn | Tx2RFEn
FORCE_100_ASK = 0x40
#: ModeReg: TxWaitRF, MSB first off, CRC preset 0x6363 (ISO 14443-3 CRC_A).
MODE_CRC_A = 0x3D
#: TModeReg TAuto + TPrescaler 0xA9: 40 kHz ticks; reload 1000 ticks: 25 ms until "no answer".
T_MODE_AUTO = 0x80
T_PRESCALER = 0xA9
T_RELOAD = 1000
#: VersionReg of MFRC522 v1.0/v2.0 and of the common FM17522 clone.
KNOWN_VERSIONS = (0x91, 0x92, 0x88)
SPI_READ = 0x80
# -- ISO/IEC 14443-3 ---------------------------------------------------------------------------
PICC_REQA = 0x26
PICC_WUPA = 0x52
PICC_HLTA = 0x50
SEL_BY_LEVEL = (0x93, 0x95, 0x97)
CASCADE_TAG = 0x88
SAK_UID_NOT_COMPLETE = 0x04
NVB_SELECT = 0x70
SHORT_FRAME_BITS = 7
UID_LENGTHS = (4, 7, 10)
#: One cascade level: 4 UID bytes (or CT + 3) and their BCC: 40 bits.
CL_BITS = 40
UID_BITS_PER_LEVEL = 32
#: Field off this long resets every card (ISO 14443-3 t_RESET >= 5 ms); then cards get this long to power up.
FIELD_RESET_S = 0.006
FIELD_GUARD_S = 0.006
#: NRSTPD low for this long is a hard reset; the oscillator is up well within the startup wait.
RESET_PULSE_S = 0.001
STARTUP_S = 0.05
#: Waiting for the chip itself (not for a card: its timer says "no answer" after 25 ms).
CHIP_DEADLINE_S = 0.2
#: At most this many cards are read per poll (a bound, not an expected number).
MAX_CARDS_PER_POLL = 4


class RfidError(RuntimeError):
    """The card reader failed; the read is abandoned, no UID comes out of it."""


class NoCardAnswerError(RfidError):
    """No card answered before the chip's timer ran out (normal when the field is empty)."""


class CardReadError(RfidError):
    """A card answered, but not validly: gone mid-read, a collision not resolvable, a bad BCC or CRC."""


class ChipError(RfidError):
    """The MFRC522 itself does not respond as it should (wiring, power, reset line, SPI)."""


class SpiTransport(Protocol):
    """One full-duplex SPI transaction with chip select asserted around it."""

    def transfer(self, data: bytes) -> bytes: ...


class ResetLine(Protocol):
    """The chip's NRSTPD pin: low = hard power-down, rising edge = reset (a gpiozero DigitalOutputDevice)."""

    def on(self) -> None: ...
    def off(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    """What the chip received: FIFO bytes, valid bits of the last byte (0 = all 8), first collision."""

    data: bytes
    last_bits: int
    #: 1-based bit position in the received frame (FIFO bit layout, RxAlign included), or None.
    collision_at: int | None


def bcc(four: bytes | bytearray) -> int:
    return four[0] ^ four[1] ^ four[2] ^ four[3]


class Mfrc522:
    """Register access, init, and the ISO 14443-3 activation of every card in the field."""

    def __init__(
        self, spi: SpiTransport, reset: ResetLine | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._spi = spi
        self._reset = reset
        self._sleep = sleep

    # -- registers ------------------------------------------------------------------------------
    def read(self, reg: int) -> int:
        return self._spi.transfer(bytes([SPI_READ | (reg << 1), 0]))[1]

    def read_many(self, reg: int, count: int) -> bytes:
        """`count` reads of one register in one transaction (the FIFO): each byte clocks out the previous read."""
        if count <= 0:
            return b""
        return self._spi.transfer(bytes([SPI_READ | (reg << 1)] * count + [0]))[1:]

    def write(self, reg: int, *values: int) -> None:
        self._spi.transfer(bytes([(reg << 1) & 0x7E, *values]))

    def set_bits(self, reg: int, mask: int) -> None:
        self.write(reg, self.read(reg) | mask)

    def clear_bits(self, reg: int, mask: int) -> None:
        self.write(reg, self.read(reg) & ~mask & 0xFF)

    # -- chip ------------------------------------------------------------------------------------
    def init(self) -> int:
        """Hard reset (when a reset line is given), soft reset, timer, CRC_A preset, 100% ASK, antenna on.

        Returns the VersionReg value; ChipError if no MFRC522 answers on the bus.
        """
        if self._reset is not None:
            self._reset.off()
            self._sleep(RESET_PULSE_S)
            self._reset.on()
            self._sleep(STARTUP_S)
        self.write(COMMAND_REG, CMD_SOFT_RESET)
        self._wait(lambda: not self.read(COMMAND_REG) & COMMAND_POWER_DOWN, "finish its soft reset")
        version = self.read(VERSION_REG)
        if version not in KNOWN_VERSIONS:
            raise ChipError(f"no MFRC522 on the SPI bus (version register reads 0x{version:02x})")
        self.write(T_MODE_REG, T_MODE_AUTO)
        self.write(T_PRESCALER_REG, T_PRESCALER)
        self.write(T_RELOAD_H_REG, T_RELOAD >> 8)
        self.write(T_RELOAD_L_REG, T_RELOAD & 0xFF)
        self.write(TX_ASK_REG, FORCE_100_ASK)
        self.write(MODE_REG, MODE_CRC_A)
        self.clear_bits(COLL_REG, COLL_VALUES_AFTER_COLL)
        self.antenna(on=True)
        return version

    def antenna(self, *, on: bool) -> None:
        if on:
            self.set_bits(TX_CONTROL_REG, ANTENNA_ON)
        else:
            self.clear_bits(TX_CONTROL_REG, ANTENNA_ON)

    def close(self) -> None:
        """Field off, then hold the chip in hard power-down (when there is a reset line)."""
        try:
            self.antenna(on=False)
        finally:
            if self._reset is not None:
                self._reset.off()
                self._reset.close()

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CHIP_DEADLINE_S
        while not done():
            if time.monotonic() > deadline:
                raise ChipError(f"the MFRC522 did not {what} within {CHIP_DEADLINE_S:g} s")

    def crc_a(self, data: bytes) -> bytes:
        """CRC_A of `data` from the chip's CRC coprocessor, low byte first (as sent on the air)."""
        self.write(COMMAND_REG, CMD_IDLE)
        self.write(DIV_IRQ_REG, DIV_IRQ_CRC)  # clear CRCIRq
        self.write(FIFO_LEVEL_REG, FIFO_FLUSH)
        self.write(FIFO_DATA_REG, *data)
        self.write(COMMAND_REG, CMD_CALC_CRC)
        self._wait(lambda: bool(self.read(DIV_IRQ_REG) & DIV_IRQ_CRC), "finish a CRC")
        self.write(COMMAND_REG, CMD_IDLE)
        return bytes([self.read(CRC_RESULT_L_REG), self.read(CRC_RESULT_H_REG)])

    def transceive(self, frame: bytes, *, tx_last_bits: int = 0, rx_align: int = 0) -> Answer:
        """Send `frame` (its last byte `tx_last_bits` long, 0 = 8) and receive the answer at `rx_align`."""
        self.write(COMMAND_REG, CMD_IDLE)
        self.write(COM_IRQ_REG, 0x7F)  # clear all interrupt bits
        self.write(FIFO_LEVEL_REG, FIFO_FLUSH)
        self.write(FIFO_DATA_REG, *frame)
        framing = (rx_align << 4) | tx_last_bits
        self.write(BIT_FRAMING_REG, framing)
        self.write(COMMAND_REG, CMD_TRANSCEIVE)
        self.write(BIT_FRAMING_REG, framing | START_SEND)
        irq = [0]

        def finished() -> bool:
            irq[0] = self.read(COM_IRQ_REG)
            return bool(irq[0] & (IRQ_RX | IRQ_TIMER))

        try:
            self._wait(finished, "finish a transceive")
        finally:
            self.write(BIT_FRAMING_REG, framing)
            self.write(COMMAND_REG, CMD_IDLE)
        if not irq[0] & IRQ_RX:
            raise NoCardAnswerError("no card answered")
        error = self.read(ERROR_REG)
        if error & (ERR_BUFFER_OVERFLOW | ERR_PARITY | ERR_PROTOCOL):
            raise CardReadError(f"transmission error (ErrorReg 0x{error:02x})")
        collision_at = None
        if error & ERR_COLLISION:
            coll = self.read(COLL_REG)
            if coll & COLL_POS_NOT_VALID:
                raise CardReadError("collision outside the frame's data bits")
            collision_at = (coll & COLL_POS_MASK) or UID_BITS_PER_LEVEL
        data = self.read_many(FIFO_DATA_REG, self.read(FIFO_LEVEL_REG))
        return Answer(data, self.read(CONTROL_REG) & RX_LAST_BITS_MASK, collision_at)

    # -- ISO/IEC 14443-3 ------------------------------------------------------------------------
    def field_reset(self) -> None:
        """Field off and on: every card in the field powers up anew in IDLE, halted ones included."""
        self.antenna(on=False)
        self._sleep(FIELD_RESET_S)
        self.antenna(on=True)
        self._sleep(FIELD_GUARD_S)

    def request(self, command: int = PICC_REQA) -> bool:
        """REQA (cards in IDLE) or WUPA (also HALT): True if any card answered with an ATQA."""
        try:
            answer = self.transceive(bytes([command]), tx_last_bits=SHORT_FRAME_BITS)
        except NoCardAnswerError:
            return False
        # Cards of different UID sizes collide in the ATQA; that still means "cards here".
        if len(answer.data) != 2 or answer.last_bits:
            raise CardReadError(f"ATQA of {len(answer.data)} bytes")
        return True

    def select_card(self) -> bytes:
        """Anticollision and SELECT through the cascade levels of one card in READY: its whole UID.

        With several cards in the field the one with a 1 at each first differing bit wins, so the
        choice is the same every time; the others stay unselected for the next REQA.
        """
        uid = bytearray()
        for sel in SEL_BY_LEVEL:
            level = self._anticollision(sel)
            sak = self._select(sel, level)
            if sak & SAK_UID_NOT_COMPLETE:
                if level[0] != CASCADE_TAG:
                    raise CardReadError("SAK says UID not complete but no cascade tag")
                uid += level[1:4]
                continue
            uid += level[0:4]
            if len(uid) == 4 and uid[0] == CASCADE_TAG:
                raise CardReadError("a single-size UID cannot start with the cascade tag")
            return bytes(uid)
        raise CardReadError("UID still not complete after cascade level 3")

    def _anticollision(self, sel: int) -> bytes:
        """The 4 bytes + BCC of one cascade level, resolving bit collisions (ISO 14443-3 6.5.3)."""
        known = 0  # UID bits known so far at this level
        level = bytearray(5)
        for _ in range(UID_BITS_PER_LEVEL + 1):
            full, partial = divmod(known, 8)
            nvb = ((2 + full) << 4) | partial
            frame = bytes([sel, nvb, *level[: full + (1 if partial else 0)]])
            answer = self.transceive(frame, tx_last_bits=partial, rx_align=partial)
            keep = (1 << partial) - 1  # bits of the split byte that we sent
            received = bytearray(answer.data)
            if not received:
                raise CardReadError("empty anticollision answer")
            received[0] = (level[full] & keep) | (received[0] & ~keep & 0xFF)
            if answer.collision_at is None:
                if len(received) != 5 - full or answer.last_bits:
                    raise CardReadError("incomplete anticollision answer")
                level[full:] = received
                if bcc(level[:4]) != level[4]:
                    raise CardReadError("BCC mismatch")
                return bytes(level)
            bit = full * 8 + answer.collision_at - 1  # 0-based bit of the level that collided
            if bit < known or bit >= UID_BITS_PER_LEVEL or len(received) * 8 < answer.collision_at:
                raise CardReadError("collision position out of range")
            count = min(len(received), 5 - full)
            level[full : full + count] = received[:count]
            byte, shift = divmod(bit, 8)
            level[byte] = (level[byte] & ((1 << shift) - 1)) | (1 << shift)  # choose 1 at the collision
            level[byte + 1 :] = bytes(4 - byte)
            known = bit + 1
        raise CardReadError("anticollision did not converge")

    def _select(self, sel: int, level: bytes) -> int:
        frame = bytes([sel, NVB_SELECT, *level])
        answer = self.transceive(frame + self.crc_a(frame))
        if len(answer.data) != 3 or answer.last_bits:
            raise CardReadError(f"SAK answer of {len(answer.data)} bytes")
        if self.crc_a(answer.data[:1]) != answer.data[1:]:
            raise CardReadError("SAK CRC mismatch")
        return answer.data[0]

    def halt(self) -> None:
        """HLTA: the selected card stops answering REQA until the field is reset (no answer is the ACK)."""
        frame = bytes([PICC_HLTA, 0x00])
        try:
            answer = self.transceive(frame + self.crc_a(frame))
        except NoCardAnswerError:
            return
        raise CardReadError(f"a card answered HLTA with {len(answer.data)} bytes")

    def read_cards(self) -> list[bytes]:
        """The UIDs of all cards in the field (at most MAX_CARDS_PER_POLL), in anticollision order.

        Field reset, then REQA -> select -> HLTA until no card answers. RfidError if any card
        could not be read whole (the caller polls again; nothing partial is returned).
        """
        self.field_reset()
        uids: list[bytes] = []
        while len(uids) < MAX_CARDS_PER_POLL and self.request(PICC_REQA):
            uid = self.select_card()
            if len(uid) not in UID_LENGTHS:  # pragma: no cover - the cascade gives 4, 7 or 10
                raise CardReadError(f"UID of {len(uid)} bytes")
            uids.append(uid)
            self.halt()
        return uids


class BlinkaSpi:
    """`SpiTransport` over Blinka: `busio.SPI` (spidev via Adafruit-PureIO) and a `digitalio` chip select."""

    def __init__(self, spi: Any, chip_select: Any, baudrate: int) -> None:
        self._spi = spi
        self._cs = chip_select
        self._baudrate = baudrate

    def transfer(self, data: bytes) -> bytes:
        received = bytearray(len(data))
        deadline = time.monotonic() + CHIP_DEADLINE_S
        while not self._spi.try_lock():
            if time.monotonic() > deadline:
                raise ChipError("the SPI bus stayed locked")
        try:
            self._spi.configure(baudrate=self._baudrate, polarity=0, phase=0)
            self._cs.value = False
            self._spi.write_readinto(data, received)
        finally:
            self._cs.value = True
            self._spi.unlock()
        return bytes(received)

    def close(self) -> None:
        self._cs.deinit()
        self._spi.deinit()


def open_hardware(*, reset_pin: int, cs_pin: int, baudrate: int) -> tuple[Mfrc522, BlinkaSpi]:
    """The MFRC522 on the Pi's SPI0 (BCM pin numbers); RuntimeError with the cause if it cannot be opened."""
    try:
        import board
        import busio
        import digitalio
        from gpiozero import DigitalOutputDevice
    except Exception as exc:  # Blinka raises NotImplementedError/RuntimeError off a Pi
        raise RuntimeError(
            f"cannot load the MFRC522 reader ({type(exc).__name__}: {exc}); on a Raspberry Pi enable SPI "
            "and install the 'sensor' extra, elsewhere use rfid kind 'emulated' or 'scripted'"
        ) from None
    try:
        spi = busio.SPI(board.SCK, MOSI=board.MOSI, MISO=board.MISO)
        cs = digitalio.DigitalInOut(getattr(board, f"D{cs_pin}"))
        cs.switch_to_output(value=True)
        reset = DigitalOutputDevice(reset_pin, initial_value=True)
    except Exception as exc:
        raise RuntimeError(
            f"cannot open the MFRC522 (SPI0, CS GPIO{cs_pin}, reset GPIO{reset_pin}): {exc}; "
            "enable SPI with raspi-config, or use rfid kind 'emulated' or 'scripted'"
        ) from None
    transport = BlinkaSpi(spi, cs, baudrate)
    return Mfrc522(transport, reset), transport
