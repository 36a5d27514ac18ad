"""The site key that turns card UIDs into pseudonyms (`patient_ref`); never in the config file itself.

It comes from a file named in the config (`rfid.site_key_file`, hex text, e.g. written by the
broker provisioning) or from the THERMOSCREEN_SITE_KEY environment variable (hex).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from contract.ids import MIN_SITE_KEY_BYTES, SITE_KEY_ENV

log = logging.getLogger(__name__)


def _parse_hex(text: str, where: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{where}: site key must be hex digits") from None
    if len(key) < MIN_SITE_KEY_BYTES:
        raise ValueError(f"{where}: site key is {len(key)} bytes, need at least {MIN_SITE_KEY_BYTES} (32 hex digits)")
    return key


def load_site_key(key_file: Path | None, *, allow_ephemeral: bool = False) -> bytes:
    """The site key from `key_file` or the environment.

    With neither, `allow_ephemeral` (demo readers only) gives a random key for this process,
    with a warning: pseudonyms are then not stable across restarts. Otherwise ValueError.
    """
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"cannot read site key file {key_file}: {reason}") from None
        return _parse_hex(text, str(key_file))
    env = os.environ.get(SITE_KEY_ENV)
    if env:
        return _parse_hex(env, SITE_KEY_ENV)
    if allow_ephemeral:
        log.warning(
            "no site key (set %s or rfid.site_key_file): using a random key for this run, "
            "so patient_ref values will differ after a restart",
            SITE_KEY_ENV,
        )
        return secrets.token_bytes(32)
    raise ValueError(f"no site key: set rfid.site_key_file in the config or the {SITE_KEY_ENV} environment variable")
