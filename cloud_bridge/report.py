"""The doctor's HTML report of screening sessions, read from the bridge's local archive.

One self-contained file: an index (sessions to refer for follow-up first, then those to capture
again, inconclusive, then no finding), for one patient her
history over time (`patient_ref`), then per session the pseudonym, device, times, the mean
thermal frame as a heatmap, the per-frame probability against the model threshold, the
session verdict and the model version, under a prominent screening-aid disclaimer.

Here: which sessions, and writing the file privately. What is shown: `report_data`; how:
`report_html` and `report_figures`. Names never come from here: the bridge has no registry,
so a caller at the site passes a plain pseudonym -> name mapping (`thermoscreen.report_cli`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud_bridge.report_data import (
    VERDICT_CLEAR,
    VERDICT_FLAGGED,
    VERDICT_INCONCLUSIVE,
    VERDICT_PENDING,
    ReportData,
    SessionData,
    asymmetry,
    load_report,
    load_sessions,
    outcome,
)
from cloud_bridge.report_html import DISCLAIMER, PATIENT_META, render_html
from transport.private_files import private_parent, write_atomic

__all__ = [
    "DISCLAIMER",
    "PATIENT_META",
    "VERDICT_CLEAR",
    "VERDICT_FLAGGED",
    "VERDICT_INCONCLUSIVE",
    "VERDICT_PENDING",
    "Report",
    "ReportData",
    "SessionData",
    "asymmetry",
    "build_report",
    "load_report",
    "load_sessions",
    "outcome",
    "render_html",
    "save_report",
    "write_report",
]


@dataclass(frozen=True)
class Report:
    """A rendered report, not yet written: what it covers and its HTML."""

    data: ReportData
    html: str

    @property
    def session_ids(self) -> list[str]:
        return self.data.session_ids

    @property
    def patient_refs(self) -> list[str]:
        return self.data.patient_refs


def build_report(data: ReportData, *, archive_name: str, now_ns: int, names: Mapping[str, str] | None = None) -> Report:
    text = render_html(
        data.sessions, generated_ns=now_ns, archive_name=archive_name, patient_ref=data.patient_ref, names=names
    )
    return Report(data, text)


def save_report(report: Report, out: Path) -> None:
    """Patient data: the report is 0600 and a directory made for it 0700 (an existing one, the
    cwd or a home, is the user's and kept as it is); written atomically."""
    private_parent(out)
    write_atomic(out, report.html.encode("utf-8"))


def write_report(
    archive_path: Path,
    session_ids: Sequence[str] | None,
    out: Path,
    *,
    now_ns: int,
    patient_ref: str | None = None,
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """Write the report of `session_ids` (None: every session, or every session of `patient_ref`,
    newest first); returns the ids reported."""
    data = load_report(archive_path, session_ids=session_ids, patient_ref=patient_ref)
    report = build_report(data, archive_name=archive_path.name, now_ns=now_ns, names=names)
    save_report(report, out)
    return report.session_ids
