"""The report page: index, patient history and one section per session, as one HTML file.

Self-contained (images as data: URIs, the history chart as inline SVG, styles inline, a
Content-Security-Policy that forbids loading anything else) so it can be mailed, archived or
opened offline. Names appear only when the caller passes them (the `thermoscreen report
--registry` composition at the site); otherwise pseudonyms only. Every patient whose data it
shows is named in a `<meta name="thermoscreen-patient">` so erasure can find the file.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from cloud_bridge.report_data import SessionData, chronological, index_order
from cloud_bridge.report_figures import (
    HistoryPoint,
    StripFrame,
    data_uri,
    heatmap_png,
    heatmap_strip_png,
    history_svg,
    probability_png,
)
from contract.wording import DISCLAIMER as WORDING_DISCLAIMER

DISCLAIMER = (
    f"{WORDING_DISCLAIMER} Results must be read by a clinician together with the patient\u2019s history "
    "and examination."
)
#: Forbids every external resource: the report must render from this one file alone.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The <meta> name erasure (`thermoscreen patients forget`) looks for.
PATIENT_META = "thermoscreen-patient"
DASH = "\u2014"
PSEUDONYMS_ONLY = (
    "Pseudonyms only: names appear only in a report made at the site with the patient registry "
    "(thermoscreen report --registry)."
)


def _time(ns: int | None) -> str:
    if ns is None:
        return DASH
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _date(ns: int | None) -> str:
    return DASH if ns is None else datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _duration(data: SessionData) -> str:
    s = data.session
    if s.started_ns is None or s.ended_ns is None:
        return DASH
    return f"{(s.ended_ns - s.started_ns) / 1e9:.0f} s"


def _model_version(data: SessionData) -> str:
    if data.session.model_version:
        return data.session.model_version
    versions = sorted({v.model_version for v in data.verdicts})
    return ", ".join(versions) if versions else DASH


def _row(label: str, value: str) -> str:
    return f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"


def _who(ref: str | None, names: Mapping[str, str]) -> str:
    """Pseudonym, and the name beside it only when the caller had the registry."""
    if not ref:
        return "unknown"
    name = names.get(ref)
    return f"{ref} \u00b7 {name}" if name else ref


def _probability(data: SessionData) -> str:
    s = data.session
    return DASH if s.probability is None else f"{s.probability:.3f}"


def _spread(data: SessionData) -> str:
    """The ensemble's member spread of a session ('' for a single model or an old row)."""
    spread = data.session.member_spread
    return "" if spread is None else f"{spread:.3f}"


def _asymmetry_text(data: SessionData) -> str:
    a = data.asymmetry
    if a is None:
        return DASH
    return f"{a.mean_abs_k:.2f} K (left \u2212 right {a.left_minus_right_k:+.2f} K)"


def _outcome_html(data: SessionData) -> str:
    o = data.outcome
    return f'<span class="outcome {o.css}">{html.escape(o.wording)}</span>'


def _session_html(data: SessionData, names: Mapping[str, str]) -> str:
    s = data.session
    o = data.outcome
    rows = [_row("Patient (pseudonym)", s.patient_ref or DASH)]
    if s.patient_ref and s.patient_ref in names:
        rows.append(_row("Patient (from the registry)", names[s.patient_ref]))
    rows += [
        _row("Device", s.device_id),
        _row("Session", s.session_id),
        _row("Started", _time(s.started_ns)),
        _row("Ended", _time(s.ended_ns)),
        _row("Duration", _duration(data)),
        _row("Frames archived / verdicted", f"{data.frame_count} / {len(data.verdicts)}"),
        _row("Model version", _model_version(data)),
        _row("Left-right asymmetry (mean frame)", _asymmetry_text(data)),
    ]
    if s.has_verdict:
        rows.append(
            _row(
                "Session probability",
                f"{s.probability:.3f} (threshold {s.threshold:.3f}, rule {s.rule or '?'}, {s.frames} frames)",
            )
        )
    if s.member_spread is not None:
        rows.append(_row("Ensemble member spread (mean over frames)", f"{s.member_spread:.3f}"))
    if data.mean_frame is not None:
        heat = data_uri(heatmap_png(data.mean_frame, title=f"Mean of {data.frame_count} frames"))
        thermal = f'<img class="heatmap" src="{heat}" alt="Mean thermal frame of the session, degrees C">'
    else:
        thermal = '<p class="missing">No frames of this session are in the archive.</p>'
    if data.verdicts:
        prob = data_uri(probability_png(data.verdicts, s))
        trend = f'<img class="trend" src="{prob}" alt="Probability per frame with the model threshold">'
    else:
        trend = '<p class="missing">No frame verdicts were received for this session.</p>'
    return f"""
<section class="session" id="session-{html.escape(s.session_id)}">
  <h2>Session {html.escape(s.session_id[:8])} &middot; patient {html.escape(_who(s.patient_ref, names))}</h2>
  <p class="verdict {o.css}">Session verdict: <strong>{html.escape(o.wording)}</strong></p>
  <table class="facts">{"".join(rows)}</table>
  <div class="figures">
    <figure><figcaption>Mean thermal frame (as captured by the camera)</figcaption>{thermal}</figure>
    <figure><figcaption>Probability per frame and model threshold</figcaption>{trend}</figure>
  </div>
</section>"""


