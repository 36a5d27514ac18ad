"""`thermoscreen report`: the bridge's report, with names beside the pseudonyms at the site.

The bridge (`cloud_bridge`) and the registry (`clinic`) never import each other; this module
composes them: with `--registry` (and its key, `--key-file` or THERMOSCREEN_REGISTRY_KEY) it
decrypts the names of the patients in the report, hands the report a plain pseudonym -> name
mapping, and appends one `report` line per named patient to the registry's audit log (who,
when, which sessions, which file, why: `--reason`) before the file is written. A report the
log cannot record is not written. Without `--registry`: pseudonyms only, nothing audited.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_bridge import report_cli

if TYPE_CHECKING:
    from clinic.registry import Registry
    from cloud_bridge.report import Report


def configure(parser: argparse.ArgumentParser) -> None:
    report_cli.configure(parser)
    names = parser.add_argument_group("names (at the site only; audited)")
    names.add_argument("--registry", type=Path, help="the patient registry: show names beside the pseudonyms")
    names.add_argument("--key-file", type=Path, help="registry key, 32 bytes hex (else THERMOSCREEN_REGISTRY_KEY)")
    names.add_argument("--reason", help="why names are shown (required with --registry; goes in the audit log)")
    names.add_argument("--audit", type=Path, help="audit log (default: next to the registry, .audit.jsonl)")
    names.add_argument("--actor", help="who makes the report (default: the OS user)")
    parser.set_defaults(run=run)


def display_name(name: str, clinic_id: str) -> str:
    """What the report shows beside a pseudonym."""
    return f"{name} (clinic id {clinic_id})"


class RegistryNames:
    """The names of enrolled patients, and the audit line of every report that shows them."""

    def __init__(self, registry: Registry, audit_path: Path, *, actor: str | None, reason: str) -> None:
        self.registry = registry
        self.audit_path = audit_path
        self.actor = actor
        self.reason = reason
        self.named: dict[str, str] = {}

    def names(self, refs: Sequence[str]) -> Mapping[str, str]:
        """Names of the enrolled ones among `refs`; a pseudonym not in the registry stays a pseudonym."""
        for ref in refs:
            try:
                fields = self.registry.fields(ref)
            except LookupError:
                continue
            self.named[ref] = display_name(fields.name, fields.clinic_id)
        return dict(self.named)

    def record(self, report: Report, out: Path) -> None:
        from clinic.audit import record_report

        for ref in sorted(self.named):
            sessions = [s.session.session_id for s in report.data.sessions if s.session.patient_ref == ref]
            record_report(
                self.audit_path, ref, sessions=sessions, report=str(out.resolve()), actor=self.actor, reason=self.reason
            )


def _check_options(args: argparse.Namespace) -> None:
    if args.registry is None:
        options = {"--key-file": args.key_file, "--reason": args.reason, "--audit": args.audit, "--actor": args.actor}
        given = [flag for flag, value in options.items() if value is not None]
        if given:
            raise ValueError(f"{given[0]} goes with --registry (names are shown only from the registry)")
    elif not args.reason or not args.reason.strip():
        raise ValueError("--registry needs --reason (a report with names is written to the audit log)")


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    if args.registry is None:
        return report_cli.run(args)
    try:
        from clinic.audit import current_actor, default_audit_path
        from clinic.keys import load_registry_key
        from clinic.registry import Registry
    except ImportError as exc:
        raise RuntimeError(f"--registry needs the clinic extra ({exc}); install thermoscreen[clinic]") from None

    current_actor(args.actor)  # a bad --actor fails before anything is read
    key = load_registry_key(args.key_file)
    audit_path = args.audit if args.audit is not None else default_audit_path(args.registry)
    with contextlib.closing(Registry(args.registry, key)) as registry:
        names = RegistryNames(registry, audit_path, actor=args.actor, reason=args.reason)
        return report_cli.run(args, names)
