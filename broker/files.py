"""Where a provisioned broker keeps its files, and how they are written (atomically, with modes).

Secrets are created with their final mode (never world-readable for an instant) and replace
the old file by rename, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transport.private_files import PRIVATE_FILE_MODE, private_file, write_atomic

SECRET_MODE = PRIVATE_FILE_MODE
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class BrokerFiles:
    """The layout of a broker directory made by `thermoscreen broker init`."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """Signs server certificates only; the broker never reads it (keep it offline if you can)."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def passwords(self) -> Path:
        return self.root / "passwords"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def registry(self) -> Path:
        return self.root / "accounts.json"

    @property
    def site_key(self) -> Path:
        """HMAC key for patient pseudonyms; devices need it, the broker never does."""
        return self.root / "site.key"

    @property
    def data(self) -> Path:
        """Mosquitto's persistence directory (queued QoS 1 messages of persistent sessions)."""
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.data / "mosquitto.pid"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def managed(self) -> list[Path]:
        """Every file `init` writes: one of them existing means a setup is already there."""
        return [
            self.config,
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.passwords,
            self.acl,
            self.registry,
            self.site_key,
        ]


@dataclass(frozen=True)
class Owner:
    """A user (and primary group) that files are handed to."""

    name: str
    uid: int
    gid: int


def current_owner() -> Owner:
    entry = pwd.getpwuid(os.geteuid())
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid)


def lookup_owner(name: str) -> Owner:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"no such user {name!r} on this machine") from None
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid)


def write_file(path: Path, data: bytes, *, mode: int, owner: Owner | None = None) -> None:
    """Write `data` to `path` atomically, created with `mode` and handed to `owner` before it appears."""
    write_atomic(path, data, mode=mode, chown=None if owner is None else (owner.uid, owner.gid))


def tighten_secrets(files: BrokerFiles) -> None:
    """Re-check the modes of the secrets already there (a restored SD card may have made them 0644)."""
    for secret in (files.ca_key, files.server_key, files.passwords, files.acl, files.registry, files.site_key):
        if secret.exists():
            private_file(secret)


@contextlib.contextmanager
def locked(files: BrokerFiles) -> Iterator[None]:
    """Serialise provisioning commands on one directory (two `add-device` at once must not race)."""
    fd = os.open(files.lock, os.O_WRONLY | os.O_CREAT, SECRET_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tighten_secrets(files)
        yield
    finally:
        os.close(fd)
