"""The bridge benchmark itself (see `devtools.bench.bridge_cli` for what the figures mean)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_bridge.config import BridgeConfig
from contract import timeseries as schema
from contract.messages import DeviceState, NodeMetrics, NodeStatus, decode_message
from contract.topics import NodeChannel, node_topic
from devtools import component_toml
from devtools.bench.common import in_workdir, progress_printer
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics, SeriesKey, compare_series
from devtools.processes import ChildProcess
from devtools.synthetic_stream import MODEL_VERSION, expected_series, make_session
from transport.connection import Message, MqttConnection, MqttSettings, PublishReceipt

NODE_ID = "bench-bridge"
PUBLISH_WINDOW = 2000


@dataclass(frozen=True)
class BenchOptions:
    devices: int = 4
    frames: int = 1500
    rows_every: int = 1
    outage_s: float = 10.0
    outage_at: float = 0.3
    rate: float = 0.0


_progress = progress_printer("bridge")


class _Watch:
    """The bridge's status and metrics as they arrive."""

    def __init__(self) -> None:
        self.online = threading.Event()
        self._cond = threading.Condition()
        self.metrics: list[tuple[float, NodeMetrics]] = []

    def status(self, message: Message) -> None:
        if decode_message(message.payload, NodeStatus).state == DeviceState.ONLINE:
            self.online.set()

    def metric(self, message: Message) -> None:
        with self._cond:
            self.metrics.append((time.monotonic(), decode_message(message.payload, NodeMetrics)))
            self._cond.notify_all()

    def points_written_at(self, at: float) -> float:
        """`points_written` of the last report at or before `at` (0 before any)."""
        with self._cond:
            before = [m.values.get("points_written", 0.0) for t, m in self.metrics if t <= at]
        return before[-1] if before else 0.0

    def wait_empty_after(self, since: float, timeout: float) -> float | None:
        """The time of the first report, at or after `since`, of an empty queue."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, m in self.metrics:
                    if at >= since and m.values.get("queue_depth", 1.0) == 0.0:
                        return at
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)


def _config(workdir: Path, broker_url: str, tsdb_url: str, rows_every: int) -> Path:
    data: dict[str, Any] = {
        "bridge": {"node_id": NODE_ID, "metrics_interval_s": 0.5},
        "mqtt": {"url": broker_url, "client_id": "bench-bridge"},
        "queue": {"path": str(workdir / "queue.sqlite")},
        "archive": {"path": str(workdir / "archive.sqlite")},
        "influx": {
            "enabled": True,
            "url": tsdb_url,
            "frame_rows_every": rows_every,
            "batch_items": 2000,
            "backoff_min_s": 0.2,
            "backoff_max_s": 1.0,
        },
        "sessions": {"grace_s": 1.0},
        "provenance": {"approved_models": [MODEL_VERSION]},
    }
    config = component_toml.build(BridgeConfig, data, source="bench bridge config")
    return component_toml.write(workdir / "bridge.toml", config)


def _cpu_seconds(pid: int | None) -> float:
    """CPU-seconds (user + system) a process used so far."""
    import psutil

    if pid is None:
        raise RuntimeError("the bridge process is not running")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def influx_point_count(expected: dict[SeriesKey, set[int]], exported: dict[SeriesKey, list[int]] | None) -> int:
    """InfluxDB points (measurement, tags, time: one line each) among the expected series samples
    that landed (`exported`), or all of them (`None`)."""
    names = sorted(schema.MEASUREMENTS, key=len, reverse=True)
    points: dict[SeriesKey, set[int]] = {}
    for (name, labels), want in expected.items():
        measurement = next((m for m in names if name.startswith(m + "_")), name)
        stamps = want if exported is None else want & set(exported.get((name, labels), ()))
        points.setdefault((measurement, labels), set()).update(stamps)
    return sum(len(stamps) for stamps in points.values())


def run_bench(options: BenchOptions) -> dict[str, Any]:
    return in_workdir(None, "bridge", lambda workdir: _run(options, workdir))


def _run(options: BenchOptions, workdir: Path) -> dict[str, Any]:
    _progress(f"generating {options.devices} x {options.frames} frames")
    sessions = [make_session(f"bench-{i}", options.frames, seed=i) for i in range(options.devices)]
    # Interleave devices, as a site with several devices would send them.
    per_device = [list(s.ordered_messages()) for s in sessions]
    messages = [m for group in zip(*per_device, strict=True) for m in group]
    expected: dict[SeriesKey, set[int]] = {}
    for s in sessions:
        expected.update(expected_series(s, rows_every=options.rows_every))
    expected_values = sum(len(v) for v in expected.values())

    broker = LocalMosquitto(workdir=workdir)
    broker.start()
    tsdb = LocalVictoriaMetrics(workdir / "victoria")
    tsdb.start()
    bridge: ChildProcess | None = None
    watcher = MqttConnection(MqttSettings(url=broker.url), client_id="bench-watch")
    publisher = MqttConnection(MqttSettings(url=broker.url, max_inflight=PUBLISH_WINDOW), client_id="bench-pub")
    try:
        watch = _Watch()
        watcher.start()
        watcher.subscribe(node_topic(NODE_ID, NodeChannel.STATUS), watch.status).wait(5.0)
        watcher.subscribe(node_topic(NODE_ID, NodeChannel.METRICS), watch.metric).wait(5.0)
        config = _config(workdir, broker.url, tsdb.url, options.rows_every)
        args = ["bridge", "--config", str(config), "--progress-s", "5"]
        bridge = ChildProcess("bridge", args, log_dir=workdir, new_session=False).start()
        if not watch.online.wait(60.0):
            raise RuntimeError(f"the bridge did not come online; see {bridge.log_path}")
        publisher.start()
        bridge_pid = bridge.pid
        cpu_start = _cpu_seconds(bridge_pid)
        _progress(
            f"publishing {len(messages)} messages; TSDB down {options.outage_s:.0f} s after {options.outage_at:.0%}"
        )
        outage_index = int(len(messages) * options.outage_at)
        outage: dict[str, float] = {}

        def outage_thread() -> None:
            tsdb.stop()
            outage["stopped"] = time.monotonic()
            _progress("TSDB stopped")
            time.sleep(options.outage_s)  # the fault's duration, not a synchronisation
            tsdb.start()
            outage["started"] = time.monotonic()
            _progress("TSDB restarted")

        fault = threading.Thread(target=outage_thread, name="tsdb-outage")
        window: deque[PublishReceipt] = deque()
        t_start = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            if i == outage_index and options.outage_s > 0:
                fault.start()
            if options.rate > 0:
                lag = t_start + i / options.rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            window.append(publisher.publish(topic, payload, qos=1))
            while len(window) >= PUBLISH_WINDOW:
                if not window.popleft().wait(60.0):
                    raise RuntimeError("the broker stopped acknowledging publishes")
        for receipt in window:
            if not receipt.wait(60.0) or not receipt.accepted:
                raise RuntimeError("a publish was not acknowledged")
        t_published = time.monotonic()
        _progress(f"published in {t_published - t_start:.1f} s ({len(messages) / (t_published - t_start):.0f} msg/s)")
        if fault.is_alive() or fault.ident is not None:
            fault.join()
        since = max(t_published, outage.get("started", t_published))
        t_drained = watch.wait_empty_after(since, timeout=600.0)
        if t_drained is None:
            raise RuntimeError("the bridge did not drain its queue within 10 minutes")
        cpu_used = _cpu_seconds(bridge_pid) - cpu_start
        _progress("bridge queue empty; reading back from VictoriaMetrics")
        exported = tsdb.export_timestamps('{device_id=~"bench-.*"}')
        deadline = time.monotonic() + 60.0
        while compare_series(expected, exported).lost and time.monotonic() < deadline:
            time.sleep(0.5)  # freshly flushed data can take a moment to be searchable
            exported = tsdb.export_timestamps('{device_id=~"bench-.*"}')
        check = compare_series(expected, exported)
        outage_s = outage.get("started", 0.0) - outage.get("stopped", 0.0)
        active_s = max(1e-6, t_drained - t_start - outage_s)
        # The sink's capacity: the rate at which it wrote the backlog after the TSDB came back
        # (independent of how fast this process could publish), from the bridge's own counter.
        restarted = outage.get("started", t_start)
        drained_points = watch.points_written_at(t_drained) - watch.points_written_at(restarted)
        catch_up_s = max(1e-6, t_drained - restarted)
        # Loss and duplicates are judged per field value (the strictest view); rates are in
        # InfluxDB points (one line-protocol line: measurement, tags, time, its fields).
        points = influx_point_count(expected, exported)
        return {
            # Messages (frames, verdicts, session events) the bridge stored per second of the run
            # (outage excluded), and the bridge process's CPU (user + system) per message over it.
            "messages_per_s": round(len(messages) / active_s, 1),
            "cpu_ms_per_message": round(1000.0 * cpu_used / len(messages), 4),
            "bridge_cpu_s": round(cpu_used, 2),
            "points_per_s": round(drained_points / catch_up_s, 1),
            "overall_points_per_s": round(points / active_s, 1),
            "catch_up_points": int(drained_points),
            "catch_up_s": round(catch_up_s, 2),
            "messages": len(messages),
            "stored": points,
            "lost": check.lost,
            "duplicates": check.unexpected,
            "sink_outage_s": round(outage_s, 2),
            "expected_points": influx_point_count(expected, None),
            "field_values_per_s": round(check.present / active_s, 1),
            "field_values": check.present,
            "expected_field_values": expected_values,
            "rewrites": check.rewrites,
            "publish_msgs_per_s": round(len(messages) / (t_published - t_start), 1),
            "wall_s": round(t_drained - t_start, 2),
            "devices": options.devices,
            "frames_per_device": options.frames,
            "rows_every": options.rows_every,
        }
    finally:
        publisher.stop()
        watcher.stop()
        if bridge is not None:
            bridge.stop(30.0)
        tsdb.stop()
        broker.stop()
