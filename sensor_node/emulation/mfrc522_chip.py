"""An emulated MFRC522 reader chip with an emulated MIFARE Classic card field, over SPI.

Why: the real `mfrc522` package (SimpleMFRC522) should be what reads cards in tests, so this
object answers its SPI register protocol: `xfer2([addr, value])` reads or writes one of the 64
registers. The chip runs the commands the package uses (Transceive, MFAuthent, CalcCRC,
SoftReset, Idle) against `CardField`: a card can be placed in and removed from the field.
The card answers REQA/WUPA (ATQA), anticollision (UID + BCC), SELECT (SAK), authentication
with its sector keys, READ and WRITE of 16-byte blocks, and HALT. Crypto1 encryption is not
modelled: the host side of a real MFRC522 sees plain data too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

# Registers (MFRC522 datasheet, section 9)
COMMAND_REG = 0x01
COMM_IRQ_REG = 0x04
DIV_IRQ_REG = 0x05
ERROR_REG = 0x06
STATUS2_REG = 0x08
FIFO_DATA_REG = 0x09
FIFO_LEVEL_REG = 0x0A
CONTROL_REG = 0x0C
BIT_FRAMING_REG = 0x0D
CRC_RESULT_M = 0x21
CRC_RESULT_L = 0x22
VERSION_REG = 0x37
# Commands
CMD_IDLE = 0x00
CMD_CALC_CRC = 0x03
CMD_TRANSCEIVE = 0x0C
CMD_AUTHENT = 0x0E
CMD_SOFT_RESET = 0x0F
# Interrupt bits of CommIrqReg
IRQ_TIMER = 0x01
IRQ_IDLE = 0x10
IRQ_RX = 0x20
DIV_IRQ_CRC = 0x04
STATUS2_CRYPTO1_ON = 0x08
ERROR_PROTOCOL = 0x01
# PICC commands
PICC_REQA = 0x26
PICC_WUPA = 0x52
PICC_CL1 = 0x93
PICC_AUTH_A = 0x60
PICC_AUTH_B = 0x61
PICC_READ = 0x30
PICC_WRITE = 0xA0
PICC_HALT = 0x50
MIFARE_ACK = 0x0A
MIFARE_NAK = 0x04
VERSION_MFRC522_V2 = 0x92
DEFAULT_KEY = bytes([0xFF] * 6)


def crc_a(data: bytes | list[int]) -> tuple[int, int]:
    """ISO/IEC 14443-3 CRC_A of `data` as (low byte, high byte)."""
    crc = 0x6363
    for byte in data:
        b = (byte ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return crc & 0xFF, crc >> 8


@dataclass
class Card:
    """A MIFARE Classic 1K card: a 4-byte UID, 64 blocks of 16 bytes, key A per sector."""

    uid: bytes
    blocks: dict[int, bytes] = field(default_factory=dict)
    key_a: bytes = DEFAULT_KEY
    halted: bool = False
    #: Set once a reader has read the UID (anticollision): the moment a real reader beeps.
    uid_read: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.uid) != 4:
            raise ValueError("the emulated card has a 4-byte UID")

    @property
    def bcc(self) -> int:
        return self.uid[0] ^ self.uid[1] ^ self.uid[2] ^ self.uid[3]

    def block(self, number: int) -> bytes:
        return self.blocks.get(number, bytes(16))


class CardField:
    """The RF field in front of the reader: at most one card at a time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._card: Card | None = None

    def place(self, card: Card) -> None:
        with self._lock:
            card.halted = False
            self._card = card

    def remove(self) -> None:
        with self._lock:
            self._card = None

    @property
    def card(self) -> Card | None:
        with self._lock:
            return self._card


