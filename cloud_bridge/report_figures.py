"""The report's pictures: matplotlib, rendered to bytes or inline SVG, never fetched at run time.

PNG for the thermal images (data: URIs) and inline SVG for the history chart, so each of its
points is an element the browser (and the report's Chromium test) can find: one `<g
id="point-SESSION">` per session.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from cloud_bridge.archive import SessionRecord, VerdictRecord
from contract.messages import ScreeningResult

#: Columns of the side-by-side heatmaps before they wrap onto another row.
STRIP_COLUMNS = 4
FLAGGED_COLOUR = "#c0392b"
CLEAR_COLOUR = "#1e8449"
#: Amber: neither a referral (red) nor a no finding (green); the capture is to be repeated.
INCONCLUSIVE_COLOUR = "#d68910"
#: The history chart's marker of each result: colour and matplotlib marker (inconclusive: a diamond,
#: so it reads apart from red and green also in grey print or to a colour-blind reader).
RESULT_MARKER = {
    ScreeningResult.REFER: (FLAGGED_COLOUR, "o"),
    ScreeningResult.NO_FINDING: (CLEAR_COLOUR, "o"),
    ScreeningResult.INCONCLUSIVE: (INCONCLUSIVE_COLOUR, "D"),
}
LINE_COLOUR = "#1f5fa8"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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
    ax.plot(t, p, marker="o", markersize=3, linewidth=1, color=LINE_COLOUR, label="frame probability")
    ax.axhline(threshold, color=FLAGGED_COLOUR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.2f}")
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


@dataclass(frozen=True)
class HistoryPoint:
    """One session on the patient's history chart."""

    session_id: str
    time_ns: int
    probability: float
    threshold: float
    result: ScreeningResult


def history_svg(points: Sequence[HistoryPoint]) -> str:
    """Session probability over time as an inline <svg>: one marker per session (red: refer for
    follow-up, green: no finding, amber diamond: inconclusive, repeat the capture) on a line, with
    each session's threshold dashed."""
    ordered = sorted(points, key=lambda p: (p.time_ns, p.session_id))
    times = np.array([p.time_ns for p in ordered], dtype="datetime64[ns]")
    # SVG text as <text> (small, selectable), ids stable between runs, concise date ticks.
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "thermoscreen-report", "date.converter": "concise"}
    ):
        fig = Figure(figsize=(7.5, 3.4), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        ax.plot(times, [p.probability for p in ordered], color=LINE_COLOUR, linewidth=1.2, label="session probability")
        ax.plot(
            times,
            [p.threshold for p in ordered],
            color=FLAGGED_COLOUR,
            linestyle="--",
            linewidth=1.2,
            drawstyle="steps-post",
            label="threshold",
        )
        for i, point in enumerate(ordered):
            colour, marker = RESULT_MARKER[point.result]
            ax.plot(times[i : i + 1], [point.probability], marker=marker, markersize=7, linestyle="none",
                    color=colour, gid=f"point-{point.session_id}")  # fmt: skip
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("session probability")
        if len(ordered) == 1:
            day = np.timedelta64(1, "D")
            ax.set_xlim(times[0] - day, times[0] + day)
        ax.grid(True, alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


@dataclass(frozen=True)
class StripFrame:
    """One mean frame of the side-by-side heatmaps, with its caption."""

    frame_c: npt.NDArray[np.float32]
    caption: str


def heatmap_strip_png(frames: Sequence[StripFrame]) -> bytes:
    """The mean frames side by side on ONE colour scale, so a warming over time shows as a colour
    change (separate scales would make every image look alike)."""
    stack = np.stack([f.frame_c for f in frames])
    vmin, vmax = (float(v) for v in np.percentile(stack, [1, 99]))
    cols = min(len(frames), STRIP_COLUMNS)
    rows = math.ceil(len(frames) / cols)
    fig = Figure(figsize=(2.9 * cols + 1.0, 2.5 * rows + 0.3), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(frames):
            image = ax.imshow(frames[i].frame_c, cmap="inferno", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(frames[i].caption, fontsize=8)
    assert image is not None
    bar = fig.colorbar(image, ax=axes, shrink=0.8)
    bar.set_label("temperature (\u00b0C)")
    return _png(fig)
