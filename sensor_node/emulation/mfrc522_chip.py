"""An emulated MFRC522 with a field of ISO/IEC 14443-3 cards (4-, 7- and 10-byte UIDs), over SPI.

Why: the project's own driver (`sensor_node.mfrc522_reader`) should be what reads cards in
tests, so this object answers its SPI register protocol (`transfer`: address byte, then data;
reads pipelined one byte behind) and runs the commands it uses (Idle, CalcCRC, Transceive,
SoftReset) with the timer's "no answer", RxAlign/TxLastBits, RxLastBits, CollErr/CollPos,
the CRC preset of ModeReg and the antenna bits. The NRSTPD pin is read through `reset_level`
(a gpiozero MockFactory pin in tests): low = powered down, SPI reads 0.

Cards follow the ISO 14443-3 state machine (IDLE, READY per cascade level, ACTIVE, HALT, with
READY* after WUPA from HALT): REQA/WUPA answer an ATQA, anticollision answers the remaining
bits of the cascade level, SELECT answers a SAK (0x04 while the UID is not complete), HLTA
halts. Several cards in the field answer at once; their bits are combined as on the air and
the first differing bit is a collision. A card can leave after answering N frames, and its last
answer can be torn (half its bits): how a card pulled away mid-read looks to the reader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from sensor_node.mfrc522_reader import (
    ANTENNA_ON,
    BIT_FRAMING_REG,
    CASCADE_TAG,
    CMD_CALC_CRC,
    CMD_SOFT_RESET,
    CMD_TRANSCEIVE,
    COLL_REG,
    COLL_VALUES_AFTER_COLL,
    COM_IRQ_REG,
    COMMAND_REG,
    CONTROL_REG,
    CRC_RESULT_H_REG,
    CRC_RESULT_L_REG,
    DIV_IRQ_CRC,
    DIV_IRQ_REG,
    ERR_COLLISION,
    ERROR_REG,
    FIFO_DATA_REG,
    FIFO_FLUSH,
    FIFO_LEVEL_REG,
    IRQ_RX,
    IRQ_SET,
    IRQ_TIMER,
    MODE_REG,
    NVB_SELECT,
    PICC_HLTA,
    PICC_REQA,
    PICC_WUPA,
    SAK_UID_NOT_COMPLETE,
    SEL_BY_LEVEL,
    SHORT_FRAME_BITS,
    SPI_READ,
    START_SEND,
    TX_CONTROL_REG,
    UID_LENGTHS,
    VERSION_REG,
    bcc,
)

VERSION_MFRC522_V2 = 0x92
FIFO_SIZE = 64
#: ModeReg CRCPreset (bits 1..0) -> CRC start value (datasheet 9.3.2.2).
CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)
#: Reset values that matter: ModeReg 0x3F (preset 0xFFFF: wrong for CRC_A), antenna off, ValuesAfterColl set.
RESET_VALUES = {MODE_REG: 0x3F, TX_CONTROL_REG: 0x80, COLL_REG: COLL_VALUES_AFTER_COLL, VERSION_REG: VERSION_MFRC522_V2}
#: ATQA bits 7..6: UID size (00 single, 01 double, 10 triple).
ATQA_SIZE_BITS = {4: 0x00, 7: 0x40, 10: 0x80}


def crc_a(data: bytes | list[int], preset: int = 0x6363) -> tuple[int, int]:
    """ISO/IEC 14443-3 CRC_A of `data` as (low byte, high byte); `preset` as the chip's ModeReg sets it."""
    crc = preset
    for byte in data:
        b = (byte ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return crc & 0xFF, crc >> 8


def to_bits(data: bytes | list[int]) -> list[int]:
    """Bits in air order: each byte least significant bit first."""
    return [(byte >> i) & 1 for byte in data for i in range(8)]


def from_bits(bits: list[int]) -> bytes:
    return bytes(sum(bit << i for i, bit in enumerate(bits[start : start + 8])) for start in range(0, len(bits), 8))


class CardState(Enum):
    IDLE = "idle"
    READY = "ready"
    ACTIVE = "active"
    HALT = "halt"


@dataclass(eq=False)
class Card:
    """A PICC: its UID (4, 7 or 10 bytes), final SAK, and how it behaves when pulled away."""

    uid: bytes
    sak: int = 0x00  # NTAG/Ultralight; 0x08 MIFARE Classic 1K, 0x20 DESFire
    #: Leaves the field after answering this many frames (None: stays until removed).
    leave_after_frames: int | None = None
    #: The last answer before leaving is cut to half its bits (pulled away mid-frame).
    torn: bool = False
    #: Set once a reader has selected the whole UID: the moment a real reader beeps.
    uid_read: threading.Event = field(default_factory=threading.Event, repr=False)
    state: CardState = CardState.IDLE
    level: int = 0
    woken_from_halt: bool = False

    def __post_init__(self) -> None:
        if len(self.uid) not in UID_LENGTHS:
            raise ValueError(f"a card UID has 4, 7 or 10 bytes, not {len(self.uid)}")

    def cascade_levels(self) -> list[bytes]:
        """The 5 bytes (4 + BCC) of each cascade level: CT + 3 bytes until the last 4."""
        rest, levels = self.uid, []
        while len(rest) > 4:
            levels.append(bytes([CASCADE_TAG, *rest[:3]]))
            rest = rest[3:]
        levels.append(rest)
        return [level + bytes([bcc(level)]) for level in levels]

    def power_up(self) -> None:
        self.state, self.level, self.woken_from_halt = CardState.IDLE, 0, False

    def _drop(self) -> None:
        """A frame the state does not accept: back to IDLE, or to HALT when woken from it."""
        self.state = CardState.HALT if self.woken_from_halt else CardState.IDLE
        self.level = 0

    def receive(self, frame: bytes, tx_last_bits: int) -> list[int] | None:
        """The card's answer to `frame` as bits in air order, or None (silence)."""
        if tx_last_bits == SHORT_FRAME_BITS and len(frame) == 1:
            return self._request(frame[0])
        if self.state is CardState.READY and frame and frame[0] == SEL_BY_LEVEL[self.level]:
            return self._cascade(frame, tx_last_bits)
        if self.state is CardState.ACTIVE and frame == bytes([PICC_HLTA, 0, *crc_a(frame[:2])]):
            self.state = CardState.HALT
            return None
        if self.state is not CardState.HALT:
            self._drop()
        return None

    def _request(self, command: int) -> list[int] | None:
        woken = command == PICC_WUPA and self.state is CardState.HALT
        if command not in (PICC_REQA, PICC_WUPA) or not (self.state is CardState.IDLE or woken):
            if self.state is not CardState.HALT:
                self._drop()
            return None
        self.state, self.level, self.woken_from_halt = CardState.READY, 0, woken
        return to_bits([0x04 | ATQA_SIZE_BITS[len(self.uid)], 0x00])

    def _cascade(self, frame: bytes, tx_last_bits: int) -> list[int] | None:
        level = self.cascade_levels()[self.level]
        if len(frame) < 2:
            self._drop()
            return None
        nvb = frame[1]
        if nvb == NVB_SELECT:
            if len(frame) != 9 or crc_a(frame[:7]) != (frame[7], frame[8]) or frame[2:7] != level:
                self._drop()
                return None
            if self.level + 1 < len(self.cascade_levels()):
                self.level += 1
                sak = SAK_UID_NOT_COMPLETE
            else:
                self.state, sak = CardState.ACTIVE, self.sak
                self.uid_read.set()
            return to_bits([sak, *crc_a([sak])])
        full, partial = (nvb >> 4) - 2, nvb & 0x0F
        if not 0 <= full <= 4 or partial > 7 or len(frame) != 2 + full + (1 if partial else 0):
            self._drop()
            return None
        if partial != (tx_last_bits if len(frame) > 2 else 0):
            self._drop()
            return None
        known = full * 8 + partial
        if to_bits(frame[2:])[:known] != to_bits(level)[:known]:
            return None  # not this card: it stays READY and silent
        return to_bits(level)[known:]


class CardField:
    """The RF field in front of the reader: any number of cards (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cards: list[Card] = []

    def place(self, card: Card) -> None:
        with self._lock:
            card.power_up()
            self._cards.append(card)

    def remove(self, card: Card | None = None) -> None:
        """Take `card` (default: every card) out of the field."""
        with self._lock:
            self._cards = [] if card is None else [c for c in self._cards if c is not card]

    @property
    def cards(self) -> list[Card]:
        with self._lock:
            return list(self._cards)

    def power_up_all(self) -> None:
        with self._lock:
            for card in self._cards:
                card.power_up()

    def air(self, frame: bytes, tx_last_bits: int) -> list[list[int]]:
        """Every card hears `frame`; their answers, with cards that leave now taken out."""
        with self._lock:
            answers = []
            for card in list(self._cards):
                bits = card.receive(frame, tx_last_bits)
                if bits is None:
                    continue
                if card.leave_after_frames is not None:
                    card.leave_after_frames -= 1
                    if card.leave_after_frames <= 0:
                        self._cards.remove(card)
                        if card.torn:
                            bits = bits[: len(bits) // 2]
                answers.append(bits)
            return answers


def combine(answers: list[list[int]]) -> tuple[list[int], int | None]:
    """Answers sent at once, as the reader hears them: bits, and the 0-based first collision (bits after it 0)."""
    length = max(len(bits) for bits in answers)
    combined: list[int] = []
    for i in range(length):
        values = {bits[i] if i < len(bits) else None for bits in answers}
        if len(values) > 1:
            return [*combined, *([0] * (length - i))], i
        combined.append(values.pop() or 0)
    return combined, None


class EmulatedMfrc522:
    """The chip behind SPI: registers, FIFO, timer, CRC coprocessor and the card field."""

    def __init__(self, card_field: CardField | None = None, reset_level: Callable[[], bool] | None = None) -> None:
        self.field = card_field or CardField()
        self._reset_level = reset_level
        self._lock = threading.Lock()
        self._regs = [0] * 64
        self._fifo: list[int] = []
        self._powered = reset_level is None or reset_level()
        #: SPI transfers served, for tests.
        self.transfers = 0
        self._reset()

    def _reset(self) -> None:
        self._regs = [0] * 64
        for reg, value in RESET_VALUES.items():
            self._regs[reg] = value
        self._fifo = []
        self.field.power_up_all()  # the antenna is off after reset: the cards lost power

    @property
    def antenna_on(self) -> bool:
        return self._regs[TX_CONTROL_REG] & ANTENNA_ON == ANTENNA_ON

    # -- SPI ---------------------------------------------------------------------------------
    def transfer(self, data: bytes) -> bytes:
        """One SPI transaction: each read address clocks its value out with the next byte."""
        out = bytearray(len(data))
        if not data:
            return bytes(out)
        with self._lock:
            self.transfers += 1
            if not self._check_power():
                return bytes(out)
            if data[0] & SPI_READ:
                for i in range(1, len(data)):
                    out[i] = self._read((data[i - 1] >> 1) & 0x3F)
            else:
                for value in data[1:]:
                    self._write((data[0] >> 1) & 0x3F, value)
        return bytes(out)

    def _check_power(self) -> bool:
        """NRSTPD low: powered down (reads 0). Coming back up is a hard reset."""
        if self._reset_level is None:
            return True
        level = bool(self._reset_level())
        if level and not self._powered:
            self._reset()
        self._powered = level
        return level

    # -- registers ---------------------------------------------------------------------------
    def _read(self, reg: int) -> int:
        if reg == FIFO_DATA_REG:
            return self._fifo.pop(0) if self._fifo else 0
        if reg == FIFO_LEVEL_REG:
            return min(len(self._fifo), FIFO_SIZE)
        return self._regs[reg]

    def _write(self, reg: int, value: int) -> None:
        if reg == FIFO_DATA_REG:
            if len(self._fifo) < FIFO_SIZE:
                self._fifo.append(value)
        elif reg == FIFO_LEVEL_REG:
            if value & FIFO_FLUSH:
                self._fifo.clear()
        elif reg in (COM_IRQ_REG, DIV_IRQ_REG):
            if value & IRQ_SET:
                self._regs[reg] |= value & 0x7F
            else:
                self._regs[reg] &= ~value & 0x7F
        elif reg == COMMAND_REG:
            self._regs[COMMAND_REG] = value & 0x3F
            self._command(value & 0x0F)
        elif reg == BIT_FRAMING_REG:
            self._regs[BIT_FRAMING_REG] = value & 0x7F  # StartSend reads back as 0 once sent
            if value & START_SEND and self._regs[COMMAND_REG] & 0x0F == CMD_TRANSCEIVE:
                self._transceive(value & 0x07, (value >> 4) & 0x07)
        elif reg == TX_CONTROL_REG:
            was_on = self.antenna_on
            self._regs[reg] = value
            if self.antenna_on and not was_on:
                self.field.power_up_all()
        else:
            self._regs[reg] = value

    def _command(self, command: int) -> None:
        if command == CMD_SOFT_RESET:
            self._reset()
        elif command == CMD_CALC_CRC:
            low, high = crc_a(self._fifo, CRC_PRESETS[self._regs[MODE_REG] & 0x03])
            self._fifo.clear()
            self._regs[CRC_RESULT_L_REG], self._regs[CRC_RESULT_H_REG] = low, high
            self._regs[DIV_IRQ_REG] |= DIV_IRQ_CRC
            self._regs[COMMAND_REG] = 0

    def _transceive(self, tx_last_bits: int, rx_align: int) -> None:
        frame = bytes(self._fifo)
        self._fifo.clear()
        self._regs[ERROR_REG] = 0
        answers = self.field.air(frame, tx_last_bits) if self.antenna_on and frame else []
        if not answers:  # the timer ran out
            self._regs[COM_IRQ_REG] |= IRQ_TIMER
            return
        bits, collision = combine(answers)
        received = [0] * rx_align + bits
        self._fifo = list(from_bits(received))[:FIFO_SIZE]
        self._regs[CONTROL_REG] = (self._regs[CONTROL_REG] & ~0x07) | (len(received) % 8)
        if collision is not None:
            self._regs[ERROR_REG] |= ERR_COLLISION
            self._regs[COLL_REG] = (self._regs[COLL_REG] & 0x80) | ((rx_align + collision + 1) & 0x1F)
        self._regs[COM_IRQ_REG] |= IRQ_RX
