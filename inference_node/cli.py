"""`thermoscreen infer`: run one inference worker until SIGTERM/SIGINT (or `--duration`).

Import-light on purpose: LiteRT, numpy and the node load inside `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an inference worker: frames from the shared subscription -> LiteRT CNN -> verdicts. "
        "Verdicts are a screening aid, not a diagnosis."
    )
    parser.add_argument("--config", type=Path, help="inference TOML file (default: built-in defaults)")
    parser.add_argument("--broker", metavar="URL", help="broker URL, mqtt://host:port or mqtts://... ([mqtt] url)")
    parser.add_argument("--node-id", help="this worker's id, [a-z0-9-]{1,32} (default infer-<host>-<pid>)")
    parser.add_argument("--group", help="shared-subscription group (default inference)")
    parser.add_argument(
        "--model", type=Path, metavar="DIR", help="model directory with manifest.json (default: the shipped model)"
    )
    parser.add_argument("--batch", type=int, metavar="N", help="largest micro-batch (default 32)")
    parser.add_argument("--batch-ms", type=float, metavar="MS", help="longest a frame waits for a batch (default 2)")
    parser.add_argument(
        "--variant", choices=("auto", "float32", "int8"), help="model file to run (default: manifest's)"
    )
    parser.add_argument(
        "--model-key",
        action="append",
        metavar="KEY",
        help="trusted model signing key ed25519:<base64> (repeatable; replaces model_public_keys)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="health check: load and verify the configured model, score one frame, print its version and sha256, exit",
    )
    parser.add_argument("--json", action="store_true", help="with --check: print one JSON object")
    parser.add_argument("--duration", type=float, metavar="S", help="stop gracefully after S seconds (demos, tests)")
    parser.set_defaults(run=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as dotted config keys (None = not given, keep the file's value)."""
    return {
        "mqtt.url": args.broker,
        "node_id": args.node_id,
        "group": args.group,
        "model_dir": str(args.model) if args.model is not None else None,
        "batch_max": args.batch,
        "batch_ms": args.batch_ms,
        "variant": args.variant,
        "model_public_keys": args.model_key,
    }


def check(args: argparse.Namespace) -> int:
    """`--check`: what the node would serve, verified (signature, thermal contract, warm-up) and scored once.

    No broker is contacted: systemd's ExecStartPre and container health checks must be able
    to tell "the model is bad" apart from "the broker is down". Errors reach the CLI's one-line
    handler (exit 2).
    """
    from contract.model.model_runner import reference_frame_c
    from inference_node.config import load_config
    from inference_node.node import load_runner

    config = load_config(args.config, overrides_from_args(args))
    runner = load_runner(config, config.model_dir)
    runner.warm_up()
    probability = float(runner.predict_celsius(reference_frame_c()[None, ...])[0])
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"model {runner.version} returned probability {probability!r} outside 0..1")
    result = {
        "version": runner.version,
        "sha256": runner.model_sha256,
        "variant": runner.variant,
        "model_dir": str(runner.model_dir),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ok: model {runner.version} sha256 {runner.model_sha256} ({runner.variant}) from {runner.model_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.check:
        return check(args)
    if args.json:
        raise ValueError("--json applies only to --check")
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from inference_node.config import load_config
    from inference_node.node import InferenceNode
    from transport import service_manager

    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    config = load_config(args.config, overrides_from_args(args))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"thermoscreen infer: {signal.Signals(signum).name}, finishing frames in hand", file=sys.stderr)
        service_manager.stopping()
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    node = InferenceNode(config)
    watchdog = service_manager.Watchdog(node.healthy)
    try:
        node.start()
        runner = node.runner
        # Subscribed and the model loaded and warm: systemd may now start what depends on us.
        service_manager.ready(f"serving model {runner.version} to group {config.group}")
        watchdog.start()
        print(
            f"thermoscreen infer: node {node.node_id} serving model {runner.version} ({runner.variant}, "
            f"{runner.runtime}) from {runner.model_dir}, group {config.group}, broker {config.mqtt.url}; "
            "verdicts are a screening aid, not a diagnosis",
            file=sys.stderr,
        )
        deadline = None if args.duration is None else time.monotonic() + args.duration
        # Short waits: the main thread stays responsive to signals on every platform.
        while not stop.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        watchdog.stop()
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {"node_id": node.node_id, "frames": node.stats.frames_total, "deadletters": node.stats.deadletters}
    print(f"thermoscreen infer: stopped: {json.dumps(summary)}", file=sys.stderr)
    return 0
