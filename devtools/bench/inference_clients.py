"""The benchmark's load generator and counter, each run as its own process so they never share a GIL
with what they measure.

    python -m devtools.bench.inference_clients publish --url URL --frames N [--devices D] [--rate FPS]
    python -m devtools.bench.inference_clients count --url URL --filter FILTER --expect N [--timeout S]

`count` prints `ready` once subscribed, then one JSON line when done: after `--expect` messages,
after `--timeout`, or, with `--stdin`, once it has the N messages that a line `expect N` on its
stdin names (the bench sends it when the node's own counters say how many frames it verdicted,
so frames the node dropped are not waited for), waiting at most `--grace` more for them.
`publish` prints one JSON line after the broker acknowledged every frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

from contract.frame import Frame, SensorKind, encode_frame
from contract.topics import frame_topic
from transport.connection import Message, MqttConnection, MqttSettings

#: Distinct thermal images cycled through by the publisher.
DISTINCT_IMAGES = 64


def bench_images(n: int = DISTINCT_IMAGES, seed: int = 7) -> np.ndarray:
    """(n, 24, 32) emulated MLX90640 frames (degrees C) of synthetic patients, half of them sick."""
    from contract.sensor import emulate_mlx_frame
    from sensor_node.synthetic_scene import random_patient, torso_scene

    rng = np.random.default_rng(seed)
    return np.stack(
        [emulate_mlx_frame(torso_scene(96, 128, random_patient(rng, sick=bool(i % 2)), rng), rng) for i in range(n)]
    )


def bench_payloads(frames: int, devices: int) -> list[tuple[str, bytes]]:
    """(topic, encoded frame) for `frames` frames spread over `devices` devices (~1.6 KB each)."""
    images = bench_images()
    out = []
    for i in range(frames):
        device = f"bench-{i % devices:04d}"
        frame = Frame.from_celsius(
            images[i % len(images)],
            device_id=device,
            seq=i,
            capture_ns=time.time_ns(),
            sensor=SensorKind.SYNTHETIC,
        )
        out.append((frame_topic(device), encode_frame(frame)))
    return out


def _publish(args: argparse.Namespace) -> int:
    payloads = bench_payloads(args.frames, args.devices)
    conn = MqttConnection(MqttSettings(url=args.url), client_id=f"bench-pub-{time.monotonic_ns()}")
    conn.start()
    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.perf_counter()
    receipts = []
    for i, (topic, payload) in enumerate(payloads):
        if interval:
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the load, not synchronisation
        receipts.append(conn.publish(topic, payload, qos=1))
    sent = time.perf_counter()
    acked = sum(1 for r in receipts if r.wait(60.0) and r.accepted)
    done = time.perf_counter()
    conn.stop()
    print(
        json.dumps(
            {
                "published": len(payloads),
                "acknowledged": acked,
                "bytes_per_frame": len(payloads[0][1]) if payloads else 0,
                "publish_s": sent - start,
                "acked_s": done - start,
            }
        ),
        flush=True,
    )
    return 0 if acked == len(payloads) else 1


def _count(args: argparse.Namespace) -> int:
    arrivals: list[float] = []
    payloads: list[bytes] = []
    cpu_at_first: list[float] = []
    done = threading.Event()
    target = [args.expect]  # lowered by an `expect N` line on stdin (one writer, read on the network thread)
    deadline = [time.monotonic() + args.timeout]

    def on_message(message: Message) -> None:
        if not arrivals:
            cpu_at_first.append(time.process_time())
        arrivals.append(time.perf_counter())
        payloads.append(message.payload)
        if len(arrivals) >= target[0]:
            done.set()

    def read_targets() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "expect":
                target[0] = int(parts[1])
                deadline[0] = min(deadline[0], time.monotonic() + args.grace)
                if len(arrivals) >= target[0]:
                    done.set()

    conn = MqttConnection(MqttSettings(url=args.url), client_id=f"bench-count-{time.monotonic_ns()}")
    conn.start()
    receipt = conn.subscribe(args.filter, on_message, qos=args.qos)
    if not (receipt.wait(10.0) and receipt.granted):
        print(json.dumps({"error": f"subscription to {args.filter} refused"}), flush=True)
        return 1
    print("ready", flush=True)
    if args.stdin:
        threading.Thread(target=read_targets, name="count-targets", daemon=True).start()
    while not done.wait(0.1) and time.monotonic() < deadline[0]:
        pass  # the deadline moves when the bench names the final count
    cpu_span = time.process_time() - cpu_at_first[0] if cpu_at_first else 0.0
    conn.stop()
    result: dict[str, object] = {"received": len(arrivals), "target": target[0]}
    if len(arrivals) >= 2:
        result["cpu_ms_per_message"] = cpu_span * 1000.0 / (len(arrivals) - 1)
    if len(arrivals) >= 2:
        span = arrivals[-1] - arrivals[0]
        result["span_s"] = span
        result["per_s"] = (len(arrivals) - 1) / span if span > 0 else 0.0
    if args.verdicts:
        verdicts = [json.loads(p) for p in payloads]
        keys = {(v["device_id"], v["seq"]) for v in verdicts}
        latencies = np.array([v["latency_ms"] for v in verdicts]) if verdicts else np.zeros(1)
        result.update(
            unique=len(keys),
            duplicates=len(verdicts) - len(keys),
            latency_p50_ms=float(np.percentile(latencies, 50)),
            latency_p99_ms=float(np.percentile(latencies, 99)),
            models=sorted({v["model_version"] for v in verdicts}),
        )
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.inference_clients")
    sub = parser.add_subparsers(dest="role", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--url", required=True)
    pub.add_argument("--frames", type=int, required=True)
    pub.add_argument("--devices", type=int, default=8)
    pub.add_argument("--rate", type=float, default=0.0, help="frames/s (0: as fast as possible)")
    cnt = sub.add_parser("count")
    cnt.add_argument("--url", required=True)
    cnt.add_argument("--filter", required=True)
    cnt.add_argument("--expect", type=int, required=True)
    cnt.add_argument("--timeout", type=float, default=120.0)
    cnt.add_argument("--qos", type=int, default=1)
    cnt.add_argument("--verdicts", action="store_true", help="parse payloads as verdicts: duplicates, latency")
    cnt.add_argument("--stdin", action="store_true", help="take `expect N` lines on stdin (a lowered final count)")
    cnt.add_argument("--grace", type=float, default=10.0, help="with --stdin: wait at most this long after `expect N`")
    args = parser.parse_args(argv)
    return _publish(args) if args.role == "publish" else _count(args)


if __name__ == "__main__":
    sys.exit(main())
