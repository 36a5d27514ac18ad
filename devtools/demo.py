"""The demo run: start the local stack, show the live view, shut down cleanly, report, summarise.

Order of the shutdown and why: devices first (SIGTERM ends their open session and flushes
their spool), then a bounded wait until every published frame has its verdict, every ended
session its session verdict, and the bridge archived every frame; only then the inference
nodes, the bridge and the broker. `lost` = frames published - frames stored must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from numpy.lib import format as npy_format

from contract.sensor import MLX_COLS, MLX_ROWS
from devtools.live_view import SCREENING_AID, LiveView, ViewContext
from devtools.stack import LocalStack, SessionPlan, ShutdownReport, StackOptions, shipped_model_dir

DISCLAIMER = (
    "thermoscreen is a screening aid, not a diagnosis: a flagged session means refer for clinical "
    "follow-up, and no finding does not rule anything out."
)
DRAIN_TIMEOUT_S = 45.0
#: Sessions of a few seconds each, so every device runs several within the default 30 s.
DEMO_SESSIONS = SessionPlan(start_after_s=0.5, length_s=4.0, gap_s=1.5, count=500, stagger_s=0.7)


@dataclass(frozen=True)
class DemoSettings:
    duration_s: float
    devices: int
    nodes: int
    rate_hz: float
    data: Path | None
    workdir: Path
    report: Path
    json: bool


def _number(text: str, flag: str, kind: type[int] | type[float], low: float, high: float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected {'a whole number' if kind is int else 'a number'}") from None
    if not low <= value <= high:
        raise ValueError(f"{flag} {text}: must be between {low:g} and {high:g}")
    return value


def check_thermogram_file(path: Path) -> None:
    """A one-line error now rather than a replaying device failing later: the file must be a
    DMR-IR style .npz with `temperature_centi_c` of shape N x H x W (H >= 24, W >= 32)."""
    if not path.is_file():
        raise ValueError(f"--data {path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "temperature_centi_c.npy" not in names:
                found = ", ".join(n.removesuffix(".npy") for n in names) or "nothing"
                raise ValueError(f"--data {path}: no 'temperature_centi_c' array (found {found})")
            with archive.open("temperature_centi_c.npy") as member:
                version = npy_format.read_magic(member)
                if version == (1, 0):
                    shape, _, _ = npy_format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, _ = npy_format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"--data {path}: unsupported .npy version {version}")
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("--data"):
            raise
        raise ValueError(f"--data {path}: not a readable .npz thermogram file ({exc})") from None
    if len(shape) != 3 or shape[0] < 1 or shape[1] < MLX_ROWS or shape[2] < MLX_COLS:
        raise ValueError(
            f"--data {path}: temperature_centi_c must be N x H x W with H >= {MLX_ROWS}, W >= {MLX_COLS}, got {shape}"
        )


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    duration = _number(args.duration, "--duration", float, 1, 24 * 3600)
    devices = int(_number(args.devices, "--devices", int, 1, 50))
    nodes = int(_number(args.nodes, "--nodes", int, 1, 16))
    rate = _number(args.rate, "--rate", float, 0.1, 32)
    data = None
    if args.data is not None:
        data = Path(args.data).resolve()
        check_thermogram_file(data)
    if args.workdir is not None:
        workdir = Path(args.workdir).resolve()
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise ValueError(f"--workdir {args.workdir}: not an empty directory (the demo needs a fresh one)")
    report = Path(args.report).resolve() if args.report else None
    if report is not None and report.is_dir():
        raise ValueError(f"--report {args.report}: is a directory; give a file name like report.html")
    model = shipped_model_dir()
    if not (model / "manifest.json").is_file():
        raise FileNotFoundError(f"no shipped model at {model} (manifest.json missing): run `thermoscreen train`")
    if args.workdir is None:  # only once everything else is known to be fine
        workdir = Path(tempfile.mkdtemp(prefix="thermoscreen-demo-"))
    report = report or workdir / "report.html"
    return DemoSettings(duration, devices, nodes, rate, data, workdir, report, bool(args.json))


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    from devtools.local_mosquitto import find_mosquitto

    settings = settings_from_args(args)
    find_mosquitto()  # a one-line error now if it is missing
    options = StackOptions(
        devices=settings.devices,
        nodes=settings.nodes,
        rate_hz=settings.rate_hz,
        replay=settings.data,
        sessions=DEMO_SESSIONS,
    )
    source = f"replaying {settings.data.name}" if settings.data else "synthetic frames"
    _say(
        f"starting Mosquitto (TLS, accounts created now), the bridge, {settings.nodes} inference nodes and "
        f"{settings.devices} devices ({source}, {settings.rate_hz:g} frames/s each) in {settings.workdir}"
    )
    stack = LocalStack(settings.workdir, options)
    started = time.monotonic()
    started_wall = time.time()
    try:
        stack.start()
        _say(f"all online after {time.monotonic() - started:.1f} s; {stack.describe()}")
        ctx = ViewContext(
            title="thermoscreen demo",
            broker=f"broker {stack.tls_url} (TLS, {len(stack.accounts)} accounts)",
            expected_devices=settings.devices,
        )
        view = LiveView(stack.monitor.snapshot, ctx, sys.stderr, check=stack.check_alive)
        shown = time.monotonic()
        try:
            view.run(settings.duration_s)
        except KeyboardInterrupt:
            _say("interrupted: shutting down cleanly (Ctrl-C again to stop at once)")
        shown_s = time.monotonic() - shown
        _say("stopping the devices (open sessions end, spools flush), then waiting for the last verdicts")
        result = stack.shutdown(drain_timeout_s=DRAIN_TIMEOUT_S)
    finally:
        stack.close()
    from cloud_bridge.report import write_report

    reported = write_report(stack.archive_path, None, settings.report, now_ns=time.time_ns())
    first = _first_verdict_s(stack.monitor.first_verdict_at, started_wall)
    return _summarise(settings, stack, result, len(reported), shown_s, first_verdict=first)


#: Set by `make demo` to the time it started (seconds since the epoch), so the time to the first
#: verdict includes building the environment on a fresh clone.
MAKE_START_ENV = "THERMOSCREEN_DEMO_T0"


def _first_verdict_s(first_at: float | None, demo_started: float) -> dict[str, float | None]:
    """Seconds from `make demo` (where it says when it started) and from the demo's own start."""
    t0_text = os.environ.get(MAKE_START_ENV)
    try:
        t0 = float(t0_text) if t0_text else None
    except ValueError:
        t0 = None
    if first_at is None:
        return {"since_make": None, "since_demo": None}
    return {
        "since_make": round(first_at - t0, 1) if t0 is not None else None,
        "since_demo": round(first_at - demo_started, 1),
    }


