"""The end-to-end bench itself (`thermoscreen bench e2e`; see `devtools.bench.e2e_cli` for the figures).

Stack: a production-provisioned Mosquitto (TLS, passwords, ACL), N inference nodes, the
bridge writing its archive and a local VictoriaMetrics, all as real child processes
(`devtools.stack.LocalStack`). Load: `devtools.load_generator` processes (`--load-procs`)
with D device accounts at R frames/s each, each driving its connections from one loop
thread (`devtools.load_loop`), measuring capture-to-verdict latency at the device.
Window: after a warm-up, CPU of every process and the verdicts are measured over
`duration` seconds; then the generator stops and waits for the last verdicts (drain).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.provisioning import add_device
from contract.topics import ALL_SESSION_VERDICTS, ROOT
from devtools.bench.common import Progress, in_workdir
from devtools.bench.cpu_meter import CpuMeter, cores, find_child
from devtools.bench.landed import StoredFrames, archive_frames
from devtools.bench.session_check import PublishedSessionVerdicts, check_sessions
from devtools.load_client import LoadGeneratorProcess
from devtools.load_generator import DeviceAccount

#: The issue's goal: p99 capture-to-verdict latency at 1,000 frames/s offered on loopback.
P99_GOAL_MS = 20.0
#: Total CPU above this share of the machine means the machine, not a component, is the limit.
SATURATED_SHARE = 0.85
#: The issue's goals for the server side's cost: CPU ms per verdicted frame, and that over the broker's own.
SERVER_CPU_GOAL_MS = 0.8
PIPELINE_VS_BROKER_GOAL = 4.0
#: A run "offered the asked rate" when its generators reached this share of it within the window.
OFFERED_SHARE = 0.98


@dataclass(frozen=True)
class E2eOptions:
    devices: int = 20
    rate: float = 50.0
    nodes: int = 1
    duration_s: float = 30.0
    warmup_s: float = 10.0
    drain_s: float = 20.0
    model_dir: Path | None = None
    workdir: Path | None = None
    device_prefix: str = "load"
    #: Load generator processes (None: one per ~1,500 frames/s offered, at most half the cores).
    generators: int | None = None
    #: False: no bridge and no TSDB, the verdict path alone (to see what the storage path costs).
    store: bool = True
    #: True: each generator drives its connections from one thread (devtools.load_loop); False: a paho
    #: thread per device, as before.
    single_loop: bool = True
    #: Bridges sharing the frames: 1 (a single bridge), or a sessions bridge and N-1 storage bridges.
    bridges: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 500:
            raise ValueError(f"--devices must be 1..500, got {self.devices}")
        if not 0 < self.rate <= 1000:
            raise ValueError(f"--rate must be in (0, 1000] frames/s per device, got {self.rate}")
        if not 1 <= self.nodes <= 16:
            raise ValueError(f"--nodes must be 1..16, got {self.nodes}")
        if self.duration_s <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration_s}")
        if self.generators is not None and not 1 <= self.generators <= min(32, self.devices):
            raise ValueError(f"--load-procs must be 1..min(32, devices), got {self.generators}")
        if self.warmup_s < 0:
            raise ValueError(f"--warmup must not be negative, got {self.warmup_s}")
        if not 1 <= self.bridges <= 4:
            raise ValueError(f"--bridges must be 1..4, got {self.bridges}")
        if self.bridges > 1 and not self.store:
            raise ValueError("--bridges needs the store (it cannot be combined with --no-store)")


def provision_devices(stack: Any, ids: list[str]) -> list[DeviceAccount]:
    """Device accounts for simulated devices, with one broker reload for all of them."""
    accounts = [DeviceAccount(d, add_device(stack.broker_dir, d).password) for d in ids]
    stack.broker.reload_and_wait()
    return accounts


def component_pids(stack: Any, extra: dict[str, int]) -> dict[str, int | None]:
    """pid of every process of the stack by component name (broker, tsdb, bridge, infer-N, ...)."""
    pids: dict[str, int | None] = {"broker": stack.broker.pid, "tsdb": find_child("victoria-metrics")}
    for name in stack.components:
        pids[name] = stack.component(name).pid
    pids.update(extra)
    return pids


def is_server(name: str) -> bool:
    """The pipeline's own processes: broker, inference nodes, bridges and the TSDB (not the load or the bench)."""
    return name in ("broker", "tsdb") or name.startswith(("bridge", "infer-"))


