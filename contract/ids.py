"""Identifiers on the wire: device and node ids, device incarnations, session ids, patient pseudonyms.

Patients are never named on the wire. A card UID is turned into `patient_ref`, a keyed hash
(HMAC-SHA256 with the site key) truncated to 64 bits, on the device itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid

from contract.errors import ContractError

ID_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
SESSION_PATTERN = re.compile(r"[0-9a-f]{32}")
PATIENT_REF_PATTERN = re.compile(r"[0-9a-f]{16}")
#: A device incarnation: 64 random bits as 16 lowercase hex digits (text, so that no store has to
#: hold an unsigned 64-bit integer). A device gets a new one whenever its spool is created, i.e.
#: whenever its sequence numbers start again at 0; (device, incarnation, seq) names a frame for good.
INCARNATION_PATTERN = re.compile(r"[0-9a-f]{16}")
INCARNATION_BYTES = 8
#: The incarnation of a device from before incarnations (frame format 1, messages v1): its seq
#: numbers are only unique until its spool is replaced. `new_incarnation` never returns it.
LEGACY_INCARNATION = "0" * (2 * INCARNATION_BYTES)
#: Topic levels that sit where a device id would and so cannot be device ids.
RESERVED_DEVICE_IDS = frozenset({"nodes", "deadletter", "admin", "reoffer", "bridges"})
PATIENT_REF_HEX_CHARS = 16
#: The largest integer any store (SQLite, InfluxDB: signed 64-bit) can hold. Every integer on the
#: wire that gets stored -- sequence numbers, timestamps, counts -- must stay at or below it.
INT64_MAX = 2**63 - 1
MIN_SITE_KEY_BYTES = 16
#: Where the sensor and the clinic tools read the site key (hex) when no key file is named.
SITE_KEY_ENV = "THERMOSCREEN_SITE_KEY"


def validate_device_id(device_id: str) -> str:
    """Return `device_id` if it is a valid device id, else raise ContractError."""
    if not isinstance(device_id, str) or not ID_PATTERN.fullmatch(device_id):
        raise ContractError(f"invalid device id {device_id!r}: expected [a-z0-9-]{{1,32}}")
    if device_id in RESERVED_DEVICE_IDS:
        raise ContractError(f"invalid device id {device_id!r}: reserved topic level")
    return device_id


def validate_node_id(node_id: str) -> str:
    """Return `node_id` if it is a valid inference/bridge node id, else raise ContractError."""
    if not isinstance(node_id, str) or not ID_PATTERN.fullmatch(node_id):
        raise ContractError(f"invalid node id {node_id!r}: expected [a-z0-9-]{{1,32}}")
    return node_id


def validate_session_id(session_id: str) -> str:
    """Session ids are UUID4s written as 32 lowercase hex digits."""
    if not isinstance(session_id, str) or not SESSION_PATTERN.fullmatch(session_id):
        raise ContractError(f"invalid session id {session_id!r}: expected 32 lowercase hex digits")
    return session_id


def validate_patient_ref(patient_ref: str) -> str:
    """Pseudonyms are 16 lowercase hex digits (a truncated HMAC)."""
    if not isinstance(patient_ref, str) or not PATIENT_REF_PATTERN.fullmatch(patient_ref):
        raise ContractError(f"invalid patient_ref {patient_ref!r}: expected 16 lowercase hex digits")
    return patient_ref


def validate_incarnation(incarnation: str) -> str:
    """Incarnations are 16 lowercase hex digits (64 bits); the legacy all-zero value is valid."""
    if not isinstance(incarnation, str) or not INCARNATION_PATTERN.fullmatch(incarnation):
        raise ContractError(f"invalid incarnation {incarnation!r}: expected 16 lowercase hex digits")
    return incarnation


def new_incarnation() -> str:
    """A fresh random incarnation, never the legacy value (which would claim "from before incarnations")."""
    while True:
        incarnation = secrets.token_hex(INCARNATION_BYTES)
        if incarnation != LEGACY_INCARNATION:
            return incarnation


def new_session_id() -> str:
    """A fresh random session id."""
    return uuid.uuid4().hex


def make_patient_ref(card_uid: bytes | int | str, site_key: bytes) -> str:
    """Pseudonymise a card UID with the site key: HMAC-SHA256, first 64 bits as hex.

    The same card at the same site always gives the same pseudonym; without the site key the
    pseudonym cannot be linked back to the card.
    """
    if len(site_key) < MIN_SITE_KEY_BYTES:
        raise ContractError(f"site key too short: {len(site_key)} bytes, need at least {MIN_SITE_KEY_BYTES}")
    if isinstance(card_uid, int):
        if card_uid < 0:
            raise ContractError("card UID must not be negative")
        uid_bytes = card_uid.to_bytes(max(1, (card_uid.bit_length() + 7) // 8), "big")
    elif isinstance(card_uid, str):
        uid_bytes = card_uid.strip().lower().encode("ascii")
    else:
        uid_bytes = bytes(card_uid)
    if not uid_bytes:
        raise ContractError("empty card UID")
    digest = hmac.new(site_key, uid_bytes, hashlib.sha256).hexdigest()
    return digest[:PATIENT_REF_HEX_CHARS]
