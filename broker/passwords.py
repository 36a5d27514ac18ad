"""Mosquitto's password-file format, written in Python so provisioning needs no `mosquitto_passwd`.

Mosquitto 2.0 reads `username:$7$<iterations>$<salt>$<hash>` (PBKDF2-HMAC-SHA512, standard
base64, 12-byte salt) and the older `$6$<salt>$<hash>` (SHA-512 of password + salt). We write
`$7$` with 101 iterations, exactly what `mosquitto_passwd` 2.0 writes. A slow KDF protects
human-chosen passwords; ours are 192 random bits (`new_password`), which no number of
iterations makes weaker or stronger in practice, while the broker pays the KDF on every CONNECT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: What mosquitto_passwd 2.0 uses; see the module docstring for why more buys nothing here.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24


def new_password() -> str:
    """A random password: 24 bytes (192 bits) as 32 URL-safe characters."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The `$7$...` hash Mosquitto stores after the `username:` of a password-file line."""
    if not password:
        raise ValueError("empty password")
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a `$7$` or `$6$` hash as Mosquitto would check it."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            digest = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def parse_password_file(text: str) -> dict[str, str]:
    """username -> stored hash, in file order; blank lines and `#` comments are skipped."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, stored = line.partition(":")
        if not sep or not username or not stored:
            raise ValueError(f"password file line {number}: expected username:hash")
        entries[username] = stored
    return entries


def render_password_file(entries: dict[str, str]) -> str:
    """One `username:hash` line per account (an empty file for none: nobody can log in)."""
    for username in entries:
        if ":" in username or any(c.isspace() for c in username):
            raise ValueError(f"username {username!r} cannot go in a Mosquitto password file")
    return "".join(f"{username}:{stored}\n" for username, stored in entries.items())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
