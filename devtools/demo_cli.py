"""`thermoscreen demo`: the whole system on this machine, no hardware and no cloud needed.

Import-light on purpose: argparse only; the stack, the view and the report load in `run`.
Numbers are parsed in `run` (not by argparse) so every bad value gets one line naming it.
"""

from __future__ import annotations

import argparse

DEFAULT_DURATION_S = "30"
DEFAULT_DEVICES = "3"
DEFAULT_NODES = "2"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the whole system locally: Mosquitto secured as in production (TLS, one account per "
        "process, created on the fly), simulated devices with scripted card scans, inference nodes "
        "with the shipped model and the bridge with its local archive; show a live view, stop "
        "cleanly, write the HTML report and print a summary. A screening aid, not a diagnosis."
    )
    parser.add_argument("--duration", default=DEFAULT_DURATION_S, metavar="S", help="seconds of live view (default 30)")
    parser.add_argument("--devices", default=DEFAULT_DEVICES, metavar="N", help="simulated devices (default 3)")
    parser.add_argument("--nodes", default=DEFAULT_NODES, metavar="N", help="inference nodes (default 2)")
    parser.add_argument("--rate", default="4", metavar="HZ", help="frames per second per device (default 4)")
    parser.add_argument(
        "--data", metavar="FILE.npz", help="replay real thermograms (DMR-IR .npz layout) instead of synthetic frames"
    )
    parser.add_argument(
        "--workdir", metavar="DIR", help="new or empty directory for broker, logs, data (default: a fresh temp dir)"
    )
    parser.add_argument("--report", metavar="FILE.html", help="HTML report path (default: WORKDIR/report.html)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout: devices, frames_published, verdicts, sessions, stored, lost, report",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(args)
