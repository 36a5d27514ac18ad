"""`thermoscreen bench <what>`: each benchmark lives with the component it measures."""

from __future__ import annotations

import argparse

from thermoscreen.cli import load_configure

BENCHES: tuple[tuple[str, str, str], ...] = (
    ("sensor", "devtools.bench.sensor", "frames/s, RSS and CPU per frame of the sensor node"),
    ("inference", "devtools.bench.inference_cli", "broker relay vs one inference node vs the bare model"),
    ("bridge", "devtools.bench.bridge_cli", "points/s into the TSDB through an outage, loss and duplicates"),
    ("e2e", "devtools.bench.e2e_cli", "capture-to-verdict latency and scale-out of the whole stack"),
    ("faults", "devtools.bench.faults_cli", "fault scenarios: offered, stored, lost, duplicated"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name, help_text in BENCHES:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        load_configure(f"bench {name}", module_name)(sp)
