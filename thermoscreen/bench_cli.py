"""`thermoscreen bench <what>`: each benchmark lives with the component it measures."""

from __future__ import annotations

import argparse

from thermoscreen.cli import load_configure

BENCHES: tuple[tuple[str, str, str], ...] = (
    ("sensor", "sensor_node.bench", "frames/s, RSS and CPU per frame of the sensor node"),
    ("inference", "inference_node.bench", "broker relay vs one inference node vs the bare model"),
    ("bridge", "cloud_bridge.bench", "points/s into the TSDB through an outage, loss and duplicates"),
    ("e2e", "thermoscreen.bench_e2e", "capture-to-verdict latency and scale-out of the whole stack"),
    ("faults", "thermoscreen.bench_faults", "fault scenarios: offered, stored, lost, duplicated"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name, help_text in BENCHES:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        load_configure(f"bench {name}", module_name)(sp)
