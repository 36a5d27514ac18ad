"""`thermoscreen bench sensor`: frames/s, CPU per frame and RSS of the sensor node, end to end.

The real node (synthetic source, anonymous capture, on-disk spool, publisher) publishes to a
real Mosquitto (started here unless --broker is given). Phases: the clinical 8 Hz; unpaced
capture, whose broker-acknowledged rate is the most the node can move; and 80% of that rate,
to show it is sustained (the spool stays near empty). `imports_tensorflow` is measured from
`sys.modules` after the run.

Edge mode (`edge`): the 8 Hz node with one open session, once with edge mode off and once on
(the shipped model), each in a fresh child process so LiteRT's memory never counts in the
"off" figure: RSS, CPU per frame, and how long after the session end the provisional result
is shown. The "on" child also scores frames one at a time, in batches of 32 and as one
end-of-session batch of a 5-minute 8 Hz session, the figures behind edge.py's worker choice.
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


#: A 5-minute session at 8 Hz: what an end-of-session batch would have to score at once.
SESSION_FRAMES_5MIN_8HZ = 2400
EDGE_RATE_HZ = 8.0
CHILD = "import sys; from devtools.bench.sensor import edge_child; sys.exit(edge_child(sys.argv[1:]))"


def _edge_phase(url: str, workdir: str, *, edge: bool, duration_s: float, synchronous: str) -> dict[str, Any]:
    """The 8 Hz node with one session for `duration_s`, edge mode on or off (run in a child process)."""
    import threading
    import time
    from pathlib import Path

    from contract.model.shipped import shipped_model_dir
    from sensor_node.config import SensorConfig
    from sensor_node.node import SensorNode
    from sensor_node.rfid import ScriptedTaps
    from sensor_node.sources import open_source
    from sensor_node.spool import Spool

    name = "edge-on" if edge else "edge-off"
    config = SensorConfig.model_validate(
        {
            "device": {"id": f"bench-{name}"},
            "source": {"kind": "synthetic", "rate_hz": EDGE_RATE_HZ, "seed": 1},
            "rfid": {"kind": "scripted"},
            "spool": {"path": str(Path(workdir) / f"{name}.sqlite"), "synchronous": synchronous},
            "edge": {"model_dir": str(shipped_model_dir()) if edge else None},
            "mqtt": {"url": url},
        }
    )
    edge_model = None
    if edge:
        from sensor_node.edge import load_edge_model

        edge_model = load_edge_model(config.edge)
    spool = Spool(config.spool_path, max_items=config.spool.max_items, max_bytes=config.spool.max_bytes)
    taps = ScriptedTaps()
    node = SensorNode(
        config, source=open_source(config), taps=taps, site_key=bytes(32), spool=spool, edge_model=edge_model
    )
    node.start()
    try:
        if not node.connection.connected.wait(10):
            raise ConnectionError(f"bench: no connection to {url}")
        uid = bytes.fromhex("04a1b2c3")
        taps.push(uid)
        captured0, cpu0, wall0 = node.counters.frames_captured, time.process_time(), time.monotonic()
        threading.Event().wait(duration_s)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        captured = node.counters.frames_captured - captured0
        rss = _rss_mb()
        ended, end = node.counters.sessions_ended, time.monotonic()
        taps.push(uid)  # the ending scan; the latency below counts from it
        while node.counters.sessions_ended == ended:
            time.sleep(0.001)
        latency_ms = None
        if node.edge is not None:
            while node.results.provisional is None and time.monotonic() - end < 10:
                time.sleep(0.001)
            latency_ms = round(1000 * (time.monotonic() - end), 1) if node.results.provisional else None
        result: dict[str, Any] = {
            "target_hz": EDGE_RATE_HZ,
            "seconds": round(wall, 3),
            "frames_captured": captured,
            "cpu_ms_per_frame": round(1000 * cpu / max(captured, 1), 3),
            "cpu_percent": round(100 * cpu / wall, 1),
            "rss_mb": round(rss, 1),
            "frames_scored": node.edge.frames_scored if node.edge else 0,
            "frames_unscored": node.edge.frames_unscored if node.edge else 0,
            "provisional_after_session_end_ms": latency_ms,
        }
    finally:
        node.shutdown()
    if node.edge is not None:
        result["scoring"] = _scoring_costs(node.edge.runner)
    result["rss_peak_mb"] = round(_peak_rss_mb(), 1)
    result["imports_litert"] = "ai_edge_litert" in sys_modules()
    return result


def sys_modules() -> set[str]:
    import sys

    return {name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scoring_costs(runner: Any) -> dict[str, float]:
    """CPU per frame of the shipped model at batch 1 and 32, and one end-of-session batch."""
    import time

    import numpy as np

    from contract.model.model_runner import reference_frame_c

    frame = reference_frame_c()
    costs: dict[str, float] = {}
    for batch in (1, 32):
        frames = np.broadcast_to(frame, (batch, *frame.shape))
        calls = max(1, 640 // batch)
        cpu0 = time.process_time()
        for _ in range(calls):
            runner.predict_celsius(frames)
        costs[f"batch{batch}_cpu_ms_per_frame"] = round(1000 * (time.process_time() - cpu0) / (calls * batch), 4)
    session = np.broadcast_to(frame, (SESSION_FRAMES_5MIN_8HZ, *frame.shape)).copy()
    peak0, wall0 = _peak_rss_mb(), time.perf_counter()
    runner.predict_celsius(session)
    costs["end_batch_frames"] = SESSION_FRAMES_5MIN_8HZ
    costs["end_batch_ms"] = round(1000 * (time.perf_counter() - wall0), 1)
    costs["end_batch_frames_mb"] = round(session.nbytes / 2**20, 1)
    # the frames themselves were held before; this is what scoring them at once adds to the peak
    costs["end_batch_peak_rss_growth_mb"] = round(max(0.0, _peak_rss_mb() - peak0), 1)
    return costs


def edge_child(argv: list[str]) -> int:
    """Child-process entry: `on|off URL WORKDIR SECONDS SYNCHRONOUS` -> one JSON line on stdout."""
    import json

    mode, url, workdir, seconds, synchronous = argv
    result = _edge_phase(url, workdir, edge=mode == "on", duration_s=float(seconds), synchronous=synchronous)
    print(json.dumps(result), flush=True)
    return 0


def _edge_phases(url: str, workdir: str, duration_s: float, synchronous: str) -> dict[str, dict[str, Any]]:
    import json
    import subprocess
    import sys

    phases = {}
    for mode in ("off", "on"):
        print(
            f"bench sensor: edge mode {mode} at {EDGE_RATE_HZ:g} Hz for {duration_s:g} s", file=sys.stderr, flush=True
        )
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, url, workdir, str(duration_s), synchronous],
            stdout=subprocess.PIPE,
            text=True,
            timeout=duration_s + 120,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench sensor: the edge-mode-{mode} child exited {out.returncode}")
        phases[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return phases


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
            edge = _edge_phases(url, workdir, args.duration, args.synchronous)
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
        "rss_mb_edge_off": edge["off"]["rss_mb"],
        "rss_mb_edge_on": edge["on"]["rss_mb"],
        "cpu_ms_per_frame_edge_off": edge["off"]["cpu_ms_per_frame"],
        "cpu_ms_per_frame_edge_on": edge["on"]["cpu_ms_per_frame"],
        "provisional_after_session_end_ms": edge["on"]["provisional_after_session_end_ms"],
        "phases": phases,
        "edge": edge,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key not in ("phases", "edge"):
                print(f"{key}: {value}")
        for name, values in [*phases.items(), *((f"edge {mode}", v) for mode, v in edge.items())]:
            print(f"phase {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0
