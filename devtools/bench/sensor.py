"""`thermoscreen bench sensor`: frames/s, CPU per frame and RSS of the sensor node, end to end.

The real node (synthetic source, anonymous capture, on-disk spool, publisher) publishes to a
real Mosquitto (started here unless --broker is given). Phases: the clinical 8 Hz; unpaced
capture, whose broker-acknowledged rate is the most the node can move; and 80% of that rate,
to show it is sustained (the spool stays near empty). `imports_tensorflow` is measured from
`sys.modules` after the run.
"""

from __future__ import annotations

import argparse
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS", help="length of each phase")
    parser.add_argument("--broker", metavar="URL", help="use this broker instead of starting a local Mosquitto")
    parser.add_argument(
        "--synchronous", choices=("full", "normal"), default="full", help="spool durability (spool.synchronous)"
    )
    parser.set_defaults(run=run)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(url: str, workdir: str, *, name: str, rate_hz: float, duration_s: float, synchronous: str) -> dict[str, Any]:
    import threading
    import time
    from pathlib import Path

    from sensor_node.config import SensorConfig
    from sensor_node.node import SensorNode
    from sensor_node.rfid import NoTaps
    from sensor_node.sources import open_source
    from sensor_node.spool import Spool

    config = SensorConfig.model_validate(
        {
            "device": {"id": f"bench-{name}"},
            "source": {"kind": "synthetic", "rate_hz": rate_hz, "seed": 1},
            "rfid": {"kind": "none"},
            "session": {"anonymous_capture": True},
            "spool": {"path": str(Path(workdir) / f"{name}.sqlite"), "synchronous": synchronous},
            "mqtt": {"url": url},
        }
    )
    spool = Spool(config.spool_path, max_items=config.spool.max_items, max_bytes=config.spool.max_bytes)
    node = SensorNode(config, source=open_source(config), taps=NoTaps(), site_key=bytes(32), spool=spool)
    node.start()
    if not node.connection.connected.wait(10):
        node.shutdown()
        raise ConnectionError(f"bench: no connection to {url}")
    acked0, captured0 = node.publisher.stats.acked, node.counters.frames_captured
    cpu0, wall0 = time.process_time(), time.monotonic()
    threading.Event().wait(duration_s)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    acked = node.publisher.stats.acked - acked0
    captured = node.counters.frames_captured - captured0
    backlog = spool.depth
    node.shutdown()
    return {
        "target_hz": rate_hz,
        "seconds": round(wall, 3),
        "frames_captured": captured,
        "frames_acked": acked,
        "frames_per_s": round(acked / wall, 2),
        "capture_per_s": round(captured / wall, 2),
        "cpu_ms_per_frame": round(1000 * cpu / max(captured, 1), 3),
        "cpu_percent": round(100 * cpu / wall, 1),
        "spool_backlog_end": backlog,
    }


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import platform
    import sys
    import tempfile
    from pathlib import Path

    if args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    with tempfile.TemporaryDirectory(prefix="thermoscreen-bench-sensor-") as workdir:
        broker = None
        url = args.broker
        if url is None:
            from devtools.local_mosquitto import LocalMosquitto

            broker = LocalMosquitto(workdir=Path(workdir)).start()
            url = broker.url
        try:
            phases: dict[str, dict[str, Any]] = {}
            plan: list[tuple[str, float | None]] = [("8hz", 8.0), ("max", 10000.0), ("sustain", None)]
            for name, planned in plan:
                # the sustain phase runs at 80% of what the unpaced phase got through
                rate = planned if planned is not None else max(1.0, round(0.8 * phases["max"]["frames_per_s"], 1))
                print(f"bench sensor: phase {name} at {rate:g} Hz for {args.duration:g} s", file=sys.stderr, flush=True)
                phases[name] = _phase(
                    url, workdir, name=name, rate_hz=rate, duration_s=args.duration, synchronous=args.synchronous
                )
        finally:
            if broker is not None:
                broker.stop()
    sustain = phases["sustain"]
    sustained = sustain["spool_backlog_end"] <= 64 and sustain["capture_per_s"] >= 0.9 * sustain["target_hz"]
    result = {
        "bench": "sensor",
        "source": "synthetic",
        "broker": "local mosquitto" if args.broker is None else args.broker,
        "spool_synchronous": args.synchronous,
        "frames_per_s": phases["8hz"]["frames_per_s"],
        "cpu_ms_per_frame": phases["8hz"]["cpu_ms_per_frame"],
        "max_frames_per_s": phases["max"]["frames_per_s"],
        "max_sustainable_hz": sustain["target_hz"] if sustained else None,
        "rss_mb": round(_rss_mb(), 1),
        "imports_tensorflow": any(
            name.split(".")[0] in {"tensorflow", "keras", "tf_keras"} for name in list(sys.modules)
        ),
        "phases": phases,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "phases":
                print(f"{key}: {value}")
        for name, values in phases.items():
            print(f"phase {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0
