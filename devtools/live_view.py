"""A terminal view of a running stack: devices, frames/s, verdicts, sessions, nodes, bridge queue.

Why from the broker: the view shows what every consumer can see (the monitor's counts, the
retained statuses, the nodes' metrics), not what a component believes about itself.

On a terminal it redraws in place once a second (cursor moved back up, no screen clearing,
so the last picture stays in the scrollback); otherwise (a pipe, a log file, CI) it prints
one progress line every `line_interval_s` seconds. `render_view` is a pure function of a
`TrafficSnapshot`, so it is tested without a terminal.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from contract.messages import ScreeningResult
from contract.wording import RESULT_LABEL, result_of_verdict
from devtools.traffic import NodeSnapshot, SessionResult, TrafficSnapshot

SCREENING_AID = "A screening aid, not a diagnosis: a flagged session means refer for clinical follow-up."
#: Each result as the view's session line ends (contract.wording's label), the ones that ask for
#: action marked so they stand out in a scrolling terminal.
RESULT_TEXT = {
    ScreeningResult.REFER: f"FLAGGED: {RESULT_LABEL[ScreeningResult.REFER]}",
    ScreeningResult.INCONCLUSIVE: f"REPEAT: {RESULT_LABEL[ScreeningResult.INCONCLUSIVE]}",
    ScreeningResult.NO_FINDING: RESULT_LABEL[ScreeningResult.NO_FINDING],
}
RECENT_ROWS = 6


@dataclass(frozen=True)
class ViewContext:
    """What the view says about the run besides the counts."""

    title: str
    broker: str
    expected_devices: int


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _session_line(result: SessionResult) -> str:
    when = datetime.fromtimestamp(result.seen_ns / 1e9).strftime("%H:%M:%S")
    verdict = RESULT_TEXT[result_of_verdict(flagged=result.flagged, inconclusive=result.inconclusive)]
    return (
        f"  {when}  {result.device_id:<10} patient {result.patient_ref}  {result.frames:>3} frames  "
        f"p={result.probability:.2f} (threshold {result.threshold:.2f})  {verdict}"
    )


def _node_line(node: NodeSnapshot) -> str:
    m = node.metrics
    if node.role == "bridge":
        detail = (
            f"queue {int(m.get('queue_depth', 0))} (oldest {m.get('oldest_age_s', 0.0):.1f} s), "
            f"stored {int(m.get('stored', 0))} messages, {m.get('messages_per_s', 0.0):.1f} msg/s, "
            f"sink errors {int(m.get('sink_errors', 0))}"
        )
    else:
        detail = (
            f"{node.verdicts:>6} verdicts  {node.verdicts_per_s:5.1f}/s  "
            f"queue {int(m.get('queue_depth', 0))}  model {node.model_version or '-'}"
        )
    return f"  {node.node_id:<10} {node.role:<10} {node.state:<8} {detail}"


def render_view(snap: TrafficSnapshot, ctx: ViewContext, *, elapsed_s: float, duration_s: float) -> list[str]:
    """The full-screen view as lines (no colours, no control characters)."""
    open_sessions = sum(d.session_id is not None for d in snap.devices)
    lines = [
        f"{ctx.title}   {_clock(elapsed_s)} / {_clock(duration_s)}   {ctx.broker}",
        SCREENING_AID,
        "",
        f"devices online {snap.devices_online}/{ctx.expected_devices}   "
        f"frames {snap.frames_published} ({snap.frames_per_s:.1f}/s)   "
        f"verdicts {snap.verdicts} ({snap.verdicts_per_s:.1f}/s, {snap.flagged_verdicts} above threshold)   "
        f"dead letters {snap.deadletters}",
        f"sessions: {snap.session_verdicts} with a result ({snap.sessions_flagged} flagged, "
        f"{snap.sessions_inconclusive} inconclusive), "
        f"{open_sessions} in progress, {snap.sessions_awaiting_verdict} awaiting a result",
        "",
        f"  {'DEVICE':<10} {'STATE':<8} {'SESSION':<18} {'FRAMES':>7} {'VERDICTS':>9} {'LAST P':>7} {'SPOOL':>6}",
    ]
    for d in snap.devices:
        session = "idle" if d.session_id is None else f"in session {d.session_age_s or 0:.0f} s"
        spool = "-" if d.spool_depth is None else str(d.spool_depth)
        lines.append(
            f"  {d.device_id:<10} {d.state:<8} {session:<18} {d.frames:>7} {d.verdicts:>9} "
            f"{_p(d.last_probability):>7} {spool:>6}"
        )
    lines += ["", f"  {'NODE':<10} {'ROLE':<10} {'STATE':<8}"]
    lines += [_node_line(n) for n in snap.nodes] or ["  (no node has reported yet)"]
    lines += ["", "recent session results (newest first):"]
    recent = list(reversed(snap.recent_sessions))[:RECENT_ROWS]
    lines += [_session_line(r) for r in recent] or ["  (none yet: a session ends when the card is scanned again)"]
    return lines


def progress_line(snap: TrafficSnapshot, ctx: ViewContext, *, elapsed_s: float, duration_s: float) -> str:
    """One line for logs and pipes."""
    bridge = next((n for n in snap.nodes if n.role == "bridge"), None)
    queue = "-" if bridge is None else str(int(bridge.metrics.get("queue_depth", 0)))
    return (
        f"demo {elapsed_s:.0f}/{duration_s:.0f} s: devices online {snap.devices_online}/{ctx.expected_devices}, "
        f"frames {snap.frames_published} ({snap.frames_per_s:.1f}/s), verdicts {snap.verdicts}, "
        f"sessions {snap.session_verdicts} ({snap.sessions_flagged} flagged, {snap.sessions_inconclusive} "
        f"inconclusive), bridge queue {queue}, "
        f"dead letters {snap.deadletters}"
    )


class LiveView:
    """Shows `snapshot()` for `duration_s` seconds on `stream`; `check` runs every tick (may raise)."""

    def __init__(
        self,
        snapshot: Callable[[], TrafficSnapshot],
        ctx: ViewContext,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        line_interval_s: float = 5.0,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.ctx = ctx
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.line_interval_s = line_interval_s
        self.check = check
        self._drawn = 0

    def run(self, duration_s: float) -> TrafficSnapshot:
        """Block for `duration_s` seconds, drawing; returns the last snapshot."""
        started = time.monotonic()
        interval = 1.0 if self.interactive else self.line_interval_s
        next_draw = started + (0.0 if self.interactive else interval)
        snap = self.snapshot()
        while True:
            now = time.monotonic()
            elapsed = now - started
            if self.check is not None:
                self.check()
            if now >= next_draw or elapsed >= duration_s:
                snap = self.snapshot()
                self.draw(snap, min(elapsed, duration_s), duration_s)
                next_draw += interval
            if elapsed >= duration_s:
                return snap
            wake = min(next_draw, started + duration_s)
            time.sleep(min(0.25, max(0.01, wake - time.monotonic())))  # pacing a display, not synchronising

    def draw(self, snap: TrafficSnapshot, elapsed_s: float, duration_s: float) -> None:
        if not self.interactive:
            self.stream.write(progress_line(snap, self.ctx, elapsed_s=elapsed_s, duration_s=duration_s) + "\n")
            self.stream.flush()
            return
        size = shutil.get_terminal_size((100, 40))
        lines = render_view(snap, self.ctx, elapsed_s=elapsed_s, duration_s=duration_s)
        lines = [line[: size.columns - 1] for line in lines][: max(3, size.lines - 2)]
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first line of the previous picture
        out += [f"{line}\x1b[K\n" for line in lines]
        out.append("\x1b[J")  # clear anything below (the previous picture may have been longer)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)
