"""Builds a sensor node from the CLI arguments and runs it until the duration ends or SIGTERM/SIGINT.

A signal ends the open session (reason `shutdown`), flushes what it can and exits 0; whatever
is still spooled goes out on the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from sensor_node.config import RfidKind, SensorConfig, load_config

log = logging.getLogger(__name__)

_OVERRIDES = {
    "source": "source.kind",
    "rfid": "rfid.kind",
    "rate": "source.rate_hz",
    "broker": "mqtt.url",
    "spool": "spool.path",
    "device_id": "device.id",
    "cards": "rfid.cards_file",
    "replay": "source.replay.path",
    "anonymous": "session.anonymous_capture",
}


def config_from_args(args: argparse.Namespace) -> SensorConfig:
    overrides: dict[str, Any] = {key: getattr(args, name, None) for name, key in _OVERRIDES.items()}
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    return load_config(args.config, overrides)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (a clean shutdown) instead of killing the process."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_node(config: SensorConfig) -> Any:
    """Open site key, spool, source and reader (in that order, closing on failure) and make the node."""
    from sensor_node.node import SensorNode
    from sensor_node.rfid import open_taps
    from sensor_node.site_key import load_site_key
    from sensor_node.sources import open_source
    from sensor_node.spool import Spool

    demo_reader = config.rfid.kind is not RfidKind.MFRC522
    site_key = load_site_key(config.rfid.site_key_file, allow_ephemeral=demo_reader)
    with contextlib.ExitStack() as undo:
        spool = Spool(
            config.spool_path,
            max_items=config.spool.max_items,
            max_bytes=config.spool.max_bytes,
            synchronous=config.spool.synchronous,
        )
        undo.callback(spool.close)
        source = open_source(config)
        undo.callback(source.close)
        taps = open_taps(config)
        undo.callback(taps.close)
        node = SensorNode(config, source=source, taps=taps, site_key=site_key, spool=spool)
        undo.pop_all()
    return node


def run_sensor(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    node = build_node(config)
    src = config.source
    print(
        f"thermoscreen sensor: device {config.device.id} (incarnation {node.incarnation}), source {src.kind.value} at {src.rate_hz:g} Hz, "
        f"reader {config.rfid.kind.value}, broker {config.mqtt.url}, spool {config.spool_path} "
        f"({node.spool.depth} waiting). A screening aid, not a diagnosis.",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        counters = node.run(stop, args.duration)
    print(
        f"thermoscreen sensor: stopped; {counters.frames_captured} frames captured, {counters.frames_spooled} "
        f"spooled, {counters.sessions_started} sessions; {node.publisher.stats.acked} messages acknowledged, "
        f"{node.spool.depth} still spooled, {node.spool.dropped_frames} frames dropped (spool full)",
        file=sys.stderr,
        flush=True,
    )
    return 0