def server_cost(cpu_seconds: Mapping[str, float | None], frames: int) -> dict[str, Any]:
    """CPU ms per verdicted frame of the server side, and that over the broker's own per frame.

    Why per frame and per broker: % CPU depends on the rate a run reached, ms per frame does
    not; and the broker relaying each frame and verdict is the floor any pipeline pays, so
    `pipeline_vs_broker` says how much the rest adds on top of moving the messages at all.
    """
    parts = {k: v for k, v in cpu_seconds.items() if is_server(k) and v is not None}
    if frames <= 0 or not parts:
        return {"server_cpu_ms_per_frame": None, "pipeline_vs_broker": None, "cpu_ms_per_frame": {}}
    per_frame = {k: round(1000.0 * v / frames, 4) for k, v in sorted(parts.items())}
    total = 1000.0 * sum(parts.values()) / frames
    broker = per_frame.get("broker")
    return {
        "server_cpu_ms_per_frame": round(total, 4),
        "pipeline_vs_broker": round(total / broker, 2) if broker else None,
        "cpu_ms_per_frame": per_frame,
    }


def limits_note(result: dict[str, Any]) -> str:
    """What limited this run, from its own measurements (CPU per process, latency, rates)."""
    cpu: dict[str, float | None] = result["cpu"]
    n_cores = result["cores"]
    ours = sum(v for v in cpu.values() if v is not None)
    machine = max(ours, result.get("machine_cpu") or 0.0)
    top = sorted(((v, k) for k, v in cpu.items() if v is not None), reverse=True)[:4]
    top_text = ", ".join(f"{k} {v:.0f}%" for v, k in top)
    parts = [
        f"{n_cores} cores ({100 * n_cores}%): the bench's processes used {ours:.0f}% ({top_text}), "
        f"other work on the machine about {machine - ours:.0f}%"
    ]
    kept_up = result["verdict_fps"] >= 0.98 * result["offered_fps"]
    asked = result.get("asked_fps")
    if asked and not result.get("offered_as_asked", True):
        parts.append(
            f"the load generator(s) offered only {result['offered_fps']:.0f} of the {asked:.0f} frames/s asked "
            f"({result['skipped_ticks']} skipped ticks)"
        )
    if machine >= SATURATED_SHARE * 100 * n_cores:
        parts.append(
            "the CPU is saturated: "
            + ("throughput is CPU-bound" if not kept_up else "latency includes waiting for a free core")
        )
    elif n_cores < result["nodes"] + 3:
        parts.append(f"{result['nodes']} node(s) share {n_cores} cores with everything else: no free core per node")
    parts.append("verdicts kept up with the offered load" if kept_up else "verdicts fell behind the offered load")
    p99 = result.get("p99_ms")
    if p99 is not None:
        parts.append(f"p99 {p99:.1f} ms {'meets' if p99 <= P99_GOAL_MS else 'misses'} the {P99_GOAL_MS:.0f} ms goal")
    cost = result.get("server_cpu_ms_per_frame")
    if cost is not None:
        verdict = "meets" if cost <= SERVER_CPU_GOAL_MS else "misses"
        parts.append(f"server side {cost:.2f} CPU ms per frame {verdict} the {SERVER_CPU_GOAL_MS} ms goal")
    return "; ".join(parts)


def run_e2e(options: E2eOptions, progress: Progress) -> dict[str, Any]:
    return in_workdir(options.workdir, "e2e", lambda workdir: _run(options, workdir, progress))


