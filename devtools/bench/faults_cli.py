"""`thermoscreen bench faults`: does any fault lose or duplicate a stored frame, and how fast does it recover?

Each scenario runs under steady load (simulated devices, one account and connection each;
a real sensor process with its spool for the cut-off device) on one local stack (secured
Mosquitto, two inference nodes, the bridge with its archive and a local VictoriaMetrics):
broker restarted; TSDB stopped for 60 s; bridge SIGKILLed and restarted; one of two
inference nodes SIGKILLed; a device cut off from the broker for 2 minutes (a TCP relay
between it and the broker is cut); malformed and oversized payloads mixed into good traffic;
a sensor process re-imaged mid-run (stopped, its spool deleted, started again); a second
device account replaying the first device's session id with another patient_ref; one
device account flooding valid and invalid messages as fast as it can for a few seconds.

Per scenario: `offered` frames; `stored`: frames found in both the archive and the TSDB,
read back per frame identity (device, incarnation, seq), or (device, seq) where a store has
no incarnation yet; `lost` = offered - stored; `duplicates`: rows/points beyond one per
identity; `frames_without_verdict`: frames of the scenario's devices (hostile ones included)
stored in the archive with no stored verdict; `recovery_s`: from the repair until every frame offered before it is in
both stores and verdicts for newer frames reach the devices again (null: nothing to recover
from). Also `stored_archive`, `stored_tsdb`, `archive_rewrites` (frames written again over their
own archive row: redeliveries), `tsdb_rewrites` (the same point written twice;
VictoriaMetrics keeps both samples), `tsdb_collisions` (two frames folded into one point),
`verdicts_missing` (stored frames without a stored verdict), `outage_s` (fault to repaired,
restart included), `unacked`, `device_reconnects`, `unexpected_restarts` and, for the
malformed scenario, `injected`, `deadletters_expected`/`deadletters_matched`, `bad_stored`;
for the re-image `spool_deleted`; for the replay `replay_frames`, `mixed_records` (archive
frames under the victim's session id from another device or patient_ref, plus one if the
session row changed owner or woman) and `session_row_hijacked`; for the flood
`flood_messages`, `flood_frames`, `flood_bad`, `flood_unacked`. `ok`: every scenario has
lost, duplicates, frames_without_verdict and mixed_records 0.
`load_avg` is the machine's 1-minute load average at the start (other work skews timings).
`--duration-scale` scales the outages (1.0: the issue's 60 s and 2 min) and the steady phases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devtools.bench.common import progress_printer

# Stdlib-only module: importing it keeps `--help` fast.
from devtools.bench.fault_scenarios import CLUSTER_SCENARIOS, SCENARIOS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--duration-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="scale outages and steady phases (default 1.0: TSDB down 60 s, device cut off 120 s)",
    )
    parser.add_argument("--devices", type=int, default=4, help="simulated devices per scenario (default 4)")
    parser.add_argument("--rate", type=float, default=20.0, help="frames/s per simulated device (default 20)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=(*SCENARIOS, *CLUSTER_SCENARIOS),
        help="run only this scenario (repeatable; default: all, in the order listed; "
        f"{', '.join(CLUSTER_SCENARIOS)} needs --bridges 2)",
    )
    parser.add_argument(
        "--bridges",
        type=int,
        default=1,
        help="bridges sharing the frames: a sessions bridge plus N-1 storage bridges (default 1); "
        "with 2 or more the default also runs " + ", ".join(CLUSTER_SCENARIOS),
    )
    parser.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and data here (default: a temp dir)")
    parser.set_defaults(run=run)


_progress = progress_printer("faults")


def default_scenarios(bridges: int) -> tuple[str, ...]:
    """Every scenario this stack can run: the cluster ones only with several bridges."""
    return SCENARIOS + (CLUSTER_SCENARIOS if bridges > 1 else ())


def run(args: argparse.Namespace) -> int:
    from devtools.bench.faults import FaultOptions, run_faults

    options = FaultOptions(
        duration_scale=args.duration_scale,
        devices=args.devices,
        rate=args.rate,
        scenarios=tuple(args.scenario)
        if args.scenario
        else SCENARIOS + (CLUSTER_SCENARIOS if args.bridges > 1 else ()),
        model_dir=args.model,
        workdir=args.workdir,
        bridges=args.bridges,
    )
    result = run_faults(options, _progress)
    if args.json:
        print(json.dumps(result))
    else:
        for item in result["scenarios"]:
            print(json.dumps(item))
        print(f"ok: {result['ok']}")
    return 0
