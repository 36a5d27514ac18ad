"""Keys of the registry: never stored in the registry file itself.

The registry key (AES-256-GCM, 32 bytes) comes from `--key-file` or THERMOSCREEN_REGISTRY_KEY;
the site key (the sensor's, for `patient_ref`) from `--site-key-file` or THERMOSCREEN_SITE_KEY.
Both are hex text.
"""

from __future__ import annotations

import os
from pathlib import Path

from contract.ids import MIN_SITE_KEY_BYTES, SITE_KEY_ENV

REGISTRY_KEY_ENV = "THERMOSCREEN_REGISTRY_KEY"
REGISTRY_KEY_BYTES = 32


def _parse_hex(text: str, where: str, *, exact: int | None, minimum: int) -> bytes:
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise ValueError(f"{where}: key must be hex digits") from None
    if exact is not None and len(key) != exact:
        raise ValueError(f"{where}: key is {len(key)} bytes, need {exact} ({2 * exact} hex digits)")
    if len(key) < minimum:
        raise ValueError(f"{where}: key is {len(key)} bytes, need at least {minimum}")
    return key


def _load(key_file: Path | None, env: str, *, exact: int | None, minimum: int, what: str) -> bytes:
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"cannot read {what} file {key_file}: {reason}") from None
        return _parse_hex(text, str(key_file), exact=exact, minimum=minimum)
    value = os.environ.get(env)
    if value:
        return _parse_hex(value, env, exact=exact, minimum=minimum)
    raise ValueError(f"no {what}: give its file or set {env} (hex)")


def load_registry_key(key_file: Path | None) -> bytes:
    """The AES-256-GCM key of the registry fields."""
    return _load(key_file, REGISTRY_KEY_ENV, exact=REGISTRY_KEY_BYTES, minimum=REGISTRY_KEY_BYTES, what="registry key")


def load_site_key(key_file: Path | None) -> bytes:
    """The site key that makes `patient_ref` (the same as the sensor's)."""
    return _load(key_file, SITE_KEY_ENV, exact=None, minimum=MIN_SITE_KEY_BYTES, what="site key")