def _index_html(sessions: Sequence[SessionData], names: Mapping[str, str]) -> str:
    """The report's first table: every session, those to refer for follow-up first, then the
    inconclusive ones (repeat the capture), then the rest; newest first in each group."""
    rows = []
    for data in index_order(sessions):
        s = data.session
        rows.append(
            f'<tr class="{data.outcome.css}"><td>{_outcome_html(data)}</td>'
            f"<td>{html.escape(_date(data.time_ns))}</td>"
            f"<td>{html.escape(_who(s.patient_ref, names))}</td><td>{html.escape(s.device_id)}</td>"
            f"<td>{_probability(data)}</td>"
            f'<td><a href="#session-{html.escape(s.session_id)}">{html.escape(s.session_id[:8])}</a></td></tr>'
        )
    return f"""
<nav class="index" aria-label="Sessions">
  <h2>Index: sessions to refer for follow-up first, then inconclusive (repeat the capture), then the rest</h2>
  <table class="index">
    <thead><tr><th>Outcome</th><th>Time (UTC)</th><th>Patient</th><th>Device</th><th>Session probability</th>
    <th>Session</th></tr></thead>
    <tbody>{"".join(rows)}</tbody>
  </table>
</nav>"""


def _history_chart(sessions: Sequence[SessionData]) -> str:
    points = [
        HistoryPoint(d.session.session_id, d.time_ns, d.session.probability, d.session.threshold, d.outcome.result)
        for d in sessions
        if d.time_ns is not None
        and d.session.probability is not None
        and d.session.threshold is not None
        and d.outcome.result is not None
    ]
    if not points:
        return '<p class="missing">No session of this patient has a session verdict yet.</p>'
    missing = len(sessions) - len(points)
    note = f'<p class="missing">{missing} session(s) without a session verdict are not plotted.</p>' if missing else ""
    return (
        '<figure class="history"><figcaption>Session probability over time (red: refer for follow-up, '
        "green: no finding, amber diamond: inconclusive, repeat the capture; dashed: the model threshold)"
        f"</figcaption>{history_svg(points)}</figure>{note}"
    )


def _heatmap_strip(sessions: Sequence[SessionData]) -> str:
    frames = [
        StripFrame(d.mean_frame, f"{_date(d.time_ns)}\n{d.outcome.wording}")
        for d in sessions
        if d.mean_frame is not None
    ]
    if not frames:
        return '<p class="missing">No frames of this patient are in the archive.</p>'
    uri = data_uri(heatmap_strip_png(frames))
    return (
        '<figure class="strip"><figcaption>Mean thermal frame of each session, oldest first, on one '
        "colour scale (as captured: her left is on the image's right)</figcaption>"
        f'<img class="strip" src="{uri}" alt="Mean thermal frames of the sessions side by side"></figure>'
    )


def _history_table(sessions: Sequence[SessionData]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(_date(d.time_ns))}</td>"
        f'<td><a href="#session-{html.escape(d.session.session_id)}">{html.escape(d.session.session_id[:8])}</a></td>'
        f"<td>{_outcome_html(d)}</td><td>{_probability(d)}</td>"
        f"<td>{'' if d.asymmetry is None else f'{d.asymmetry.mean_abs_k:.2f}'}</td>"
        f"<td>{'' if d.asymmetry is None else f'{d.asymmetry.left_minus_right_k:+.2f}'}</td>"
        f"<td>{_spread(d)}</td></tr>"
        for d in sessions
    )
    return f"""<table class="history">
    <thead><tr><th>Time (UTC)</th><th>Session</th><th>Outcome</th><th>Session probability</th>
    <th>Asymmetry |L &minus; mirrored R| (K)</th><th>Left &minus; right (K)</th><th>Member spread</th></tr></thead>
    <tbody>{rows}</tbody></table>
  <p class="note">Asymmetry, of each session's mean frame: the mean of |T &minus; T mirrored about the
  vertical midline| over the body (pixels that, with their mirror image, are warmer than the frame's mean),
  and the patient's left half minus her right half over the same pixels (&gt; 0: her left is warmer).</p>"""


