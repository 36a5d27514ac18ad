"""Card readers: the project's MFRC522 driver on the emulated chip, scan detection, card scripts, site key.

The reset line is real gpiozero code on gpiozero's documented test pin factory (MockFactory):
there is no GPIO here. The chip under the driver is the emulation in `sensor_node.emulation`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.ids import SITE_KEY_ENV, make_patient_ref
from sensor_node.emulation.mfrc522_chip import Card, EmulatedMfrc522, crc_a
from sensor_node.mfrc522_reader import CardReadError, ChipError, Mfrc522, RfidError
from sensor_node.rfid import (
    EmulatedReaderTaps,
    Mfrc522Taps,
    ScriptedTaps,
    TapDetector,
    emulated_reader,
    parse_card_line,
    read_card_script,
)
from sensor_node.site_key import load_site_key

UID = bytes.fromhex("04a1b2c3")
UID7 = bytes.fromhex("04112233445566")
UID10 = bytes.fromhex("04112233445566778899")
KEY = bytes(range(32))
#: make_patient_ref(UID, KEY) as the old SimpleMFRC522 path computed it (id >> 8 as 4 big-endian bytes).
LEGACY_4_BYTE_REF = "ba279e0c1e5c2464"


@pytest.fixture
def reader() -> Iterator[tuple[Mfrc522, EmulatedMfrc522]]:
    reader, chip = emulated_reader()
    reader.init()
    yield reader, chip
    reader.close()


@pytest.mark.parametrize("uid", [UID, UID7, UID10, bytes(6) + b"\x01"])
def test_the_driver_reads_whole_uids_of_every_size(reader: tuple[Mfrc522, EmulatedMfrc522], uid: bytes) -> None:
    driver, chip = reader
    assert driver.read_cards() == []
    card = Card(uid)
    chip.field.place(card)
    assert driver.read_cards() == [uid]
    assert card.uid_read.is_set()
    assert driver.read_cards() == [uid]  # held on the reader: seen again after the field reset


def test_seven_byte_cards_differing_after_level_1_get_different_pseudonyms(
    reader: tuple[Mfrc522, EmulatedMfrc522],
) -> None:
    driver, chip = reader
    refs = set()
    for last in range(3):
        uid = UID7[:-1] + bytes([last])
        chip.field.place(Card(uid))
        (read,) = driver.read_cards()
        chip.field.remove()
        assert read == uid
        refs.add(make_patient_ref(read, KEY))
    assert len(refs) == 3  # the old level-1-only read gave 0x88 + 3 bytes: one pseudonym for all three


def test_a_4_byte_card_keeps_its_old_pseudonym(reader: tuple[Mfrc522, EmulatedMfrc522]) -> None:
    driver, chip = reader
    chip.field.place(Card(UID, sak=0x08))
    (uid,) = driver.read_cards()
    assert make_patient_ref(uid, KEY) == LEGACY_4_BYTE_REF
    scripted = parse_card_line("04a1b2c3", "x")
    assert scripted is not None and make_patient_ref(scripted.uid, KEY) == LEGACY_4_BYTE_REF


def test_two_cards_at_once_are_resolved_deterministically_then_both_read(
    reader: tuple[Mfrc522, EmulatedMfrc522],
) -> None:
    driver, chip = reader
    first, second = bytes.fromhex("04112233445577"), UID7  # differ in bit 0 of the last byte: 1 wins
    chip.field.place(Card(UID7))
    chip.field.place(Card(first))
    assert driver.read_cards() == [first, second]
    assert driver.read_cards() == [first, second]
    chip.field.place(Card(UID10))
    chip.field.place(Card(bytes.fromhex("f0e0d0c0")))
    assert sorted(driver.read_cards()) == sorted([first, second, UID10, bytes.fromhex("f0e0d0c0")])


@pytest.mark.parametrize("frames", range(1, 8))
@pytest.mark.parametrize("torn", [False, True])
def test_a_card_pulled_away_mid_read_gives_an_error_never_a_uid(
    reader: tuple[Mfrc522, EmulatedMfrc522], frames: int, torn: bool
) -> None:
    driver, chip = reader
    chip.field.place(Card(UID10, leave_after_frames=frames, torn=torn))  # 10 bytes: 7 frames to read
    try:
        uids = driver.read_cards()
    except CardReadError:
        uids = []
    except RfidError as exc:  # the card left before answering: no answer where one was due
        assert "no card" in str(exc)
        uids = []
    assert uids in ([], [UID10])
    assert uids == [] or (frames == 7 and not torn)
    assert driver.read_cards() == []  # gone, and the driver still works


class BadBccCard(Card):
    """A card whose level-1 BCC arrives with a bit error."""

    def cascade_levels(self) -> list[bytes]:
        levels = super().cascade_levels()
        return [levels[0][:4] + bytes([levels[0][4] ^ 0x01]), *levels[1:]]


class BadSakCrcCard(Card):
    """A card whose SAK arrives with a bit error in its CRC (the select frame itself was fine)."""

    def receive(self, frame: bytes, tx_last_bits: int) -> list[int] | None:
        bits = super().receive(frame, tx_last_bits)
        if bits is not None and len(frame) == 9:
            bits[-1] ^= 1
        return bits


@pytest.mark.parametrize(("card", "needle"), [(BadBccCard(UID7), "BCC"), (BadSakCrcCard(UID), "SAK CRC")])
def test_bit_errors_in_bcc_or_sak_give_an_error_not_a_uid(
    reader: tuple[Mfrc522, EmulatedMfrc522], card: Card, needle: str
) -> None:
    driver, chip = reader
    chip.field.place(card)
    with pytest.raises(CardReadError, match=needle):
        driver.read_cards()


def test_driver_without_released_reset_finds_no_chip() -> None:
    driver, chip = emulated_reader()
    chip_off = Mfrc522(chip)  # no reset line: NRSTPD stays low (MockFactory pin initial value)
    with pytest.raises(ChipError, match="no MFRC522"):
        chip_off.init()
    assert driver.init() == 0x92  # the driver's reset sequence powers it up
    driver.close()


def test_crc_a_matches_known_frames() -> None:
    assert crc_a([0x50, 0x00]) == (0x57, 0xCD)  # HLTA as sent on the air: 50 00 57 CD
    assert crc_a([0x00, 0x00]) == (0xA0, 0x1E)  # ISO/IEC 14443-3 Annex B example: CRC_A 0x1EA0


def test_mfrc522_taps_count_a_held_card_once() -> None:
    now = [0.0]
    driver, chip = emulated_reader()
    taps = Mfrc522Taps(driver, poll_interval_s=0.001, gone_after_s=0.5, clock=lambda: now[0])
    assert taps.next_tap(0.0) is None
    chip.field.place(Card(UID7))
    assert taps.next_tap(0.0) == UID7
    now[0] = 0.3
    assert taps.next_tap(0.0) is None  # still in the field: the same scan
    chip.field.remove()
    now[0] = 0.6
    assert taps.next_tap(0.0) is None
    chip.field.place(Card(UID7))
    now[0] = 1.2  # back after more than gone_after_s: a new scan
    assert taps.next_tap(0.0) == UID7
    taps.close()


def test_mfrc522_taps_take_no_scan_while_two_cards_are_there() -> None:
    now = [0.0]
    driver, chip = emulated_reader()
    taps = Mfrc522Taps(driver, poll_interval_s=0.001, gone_after_s=0.5, clock=lambda: now[0])
    second = Card(UID10)
    chip.field.place(Card(UID))
    chip.field.place(second)
    assert taps.next_tap(0.0) is None  # which patient is meant is not known
    chip.field.remove(second)
    assert taps.next_tap(0.0) == UID
    taps.close()


def test_emulated_reader_plays_a_script_through_the_real_driver() -> None:
    script = ScriptedTaps()
    script.push(UID, 0.0)
    script.push(UID10, 0.0)
    script.push(UID7, 0.0)
    taps = EmulatedReaderTaps(script, poll_interval_s=0.01, gone_after_s=0.3, tap_s=0.05)
    try:
        assert taps.next_tap(5.0) == UID
        assert taps.next_tap(5.0) == UID10
        assert taps.next_tap(5.0) == UID7
        assert taps.next_tap(0.3) is None
    finally:
        taps.close()


def test_tap_detector_debounces_flaky_reads() -> None:
    detector = TapDetector(gone_after_s=1.0)
    assert detector.observe(UID, 0.0) == UID
    assert detector.observe(None, 0.1) is None
    assert detector.observe(UID, 0.2) is None  # a missed poll is not a new scan
    assert detector.observe(b"\x01\x02\x03\x04", 0.3) == b"\x01\x02\x03\x04"  # another card
    assert detector.observe(UID, 0.4) == UID


def test_card_script_lines() -> None:
    assert parse_card_line("  # comment only", "f:1") is None
    assert parse_card_line("", "f:2") is None
    scan = parse_card_line("04:A1:B2:C3 2.5  # first patient", "f:3")
    assert scan is not None and scan.uid == UID and scan.delay_s == 2.5
    assert read_card_script(["04a1b2c3", "04-a1-b2-c3-d4-e5-f6 1"], "f")[1].uid == bytes.fromhex("04a1b2c3d4e5f6")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("zz11", "not hex"),
        ("0102", "2 bytes"),
        ("0102030405", "5 bytes, expected 4, 7 or 10"),
        ("04a1b2c3 soon", "not a number"),
        ("04a1b2c3 1 2", "3 fields"),
    ],
)
def test_bad_card_script_lines_name_the_place_but_not_the_line(line: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_card_line(line, "cards.txt:7")
    assert str(info.value).startswith("cards.txt:7: ")
    assert line.split(maxsplit=1)[0] not in str(info.value)


def test_scripted_taps_respect_delays_and_close() -> None:
    now = [100.0]
    taps = ScriptedTaps(clock=lambda: now[0])
    taps.push(UID, 2.0)
    assert taps.next_tap(0.0) is None
    now[0] = 102.0
    assert taps.next_tap(0.0) == UID
    done = threading.Event()
    result: list[bytes | None] = []

    def wait() -> None:
        result.append(taps.next_tap(30.0))
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    taps.close()
    assert done.wait(5.0) and result == [None]


def test_scripted_taps_from_file_and_stream(tmp_path: Path) -> None:
    cards = tmp_path / "cards.txt"
    cards.write_text("# demo\n04a1b2c3\n0a0b0c0d 0\n", encoding="utf-8")
    taps = ScriptedTaps.from_file(cards)
    assert [taps.next_tap(1.0), taps.next_tap(1.0)] == [UID, bytes.fromhex("0a0b0c0d")]
    streamed = ScriptedTaps.from_stream(io.StringIO("not-a-uid\n04a1b2c3\n"))
    assert streamed.next_tap(5.0) == UID  # the bad line was skipped
    (tmp_path / "bad.txt").write_text("04a1b2c3\nxyz\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2: card UID is not hex"):
        ScriptedTaps.from_file(tmp_path / "bad.txt")


def test_site_key_from_file_env_or_ephemeral(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SITE_KEY_ENV, raising=False)
    key_file = tmp_path / "site.key"
    key_file.write_text(KEY.hex() + "\n", encoding="ascii")
    assert load_site_key(key_file) == KEY
    monkeypatch.setenv(SITE_KEY_ENV, bytes(range(16, 48)).hex())
    assert load_site_key(None) == bytes(range(16, 48))
    monkeypatch.setenv(SITE_KEY_ENV, "abcd")
    with pytest.raises(ValueError, match="need at least 16"):
        load_site_key(None)
    monkeypatch.delenv(SITE_KEY_ENV)
    with pytest.raises(ValueError, match="no site key"):
        load_site_key(None)
    assert len(load_site_key(None, allow_ephemeral=True)) == 32
    with pytest.raises(ValueError, match="cannot read site key file"):
        load_site_key(tmp_path / "missing.key")
