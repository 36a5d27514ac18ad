"""`thermoscreen broker ...`: set up a production Mosquitto and manage its accounts.

`init` writes the directory `mosquitto -c DIR/mosquitto.conf` runs from; `add-device`,
`add-service` and `remove` change who may log in. New credentials are printed once, as one
JSON object on stdout; hints go to stderr. Heavy imports (cryptography) wait until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROLES = ("inference", "bridge", "admin")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init",
        help="write mosquitto.conf, CA and server certificate, password file, ACL and site key",
        description="Create a broker directory; then run `mosquitto -c DIR/mosquitto.conf`.",
    )
    _add_dir(init)
    init.add_argument("--port", type=int, default=1883, help="plaintext listener, loopback only (default 1883)")
    init.add_argument("--tls-port", type=int, default=8883, help="TLS listener for devices/services (default 8883)")
    init.add_argument(
        "--bind", metavar="ADDRESS", default=None, help="address of the TLS listener (default: every interface)"
    )
    init.add_argument(
        "--hostname",
        action="append",
        default=[],
        metavar="NAME",
        help="extra name or IP for the server certificate (repeatable; e.g. mosquitto, broker.lan, 10.0.0.5); "
        "the first one goes into the printed connection URLs",
    )
    init.add_argument(
        "--user",
        metavar="NAME",
        default=None,
        help="user Mosquitto runs as after dropping root; its files are handed to it (default: you)",
    )
    init.add_argument(
        "--conf-dir-as",
        metavar="PATH",
        type=Path,
        default=None,
        help="where the broker will see DIR (e.g. /mosquitto/config inside a container); default: DIR",
    )
    init.add_argument(
        "--free-client-ids",
        action="store_true",
        help="let clients pick their client id (default: the broker uses the username, one connection per account)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing setup (accounts are lost)")
    init.add_argument(
        "--new-site-key",
        action="store_true",
        help="with --force, also replace the site key (earlier pseudonyms no longer link to cards)",
    )
    init.add_argument("--json", action="store_true", help="print the paths written as one JSON object")
    init.set_defaults(run=_run_init)

    device = sub.add_parser("add-device", help="create a device account (username = device id)")
    device.add_argument("device_id", metavar="ID", help="device id, [a-z0-9-]{1,32}")
    _add_dir(device)
    _add_account_flags(device)
    device.set_defaults(run=_run_add_device)

    service = sub.add_parser("add-service", help="create a service account <role>.<name>")
    service.add_argument("role", choices=ROLES, help="what the service may do (see docs/security.md)")
    service.add_argument("name", help="node id, [a-z0-9-]{1,32}: topics thermo/v1/nodes/<name>/...")
    _add_dir(service)
    _add_account_flags(service)
    service.set_defaults(run=_run_add_service)

    remove = sub.add_parser(
        "remove",
        help="revoke an account (device id or <role>.<name>)",
        description="Revoke an account. With --reload (the broker runs from DIR on this host) the broker "
        "re-reads its files and every retained message the account could have left (e.g. its status) is "
        "cleared, by a one-shot account that may write only those topics and is removed right after.",
    )
    remove.add_argument("username", metavar="ID")
    _add_dir(remove)
    remove.add_argument(
        "--reload", action="store_true", help="send SIGHUP to the broker running from DIR and clear retained messages"
    )
    remove.add_argument(
        "--keep-retained", action="store_true", help="with --reload: leave the account's retained messages"
    )
    remove.set_defaults(run=_run_remove)

    listing = sub.add_parser("list", help="list accounts and their roles")
    _add_dir(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(run=_run_list)

    renew = sub.add_parser(
        "renew-cert", help="issue a new server certificate from the CA (expiry, new hostnames); restart after"
    )
    _add_dir(renew)
    renew.add_argument("--hostname", action="append", default=[], metavar="NAME", help="add a name (repeatable)")
    renew.set_defaults(run=_run_renew)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, metavar="DIR", help="the broker directory")


def _add_account_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rotate", action="store_true", help="the account exists: issue a new password")
    parser.add_argument("--reload", action="store_true", help="send SIGHUP to the broker running from DIR")


def _hint(text: str) -> None:
    print(text, file=sys.stderr)


def _reload_or_hint(args: argparse.Namespace) -> None:
    from broker.provisioning import reload_broker

    if args.reload:
        pid = reload_broker(args.dir)
        _hint(f"sent SIGHUP to mosquitto (pid {pid}): it re-read passwords and ACL")
    else:
        _hint(
            "reload the broker so this takes effect: `kill -HUP <mosquitto pid>` "
            "(or rerun with --reload; containers: `docker kill -s HUP <container>`)"
        )


def _run_init(args: argparse.Namespace) -> int:
    from broker.provisioning import init_broker

    files = init_broker(
        args.dir,
        port=args.port,
        tls_port=args.tls_port,
        tls_bind=args.bind,
        hostnames=args.hostname,
        broker_user=args.user,
        conf_dir=args.conf_dir_as,
        username_as_clientid=not args.free_client_ids,
        force=args.force,
        new_site_key=args.new_site_key,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(files.root),
                    "config": str(files.config),
                    "ca": str(files.ca_cert),
                    "site_key_file": str(files.site_key),
                    "port": args.port,
                    "tls_port": args.tls_port,
                }
            )
        )
    _hint(f"broker set up in {files.root}: start it with `mosquitto -c {files.config}`")
    _hint(
        f"plaintext port {args.port} listens on 127.0.0.1 only (local tools, passwords required); "
        f"devices and services use TLS on port {args.tls_port} with CA {files.ca_cert}"
    )
    _hint(f"site key (0600): {files.site_key}; ca.key signs server certificates: keep it offline if you can")
    if args.user is None and files.root.stat().st_uid == 0:
        _hint("note: mosquitto will keep running as root; pass --user mosquitto to let it drop privileges")
    return 0


def _run_add_device(args: argparse.Namespace) -> int:
    from broker.provisioning import add_device

    creds = add_device(args.dir, args.device_id, rotate=args.rotate)
    print(json.dumps(creds.to_json()))
    _hint(f"device {creds.username}: give it the password (shown once), {creds.ca} and {creds.site_key_file}")
    _reload_or_hint(args)
    return 0


def _run_add_service(args: argparse.Namespace) -> int:
    from broker.provisioning import add_service

    creds = add_service(args.dir, args.role, args.name, rotate=args.rotate)
    print(json.dumps(creds.to_json()))
    _hint(f"service {creds.username}: give it the password (shown once) and {creds.ca}")
    _reload_or_hint(args)
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    from broker.provisioning import remove_account, revoke_and_clear_retained

    if args.reload and not args.keep_retained:
        done = revoke_and_clear_retained(args.dir, args.username)
        _hint(f"removed {done.account.role.value} account {done.account.username}")
        _hint(f"sent SIGHUP to mosquitto (pid {done.broker_pid}): it re-read passwords and ACL")
        _hint(f"cleared retained messages on {', '.join(done.topics)}")
        return 0
    account = remove_account(args.dir, args.username)
    _hint(f"removed {account.role.value} account {account.username}")
    _reload_or_hint(args)
    if not args.reload:
        _hint("its retained messages (e.g. its status) stay until cleared: rerun the removal with --reload")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from broker.provisioning import list_accounts

    accounts = list_accounts(args.dir)
    if args.json:
        print(json.dumps({"accounts": [a.model_dump(mode="json") for a in accounts]}))
    else:
        for account in accounts:
            print(f"{account.username}\t{account.role.value}\t{account.created.isoformat()}")
    return 0


def _run_renew(args: argparse.Namespace) -> int:
    from broker.provisioning import renew_server_cert

    names = renew_server_cert(args.dir, extra_hostnames=args.hostname)
    _hint(f"new server certificate for localhost, 127.0.0.1, ::1{''.join(', ' + n for n in names)}")
    _hint("restart the broker to use it (clients keep trusting the same CA)")
    return 0
