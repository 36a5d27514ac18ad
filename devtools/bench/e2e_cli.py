"""`thermoscreen bench e2e`: capture-to-verdict latency, sustained rate and CPU of the whole stack.

Starts the local stack (secured Mosquitto, N inference nodes, the bridge with its archive
and a local VictoriaMetrics), simulates D devices at R frames/s each (one process, one
device account and connection per device), and reports over a measurement window:
- `offered_fps` / `verdict_fps`: frames captured / verdicts received back at the devices per s;
- `p50_ms` `p95_ms` `p99_ms` `max_ms`: capture (`capture_ns` in the frame) to verdict arrival;
- `lost`: frames offered that got no verdict back or are missing from the archive;
- `--no-store` leaves the bridge and the TSDB out (`stored` null): the verdict path alone, to
  see what the storage path costs the latency on a machine they share;
- `node_p50_ms` `node_p99_ms`: the nodes' own receipt-to-publish time (from the stored
  verdicts): the rest of the latency is transport (broker, TLS, client threads);
- `cpu`: % of one core used by each process (broker, tsdb, bridge, infer-N, load_generator,
  bench), `machine_cpu`: busy CPU of the whole machine (others' work included), `cores`:
  os.cpu_count(), `load_avg`: the 1-minute load average at the start (other work on the
  machine skews timings), and `limits`: what limited this run, from those numbers;
- `server_cpu_ms_per_frame`: CPU-seconds of broker, inference nodes, bridge and TSDB over the
  window / frames verdicted in it (`cpu_ms_per_frame`: the same per process), and
  `pipeline_vs_broker`: that / the broker's own CPU ms per frame (moving a frame and its
  verdict through the broker at all is the floor);
- `asked_fps` (devices x rate) and `offered_as_asked`: False when the load generators offered
  less than 98% of it (their CPU or a busy machine; `skipped_ticks` says how much);
  `load_generator_cpu_by_process`: each generator process's % of one core (goal: 1,000
  frames/s from 200 TLS devices under 40% of a core in all, or split over processes).
Goals: p99 <= 20 ms at 1,000 frames/s offered; `server_cpu_ms_per_frame` <= 0.8 and
`pipeline_vs_broker` <= 4; 2 nodes >= 1.8x one node's verdict rate where
the machine has the cores. Verdicts are a screening aid, not a diagnosis.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devtools.bench.common import progress_printer


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--devices", type=int, default=20, help="simulated devices (default 20)")
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s per device (default 50: 1,000 in all)")
    parser.add_argument("--nodes", type=int, default=1, help="inference nodes (default 1)")
    parser.add_argument("--duration", type=float, default=30.0, help="measurement window in s (default 30)")
    parser.add_argument("--warmup", type=float, default=10.0, help="load before the window opens, s (default 10)")
    parser.add_argument(
        "--load-procs",
        "--generators",
        dest="load_procs",
        type=int,
        metavar="N",
        help="load generator processes the devices are split over (default: automatic, one per "
        "1,500 frames/s asked, at most half the cores)",
    )
    parser.add_argument(
        "--load-threads",
        dest="single_loop",
        action="store_false",
        help="one paho network thread per simulated device (default: one loop thread per generator process)",
    )
    parser.add_argument(
        "--no-store",
        dest="store",
        action="store_false",
        help="run without the bridge and TSDB: the verdict path alone (what does storage cost the latency?)",
    )
    parser.add_argument(
        "--bridges",
        type=int,
        default=1,
        help="bridges sharing the frames (shared subscription): one sessions bridge plus N-1 storage "
        "bridges, one archive (default 1: a single bridge)",
    )
    parser.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and data here (default: a temp dir)")
    parser.set_defaults(run=run)


_progress = progress_printer("e2e")


def run(args: argparse.Namespace) -> int:
    from devtools.bench.e2e import E2eOptions, run_e2e

    options = E2eOptions(
        devices=args.devices,
        rate=args.rate,
        nodes=args.nodes,
        duration_s=args.duration,
        warmup_s=args.warmup,
        model_dir=args.model,
        workdir=args.workdir,
        store=args.store,
        generators=args.load_procs,
        single_loop=args.single_loop,
        bridges=args.bridges,
    )
    result = run_e2e(options, _progress)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20s} {value}")
    return 0
