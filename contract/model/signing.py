"""Ed25519 signatures over `manifest.json`: who may hand a node a model.

The manifest holds the sha256 of every model file, so a signature over its exact bytes
covers the whole model. Whoever can write the model directory can also rewrite those
hashes; only the holder of the private key (it stays with whoever trains, never in the
repository or a model directory) can produce a signature the node's pinned public key accepts.

Formats, kept plain on purpose:
- public key: `ed25519:` + base64 of the 32 raw bytes (one line, fits a TOML string);
- private key: unencrypted PKCS#8 PEM, mode 0600;
- signature: `manifest.json.sig` beside the manifest, `ed25519:` + base64 of the 64 bytes
  (reading and writing model directories is `contract.model.manifest`'s job).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_PREFIX = "ed25519:"
#: The environment variable `thermoscreen train` reads the private key's path from.
SIGNING_KEY_ENV = "THERMOSCREEN_MODEL_SIGNING_KEY"
PRIVATE_KEY_MODE = 0o600


class SigningError(ValueError):
    """A key or signature that cannot be used; the message is one line."""


def _b64(prefix_text: str, what: str, size: int) -> bytes:
    if not prefix_text.startswith(KEY_PREFIX):
        raise SigningError(f"{what} must start with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(prefix_text[len(KEY_PREFIX) :].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise SigningError(f"{what} has {len(raw)} bytes, expected {size}")
    return raw


def parse_public_key(text: str) -> Ed25519PublicKey:
    """`ed25519:<base64>` -> key; SigningError when it is not one."""
    return Ed25519PublicKey.from_public_bytes(_b64(text, "public key", 32))


def format_public_key(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def generate_key_pair(private_path: Path) -> str:
    """Write a new private key to `private_path` (0600, never overwritten); return the public key text."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    except FileExistsError:
        raise SigningError(f"{private_path}: already exists; not overwriting a signing key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = format_public_key(key.public_key())
    private_path.with_name(private_path.name + ".pub").write_text(public + "\n", encoding="ascii")
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read signing key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key")
    return key


def sign_manifest_bytes(manifest_bytes: bytes, key: Ed25519PrivateKey) -> str:
    return KEY_PREFIX + base64.b64encode(key.sign(manifest_bytes)).decode("ascii")


def verify_signature(manifest_bytes: bytes, signature_text: str, trusted_keys: Sequence[str]) -> str:
    """The trusted key that signed these exact bytes; SigningError (one line) otherwise."""
    if not trusted_keys:
        raise SigningError("no trusted model signing key configured")
    signature = _b64(signature_text.strip(), "signature", 64)
    for text in trusted_keys:
        try:
            parse_public_key(text).verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return text
    raise SigningError("manifest signature does not verify with any trusted key")
