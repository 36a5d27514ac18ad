"""The phases of `thermoscreen bench inference` (see devtools/bench/inference_cli.py for what each means).

Load generator, counter and node each run in their own process (two cores shared by all of
them and the broker: absolute numbers are machine-bound; the ratios are the point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from contract.frame import decode_frame
from contract.messages import DeviceState, NodeStatus, decode_message
from contract.model.model_runner import ModelRunner
from contract.topics import ALL_FRAMES, ALL_VERDICTS, NodeChannel, node_topic, shared
from devtools import component_toml
from devtools.bench.common import Progress
from devtools.bench.inference_clients import bench_payloads
from devtools.bench.node_counters import MAX_WAIT_S, NODE_METRICS_INTERVAL_S, NodeCount, NodeCounters
from devtools.local_mosquitto import LocalMosquitto
from devtools.managed_process import ProcessStartError
from devtools.processes import ChildProcess
from inference_node.config import InferenceConfig
from transport.connection import Message, MqttConnection, MqttSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_NODE_ID = "bench-node"


@dataclass(frozen=True)
class BenchSettings:
    model_dir: Path
    variant: str
    frames: int
    batch: int
    batch_ms: float
    devices: int
    paced_rate: float
    paced_frames: int
    rounds: int = 2
    #: The node's bounded frame queue (None: its default); small values make it drop under load.
    max_pending_frames: int | None = None


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def _json_line(stream: IO[str], what: str) -> dict[str, Any]:
    for raw in stream:
        line = raw.strip()
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"{what} printed no result")


class _Counter:
    """A `bench_clients count` process, ready (subscribed) when constructed."""

    def __init__(
        self, url: str, topic_filter: str, expect: int, *, verdicts: bool, timeout: float, qos: int = 1
    ) -> None:
        cmd = ["-m", "devtools.bench.inference_clients", "count", "--url", url, "--filter", topic_filter]
        cmd += ["--expect", str(expect), "--timeout", str(timeout), "--qos", str(qos), "--stdin"]
        if verdicts:
            cmd.append("--verdicts")
        self.proc = subprocess.Popen(
            _python(*cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO_ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"bench counter did not start: {line or 'no output'}")

    def expect(self, count: int) -> None:
        """The final count: the counter stops once it has `count` messages (or its grace ran out)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"expect {int(count)}\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it already finished: its result says what it saw

    def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = _json_line(self.proc.stdout, "bench counter")
        self.proc.wait(timeout)
        return out