def _run(options: E2eOptions, workdir: Path, progress: Progress) -> dict[str, Any]:
    from devtools.stack import LocalStack, StackOptions

    stack_options = StackOptions(
        devices=0,
        nodes=options.nodes,
        tsdb=options.store,
        bridge=options.store,
        bridges=options.bridges,
        sessions=None,
        anonymous_capture=True,
        model_dir=options.model_dir,
        metrics_interval_s=2.0,
        session_grace_s=0.5,
    )
    load_avg = round(os.getloadavg()[0], 2)  # other work on the machine skews every timing
    bridges = f"{options.bridges} bridges sharing the frames" if options.bridges > 1 else "bridge"
    store = f", {bridges}, VictoriaMetrics" if options.store else " (no bridge, no TSDB)"
    progress(f"starting the stack: secured Mosquitto, {options.nodes} inference node(s){store}")
    t_stack = time.monotonic()
    with LocalStack(workdir / "stack", stack_options) as stack:
        progress(f"stack up in {time.monotonic() - t_stack:.1f} s; provisioning {options.devices} device accounts")
        # The stack's monitor reads every frame and verdict (thermo/v1/#): useful to see
        # components come online, but at 1,000 frames/s it is one more subscriber the broker
        # fans every frame out to and ~20% of a core in this process. Everything is online
        # now, so it stops listening; latency is measured at the devices.
        stack.monitor.connection.unsubscribe(f"{ROOT}/#").wait(5.0)
        published = PublishedSessionVerdicts()  # a few messages: one per device's session
        stack.monitor.connection.subscribe(ALL_SESSION_VERDICTS, published.handle, qos=1).wait(5.0)
        ids = [f"{options.device_prefix}-{i + 1}" for i in range(options.devices)]
        accounts = provision_devices(stack, ids)
        n_gen = options.generators or auto_generators(options.devices * options.rate, options.devices)
        loads = [
            LoadGeneratorProcess(
                accounts[k::n_gen],
                url=stack.tls_url,
                ca_file=stack.ca_file,
                rate=options.rate,
                workdir=workdir / "load",
                name=f"load-{k + 1}",
                single_loop=options.single_loop,
            )
            for k in range(n_gen)
        ]
        try:
            for load in loads:
                load.wait_ready(120.0)
            offered = options.devices * options.rate
            progress(
                f"{options.devices} devices x {options.rate:g} frames/s = {offered:g} frames/s offered (TLS), "
                f"{n_gen} load generator process(es)"
            )
            time.sleep(options.warmup_s)  # warm-up: queues and caches settle before the window opens
            stack.check_alive()
            extra = {f"load_generator-{k + 1}": load.pid for k, load in enumerate(loads)}
            meter = CpuMeter(component_pids(stack, {**extra, "bench": _own_pid()})).start()
            window_start = time.time_ns()
            progress(f"measuring for {options.duration_s:g} s")
            time.sleep(options.duration_s)  # the measurement window: a duration, not a synchronisation
            window_end = time.time_ns()
            cpu_by_process = meter.stop()
            cpu = _sum_generators(cpu_by_process)
            cpu_s = dict(meter.seconds)
            stack.check_alive()
            progress("stopping the load; waiting for the last verdicts")
            result = merge_results(_stop_all(loads, options.drain_s, (window_start, window_end)))
        finally:
            for load in loads:
                load.close()
        progress("checking the archive" if options.store else "no store to check (--no-store)")
        if options.store:
            stored = _wait_archived(stack.archive_path, result["frames_per_device"], options.drain_s)
            window = (window_start, window_end)
            node_ms = _node_latencies(stack.archive_path, list(result["frames_per_device"]), window)
            progress("waiting for every session's verdict")
            sessions = check_sessions(stack.archive_path, ids, published, options.drain_s)
        else:
            stored, node_ms, sessions = None, [], {}
    missing_verdicts = {d: set(s) for d, s in result["missing_verdicts"].items()}
    lost = 0
    for device, n in result["frames_per_device"].items():
        have = stored.seqs(device) if stored is not None else None
        gone = missing_verdicts.get(device, set())
        lost += sum(1 for seq in range(1, n + 1) if (have is not None and seq not in have) or seq in gone)
    window_s = (window_end - window_start) / 1e9
    out: dict[str, Any] = {
        "devices": options.devices,
        "rate_per_device": options.rate,
        "asked_fps": options.devices * options.rate,
        "offered_fps": round(result["offered_in_window"] / window_s, 1),
        "verdict_fps": round(result["verdicts_in_window"] / window_s, 1),
        "p50_ms": result["p50_ms"],
        "p95_ms": result["p95_ms"],
        "p99_ms": result["p99_ms"],
        "max_ms": result["max_ms"],
        "nodes": options.nodes,
        "bridges": options.bridges,
        "lost": lost,
        # Where the time goes: the nodes' own receipt-to-publish time (from the stored verdicts).
        "node_p50_ms": _percentile(node_ms, 50),
        "node_p99_ms": _percentile(node_ms, 99),
        "offered": result["offered"],
        "verdicts": result["verdicts"],
        "verdicts_missing": result["verdicts_missing"],
        "verdict_duplicates": result["verdict_duplicates"],
        "stored": stored.total if stored is not None else None,
        "store": "bridge (archive + VictoriaMetrics)" if options.store else "none (--no-store: verdict path alone)",
        "unacked": result["unacked"],
        "skipped_ticks": result["skipped_ticks"],
        "load_generators": n_gen,
        "load_generator_threads": "one loop per process" if options.single_loop else "one paho thread per device",
        "load_generator_cpu_by_process": [cpu_by_process.get(f"load_generator-{k + 1}") for k in range(n_gen)],
        "window_s": round(window_s, 2),
        "cores": cores(),
        "load_avg": load_avg,
        "cpu": cpu,
        "machine_cpu": meter.machine_pct,
        "transport": "loopback, TLS, one MQTT connection per device, QoS 1",
        **server_cost(cpu_s, result["verdicts_in_window"]),
        **sessions,
    }
    # The load generator may fall short of the asked rate (its own CPU, a busy machine): say so.
    out["offered_as_asked"] = out["offered_fps"] >= OFFERED_SHARE * out["asked_fps"]
    out["limits"] = limits_note(out)
    return out


