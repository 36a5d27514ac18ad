"""Card readers: the real mfrc522 package on the emulated chip, scan detection, card scripts, site key."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.ids import make_patient_ref
from sensor_node.emulation import rpi_stand_ins
from sensor_node.emulation.mfrc522_chip import Card, EmulatedMfrc522, crc_a
from sensor_node.rfid import (
    EmulatedReaderTaps,
    Mfrc522Taps,
    ScriptedTaps,
    TapDetector,
    parse_card_line,
    read_card_script,
    uid_from_simple_id,
)
from sensor_node.site_key import SITE_KEY_ENV, load_site_key

UID = bytes.fromhex("04a1b2c3")
KEY = bytes(range(32))


@pytest.fixture
def chip() -> Iterator[EmulatedMfrc522]:
    chip = EmulatedMfrc522()
    rpi_stand_ins.attach(chip, 0, 0)
    try:
        yield chip
    finally:
        rpi_stand_ins.detach(0, 0)


def test_real_mfrc522_code_reads_uid_and_blocks_from_the_emulated_card(chip: EmulatedMfrc522) -> None:
    with rpi_stand_ins.stand_ins_installed():
        from mfrc522 import SimpleMFRC522

        reader = SimpleMFRC522()
        assert reader.read_id_no_block() is None  # empty field
        chip.field.place(Card(UID, blocks={8: b"thermoscreen 123", 9: bytes(16), 10: bytes(16)}))
        number, text = reader.read_no_block()
        assert uid_from_simple_id(number) == UID
        assert text.startswith("thermoscreen 123")
        assert reader.write_no_block("written by test")[0] == number
        assert reader.read_no_block()[1].startswith("written by test")
        chip.field.remove()
        assert reader.read_id_no_block() is None
    assert chip.transfers > 100


def test_the_process_modules_are_restored_after_the_block(chip: EmulatedMfrc522) -> None:
    import sys

    before = {name: sys.modules.get(name) for name in ("RPi", "RPi.GPIO", "spidev", "mfrc522")}
    with rpi_stand_ins.stand_ins_installed():
        import spidev

        assert "Stand-in" in (spidev.__doc__ or "")
    assert {name: sys.modules.get(name) for name in before} == before


def test_crc_a_matches_known_frames() -> None:
    assert crc_a([0x50, 0x00]) == (0x57, 0xCD)  # HLTA as sent on the air: 50 00 57 CD
    assert crc_a([0x00, 0x00]) == (0xA0, 0x1E)  # ISO/IEC 14443-3 Annex B example: CRC_A 0x1EA0


def test_mfrc522_taps_count_a_held_card_once(chip: EmulatedMfrc522) -> None:
    now = [0.0]
    with rpi_stand_ins.stand_ins_installed():
        taps = Mfrc522Taps(poll_interval_s=0.001, gone_after_s=0.5, clock=lambda: now[0])
    assert taps.next_tap(0.0) is None
    chip.field.place(Card(UID))
    assert taps.next_tap(0.0) == UID
    now[0] = 0.3
    assert taps.next_tap(0.0) is None  # still in the field: the same scan
    chip.field.remove()
    now[0] = 0.6
    assert taps.next_tap(0.0) is None
    chip.field.place(Card(UID))
    now[0] = 1.2  # back after more than gone_after_s: a new scan
    assert taps.next_tap(0.0) == UID
    taps.close()


def test_emulated_reader_plays_a_script_through_the_real_mfrc522_code() -> None:
    script = ScriptedTaps()
    script.push(UID, 0.0)
    script.push(bytes.fromhex("0a0b0c0d"), 0.0)
    taps = EmulatedReaderTaps(script, poll_interval_s=0.01, gone_after_s=0.5, tap_s=0.05)
    try:
        assert taps.next_tap(5.0) == UID
        assert taps.next_tap(5.0) == bytes.fromhex("0a0b0c0d")
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
    [("zz11", "not hex"), ("0102", "2 bytes"), ("04a1b2c3 soon", "not a number"), ("04a1b2c3 1 2", "3 fields")],
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


def test_emulated_and_scripted_readers_give_the_same_pseudonym(chip: EmulatedMfrc522) -> None:
    with rpi_stand_ins.stand_ins_installed():
        from mfrc522 import SimpleMFRC522

        reader = SimpleMFRC522()
    chip.field.place(Card(UID))
    number = reader.read_id_no_block()
    from_reader = make_patient_ref(uid_from_simple_id(number), KEY)
    scripted = parse_card_line("04a1b2c3", "x")
    assert scripted is not None
    assert from_reader == make_patient_ref(scripted.uid, KEY)
