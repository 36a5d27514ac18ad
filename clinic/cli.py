"""`thermoscreen patients ...`: enrol, list, show, lookup, audit (forget: thermoscreen/forget.py).

Names never leave the site.

Import-light: cryptography and SQLite load inside `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the registry's actions; returns the subparsers, where the CLI layer adds `forget`
    (it needs the bridge's stores, which this package may not import)."""
    parser.description = (
        "The clinic's patient registry: who a pseudonym (patient_ref) is, kept encrypted at the site, "
        "with a hash-chained audit log of every enrolment, lookup and report."
    )
    sub = parser.add_subparsers(dest="patients_command", metavar="ACTION", required=True)

    enrol = sub.add_parser("enrol", help="enrol a woman's RFID card", description="enrol a woman's RFID card")
    add_common(enrol, key=True)
    enrol.add_argument("--site-key-file", type=Path, help="the site key, hex (else THERMOSCREEN_SITE_KEY)")
    enrol.add_argument("--uid", required=True, help="card UID in hex, 4, 7 or 10 bytes (e.g. 04:a2:2b:19)")
    enrol.add_argument("--name", required=True)
    enrol.add_argument("--dob", required=True, metavar="YYYY-MM-DD", help="date of birth")
    enrol.add_argument("--clinic-id", required=True, help="the clinic's own record number")
    enrol.add_argument("--contact", default="", help="phone or address")
    enrol.set_defaults(run=_enrol)

    lst = sub.add_parser("list", help="enrolled pseudonyms and dates", description="enrolled pseudonyms and dates")
    add_common(lst, key=True)
    lst.add_argument("--names", action="store_true", help="also names (needs the key and --reason; audited)")
    lst.add_argument("--reason", help="why names are listed (goes in the audit log)")
    lst.set_defaults(run=_list)

    show = sub.add_parser("show", help="one pseudonym's enrolment (no names)", description="one enrolment, no names")
    add_common(show, key=False, audit=False, actor=False)
    show.add_argument("ref", metavar="REF", help="patient_ref (16 hex)")
    show.set_defaults(run=_show)

    lookup = sub.add_parser("lookup", help="who a pseudonym is (audited)", description="who a pseudonym is (audited)")
    add_common(lookup, key=True)
    lookup.add_argument("ref", metavar="REF", help="patient_ref (16 hex)")
    lookup.add_argument("--reason", required=True, help="why (goes in the audit log)")
    lookup.set_defaults(run=_lookup)

    audit = sub.add_parser("audit", help="check the audit log", description="check the audit log's hash chain")
    add_common(audit, key=False, actor=False)
    audit.add_argument("--verify", action="store_true", required=True, help="check the hash chain")
    audit.set_defaults(run=_audit)
    return sub


def add_common(parser: argparse.ArgumentParser, *, key: bool, audit: bool = True, actor: bool = True) -> None:
    parser.add_argument("--registry", type=Path, required=True, help="registry file (SQLite, in its own directory)")
    if key:
        parser.add_argument("--key-file", type=Path, help="registry key, 32 bytes hex (else THERMOSCREEN_REGISTRY_KEY)")
    if audit:
        parser.add_argument("--audit", type=Path, help="audit log (default: next to the registry, .audit.jsonl)")
    if actor:
        parser.add_argument("--actor", help="who is doing this (default: the OS user)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def audit_path(args: argparse.Namespace) -> Path:
    from clinic.audit import default_audit_path

    return args.audit if args.audit is not None else default_audit_path(args.registry)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _enrol(args: argparse.Namespace) -> int:
    from clinic import audit
    from clinic.keys import load_registry_key, load_site_key
    from clinic.registry import Registry, parse_card_uid, parse_patient_fields

    uid = parse_card_uid(args.uid)
    fields = parse_patient_fields(args.name, args.dob, args.clinic_id, args.contact)
    key = load_registry_key(args.key_file)
    site_key = load_site_key(args.site_key_file)
    audit.current_actor(args.actor)
    with Registry(args.registry, key, create=True) as registry, registry.enrol(uid, fields, site_key) as ref:
        audit.append(audit_path(args), "enrol", actor=args.actor, patient_ref=ref, reason=None)
    _emit(args, {"patient_ref": ref, "registry": str(args.registry)}, f"enrolled as {ref}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from clinic import audit
    from clinic.keys import load_registry_key
    from clinic.registry import Registry

    if args.names and not args.reason:
        raise ValueError("--names needs --reason (names listed are audited)")
    key = load_registry_key(args.key_file) if args.names else None
    with Registry(args.registry, key) as registry:
        rows: list[dict[str, Any]] = [e.model_dump() for e in registry.list()]
        if args.names:
            audit.append(
                audit_path(args), "list-names", actor=args.actor, patient_ref=None, reason=args.reason,
                detail={"count": len(rows)},
            )  # fmt: skip
            for row in rows:
                row["name"] = registry.fields(row["patient_ref"]).name
    lines = [" ".join(str(v) for v in row.values()) for row in rows]
    _emit(args, {"patients": rows}, "\n".join(lines) if lines else "(no patients)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from clinic.registry import Registry, parse_ref

    ref = parse_ref(args.ref)
    with Registry(args.registry, None) as registry:
        enrolment = registry.get(ref)
    _emit(args, enrolment.model_dump(), f"{enrolment.patient_ref} enrolled {enrolment.enrolled_at}")
    return 0


def _lookup(args: argparse.Namespace) -> int:
    from clinic import audit
    from clinic.keys import load_registry_key
    from clinic.registry import Registry, parse_ref

    ref = parse_ref(args.ref)
    key = load_registry_key(args.key_file)
    with Registry(args.registry, key) as registry:
        enrolment = registry.get(ref)
        audit.append(audit_path(args), "lookup", actor=args.actor, patient_ref=ref, reason=args.reason)
        fields = registry.fields(ref)
    data = {**enrolment.model_dump(), **fields.model_dump(mode="json")}
    _emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from clinic.audit import verify

    path = audit_path(args)
    count = verify(path)
    _emit(args, {"audit": str(path), "lines": count, "intact": True}, f"{path}: {count} line(s), chain intact")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: thermoscreen patients ...")
