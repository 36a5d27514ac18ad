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
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from sensor_node.config import RfidKind, SensorConfig, load_config
from transport import service_manager

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
    """Load the edge model (edge mode), open site key, spool, source and reader (closing on failure), make the node.

    The edge model loads first: a bad, unsigned or unloadable model (or a missing inference
    extra) is a one-line error before anything is opened. Edge mode off imports no LiteRT.
    """
    from sensor_node.node import SensorNode
    from sensor_node.rfid import open_taps
    from sensor_node.site_key import load_site_key
    from sensor_node.sources import open_source
    from sensor_node.spool import Spool

    edge_model = None
    if config.edge.enabled:
        from sensor_node.edge import load_edge_model

        edge_model = load_edge_model(config.edge)
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
        node = SensorNode(config, source=source, taps=taps, site_key=site_key, spool=spool, edge_model=edge_model)
        undo.pop_all()
    return node


def capturing(node: Any, rate_hz: float) -> Callable[[], bool]:
    """Health for the systemd watchdog: a frame was captured within max(10 s, 5 frame periods)."""
    allowed_s = max(10.0, 5.0 / rate_hz)
    seen = [node.counters.frames_captured, time.monotonic()]

    def healthy() -> bool:
        now = time.monotonic()
        if node.counters.frames_captured != seen[0]:
            seen[0], seen[1] = node.counters.frames_captured, now
        return bool(now - seen[1] < allowed_s)

    return healthy


def edge_line(node: Any) -> str:
    """What the start-up line says about edge mode."""
    if node.edge is None:
        return "edge mode off"
    return f"edge mode on (model {node.edge.runner.version}; provisional results until the cloud's verdict)"


def run_sensor(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    node = build_node(config)
    src = config.source
    print(
        f"thermoscreen sensor: device {config.device.id} (incarnation {node.incarnation}), "
        f"source {src.kind.value} at {src.rate_hz:g} Hz, "
        f"reader {config.rfid.kind.value}, broker {config.mqtt.url}, spool {config.spool_path} "
        f"({node.spool.depth} waiting), {edge_line(node)}. A screening aid, not a diagnosis.",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    # Store-and-forward: once the spool, the camera and the reader are open the device is ready,
    # broker or not. The watchdog pings while frames keep being captured.
    service_manager.ready(f"capturing at {src.rate_hz:g} Hz, incarnation {node.incarnation}")
    watchdog = service_manager.Watchdog(capturing(node, src.rate_hz)).start()
    try:
        with stop_on_signals(stop):
            counters = node.run(stop, args.duration)
    finally:
        service_manager.stopping()
        watchdog.stop()
    print(
        f"thermoscreen sensor: stopped; {counters.frames_captured} frames captured, {counters.frames_spooled} "
        f"spooled, {counters.sessions_started} sessions; {node.publisher.stats.acked} messages acknowledged, "
        f"{node.spool.depth} still spooled, {node.spool.dropped_frames} frames dropped (spool full)",
        file=sys.stderr,
        flush=True,
    )
    return 0
