"""Card readers: each yields *scans* (a card presented anew), as raw UIDs for the session logic only.

The raw UID never leaves this module and the node, which turns it into a pseudonym
at once; nothing here logs it. Readers:

* `mfrc522`: the project's driver (`mfrc522_reader`) polled; it reads the whole UID (4, 7 or
  10 bytes); a card counts as a new scan when it appears after having been out of the field
  for `gone_after_s`.
* `emulated`: the same driver on an emulated chip (`sensor_node.emulation.mfrc522_chip`), on
  which a card script places and removes emulated cards of any UID size.
* `scripted`: scans straight from a card script, for demos.
* `none`: never a scan (anonymous capture only).

A card script has one scan per line: `UID [SECONDS]`, the UID in hex (4, 7 or 10 bytes, ':'
or '-' allowed between bytes) and the delay after the previous scan (default 0); '#' starts
a comment. The same card scanned twice starts and ends a session.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from sensor_node.config import RfidKind, RfidSettings, SensorConfig
from sensor_node.mfrc522_reader import UID_LENGTHS, Mfrc522, RfidError

if TYPE_CHECKING:
    from sensor_node.emulation.mfrc522_chip import EmulatedMfrc522

log = logging.getLogger(__name__)

#: The emulated card stays on the emulated reader at most this long waiting to be read.
CARD_HOLD_MAX_S = 10.0


class TapSource(Protocol):
    """Something that reports card scans."""

    def next_tap(self, timeout: float) -> bytes | None:
        """The UID of the next scan within `timeout` seconds, else None."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ScriptedScan:
    uid: bytes
    delay_s: float


