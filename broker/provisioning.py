"""Provision a production broker: config, certificates, site key, accounts, ACL.

The CLI (`thermoscreen broker ...`) is a thin layer over these functions; the demo and the
tests call them directly to provision on the fly. After `add_*` or `remove_account` the
broker must re-read its password file and ACL: send it SIGHUP (`reload_broker`).

Revoking an account also leaves what it retained (a device's `online` status, or a retained
frame a hostile device planted) to be replayed to every new subscriber. `revoke_and_clear_retained`
clears those with the least privilege there is: a one-shot account that exists only for
the seconds of the cleanup, may write only the revoked account's own topics, and never
leaves this process (its password is random and in memory only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.accounts import Account, BrokerSetup, Registry, Role, device_username, service_username
from broker.acl import render_acl
from broker.certificates import PemPair, make_ca, make_server_cert
from broker.files import (
    PUBLIC_MODE,
    SECRET_MODE,
    BrokerFiles,
    Owner,
    current_owner,
    locked,
    lookup_owner,
    write_file,
)
from broker.mosquitto_conf import Listener, render_config
from broker.passwords import hash_password, new_password, parse_password_file, render_password_file
from contract import topics as t
from transport.connection import MqttConnection, MqttSettings

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
SITE_KEY_BYTES = 32
#: Username prefix of the one-shot account that clears a revoked account's retained messages.
CLEANUP_USER_PREFIX = "cleanup-"
#: How long the cleanup waits for the reloaded broker to accept the one-shot account.
CLEANUP_TIMEOUT_S = 15.0

LOOPBACK_COMMENT = (
    "Plaintext, loopback only: for local tools on this machine (passwords still required). Never bind it elsewhere."
)
TLS_COMMENT = "TLS: devices and services connect here, with their username and password."


class SetupExistsError(FileExistsError):
    """`init` found an existing setup and was not told to overwrite it."""


@dataclass(frozen=True)
class Credentials:
    """What a new account needs to connect; the password is shown once and stored only hashed."""

    username: str
    password: str
    role: Role
    ca: Path
    url: str
    node_id: str | None = None
    site_key_file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "role": self.role.value,
            "ca": str(self.ca),
            "url": self.url,
        }
        if self.node_id is not None:
            data["node_id"] = self.node_id
        if self.site_key_file is not None:
            data["site_key_file"] = str(self.site_key_file)
        return data


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _broker_owner(name: str | None) -> Owner:
    """The user Mosquitto will run as; handing files to someone else needs root."""
    me = current_owner()
    if name is None or name == me.name:
        return me
    owner = lookup_owner(name)
    if os.geteuid() != 0:
        raise PermissionError(f"--user {name}: only root can hand the broker's files to another user")
    return owner


def load_registry(files: BrokerFiles) -> Registry:
    """The account registry of an initialised directory (one-line errors if it is not one)."""
    try:
        text = files.registry.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{files.root} is not a broker directory (no {files.registry.name}); run `thermoscreen broker init` first"
        ) from None
    try:
        return Registry.model_validate_json(text)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ValueError(f"{files.registry}: not a valid account registry ({' '.join(first[:3])})") from None


def _write_registry(files: BrokerFiles, registry: Registry) -> None:
    text = json.dumps(registry.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    write_file(files.registry, text.encode("utf-8"), mode=SECRET_MODE)


def _write_access_files(
    files: BrokerFiles, registry: Registry, passwords: dict[str, str], *, extra_acl: str = ""
) -> None:
    owner = lookup_owner(registry.broker.broker_user)
    acl = render_acl(registry.accounts.values()) + extra_acl
    write_file(files.passwords, render_password_file(passwords).encode("utf-8"), mode=SECRET_MODE, owner=owner)
    write_file(files.acl, acl.encode("utf-8"), mode=SECRET_MODE, owner=owner)
    _write_registry(files, registry)


def _read_passwords(files: BrokerFiles) -> dict[str, str]:
    try:
        return parse_password_file(files.passwords.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{files.passwords}: {exc}") from None


def render_broker_config(files: BrokerFiles, setup: BrokerSetup, *, conf_dir: Path | None = None) -> str:
    """mosquitto.conf for a provisioned directory; `conf_dir` is where the broker sees it (containers)."""
    seen = conf_dir or files.root
    tls = (seen / files.ca_cert.name, seen / files.server_cert.name, seen / files.server_key.name)
    return render_config(
        [
            Listener(port=setup.port, bind="127.0.0.1", use_username_as_clientid=setup.username_as_clientid),
            Listener(
                port=setup.tls_port, bind=setup.tls_bind, tls=tls, use_username_as_clientid=setup.username_as_clientid
            ),
        ],
        allow_anonymous=False,
        password_file=seen / files.passwords.name,
        acl_file=seen / files.acl.name,
        persistence_dir=seen / files.data.name,
        user=setup.broker_user,
        pid_file=seen / files.data.name / files.pid_file.name,
        # Subscriptions are logged as an audit trail: Mosquitto's ACL checks deliveries, not
        # subscriptions, so this is where a device subscribing outside its own topics shows.
        log_types=("error", "warning", "notice", "information", "subscribe", "unsubscribe"),
        comments={setup.port: LOOPBACK_COMMENT, setup.tls_port: TLS_COMMENT},
    )


def init_broker(
    directory: Path,
    *,
    port: int = DEFAULT_PORT,
    tls_port: int = DEFAULT_TLS_PORT,
    tls_bind: str | None = None,
    hostnames: Sequence[str] = (),
    broker_user: str | None = None,
    conf_dir: Path | None = None,
    username_as_clientid: bool = True,
    force: bool = False,
    new_site_key: bool = False,
) -> BrokerFiles:
    """Write a complete broker setup into `directory`: `mosquitto -c DIR/mosquitto.conf` then just works.

    With `force`, an existing setup is replaced: new CA and server certificate, no accounts.
    The site key is kept unless `new_site_key` (a new one unlinks every earlier pseudonym).
    """
    if port == tls_port:
        raise ValueError(f"--port and --tls-port must differ (both {port})")
    for value in (port, tls_port):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} out of range 1..65535")
    files = BrokerFiles(directory.resolve())
    owner = _broker_owner(broker_user)
    me = current_owner()
    files.root.mkdir(parents=True, exist_ok=True)
    with locked(files):
        existing = [p.name for p in files.managed() if p.exists()]
        if existing and not force:
            raise SetupExistsError(
                f"{files.root} already holds a broker setup ({', '.join(existing[:3])}); pass --force to replace it"
            )
        # The broker must be able to enter the directory and write its persistence files.
        if owner != me:
            os.chown(files.root, me.uid, owner.gid)
            os.chmod(files.root, 0o750)
        else:
            os.chmod(files.root, 0o700)
        files.data.mkdir(exist_ok=True)
        if owner != me:
            os.chown(files.data, owner.uid, owner.gid)
        os.chmod(files.data, 0o700)

        ca = make_ca()
        server = make_server_cert(ca, list(hostnames))
        write_file(files.ca_cert, ca.cert_pem, mode=PUBLIC_MODE, owner=owner)
        write_file(files.ca_key, ca.key_pem, mode=SECRET_MODE)
        write_file(files.server_cert, server.cert_pem, mode=PUBLIC_MODE, owner=owner)
        write_file(files.server_key, server.key_pem, mode=SECRET_MODE, owner=owner)
        if new_site_key or not files.site_key.exists():
            write_file(files.site_key, (secrets.token_hex(SITE_KEY_BYTES) + "\n").encode("ascii"), mode=SECRET_MODE)
        else:
            os.chmod(files.site_key, SECRET_MODE)

        setup = BrokerSetup(
            port=port,
            tls_port=tls_port,
            tls_bind=tls_bind,
            hostnames=list(hostnames),
            broker_user=owner.name,
            username_as_clientid=username_as_clientid,
        )
        registry = Registry(broker=setup)
        _write_access_files(files, registry, {})
        config = render_broker_config(files, setup, conf_dir=conf_dir)
        write_file(files.config, config.encode("utf-8"), mode=PUBLIC_MODE, owner=owner)
    return files


def renew_server_cert(directory: Path, *, extra_hostnames: Sequence[str] = ()) -> list[str]:
    """Issue a fresh server certificate from the CA (expiry, new hostnames); returns its hostnames.

    Clients keep working: they trust the CA, which does not change. Restart the broker after.
    """
    files = BrokerFiles(directory.resolve())
    with locked(files):
        registry = load_registry(files)
        try:
            ca = PemPair(files.ca_cert.read_bytes(), files.ca_key.read_bytes())
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"cannot renew: {exc.filename} is missing (was the CA key moved offline?)"
            ) from None
        names = list(dict.fromkeys([*registry.broker.hostnames, *extra_hostnames]))
        server = make_server_cert(ca, names)
        owner = lookup_owner(registry.broker.broker_user)
        write_file(files.server_cert, server.cert_pem, mode=PUBLIC_MODE, owner=owner)
        write_file(files.server_key, server.key_pem, mode=SECRET_MODE, owner=owner)
        registry.broker.hostnames = names
        _write_registry(files, registry)
    return names


def _connect_url(setup: BrokerSetup) -> str:
    host = setup.hostnames[0] if setup.hostnames else "localhost"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"mqtts://{host}:{setup.tls_port}"


def _add_account(files: BrokerFiles, account: Account, *, rotate: bool) -> str:
    """Register `account` (or, with `rotate`, give an existing one a new password); returns the password."""
    with locked(files):
        registry = load_registry(files)
        passwords = _read_passwords(files)
        existing = registry.accounts.get(account.username)
        if existing is not None:
            if not rotate:
                raise ValueError(f"account {account.username} already exists; pass --rotate to issue a new password")
            if existing.role is not account.role:
                raise ValueError(f"account {account.username} exists with role {existing.role.value}")
            account = existing
        elif account.node_id is not None:
            owner = registry.node_owner(account.node_id)
            if owner is not None:
                raise ValueError(f"node id {account.node_id} is already used by {owner.username}")
        password = new_password()
        passwords[account.username] = hash_password(password)
        registry.accounts[account.username] = account
        _write_access_files(files, registry, passwords)
    return password


def add_device(directory: Path, device_id: str, *, rotate: bool = False) -> Credentials:
    """Create a device account (username = device id) and return its one-time credentials."""
    files = BrokerFiles(directory.resolve())
    username = device_username(device_id)
    password = _add_account(files, Account(username=username, role=Role.DEVICE, created=_now()), rotate=rotate)
    setup = load_registry(files).broker
    return Credentials(
        username, password, Role.DEVICE, files.ca_cert, _connect_url(setup), site_key_file=files.site_key
    )


def add_service(directory: Path, role: Role | str, name: str, *, rotate: bool = False) -> Credentials:
    """Create an inference, bridge or admin account `<role>.<name>` and return its one-time credentials."""
    files = BrokerFiles(directory.resolve())
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}: expected inference, bridge or admin") from None
    username = service_username(role, name)
    account = Account(username=username, role=role, node_id=name, created=_now())
    password = _add_account(files, account, rotate=rotate)
    setup = load_registry(files).broker
    return Credentials(username, password, role, files.ca_cert, _connect_url(setup), node_id=name)


def _pop_account(files: BrokerFiles, registry: Registry, passwords: dict[str, str], username: str) -> Account:
    account = registry.accounts.pop(username, None)
    if account is None:
        known = ", ".join(sorted(registry.accounts)) or "none"
        raise LookupError(f"no account {username!r} in {files.root} (accounts: {known})")
    passwords.pop(username, None)
    return account


def remove_account(directory: Path, username: str) -> Account:
    """Revoke an account (device id or `<role>.<name>`); effective once the broker reloads."""
    files = BrokerFiles(directory.resolve())
    with locked(files):
        registry = load_registry(files)
        passwords = _read_passwords(files)
        account = _pop_account(files, registry, passwords, username)
        _write_access_files(files, registry, passwords)
    return account


def retained_topics(account: Account) -> list[str]:
    """Every topic `account` could have left a retained message on (what its ACL let it write)."""
    if account.role is Role.DEVICE:
        return [t.device_topic(account.username, channel) for channel in t.DeviceChannel]
    if account.node_id is None:
        return []
    return [t.node_topic(account.node_id, channel) for channel in t.NodeChannel]


def _cleanup_acl(username: str, topics: Sequence[str]) -> str:
    lines = ["", "# one-shot cleanup of a revoked account's retained messages (removed right after)"]
    lines += [f"user {username}", *(f"topic write {topic}" for topic in topics)]
    return "\n".join(lines) + "\n"


def _publish_empty_retained(setup: BrokerSetup, username: str, password: str, topics: Sequence[str]) -> None:
    """Over the loopback listener: an empty retained payload deletes the retained message of a topic."""
    settings = MqttSettings(
        url=f"mqtt://127.0.0.1:{setup.port}",
        username=username,
        connect_timeout_s=CLEANUP_TIMEOUT_S,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )
    conn = MqttConnection(settings, client_id=username, password=password).start()
    try:
        receipts = [(topic, conn.publish(topic, b"", qos=1, retain=True)) for topic in topics]
        for topic, receipt in receipts:
            if not receipt.wait(CLEANUP_TIMEOUT_S) or not receipt.accepted:
                raise ConnectionError(f"broker did not accept clearing the retained message of {topic}")
    finally:
        conn.stop()


@dataclass(frozen=True)
class Revocation:
    """What `revoke_and_clear_retained` did: the account removed, the topics cleared, the broker reloaded."""

    account: Account
    topics: list[str]
    broker_pid: int


def revoke_and_clear_retained(directory: Path, username: str) -> Revocation:
    """Revoke `username`, reload the broker, and clear every retained message the account could have left.

    Needs the broker running from `directory` on this host (the loopback listener). The
    one-shot cleanup account is removed (and the broker reloaded again) whatever happens.
    """
    files = BrokerFiles(directory.resolve())
    cleanup_user = f"{CLEANUP_USER_PREFIX}{secrets.token_hex(6)}"
    cleanup_password = new_password()
    with locked(files):
        registry = load_registry(files)
        passwords = _read_passwords(files)
        account = _pop_account(files, registry, passwords, username)
        topics = retained_topics(account)
        passwords[cleanup_user] = hash_password(cleanup_password)
        _write_access_files(files, registry, passwords, extra_acl=_cleanup_acl(cleanup_user, topics))
        setup = registry.broker
    try:
        pid = reload_broker(directory)
        _publish_empty_retained(setup, cleanup_user, cleanup_password, topics)
    except (OSError, ValueError) as exc:
        raise ConnectionError(
            f"account {username} removed, but its retained messages were not cleared: {exc}"
        ) from None
    finally:
        with locked(files):
            registry = load_registry(files)
            passwords = _read_passwords(files)
            passwords.pop(cleanup_user, None)
            _write_access_files(files, registry, passwords)
        with contextlib.suppress(OSError, ValueError):  # not running: it never loaded the one-shot account
            reload_broker(directory)
    return Revocation(account, topics, pid)


def list_accounts(directory: Path) -> list[Account]:
    return sorted(load_registry(BrokerFiles(directory.resolve())).accounts.values(), key=lambda a: a.username)


def read_site_key(directory: Path) -> bytes:
    """The site key as bytes (devices use it for `make_patient_ref`)."""
    path = BrokerFiles(directory.resolve()).site_key
    text = path.read_text(encoding="ascii").strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: expected hex digits") from None


def reload_broker(directory: Path) -> int:
    """SIGHUP the broker whose pid file is in `directory`: it re-reads passwords and ACL. Returns its pid."""
    pid_file = BrokerFiles(directory.resolve()).pid_file
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise FileNotFoundError(f"no pid file {pid_file}: is the broker running from this directory?") from None
    except ValueError:
        raise ValueError(f"{pid_file}: not a process id") from None
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ProcessLookupError(f"broker pid {pid} from {pid_file} is not running") from None
    if name != "mosquitto":
        raise ProcessLookupError(f"pid {pid} from {pid_file} is {name!r}, not mosquitto; reload it yourself")
    os.kill(pid, signal.SIGHUP)
    return pid
