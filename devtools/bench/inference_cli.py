"""`thermoscreen bench inference`: is the node, not the broker or the model, the bottleneck?

In one run against its own Mosquitto it measures, on the same ~1.6 KB frames:
1. `model_only_frames_per_s`: the bare interpreter (manifest preprocessing + LiteRT invoke in
   micro-batches) in this process, no MQTT;
2. `broker_relay_frames_per_s`: a publisher process -> broker -> a subscriber process (same
   shared QoS 1 subscription as a node) doing no work;
3. `node_frames_per_s`: one `thermoscreen infer` process under saturating load (the publisher
   sends as fast as it can), counted as verdicts arriving at a subscriber process;
   `p50_ms`/`p99_ms` are the node's own receipt-to-publish latency under that load and
   `paced_p50_ms`/`paced_p99_ms` the same at a moderate fixed rate (`--paced-rate`), and
   `paced_node_cpu_ms_per_frame` the node's CPU per verdicted frame at that rate.
The goal is node >= half the relay rate (`node_vs_relay` >= 0.5; issue 17 asks 0.8). Cost:
`node_cpu_ms_per_frame` (the node process's CPU over the saturating phase / verdicts) against
`relay_subscriber_cpu_ms_per_frame` (the bare subscriber's), and their ratio
`node_cpu_vs_relay_cpu` (goal <= 1.5: scoring and answering a frame may cost at most half
again what receiving it costs).

A phase ends when the node's own counters (its metrics topic) say every frame published was
verdicted, dropped by its bounded queue or dead-lettered: `frames_dropped` reports the drops
(a saturated node drops; nothing waits for their verdicts), `frames_unaccounted` what a
stalled node never accounted for, `frames_lost` verdicts the observer missed otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from devtools.bench.common import progress_printer


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--frames", type=int, default=20000, help="frames per saturating phase (default 20000)")
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("contract/model/shipped/thermal"),
        help="model directory (default contract/model/shipped/thermal)",
    )
    parser.add_argument("--variant", choices=("auto", "float32", "int8"), default="auto")
    parser.add_argument("--batch", type=int, default=32, help="node micro-batch size (default 32)")
    parser.add_argument("--batch-ms", type=float, default=2.0, help="node micro-batch wait (default 2 ms)")
    parser.add_argument("--devices", type=int, default=8, help="simulated devices the frames come from")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="frames/s of the latency phase (default 200)")
    parser.add_argument("--paced-frames", type=int, default=600, help="frames of the latency phase (default 600)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating relay/node rounds; medians reported")
    parser.add_argument(
        "--node-max-pending",
        type=int,
        metavar="N",
        help="the node's frame queue bound (default: the node's); frames beyond it are dropped and reported",
    )
    parser.set_defaults(run=run)


_progress = progress_printer("inference")


def run(args: argparse.Namespace) -> int:
    from devtools.bench.inference import BenchSettings, run_bench

    if args.frames < 100:
        raise ValueError(f"--frames must be at least 100, got {args.frames}")
    if args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    if args.node_max_pending is not None and args.node_max_pending < 1:
        raise ValueError(f"--node-max-pending must be at least 1, got {args.node_max_pending}")
    settings = BenchSettings(
        model_dir=args.model,
        variant=args.variant,
        frames=args.frames,
        batch=args.batch,
        batch_ms=args.batch_ms,
        devices=args.devices,
        paced_rate=args.paced_rate,
        paced_frames=args.paced_frames,
        rounds=args.rounds,
        max_pending_frames=args.node_max_pending,
    )
    result: dict[str, Any] = run_bench(settings, progress=_progress)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0
