"""The patient registry: who a pseudonym is, kept at the site and never sent anywhere.

One SQLite file, 0600 in a 0700 directory. The patient's fields are one AES-256-GCM blob per row
whose associated data is the row's `patient_ref`, so a ciphertext moved onto another patient's
row fails to decrypt instead of naming the wrong woman. The card UID itself is not stored: only
HMAC(registry key, uid), which is enough to refuse a card enrolled twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.errors import ContractError
from contract.ids import make_patient_ref, validate_patient_ref
from transport.private_files import private_dir, private_file

#: Card UIDs an MFRC522 reads: single, double and triple size (ISO 14443-3).
UID_LENGTHS = (4, 7, 10)
NONCE_BYTES = 12
_KEY_CHECK_LABEL = b"thermoscreen registry key check v1"
_UID_LABEL = b"thermoscreen card uid v1:"

_TABLES = frozenset({"meta", "patients"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_ref TEXT PRIMARY KEY,
    uid_hash BLOB NOT NULL UNIQUE,
    enrolled_at TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
"""


class PatientFields(BaseModel):
    """What the registry knows about a woman; only ever stored encrypted."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    date_of_birth: dt.date
    clinic_id: str = Field(min_length=1, max_length=64)
    contact: str = Field(default="", max_length=200)

    @field_validator("name", "clinic_id", "contact")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\x00"):
            raise ValueError("must be one line")
        return value

    @field_validator("date_of_birth")
    @classmethod
    def _not_in_future(cls, value: dt.date) -> dt.date:
        if value > dt.datetime.now(dt.UTC).date():
            raise ValueError("is in the future")
        return value


class Enrolment(BaseModel):
    """One registry row as it can be shown without the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient_ref: str
    enrolled_at: str


def parse_patient_fields(name: str, date_of_birth: str, clinic_id: str, contact: str) -> PatientFields:
    """The fields from the command line, or ValueError naming the first bad one."""
    try:
        return PatientFields(name=name, date_of_birth=date_of_birth, clinic_id=clinic_id, contact=contact)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "patient"
        raise ValueError(f"{where}: {err['msg']}") from None


def parse_card_uid(text: str) -> bytes:
    """The card UID as typed (hex, `:`/`-`/space separators allowed) -> the bytes the reader sees.

    The bytes matter: `make_patient_ref` of the hex *string* gives another pseudonym than the
    sensor computes from the UID bytes.
    """
    digits = "".join(ch for ch in text if ch not in ": -")
    try:
        uid = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"card UID {text!r}: expected hex digits") from None
    if len(uid) not in UID_LENGTHS:
        raise ValueError(f"card UID {text!r}: {len(uid)} bytes, expected 4, 7 or 10")
    return uid


def parse_ref(text: str) -> str:
    """A pseudonym from the command line, or ValueError."""
    try:
        return validate_patient_ref(text.strip().lower())
    except ContractError as exc:
        raise ValueError(str(exc)) from None


class Registry:
    """The registry file, opened with or without the key (without: refs and dates only)."""

    def __init__(self, path: Path, key: bytes | None, *, create: bool = False) -> None:
        if create:
            private_dir(path.parent)
            private_file(path)
        elif not path.is_file():
            raise ValueError(f"no registry at {path} (enrol a patient first)")
        self.path = path
        self._key = key
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._ensure_schema(create)
            if key is not None:
                self._check_key(key)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{path}: not a registry ({exc})") from None
        except ValueError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _ensure_schema(self, create: bool) -> None:
        """Make the tables only in a new, empty file: never add them to another SQLite file
        (say the bridge's archive given by mistake)."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables >= _TABLES:
            return
        if tables or not create:
            raise ValueError(f"{self.path}: not a patient registry")
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_key(self, key: bytes) -> None:
        """Refuse a wrong key up front: with it, duplicate cards would go unnoticed."""
        check = hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).digest()
        row = self._db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (name, value) VALUES ('key_check', ?)", (check,))
        elif not hmac.compare_digest(bytes(row[0]), check):
            raise ValueError(f"{self.path}: wrong registry key (this registry was made with another one)")

    def _need_key(self) -> bytes:
        if self._key is None:
            raise ValueError("this needs the registry key (--key-file or THERMOSCREEN_REGISTRY_KEY)")
        return self._key

    def _uid_hash(self, uid: bytes) -> bytes:
        return hmac.new(self._need_key(), _UID_LABEL + uid, hashlib.sha256).digest()

    @contextmanager
    def enrol(self, uid: bytes, fields: PatientFields, site_key: bytes) -> Iterator[str]:
        """Add a patient; yields her `patient_ref` inside the transaction and commits on exit.

        The caller writes the audit line inside the block, so an enrolment the log cannot record
        is rolled back rather than left unlogged.
        """
        key = self._need_key()
        try:
            ref = make_patient_ref(uid, site_key)
        except ContractError as exc:
            raise ValueError(str(exc)) from None
        uid_hash = self._uid_hash(uid)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, fields.model_dump_json().encode(), ref.encode("ascii"))
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            same_card = self._db.execute("SELECT patient_ref FROM patients WHERE uid_hash = ?", (uid_hash,)).fetchone()
            if same_card is not None:
                raise ValueError(f"card already enrolled as {same_card[0]}")
            if self._db.execute("SELECT 1 FROM patients WHERE patient_ref = ?", (ref,)).fetchone() is not None:
                raise ValueError(
                    f"pseudonym {ref} of this card collides with another enrolled card; give her another card"
                )
            self._db.execute(
                "INSERT INTO patients (patient_ref, uid_hash, enrolled_at, nonce, ciphertext) VALUES (?, ?, ?, ?, ?)",
                (ref, uid_hash, now, nonce, ciphertext),
            )
            yield ref
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def list(self) -> list[Enrolment]:
        rows = self._db.execute("SELECT patient_ref, enrolled_at FROM patients ORDER BY enrolled_at, patient_ref")
        return [Enrolment(patient_ref=r[0], enrolled_at=r[1]) for r in rows]

    def get(self, ref: str) -> Enrolment:
        row = self._db.execute("SELECT patient_ref, enrolled_at FROM patients WHERE patient_ref = ?", (ref,)).fetchone()
        if row is None:
            raise LookupError(f"no patient {ref} in {self.path}")
        return Enrolment(patient_ref=row[0], enrolled_at=row[1])

    def forget(self, ref: str) -> int:
        """Delete her row (1 if she was enrolled, 0 if not), zeroing the freed pages (secure_delete)."""
        self._db.execute("PRAGMA secure_delete=ON")
        removed = int(self._db.execute("DELETE FROM patients WHERE patient_ref = ?", (ref,)).rowcount)
        with contextlib.suppress(sqlite3.DatabaseError):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return removed

    def fields(self, ref: str) -> PatientFields:
        """Decrypt one patient's fields; a row whose ciphertext is not its own fails loudly."""
        key = self._need_key()
        row = self._db.execute("SELECT nonce, ciphertext FROM patients WHERE patient_ref = ?", (ref,)).fetchone()
        if row is None:
            raise LookupError(f"no patient {ref} in {self.path}")
        try:
            plain = AESGCM(key).decrypt(bytes(row[0]), bytes(row[1]), ref.encode("ascii"))
        except InvalidTag:
            raise ValueError(f"patient {ref}: record does not decrypt (tampered or moved from another row)") from None
        return PatientFields.model_validate_json(plain)