def parse_card_line(line: str, where: str) -> ScriptedScan | None:
    """One card-script line; None for blank lines and comments. Errors name `where`, never the line."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.split()
    if len(parts) > 2:
        raise ValueError(f"{where}: expected 'UID [SECONDS]', got {len(parts)} fields")
    hex_uid = parts[0].replace(":", "").replace("-", "")
    try:
        uid = bytes.fromhex(hex_uid)
    except ValueError:
        raise ValueError(f"{where}: card UID is not hex") from None
    if len(uid) not in UID_LENGTHS:
        raise ValueError(f"{where}: card UID has {len(uid)} bytes, expected 4, 7 or 10")
    delay = 0.0
    if len(parts) == 2:
        try:
            delay = float(parts[1])
        except ValueError:
            raise ValueError(f"{where}: delay {parts[1]!r} is not a number of seconds") from None
        if not 0 <= delay < 86400:
            raise ValueError(f"{where}: delay must be 0..86400 seconds")
    return ScriptedScan(uid, delay)


def read_card_script(lines: Iterable[str], name: str) -> list[ScriptedScan]:
    scans = []
    for number, line in enumerate(lines, start=1):
        scan = parse_card_line(line, f"{name}:{number}")
        if scan is not None:
            scans.append(scan)
    return scans


class ScriptedTaps:
    """Scans from a card script (a file, stdin, or pushed by code), each after its delay."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[ScriptedScan] = deque()
        self._last = clock()
        self._closed = False
        #: True once a streamed script (stdin) reached its end.
        self.script_ended = False

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedTaps:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read card script {path}: {exc.strerror}") from None
        taps = cls()
        for scan in read_card_script(text.splitlines(), str(path)):
            taps.push(scan.uid, scan.delay_s)
        taps.script_ended = True
        return taps

    @classmethod
    def from_stream(cls, stream: IO[str], name: str = "stdin") -> ScriptedTaps:
        """Lines are read as they come (interactive use); a bad line is skipped with a warning."""
        taps = cls()

        def pump() -> None:
            for number, line in enumerate(stream, start=1):
                try:
                    scan = parse_card_line(line, f"{name}:{number}")
                except ValueError as exc:
                    log.warning("skipping card script line: %s", exc)
                    continue
                if scan is not None:
                    taps.push(scan.uid, scan.delay_s)
            taps.script_ended = True

        threading.Thread(target=pump, name="card-script", daemon=True).start()
        return taps

    def push(self, uid: bytes, delay_s: float = 0.0) -> None:
        """Queue a scan `delay_s` after the previous one."""
        with self._cond:
            self._queue.append(ScriptedScan(bytes(uid), delay_s))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def next_tap(self, timeout: float) -> bytes | None:
        deadline = self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                if self._queue and now >= self._last + self._queue[0].delay_s:
                    self._last = now
                    return self._queue.popleft().uid
                wake = deadline
                if self._queue:
                    wake = min(wake, self._last + self._queue[0].delay_s)
                if now >= deadline:
                    return None
                self._cond.wait(max(wake - now, 0.0))
        return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class NoTaps:
    """No reader: never a scan."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def next_tap(self, timeout: float) -> bytes | None:
        self._closed.wait(timeout)
        return None

    def close(self) -> None:
        self._closed.set()


class TapDetector:
    """Turns "card in the field" polls into scans: a UID counts again after `gone_after_s` away."""

    def __init__(self, gone_after_s: float) -> None:
        self._gone_after_s = gone_after_s
        self._current: bytes | None = None
        self._last_seen = float("-inf")

    def observe(self, uid: bytes | None, now: float) -> bytes | None:
        if uid is None:
            return None
        is_new = uid != self._current or now - self._last_seen > self._gone_after_s
        self._current, self._last_seen = uid, now
        return uid if is_new else None


class Mfrc522Taps:
    """Polls an MFRC522 through the project's driver; a scan needs exactly one card in the field.

    Two cards at once are both read (anticollision), but which patient is meant is not known,
    so no scan is taken until only one is left (a warning says why). A failed read (card
    pulled away, bit error) is logged without the UID and retried on the next poll.
    """

    def __init__(
        self,
        reader: Mfrc522,
        *,
        poll_interval_s: float,
        gone_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        try:
            reader.init()
        except RfidError as exc:
            raise RuntimeError(f"cannot start the MFRC522: {exc}") from None
        self._poll_interval_s = poll_interval_s
        self._detector = TapDetector(gone_after_s)
        self._clock = clock
        self._on_close = on_close
        self._closed = threading.Event()
        self._warned_many = False

    def _poll(self) -> bytes | None:
        try:
            uids = self._reader.read_cards()
        except RfidError as exc:
            log.debug("card read failed, retrying: %s", type(exc).__name__)
            return None
        if len(uids) > 1:
            if not self._warned_many:
                log.warning("%d cards in the reader's field: present one card at a time", len(uids))
            self._warned_many = True
            return None
        self._warned_many = False
        return uids[0] if uids else None

    def next_tap(self, timeout: float) -> bytes | None:
        deadline = self._clock() + timeout
        while not self._closed.is_set():
            tap = self._detector.observe(self._poll(), self._clock())
            if tap is not None:
                return tap
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            self._closed.wait(min(self._poll_interval_s, remaining))
        return None

    def close(self) -> None:
        self._closed.set()
        try:
            self._reader.close()
        finally:
            if self._on_close is not None:
                self._on_close()


def open_mfrc522(config: RfidSettings) -> Mfrc522Taps:
    """The MFRC522 on the Pi: Blinka SPI0 with a digitalio chip select, gpiozero reset line."""
    from sensor_node.mfrc522_reader import open_hardware

    reader, transport = open_hardware(reset_pin=config.reset_pin, cs_pin=config.cs_pin, baudrate=config.spi_baudrate)
    try:
        return Mfrc522Taps(
            reader,
            poll_interval_s=config.poll_interval_s,
            gone_after_s=config.gone_after_s,
            on_close=transport.close,
        )
    except RuntimeError:
        transport.close()
        raise


def emulated_reader(reset_pin: int = 25) -> tuple[Mfrc522, EmulatedMfrc522]:
    """The real driver on an emulated chip; the reset line is gpiozero on its MockFactory (no GPIO here)."""
    from gpiozero import DigitalOutputDevice
    from gpiozero.pins.mock import MockFactory

    from sensor_node.emulation.mfrc522_chip import EmulatedMfrc522

    factory = MockFactory()
    reset = DigitalOutputDevice(reset_pin, initial_value=False, pin_factory=factory)
    pin = factory.pin(reset_pin)
    chip = EmulatedMfrc522(reset_level=lambda: bool(pin.state))
    return Mfrc522(chip, reset), chip


class EmulatedReaderTaps:
    """Scripted scans performed on an emulated MFRC522 and read back by the real driver code."""

    def __init__(self, script: ScriptedTaps, *, poll_interval_s: float, gone_after_s: float, tap_s: float) -> None:
        reader, self.chip = emulated_reader()
        self._reader = Mfrc522Taps(reader, poll_interval_s=poll_interval_s, gone_after_s=gone_after_s)
        self._script = script
        self._tap_s = tap_s
        self._gap_s = gone_after_s + poll_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._present_cards, name="emulated-cards", daemon=True)
        self._thread.start()

    def _present_cards(self) -> None:
        from sensor_node.emulation.mfrc522_chip import Card

        while not self._stop.is_set():
            uid = self._script.next_tap(0.2)
            if uid is None:
                continue
            card = Card(uid)
            self.chip.field.place(card)
            card.uid_read.wait(CARD_HOLD_MAX_S)  # held until the reader has it, as a person would
            self._stop.wait(self._tap_s)
            self.chip.field.remove(card)
            self._stop.wait(self._gap_s)  # out of the field long enough to count as a new scan

    def next_tap(self, timeout: float) -> bytes | None:
        return self._reader.next_tap(timeout)

    def close(self) -> None:
        self._stop.set()
        self._script.close()
        self._thread.join(timeout=2)
        self._reader.close()


def open_card_script(cards: str | None) -> ScriptedTaps:
    if cards is None:
        log.warning("no card script (rfid.cards_file / --cards): no session will start")
        return ScriptedTaps()
    if cards == "-":
        return ScriptedTaps.from_stream(sys.stdin)
    return ScriptedTaps.from_file(cards)


def open_taps(config: SensorConfig) -> TapSource:
    """The card reader the config asks for."""
    rfid = config.rfid
    if rfid.kind is RfidKind.NONE:
        return NoTaps()
    if rfid.kind is RfidKind.MFRC522:
        return open_mfrc522(rfid)
    script = open_card_script(rfid.cards_file)
    if rfid.kind is RfidKind.EMULATED:
        return EmulatedReaderTaps(
            script, poll_interval_s=rfid.poll_interval_s, gone_after_s=rfid.gone_after_s, tap_s=rfid.emulated_tap_s
        )
    return script