def _publish(url: str, frames: int, devices: int, rate: float = 0.0) -> dict[str, Any]:
    cmd = ["-m", "devtools.bench.inference_clients", "publish", "--url", url, "--frames", str(frames)]
    cmd += ["--devices", str(devices), "--rate", str(rate)]
    proc = subprocess.run(
        _python(*cmd), capture_output=True, text=True, env=_env(), cwd=REPO_ROOT, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench publisher failed: {proc.stderr.strip().splitlines()[-1:] or proc.stdout}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_model_only(settings: BenchSettings) -> dict[str, Any]:
    """The bare interpreter on the decoded frames, micro-batched like the node."""
    runner = ModelRunner.load(settings.model_dir, variant=settings.variant, max_batch=settings.batch)
    runner.warm_up()
    payloads = bench_payloads(settings.frames, settings.devices)
    start = time.perf_counter()
    frames = [decode_frame(p) for _, p in payloads]
    decoded = time.perf_counter()
    temperatures = np.stack([f.centi for f in frames]).astype(np.float32) / np.float32(100.0)
    start_model = time.perf_counter()
    for i in range(0, len(temperatures), settings.batch):
        runner.predict_celsius(temperatures[i : i + settings.batch])
    done = time.perf_counter()
    return {
        "model_only_frames_per_s": len(frames) / (done - start_model),
        "decode_frames_per_s": len(frames) / (decoded - start),
        "model_version": runner.version,
        "variant": runner.variant,
        "runtime": runner.runtime,
    }


def measure_relay(url: str, settings: BenchSettings) -> dict[str, Any]:
    counter = _Counter(url, shared("bench-relay", ALL_FRAMES), settings.frames, verdicts=False, timeout=300)
    published = _publish(url, settings.frames, settings.devices)
    counted = counter.result(60)
    return {"publisher": published, "subscriber": counted}


def _wait_online(url: str, node_id: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    online = threading.Event()

    def on_status(message: Message) -> None:
        try:
            if decode_message(message.payload, NodeStatus).state == DeviceState.ONLINE:
                online.set()
        except ValueError:
            pass

    conn = MqttConnection(MqttSettings(url=url), client_id=f"bench-watch-{time.monotonic_ns()}").start()
    try:
        conn.subscribe(node_topic(node_id, NodeChannel.STATUS), on_status)
        deadline = time.monotonic() + timeout
        while not online.wait(0.2):
            if proc.poll() is not None:
                raise ProcessStartError(f"inference node exited with code {proc.returncode} before going online")
            if time.monotonic() > deadline:
                raise ProcessStartError(f"inference node not online after {timeout:.0f} s")
    finally:
        conn.stop()


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_ms_per_frame(pid: int, cpu_before: float | None, frames: int) -> float | None:
    """The process's CPU since `cpu_before` (from `_cpu_seconds`) per frame; None if unknown."""
    cpu_after = _cpu_seconds(pid)
    if cpu_before is None or cpu_after is None or frames <= 0:
        return None
    return (cpu_after - cpu_before) * 1000.0 / frames


class _NodeProcess(ChildProcess):
    """`thermoscreen infer` as a child process; `start()` returns once it announced itself online."""

    start_timeout_s = 60.0
    stop_timeout_s = 30.0

    def __init__(self, url: str, settings: BenchSettings, log_path: Path) -> None:
        config = {"metrics_interval_s": NODE_METRICS_INTERVAL_S}
        if settings.max_pending_frames is not None:
            config["max_pending_frames"] = settings.max_pending_frames
        config_file = component_toml.write(log_path.with_suffix(".toml"), InferenceConfig.model_validate(config))
        args = ["infer", "--config", str(config_file), "--broker", url, "--node-id", BENCH_NODE_ID]
        args += ["--model", str(settings.model_dir), "--batch", str(settings.batch)]
        args += ["--batch-ms", str(settings.batch_ms), "--variant", settings.variant]
        super().__init__(log_path.stem, args, log_dir=log_path.parent, env=_env(), cwd=Path.cwd(), new_session=False)
        self.url = url

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        _wait_online(self.url, BENCH_NODE_ID, self.proc, timeout)


def _verdicts_of(
    url: str, counters: NodeCounters, frames: int, devices: int, rate: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any], NodeCount]:
    """Publish `frames`, wait until the node's counters account for each one; (publisher, verdicts, counts).

    The observer takes verdicts at QoS 0 so that it costs the shared CPUs as little as possible;
    its losses would still show as frames_lost. It waits for as many verdicts as the node says
    it published, never for frames the node dropped (see `devtools.bench.node_counters`).
    """
    base = counters.latest(fresh_within_s=NODE_METRICS_INTERVAL_S * 4)
    counter = _Counter(url, ALL_VERDICTS, frames, verdicts=True, timeout=MAX_WAIT_S, qos=0)
    try:
        published = _publish(url, frames, devices, rate)
        counts = counters.wait_accounted(base, int(published["acknowledged"]))
        counter.expect(counts.verdicted)
        return published, counter.result(60), counts
    finally:
        if counter.proc.poll() is None:
            counter.proc.kill()
            counter.proc.wait()


def measure_node(url: str, settings: BenchSettings, node: _NodeProcess, counters: NodeCounters) -> dict[str, Any]:
    """One node under saturating load: the publisher sends as fast as it can."""
    pid = node.pid
    assert pid is not None, "the node runs while it is measured"
    cpu_before = _cpu_seconds(pid)
    published, saturated, counts = _verdicts_of(url, counters, settings.frames, settings.devices)
    cpu_ms = _cpu_ms_per_frame(pid, cpu_before, int(saturated.get("received", 0)))
    return {"publisher": published, "verdicts": saturated, "node": counts, "node_cpu_ms_per_frame": cpu_ms}


def measure_paced(url: str, settings: BenchSettings, node: _NodeProcess, counters: NodeCounters) -> dict[str, Any]:
    """Latency and CPU per frame at a moderate fixed rate: what a frame costs when the node is
    not the bottleneck (its batches are small, so per-batch costs weigh more than when saturated)."""
    pid = node.pid
    assert pid is not None, "the node runs while it is measured"
    cpu_before = _cpu_seconds(pid)
    _published, verdicts, counts = _verdicts_of(
        url, counters, settings.paced_frames, settings.devices, settings.paced_rate
    )
    cpu_ms = _cpu_ms_per_frame(pid, cpu_before, counts.verdicted)
    return {**verdicts, "node_dropped": counts.dropped, "node_cpu_ms_per_frame": cpu_ms}


def accounting(settings: BenchSettings, nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Where the saturating phases' frames went, from the node's counters and the observer's count."""
    counts: list[NodeCount] = [n["node"] for n in nodes]
    seen = sum(int(n["verdicts"].get("unique", 0)) for n in nodes)
    dropped = sum(c.dropped for c in counts)
    published = sum(int(n["publisher"]["acknowledged"]) for n in nodes)
    return {
        "frames_verdicted": sum(c.verdicted for c in counts),
        "frames_dropped": dropped,
        "frames_deadlettered": sum(c.deadletters for c in counts),
        # Neither verdicted nor dropped nor dead-lettered by the node's own count (it stalled).
        "frames_unaccounted": max(0, published - sum(c.accounted for c in counts)),
        # Frames without a verdict at the observer that the node did not say it dropped.
        "frames_lost": max(0, settings.frames * len(nodes) - seen - dropped),
    }


#: The issue's goal: a node may use at most this many times a bare subscriber's CPU per frame.
NODE_CPU_GOAL = 1.5


def cpu_ratio(node_cpu: list[float], relay_cpu: list[float]) -> float | None:
    """Median node CPU per frame / median bare-subscriber CPU per frame (None if either is missing)."""
    relay = _median([v for v in relay_cpu if v > 0])
    return round(_median(node_cpu) / relay, 2) if node_cpu and relay > 0 else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0


def run_bench(settings: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Model alone, then `rounds` x (relay, node) alternating so machine noise hits both alike."""
    progress(f"model only: {settings.frames} frames, batch {settings.batch}, model {settings.model_dir}")
    model = measure_model_only(settings)
    workdir = Path(tempfile.mkdtemp(prefix="thermoscreen-bench-inference-"))
    relays: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    exit_codes: list[int | None] = []
    paced: dict[str, Any] = {}
    with LocalMosquitto(workdir=workdir) as broker:
        for round_no in range(1, settings.rounds + 1):
            progress(
                f"round {round_no}/{settings.rounds}: broker relay, {settings.frames} frames publisher -> subscriber"
            )
            relays.append(measure_relay(broker.url, settings))
            progress(f"round {round_no}/{settings.rounds}: one node, {settings.frames} frames as fast as they come")
            counters = NodeCounters(broker.url, BENCH_NODE_ID).start()
            node = _NodeProcess(broker.url, settings, workdir / "node.log").start()
            try:
                nodes.append(measure_node(broker.url, settings, node, counters))
                if round_no == settings.rounds:
                    progress(f"latency: {settings.paced_frames} frames at {settings.paced_rate:.0f}/s")
                    paced = measure_paced(broker.url, settings, node, counters)
            finally:
                exit_codes.append(node.stop())
                counters.stop()
    relay_rates = [float(r["subscriber"].get("per_s", 0.0)) for r in relays]
    node_rates = [float(n["verdicts"].get("per_s", 0.0)) for n in nodes]
    relay_rate, node_rate = _median(relay_rates), _median(node_rates)
    ratios = [n / r for n, r in zip(node_rates, relay_rates, strict=True) if r]
    node_cpu = [float(n["node_cpu_ms_per_frame"]) for n in nodes if n["node_cpu_ms_per_frame"]]
    relay_cpu = [float(r["subscriber"].get("cpu_ms_per_message", 0.0)) for r in relays]
    result: dict[str, Any] = {
        "broker_relay_frames_per_s": round(relay_rate, 1),
        "node_frames_per_s": round(node_rate, 1),
        "model_only_frames_per_s": round(float(model["model_only_frames_per_s"]), 1),
        "p50_ms": round(_median([float(n["verdicts"].get("latency_p50_ms", 0.0)) for n in nodes]), 3),
        "p99_ms": round(_median([float(n["verdicts"].get("latency_p99_ms", 0.0)) for n in nodes]), 3),
        "paced_rate_frames_per_s": settings.paced_rate,
        "paced_p50_ms": round(float(paced.get("latency_p50_ms", 0.0)), 3),
        "paced_p99_ms": round(float(paced.get("latency_p99_ms", 0.0)), 3),
        "paced_node_cpu_ms_per_frame": _rounded(paced.get("node_cpu_ms_per_frame")),
        "node_vs_relay": round(_median(ratios), 3) if ratios else None,
        "goal_node_at_least_half_relay": bool(ratios and _median(ratios) >= 0.5),
        "rounds": settings.rounds,
        "relay_frames_per_s_by_round": [round(r, 1) for r in relay_rates],
        "node_frames_per_s_by_round": [round(r, 1) for r in node_rates],
        "node_cpu_ms_per_frame": round(_median(node_cpu), 4) if node_cpu else None,
        # The node's CPU per frame over a bare subscriber's of the same frames (goal <= 1.5x): what
        # decoding, scoring and publishing a verdict add to just receiving the frame.
        "node_cpu_vs_relay_cpu": cpu_ratio(node_cpu, relay_cpu),
        "relay_subscriber_cpu_ms_per_frame": round(_median(relay_cpu), 4),
        "publisher_frames_per_s_during_relay": round(
            _median([r["publisher"]["published"] / r["publisher"]["acked_s"] for r in relays]), 1
        ),
        "publisher_frames_per_s_during_node": round(
            _median([n["publisher"]["published"] / n["publisher"]["acked_s"] for n in nodes]), 1
        ),
        "decode_frames_per_s": round(float(model["decode_frames_per_s"]), 1),
        "frames": settings.frames,
        "bytes_per_frame": relays[0]["publisher"]["bytes_per_frame"],
        **accounting(settings, nodes),
        "paced_frames_dropped": int(paced.get("node_dropped", 0)),
        "verdict_duplicates": sum(int(n["verdicts"].get("duplicates", 0)) for n in nodes),
        "batch": settings.batch,
        "batch_ms": settings.batch_ms,
        "model_version": model["model_version"],
        "variant": model["variant"],
        "runtime": model["runtime"],
        "node_exit_codes": exit_codes,
        "cpu_count": os.cpu_count(),
    }
    return result
