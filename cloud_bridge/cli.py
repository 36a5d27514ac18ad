"""`thermoscreen bridge`: run the cloud bridge (MQTT -> durable queue -> archive / InfluxDB / Firestore)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from transport import service_manager


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="bridge TOML config (see cloud_bridge/bridge.example.toml)")
    parser.add_argument("--broker", metavar="URL", help="MQTT broker URL (mqtt:// or mqtts://), overrides [mqtt] url")
    parser.add_argument("--queue", type=Path, metavar="PATH", help="on-disk queue file, overrides [queue] path")
    parser.add_argument("--archive", type=Path, metavar="PATH", help="local SQLite archive, overrides [archive] path")
    parser.add_argument("--influx-url", metavar="URL", help="enable the InfluxDB sink at this URL")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until SIGTERM)")
    parser.add_argument(
        "--progress-s", type=float, default=10.0, metavar="S", help="status line on stderr every S seconds (0: off)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout when stopping")
    parser.set_defaults(run=run)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "mqtt.url": args.broker,
        "queue.path": None if args.queue is None else str(args.queue),
        "archive.path": None if args.archive is None else str(args.archive),
    }
    if args.influx_url:
        overrides["influx.url"] = args.influx_url
        overrides["influx.enabled"] = True
    return overrides


def run(args: argparse.Namespace) -> int:
    from cloud_bridge.config import load_config
    from cloud_bridge.service import EXIT_THREAD_DIED, Bridge

    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    config = load_config(args.config, overrides_from(args))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_fatal(reason: str) -> None:
        # A dead thread means nothing more is stored: exit at once, non-zero, so the supervisor
        # restarts the bridge. Nothing is lost: unacknowledged messages stay with the broker,
        # committed ones in the queue.
        print(f"bridge: {reason}; exiting with status {EXIT_THREAD_DIED}", file=sys.stderr, flush=True)
        os._exit(EXIT_THREAD_DIED)

    bridge = Bridge(config, on_fatal=on_fatal).start()
    sinks = ", ".join(bridge.workers)
    metrics = f"; Prometheus on port {bridge.prometheus_port}" if bridge.prometheus_port is not None else ""
    print(
        f"bridge {config.bridge.node_id}: connected to {config.mqtt.url}; queue {config.queue.path}; "
        f"sinks: {sinks}{metrics}",
        file=sys.stderr,
        flush=True,
    )
    # systemd (Type=notify): ready once subscribed; the watchdog pings while every thread is alive.
    service_manager.ready(f"storing to {sinks}")
    watchdog = service_manager.Watchdog(lambda: not bridge.dead_threads()).start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    next_progress = time.monotonic() + args.progress_s if args.progress_s > 0 else None
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        wakeups = [t for t in (deadline, next_progress) if t is not None]
        stop.wait(max(0.0, min(wakeups) - now) if wakeups else None)
        if next_progress is not None and time.monotonic() >= next_progress:
            s = bridge.summary()
            print(
                f"bridge: received {s.received}, stored {s.stored}, queue {s.queue_depth} "
                f"(oldest {s.oldest_age_s:.1f} s), dead letters {_reasons(s.dead_letters)}, "
                f"sink errors {s.sink_errors}, "
                f"dropped {s.dropped}",
                file=sys.stderr,
                flush=True,
            )
            next_progress += args.progress_s
    service_manager.stopping()
    watchdog.stop()
    summary = bridge.stop()
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(f"bridge stopped: {summary.stored} stored, {summary.queue_depth} still queued", file=sys.stderr)
    return 0


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items())) or "0"
