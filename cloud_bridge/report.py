"""The doctor's HTML report of screening sessions, read from the bridge's local archive.

One self-contained file (images embedded as data: URIs, styles inline, a Content-Security-
Policy that forbids loading anything else) so it can be mailed, archived or opened offline on
any machine. Per session: patient pseudonym, device, times, the mean thermal frame as a
heatmap with a colour bar in degrees C, the per-frame probability against the model
threshold, the session verdict and the model version, under a prominent screening-aid
disclaimer: a flagged session means "refer for clinical follow-up", nothing more.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from cloud_bridge.archive import Archive, SessionRecord, VerdictRecord
from transport.private_files import private_parent, write_atomic

DISCLAIMER = (
    "thermoscreen is a screening aid, not a diagnosis. A flagged session means refer for clinical "
    "follow-up (clinical breast examination and, where indicated, imaging); \u201cno finding at this "
    "screening\u201d does not rule anything out. Results must be read by a clinician together with the "
    "patient\u2019s history and examination."
)
VERDICT_FLAGGED = "flagged for clinical follow-up"
VERDICT_CLEAR = "no finding at this screening"
VERDICT_PENDING = "no session verdict (no frame verdicts were received for this session)"

#: Forbids every external resource: the report must render from this one file alone.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class SessionData:
    """Everything the report shows about one session."""

    session: SessionRecord
    verdicts: list[VerdictRecord]
    mean_frame: npt.NDArray[np.float32] | None
    frame_count: int


def load_sessions(archive: Archive, session_ids: Sequence[str]) -> list[SessionData]:
    """The report data of each session id, in the order given. Raises LookupError for an unknown id."""
    out = []
    for session_id in session_ids:
        session = archive.session(session_id)
        if session is None:
            raise LookupError(f"session {session_id} is not in the archive {archive.path}")
        frames = archive.frames(session_id)
        mean = frames.temperatures_c.mean(axis=0, dtype=np.float64).astype(np.float32) if len(frames) else None
        out.append(SessionData(session, archive.verdicts(session_id), mean, len(frames)))
    return out


# -- figures -------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def heatmap_png(frame_c: npt.NDArray[np.float32], *, title: str) -> bytes:
    """The thermal frame as an image with a colour bar in degrees C."""
    fig = Figure(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frame_c, cmap="inferno", interpolation="nearest", aspect="equal")
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("temperature (\u00b0C)")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("sensor column")
    ax.set_ylabel("sensor row")
    return _png(fig)


def probability_png(verdicts: Sequence[VerdictRecord], session: SessionRecord) -> bytes:
    """Per-frame probability over the session, with the model threshold as a dashed line."""
    start_ns = verdicts[0].capture_ns
    t = np.array([(v.capture_ns - start_ns) / 1e9 for v in verdicts])
    p = np.array([v.probability for v in verdicts])
    threshold = session.threshold if session.threshold is not None else verdicts[-1].threshold
    fig = Figure(figsize=(6.4, 3.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(t, p, marker="o", markersize=3, linewidth=1, color="#1f5fa8", label="frame probability")
    ax.axhline(threshold, color="#c0392b", linestyle="--", linewidth=1.5, label=f"threshold {threshold:.2f}")
    if session.probability is not None:
        ax.axhline(
            session.probability,
            color="#555555",
            linestyle=":",
            linewidth=1.2,
            label=f"session {session.probability:.2f}",
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("seconds since the first frame")
    ax.set_ylabel("probability")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _png(fig)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- HTML ----------------------------------------------------------------------------------


def _time(ns: int | None) -> str:
    if ns is None:
        return "\u2014"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(session: SessionRecord) -> str:
    if session.started_ns is None or session.ended_ns is None:
        return "\u2014"
    return f"{(session.ended_ns - session.started_ns) / 1e9:.0f} s"


def verdict_text(session: SessionRecord) -> tuple[str, str]:
    """(wording, css class) of the session verdict."""
    if not session.has_verdict:
        return VERDICT_PENDING, "pending"
    return (VERDICT_FLAGGED, "flagged") if session.flagged else (VERDICT_CLEAR, "clear")


def _model_version(data: SessionData) -> str:
    if data.session.model_version:
        return data.session.model_version
    versions = sorted({v.model_version for v in data.verdicts})
    return ", ".join(versions) if versions else "\u2014"


def _row(label: str, value: str) -> str:
    return f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"


def _session_html(data: SessionData) -> str:
    s = data.session
    wording, css = verdict_text(s)
    rows = [
        _row("Patient (pseudonym)", s.patient_ref or "\u2014"),
        _row("Device", s.device_id),
        _row("Session", s.session_id),
        _row("Started", _time(s.started_ns)),
        _row("Ended", _time(s.ended_ns)),
        _row("Duration", _duration(s)),
        _row("Frames archived / verdicted", f"{data.frame_count} / {len(data.verdicts)}"),
        _row("Model version", _model_version(data)),
    ]
    if s.has_verdict:
        rows.append(
            _row(
                "Session probability",
                f"{s.probability:.3f} (threshold {s.threshold:.3f}, rule {s.rule or '?'}, {s.frames} frames)",
            )
        )
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
  <h2>Session {html.escape(s.session_id[:8])} &middot; patient {html.escape(s.patient_ref or "unknown")}</h2>
  <p class="verdict {css}">Session verdict: <strong>{html.escape(wording)}</strong></p>
  <table class="facts">{"".join(rows)}</table>
  <div class="figures">
    <figure><figcaption>Mean thermal frame (as captured by the camera)</figcaption>{thermal}</figure>
    <figure><figcaption>Probability per frame and model threshold</figcaption>{trend}</figure>
  </div>
</section>"""


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1.5rem; color: #1d1d1d; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem 0; }
.generated { color: #555; margin: 0 0 1rem 0; }
.disclaimer { border: 3px solid #b35c00; background: #fff4e5; padding: .8rem 1rem; font-size: 1.05rem;
              border-radius: 6px; }
.session { border-top: 2px solid #ddd; margin-top: 1.5rem; padding-top: .5rem; }
.verdict { font-size: 1.2rem; padding: .5rem .8rem; border-radius: 6px; display: inline-block; }
.verdict.flagged { background: #fdecea; border: 2px solid #c0392b; color: #8e1b10; }
.verdict.clear { background: #e9f7ef; border: 2px solid #1e8449; color: #145a32; }
.verdict.pending { background: #f2f2f2; border: 2px solid #888; color: #333; }
table.facts { border-collapse: collapse; margin: .6rem 0; }
table.facts th { text-align: left; padding: .2rem 1rem .2rem 0; color: #444; font-weight: 600; }
table.facts td { padding: .2rem 0; font-family: ui-monospace, monospace; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.missing { color: #8a6d3b; font-style: italic; }
footer { margin-top: 2rem; color: #555; font-size: .9rem; }
"""


def render_html(sessions: Sequence[SessionData], *, generated_ns: int, archive_name: str) -> str:
    """The complete report page."""
    lead, rest = DISCLAIMER.split(". ", 1)
    disclaimer = f'<p class="disclaimer" role="note"><strong>{html.escape(lead)}.</strong> {html.escape(rest)}</p>'
    title = "thermoscreen screening report"
    if len(sessions) == 1:
        title += f" \u2013 session {sessions[0].session.session_id[:8]}"
    body = "".join(_session_html(s) for s in sessions)
    if not sessions:
        body = '<p class="missing">No sessions selected.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
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


def write_report(archive_path: Path, session_ids: Sequence[str] | None, out: Path, *, now_ns: int) -> list[str]:
    """Write the report of `session_ids` (None: every session, newest first); returns the ids reported."""
    with Archive(archive_path) as archive:
        ids = [s.session_id for s in archive.sessions()] if session_ids is None else list(session_ids)
        sessions = load_sessions(archive, ids)
    text = render_html(sessions, generated_ns=now_ns, archive_name=archive_path.name)
    # Patient data: the report is 0600 and a directory made for it 0700 (an existing one, the
    # cwd or a home, is the user's and kept as it is).
    private_parent(out)
    write_atomic(out, text.encode("utf-8"))
    return ids