def _patient_html(ref: str, sessions: Sequence[SessionData], names: Mapping[str, str]) -> str:
    """Every session of one patient over time: the probability trend, the mean frames side by side,
    and the asymmetry of each."""
    ordered = chronological(sessions)
    note = "" if ref in names else f'<p class="note">{html.escape(PSEUDONYMS_ONLY)}</p>'
    return f"""
<section class="patient" id="patient-{html.escape(ref)}">
  <h2>Patient {html.escape(_who(ref, names))}: {len(ordered)} session(s) over time</h2>
  {note}
  {_history_chart(ordered)}
  {_heatmap_strip(ordered)}
  {_history_table(ordered)}
</section>"""


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1.5rem; color: #1d1d1d; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem 0; }
.generated { color: #555; margin: 0 0 1rem 0; }
.disclaimer { border: 3px solid #b35c00; background: #fff4e5; padding: .8rem 1rem; font-size: 1.05rem;
              border-radius: 6px; }
.session, .patient, nav.index { border-top: 2px solid #ddd; margin-top: 1.5rem; padding-top: .5rem; }
.verdict { font-size: 1.2rem; padding: .5rem .8rem; border-radius: 6px; display: inline-block; }
.flagged.verdict, .outcome.flagged { background: #fdecea; border: 2px solid #c0392b; color: #8e1b10; }
.clear.verdict, .outcome.clear { background: #e9f7ef; border: 2px solid #1e8449; color: #145a32; }
.inconclusive.verdict, .outcome.inconclusive { background: #fef5e7; border: 2px solid #d68910; color: #7e5109; }
.pending.verdict, .outcome.pending { background: #f2f2f2; border: 2px solid #888; color: #333; }
.outcome { padding: .1rem .4rem; border-radius: 4px; display: inline-block; }
table.facts, table.index, table.history { border-collapse: collapse; margin: .6rem 0; }
table.facts th { text-align: left; padding: .2rem 1rem .2rem 0; color: #444; font-weight: 600; }
table.facts td { padding: .2rem 0; font-family: ui-monospace, monospace; }
table.index th, table.index td, table.history th, table.history td { text-align: left; padding: .25rem .8rem;
  border-bottom: 1px solid #eee; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0 0 1rem 0; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
img, figure.history svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
.missing { color: #8a6d3b; font-style: italic; }
.note { color: #444; max-width: 60rem; }
footer { margin-top: 2rem; color: #555; font-size: .9rem; }
"""


def _title(sessions: Sequence[SessionData], patient_ref: str | None) -> str:
    title = "thermoscreen screening report"
    if patient_ref is not None:
        return f"{title} \u2013 patient {patient_ref}"
    if len(sessions) == 1:
        return f"{title} \u2013 session {sessions[0].session.session_id[:8]}"
    return title


def render_html(
    sessions: Sequence[SessionData],
    *,
    generated_ns: int,
    archive_name: str,
    patient_ref: str | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """The complete report page; `patient_ref` adds her history, `names` (pseudonym -> display
    name, from the registry at the site) shows names beside the pseudonyms."""
    shown = dict(names or {})
    lead, rest = DISCLAIMER.split(". ", 1)
    disclaimer = f'<p class="disclaimer" role="note"><strong>{html.escape(lead)}.</strong> {html.escape(rest)}</p>'
    title = _title(sessions, patient_ref)
    refs = sorted({s.session.patient_ref for s in sessions if s.session.patient_ref})
    metas = "".join(f'<meta name="{PATIENT_META}" content="{html.escape(r)}">\n' for r in refs)
    if sessions:
        body = _index_html(sessions, shown)
        if patient_ref is not None:
            body += _patient_html(patient_ref, sessions, shown)
        body += "".join(_session_html(s, shown) for s in sessions)
    else:
        body = '<p class="missing">No sessions selected.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
{metas}<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p class="generated">Generated {_time(generated_ns)} from archive {html.escape(archive_name)};
{len(sessions)} session(s).</p>
{disclaimer}
</header>
<main>{body}
</main>
<footer>{disclaimer}</footer>
</body>
</html>
"""