def _own_pid() -> int:
    return os.getpid()


def _wait_archived(archive: Path, frames_per_device: dict[str, int], idle_s: float) -> StoredFrames:
    """Poll the archive until every offered frame is there, or it stopped growing for `idle_s`."""
    expected = sum(frames_per_device.values())
    last_total, last_change = -1, time.monotonic()
    while True:
        stored = archive_frames(archive, frames_per_device)
        if stored.total >= expected:
            return stored
        if stored.total != last_total:
            last_total, last_change = stored.total, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            return stored
        time.sleep(0.25)  # polling another process's database, bounded by the idle limit


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(np.asarray(values), q)), 3) if values else None


def _node_latencies(archive: Path, devices: list[str], window_ns: tuple[int, int]) -> list[float]:
    """latency_ms of the stored verdicts of frames captured in the window (the node's own measure)."""
    import sqlite3

    if not archive.exists() or not devices:
        return []
    conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        marks = ",".join("?" * len(devices))
        rows = conn.execute(
            f"SELECT latency_ms FROM verdicts WHERE device_id IN ({marks}) AND capture_ns >= ? AND capture_ns < ?",
            [*devices, *window_ns],
        ).fetchall()
    finally:
        conn.close()
    return [float(r[0]) for r in rows]


#: Frames/s one load generator process offers comfortably (it tops out near 1,900 here).
FPS_PER_GENERATOR = 1500.0


def auto_generators(offered_fps: float, devices: int) -> int:
    """Enough generator processes for the offered rate, but never more than half the cores."""
    import math

    wanted = math.ceil(offered_fps / FPS_PER_GENERATOR)
    return max(1, min(wanted, cores() // 2, devices))


def _stop_all(loads: list[LoadGeneratorProcess], drain_s: float, window: tuple[int, int]) -> list[dict[str, Any]]:
    """Stop every generator at once (each drains in its own thread) and collect their results."""
    import threading

    results: list[dict[str, Any] | None] = [None] * len(loads)
    errors: list[BaseException] = []

    def stop(k: int) -> None:
        try:
            results[k] = loads[k].stop(drain_s, window)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stop, args=(k,)) for k in range(len(loads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several generators: counts add up, percentiles come from all samples."""
    import numpy as np

    merged: dict[str, Any] = {}
    for key in (
        "offered",
        "offered_in_window",
        "verdicts",
        "verdicts_in_window",
        "verdicts_missing",
        "verdict_duplicates",
        "unacked",
        "skipped_ticks",
        "reconnects",
    ):
        merged[key] = sum(int(r[key]) for r in results)
    merged["frames_per_device"] = {d: n for r in results for d, n in r["frames_per_device"].items()}
    merged["missing_verdicts"] = {d: s for r in results for d, s in r["missing_verdicts"].items()}
    samples = np.asarray([v for r in results for v in r["window_latencies_ms"]], dtype=np.float64)
    for q in (50, 95, 99):
        merged[f"p{q}_ms"] = round(float(np.percentile(samples, q)), 3) if samples.size else None
    merged["max_ms"] = round(float(samples.max()), 3) if samples.size else None
    return merged


def _sum_generators(cpu: dict[str, float | None]) -> dict[str, float | None]:
    """Per-process CPU with the load generator processes added up under `load_generator`."""
    out = {k: v for k, v in cpu.items() if not k.startswith("load_generator-")}
    parts = [v for k, v in cpu.items() if k.startswith("load_generator-")]
    out["load_generator"] = None if any(v is None for v in parts) else round(sum(v for v in parts if v), 1)
    return out
