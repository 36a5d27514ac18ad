"""`thermoscreen bench bridge`: points/s into a real TSDB through an outage, with loss and duplicates.

Runs a real Mosquitto, a real VictoriaMetrics and the bridge as its own process (the CLI),
publishes synthetic sessions (frames + verdicts, as devices and inference nodes would),
stops the TSDB for part of the run and restarts it, waits until the bridge reports an empty
queue, then reads everything back from VictoriaMetrics (`/api/v1/export`) and compares it
with the points the published messages must produce (derived from the schema alone).

Figures: `points_per_s` = InfluxDB points (line-protocol lines) the bridge wrote from the
TSDB's restart until its queue was empty, divided by that time: the sink's capacity while
draining the outage's backlog (from the bridge's `points_written` metric, sampled every
0.5 s; the time includes the back-off before the first successful retry).
`overall_points_per_s` = points landed / (time from the first publish until the queue was
empty, minus the outage), which is bounded by how fast this process publishes.
`stored` = points landed. `messages_per_s` = messages published / (first publish until the queue
was empty, minus the outage); `cpu_ms_per_message` = the bridge process's CPU-seconds over
that same span (outage included: it keeps receiving) per message published. Loss and duplicates are judged per
field value (VictoriaMetrics keeps each field as its own series): `lost` = expected field
values missing; `duplicates` = field values present that no message should have produced
(a redelivery written under another timestamp or tags); `rewrites` = samples repeating an
existing one (a batch written again after a crash or timeout; InfluxDB overwrites these).
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=4, help="simulated devices, one long session each")
    parser.add_argument("--frames", type=int, default=1500, help="frames per device (each with a verdict)")
    parser.add_argument("--rows-every", type=int, default=1, help="frame_row points for every Nth frame (0: none)")
    parser.add_argument("--outage-s", type=float, default=10.0, help="seconds the TSDB is stopped mid-run")
    parser.add_argument("--outage-at", type=float, default=0.3, help="fraction of messages published before it")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s to publish (0: as fast as possible)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from devtools.bench.bridge import BenchOptions, run_bench

    if args.devices < 1 or args.frames < 1:
        raise ValueError("--devices and --frames must be at least 1")
    if not 0.0 <= args.outage_at <= 1.0 or args.outage_s < 0:
        raise ValueError("--outage-at must be within 0..1 and --outage-s not negative")
    result = run_bench(
        BenchOptions(
            devices=args.devices,
            frames=args.frames,
            rows_every=args.rows_every,
            outage_s=args.outage_s,
            outage_at=args.outage_at,
            rate=args.rate,
        )
    )
    if args.json:
        import json

        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    ok = result["lost"] == 0 and result["duplicates"] == 0
    if not ok:
        print("bench bridge: points were lost or duplicated", file=sys.stderr)
    return 0 if ok else 1
