"""`thermoscreen report`: write the HTML screening report of sessions from the local archive.

Import-light: matplotlib and the archive load inside `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: The bridge's default archive location (cloud_bridge.config.ArchiveSettings.path).
DEFAULT_ARCHIVE = Path("thermoscreen-data/archive.sqlite")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a self-contained HTML report of screening sessions from the bridge's local archive: "
        "patient pseudonym, mean thermal frame, probability over time, session verdict, model version. "
        "A screening aid, not a diagnosis."
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--session", action="append", metavar="ID", help="session id (32 hex); repeat for several sessions"
    )
    which.add_argument("--all", action="store_true", help="every session in the archive, newest first")
    parser.add_argument(
        "--archive", type=Path, default=DEFAULT_ARCHIVE, help=f"archive file (default {DEFAULT_ARCHIVE})"
    )
    parser.add_argument(
        "--out", type=Path, help="output HTML file (default: report-<session>.html, or report.html with --all)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    try:
        from cloud_bridge.report import write_report
    except ImportError as exc:
        raise RuntimeError(f"the report needs matplotlib ({exc}); install thermoscreen[dashboards]") from None

    from contract.ids import validate_session_id

    sessions: list[str] | None = None if args.all else [validate_session_id(s.strip().lower()) for s in args.session]
    out: Path = args.out or Path("report.html" if sessions is None else f"report-{sessions[0][:8]}.html")
    if out.suffix.lower() not in {".html", ".htm"}:
        raise ValueError(f"--out must be an .html file, got {out}")
    ids = write_report(args.archive, sessions, out, now_ns=time.time_ns())
    if args.json:
        print(json.dumps({"report": str(out), "sessions": ids}))
    print(f"wrote {out} ({len(ids)} session(s)); a screening aid, not a diagnosis", file=sys.stderr)
    return 0