def _summarise(
    settings: DemoSettings,
    stack: LocalStack,
    result: ShutdownReport,
    reported: int,
    shown_s: float,
    *,
    first_verdict: dict[str, float | None],
) -> int:
    traffic = result.traffic
    stored = result.archive.get("frames", 0)
    lost = traffic.frames_published - stored
    summary = {
        "devices": settings.devices,
        "frames_published": traffic.frames_published,
        "verdicts": traffic.verdicts,
        "sessions": traffic.session_verdicts,
        "stored": stored,
        "lost": lost,
        "report": str(settings.report),
        "first_verdict_s": first_verdict["since_demo"],
        "first_verdict_since_make_s": first_verdict["since_make"],
    }
    since_make = first_verdict["since_make"]
    first_line = f"  first verdict      {first_verdict['since_demo']} s after the demo started" + (
        f", {since_make} s after `make demo` started" if since_make is not None else ""
    )
    lines = [
        f"thermoscreen demo: {settings.devices} devices, {settings.nodes} inference nodes, {settings.duration_s:g} s",
        f"  frames published   {traffic.frames_published:>6}   (distinct frames, counted at the broker)",
        f"  frame verdicts     {traffic.verdicts:>6}   ({traffic.flagged_verdicts} above the model threshold)",
        f"  session results    {traffic.session_verdicts:>6}   ({traffic.sessions_flagged} flagged for clinical "
        f"follow-up, {traffic.sessions_inconclusive} inconclusive: repeat the capture)",
        f"  frames stored      {stored:>6}   (bridge archive {stack.archive_path})",
        first_line,
        f"  lost               {lost:>6}",
        f"  dead letters       {traffic.deadletters:>6}",
        f"  report             {settings.report} ({reported} sessions)",
        f"  logs               {stack.log_dir}",
        DISCLAIMER
        + (" The frames were replayed thermograms" if settings.data else " The frames were synthetic")
        + ", shown to simulated devices; these results are a demonstration, not screening results.",
    ]
    problems = []
    if lost != 0:
        problems.append(f"{lost} published frames are not in the archive")
    if traffic.verdicts != traffic.frames_published:
        problems.append(f"{traffic.frames_published - traffic.verdicts} frames got no verdict")
    if not result.drained:
        problems.append(f"not everything arrived within {DRAIN_TIMEOUT_S:g} s after the devices stopped")
    failed = {name: code for name, code in result.exit_codes.items() if code != 0}
    if failed:
        problems.append(f"components exited abnormally: {failed} (see {stack.log_dir})")
    out = sys.stderr if settings.json else sys.stdout
    print("\n".join(lines), file=out, flush=True)
    for problem in problems:
        print(f"thermoscreen demo: problem: {problem}", file=sys.stderr, flush=True)
    if settings.json:
        print(json.dumps(summary), flush=True)
    return 1 if problems else 0


__all__ = ["DISCLAIMER", "SCREENING_AID", "run_demo", "settings_from_args"]