class EmulatedMfrc522:
    """The chip behind SPI: registers, FIFO, and the commands SimpleMFRC522 uses."""

    def __init__(self, card_field: CardField | None = None) -> None:
        self.field = card_field or CardField()
        self._lock = threading.Lock()
        self._regs = [0] * 64
        self._fifo: list[int] = []
        self._selected: Card | None = None
        self._authenticated_sector: int | None = None
        self._pending_write_block: int | None = None
        #: SPI transfers served, for tests.
        self.transfers = 0
        self._reset()

    def _reset(self) -> None:
        self._regs = [0] * 64
        self._regs[VERSION_REG] = VERSION_MFRC522_V2
        self._fifo = []
        self._selected = None
        self._authenticated_sector = None
        self._pending_write_block = None

    # -- SPI ---------------------------------------------------------------------------------
    def xfer2(self, data: list[int]) -> list[int]:
        """One SPI transaction: [address byte, value byte, ...] in, the same number of bytes out."""
        out = [0] * len(data)
        if not data:
            return out
        with self._lock:
            self.transfers += 1
            address = (data[0] >> 1) & 0x3F
            if data[0] & 0x80:
                for i in range(1, len(data)):
                    out[i] = self._read(address)
            else:
                for value in data[1:]:
                    self._write(address, value & 0xFF)
        return out

    # -- registers ---------------------------------------------------------------------------
    def _read(self, reg: int) -> int:
        if reg == FIFO_DATA_REG:
            return self._fifo.pop(0) if self._fifo else 0
        if reg == FIFO_LEVEL_REG:
            return min(len(self._fifo), 64)
        return self._regs[reg]

    def _write(self, reg: int, value: int) -> None:
        if reg == FIFO_DATA_REG:
            if len(self._fifo) < 64:
                self._fifo.append(value)
        elif reg == FIFO_LEVEL_REG:
            if value & 0x80:  # FlushBuffer
                self._fifo.clear()
        elif reg in (COMM_IRQ_REG, DIV_IRQ_REG):
            if value & 0x80:  # Set1/Set2: set the marked bits
                self._regs[reg] |= value & 0x7F
            else:  # clear the marked bits
                self._regs[reg] &= ~value & 0x7F
        elif reg == COMMAND_REG:
            self._regs[COMMAND_REG] = value & 0x3F
            self._command(value & 0x0F)
        elif reg == BIT_FRAMING_REG:
            self._regs[BIT_FRAMING_REG] = value & 0x7F  # StartSend reads back as 0 once sent
            if value & 0x80 and self._regs[COMMAND_REG] & 0x0F == CMD_TRANSCEIVE:
                self._transceive(value & 0x07)
        else:
            self._regs[reg] = value

    def _command(self, command: int) -> None:
        if command == CMD_SOFT_RESET:
            self._reset()
        elif command == CMD_CALC_CRC:
            low, high = crc_a(self._fifo)
            self._fifo.clear()
            self._regs[CRC_RESULT_L], self._regs[CRC_RESULT_M] = low, high
            self._regs[DIV_IRQ_REG] |= DIV_IRQ_CRC
        elif command == CMD_AUTHENT:
            self._authenticate(list(self._fifo))
            self._fifo.clear()
        # Idle stops everything; Transceive waits for StartSend in BitFramingReg

    def _finish(self, response: list[int] | None, last_bits: int = 0) -> None:
        self._regs[ERROR_REG] = 0
        if response is None:  # no card answered before the timer ran out
            self._regs[COMM_IRQ_REG] |= IRQ_TIMER | IRQ_IDLE
            self._regs[CONTROL_REG] = self._regs[CONTROL_REG] & ~0x07
            return
        self._fifo = list(response)
        self._regs[CONTROL_REG] = (self._regs[CONTROL_REG] & ~0x07) | (last_bits & 0x07)
        self._regs[COMM_IRQ_REG] |= IRQ_RX | IRQ_IDLE

    def _authenticate(self, frame: list[int]) -> None:
        card = self._selected
        self._regs[ERROR_REG] = 0
        ok = (
            card is not None
            and len(frame) == 12
            and frame[0] in (PICC_AUTH_A, PICC_AUTH_B)
            and bytes(frame[2:8]) == card.key_a
            and bytes(frame[8:12]) == card.uid
        )
        if ok:
            self._regs[STATUS2_REG] |= STATUS2_CRYPTO1_ON
            self._authenticated_sector = frame[1] // 4
        else:
            self._regs[ERROR_REG] = ERROR_PROTOCOL
        self._regs[COMM_IRQ_REG] |= IRQ_IDLE

    # -- the card ------------------------------------------------------------------------------
    def _transceive(self, tx_last_bits: int) -> None:
        frame = list(self._fifo)
        self._fifo.clear()
        card = self.field.card
        if card is None or not frame:
            self._selected = None
            self._finish(None)
            return
        if self._pending_write_block is not None:
            block, self._pending_write_block = self._pending_write_block, None
            if len(frame) == 18 and crc_a(frame[:16]) == (frame[16], frame[17]):
                card.blocks[block] = bytes(frame[:16])
                self._finish([MIFARE_ACK], 4)
            else:
                self._finish([MIFARE_NAK], 4)
            return
        cmd = frame[0]
        if tx_last_bits == 7 and len(frame) == 1 and cmd in (PICC_REQA, PICC_WUPA):
            if card.halted and cmd == PICC_REQA:
                self._finish(None)
            else:
                self._selected = None
                self._finish([0x04, 0x00])  # ATQA of a MIFARE Classic 1K
            return
        if cmd == PICC_CL1 and len(frame) == 2 and frame[1] == 0x20:
            self._finish([*card.uid, card.bcc])
            card.uid_read.set()
            return
        if cmd == PICC_CL1 and len(frame) == 9 and frame[1] == 0x70 and self._crc_ok(frame):
            if bytes(frame[2:6]) == card.uid:
                self._selected = card
                self._finish([0x08, *crc_a([0x08])])  # SAK: MIFARE Classic 1K
            else:
                self._finish(None)
            return
        if self._selected is not card or not self._crc_ok(frame):
            self._finish(None)
            return
        if cmd == PICC_READ and len(frame) == 4 and self._may_access(frame[1]):
            data = list(card.block(frame[1]))
            self._finish([*data, *crc_a(data)])
        elif cmd == PICC_WRITE and len(frame) == 4 and self._may_access(frame[1]) and frame[1] != 0:
            self._pending_write_block = frame[1]
            self._finish([MIFARE_ACK], 4)
        elif cmd == PICC_HALT and len(frame) == 4:
            card.halted = True
            self._selected = None
            self._finish(None)
        else:
            self._finish([MIFARE_NAK], 4)

    @staticmethod
    def _crc_ok(frame: list[int]) -> bool:
        return len(frame) >= 3 and crc_a(frame[:-2]) == (frame[-2], frame[-1])

    def _may_access(self, block: int) -> bool:
        crypto_on = bool(self._regs[STATUS2_REG] & STATUS2_CRYPTO1_ON)
        return crypto_on and self._authenticated_sector == block // 4 and 0 <= block < 64
