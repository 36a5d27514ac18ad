"""The registry, called directly: encryption at rest, refusals, file modes."""

from __future__ import annotations

import sqlite3
import stat
from itertools import count
from pathlib import Path

import pytest

import clinic.registry
from clinic.registry import PatientFields, Registry, parse_card_uid, parse_patient_fields
from contract.ids import make_patient_ref

AMA = PatientFields(name="Ama Mensah", date_of_birth="1980-02-03", clinic_id="K-1", contact="0244 000 000")
ESI = PatientFields(name="Esi Owusu", date_of_birth="1975-11-30", clinic_id="K-2")
UID_A = bytes.fromhex("04a22b19")
UID_B = bytes.fromhex("04a22b1a")


def _enrol(path: Path, key: bytes, site_key: bytes, uid: bytes, fields: PatientFields) -> str:
    with Registry(path, key, create=True) as registry, registry.enrol(uid, fields, site_key) as ref:
        return ref


def test_ref_is_what_the_sensor_computes_from_the_uid_bytes(
    registry_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    uid = parse_card_uid("04:A2:2B:19")
    assert uid == UID_A
    ref = _enrol(registry_path, registry_key, site_key, uid, AMA)
    assert ref == make_patient_ref(UID_A, site_key)
    assert ref != make_patient_ref("04a22b19", site_key)
    with Registry(registry_path, registry_key) as registry:
        assert registry.fields(ref) == AMA
        assert [e.patient_ref for e in registry.list()] == [ref]


@pytest.mark.parametrize("text", ["04a22b", "04a22b19aa", "zz112233", ""])
def test_card_uid_must_be_4_7_or_10_hex_bytes(text: str) -> None:
    with pytest.raises(ValueError, match="card UID"):
        parse_card_uid(text)
    assert len(parse_card_uid("04" * 7)) == 7
    assert len(parse_card_uid("04" * 10)) == 10


def test_bad_field_is_named() -> None:
    with pytest.raises(ValueError, match="date_of_birth"):
        parse_patient_fields("Ama", "1980-13-40", "K-1", "")
    with pytest.raises(ValueError, match="name"):
        parse_patient_fields("  ", "1980-01-01", "K-1", "")


def test_names_are_not_in_the_file(registry_path: Path, registry_key: bytes, site_key: bytes) -> None:
    _enrol(registry_path, registry_key, site_key, UID_A, AMA)
    raw = registry_path.read_bytes()
    for secret in (b"Ama", b"Mensah", b"1980-02-03", b"0244", UID_A, UID_A.hex().encode()):
        assert secret not in raw


def test_same_card_twice_is_refused(registry_path: Path, registry_key: bytes, site_key: bytes) -> None:
    ref = _enrol(registry_path, registry_key, site_key, UID_A, AMA)
    with pytest.raises(ValueError, match=f"card already enrolled as {ref}"):
        _enrol(registry_path, registry_key, site_key, UID_A, ESI)
    with Registry(registry_path, registry_key) as registry:
        assert registry.fields(ref) == AMA


def test_another_card_with_a_colliding_pseudonym_is_refused(
    registry_path: Path, registry_key: bytes, site_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 64-bit collision cannot be found here, so the ref is cut to 4 bits (16 values):
    among 17 cards two must share one (pigeonhole); those two are enrolled."""
    real = make_patient_ref

    def truncated(uid: bytes, key: bytes) -> str:
        return real(uid, key)[:1] + "0" * 15

    monkeypatch.setattr(clinic.registry, "make_patient_ref", truncated)
    seen: dict[str, bytes] = {}
    for n in count():
        uid = n.to_bytes(4, "big")
        ref = truncated(uid, site_key)
        if ref in seen:
            first, second = seen[ref], uid
            break
        seen[ref] = uid
    _enrol(registry_path, registry_key, site_key, first, AMA)
    with pytest.raises(ValueError, match=f"pseudonym {ref} of this card collides"):
        _enrol(registry_path, registry_key, site_key, second, ESI)
    with Registry(registry_path, registry_key) as registry:
        assert len(registry.list()) == 1
        assert registry.fields(ref) == AMA


def test_ciphertext_swapped_onto_another_patient_does_not_decrypt(
    registry_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    ref_a = _enrol(registry_path, registry_key, site_key, UID_A, AMA)
    ref_b = _enrol(registry_path, registry_key, site_key, UID_B, ESI)
    db = sqlite3.connect(registry_path)
    nonce, blob = db.execute("SELECT nonce, ciphertext FROM patients WHERE patient_ref = ?", (ref_a,)).fetchone()
    db.execute("UPDATE patients SET nonce = ?, ciphertext = ? WHERE patient_ref = ?", (nonce, blob, ref_b))
    db.commit()
    db.close()
    with Registry(registry_path, registry_key) as registry:
        assert registry.fields(ref_a) == AMA
        with pytest.raises(ValueError, match=f"patient {ref_b}: record does not decrypt"):
            registry.fields(ref_b)


def test_wrong_key_is_refused_before_anything_is_read_or_written(
    registry_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    _enrol(registry_path, registry_key, site_key, UID_A, AMA)
    with pytest.raises(ValueError, match="wrong registry key"):
        Registry(registry_path, bytes(32))


def test_file_0600_in_a_0700_directory(registry_path: Path, registry_key: bytes, site_key: bytes) -> None:
    registry_path.parent.mkdir(mode=0o755)
    registry_path.parent.chmod(0o755)
    _enrol(registry_path, registry_key, site_key, UID_A, AMA)
    assert stat.S_IMODE(registry_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry_path.parent.stat().st_mode) == 0o700


def test_reading_a_missing_registry_does_not_create_it(registry_path: Path) -> None:
    with pytest.raises(ValueError, match="no registry at"):
        Registry(registry_path, None)
    assert not registry_path.parent.exists()


def test_enrolment_the_audit_log_cannot_record_is_rolled_back(
    registry_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    with Registry(registry_path, registry_key, create=True) as registry:
        with pytest.raises(OSError), registry.enrol(UID_A, AMA, site_key):
            raise OSError("audit log full")
        assert registry.list() == []


def test_another_sqlite_file_is_refused_and_left_as_it_was(
    tmp_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    other = tmp_path / "data" / "archive.sqlite"
    other.parent.mkdir(mode=0o700)
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE sessions (id TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(ValueError, match="not a patient registry"):
        Registry(other, None)
    with pytest.raises(ValueError, match="not a patient registry"):
        _enrol(other, registry_key, site_key, UID_A, AMA)
    assert other.read_bytes() == before
