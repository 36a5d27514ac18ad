"""`thermoscreen report` (pseudonyms only): the HTML screening report from the local archive.

The `thermoscreen` command wires `thermoscreen.report_cli`, which adds `--registry` on top of
this parser and passes a `NameSource` into `run`; the bridge itself never sees the registry.
Import-light: matplotlib and the archive load inside `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloud_bridge.report import Report

#: The bridge's default archive location (cloud_bridge.config.ArchiveSettings.path).
DEFAULT_ARCHIVE = Path("thermoscreen-data/archive.sqlite")


class NameSource(Protocol):
    """Who the pseudonyms are, for a report made at the site (see thermoscreen.report_cli)."""

    def names(self, refs: Sequence[str]) -> Mapping[str, str]:
        """Pseudonym -> display name for those of `refs` it knows."""

    def record(self, report: Report, out: Path) -> None:
        """Called before a report with names is written: log it (raise to refuse)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a self-contained HTML report of screening sessions from the bridge's local archive: "
        "an index (sessions to refer for follow-up first, then inconclusive: repeat the capture), a patient's "
        "history over time (--patient), "
        "and per session the mean thermal frame, probability over time, session verdict and model version. "
        "A screening aid, not a diagnosis."
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--session", action="append", metavar="ID", help="session id (32 hex); repeat for several sessions"
    )
    which.add_argument(
        "--patient", metavar="REF", help="every session of one patient (pseudonym, 16 hex), with her history"
    )
    which.add_argument("--all", action="store_true", help="every session in the archive, newest first")
    parser.add_argument(
        "--archive", type=Path, default=DEFAULT_ARCHIVE, help=f"archive file (default {DEFAULT_ARCHIVE})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output HTML file (default: report-<session>.html, report-patient-<ref>.html, or report.html with --all)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    parser.set_defaults(run=run)


def _selection(args: argparse.Namespace) -> tuple[list[str] | None, str | None, Path]:
    """(session ids or None, patient_ref or None, output file) from the arguments."""
    from contract.ids import validate_patient_ref, validate_session_id

    sessions: list[str] | None = None
    patient: str | None = None
    if args.session:
        sessions = [validate_session_id(s.strip().lower()) for s in args.session]
        default = f"report-{sessions[0][:8]}.html"
    elif args.patient is not None:
        try:
            patient = validate_patient_ref(args.patient.strip().lower())
        except ValueError:
            raise ValueError(f"--patient {args.patient!r}: expected a pseudonym, 16 hex digits") from None
        default = f"report-patient-{patient}.html"
    else:
        default = "report.html"
    out: Path = args.out or Path(default)
    if out.suffix.lower() not in {".html", ".htm"}:
        raise ValueError(f"--out must be an .html file, got {out}")
    return sessions, patient, out


def run(args: argparse.Namespace, names: NameSource | None = None) -> int:
    import time

    from cloud_bridge.report_data import load_report

    sessions, patient, out = _selection(args)
    data = load_report(args.archive, session_ids=sessions, patient_ref=patient)
    try:
        from cloud_bridge.report import build_report, save_report
    except ImportError as exc:
        raise RuntimeError(f"the report needs matplotlib ({exc}); install thermoscreen[dashboards]") from None
    shown = dict(names.names(data.patient_refs)) if names is not None else {}
    report = build_report(data, archive_name=args.archive.name, now_ns=time.time_ns(), names=shown)
    if names is not None:
        names.record(report, out)
    save_report(report, out)
    if args.json:
        print(
            json.dumps(
                {
                    "report": str(out),
                    "sessions": report.session_ids,
                    "patients": report.patient_refs,
                    "names": sorted(shown),
                }
            )
        )
    who = f"names of {len(shown)} patient(s)" if shown else "pseudonyms only"
    print(
        f"wrote {out} ({len(report.session_ids)} session(s), {who}); a screening aid, not a diagnosis", file=sys.stderr
    )
    return 0
