"""The fault bench itself (`thermoscreen bench faults`; see `devtools.bench.faults_cli` for the figures).

One stack for all scenarios (secured Mosquitto, two inference nodes, the bridge with its
archive and a local VictoriaMetrics). Each scenario gets fresh device accounts and its own
load generator (so every count belongs to exactly one scenario), runs steady load, injects
its fault, repairs it, measures recovery, runs steady load again, stops the load, and then
reads back what really landed in the archive and the TSDB per (device, seq).
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.bench.common import Progress, in_workdir
from devtools.bench.cpu_meter import cores
from devtools.bench.e2e import provision_devices
from devtools.bench.fault_scenarios import (
    CLUSTER_SCENARIOS,
    DEVICE_REIMAGE,
    HOSTILE,
    INFERENCE_KILL,
    KILLED_NODE,
    MALFORMED,
    SCENARIOS,
    SESSION_REPLAY,
    FaultContext,
    Scenario,
    scenario,
)
from devtools.bench.faults_hostile import VictimSession, archive_session
from devtools.bench.landed import (
    NO_INCARNATION,
    FrameKey,
    StoredFrames,
    archive_frames,
    archive_verdicts,
    caught_up,
    tsdb_frames,
    without_verdict,
)
from devtools.cuttable_relay import CuttableRelay
from devtools.load_client import LoadGeneratorProcess
from devtools.load_generator import BAD_SEQ_BASE, INJECT_PREFIX_BYTES, impostor_id
from devtools.local_mosquitto import free_port
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.stack import LocalStack, StackOptions, bridge_node_id

#: The bridge's re-offer delay in the bench, and how long a scenario waits for re-offered verdicts.
REOFFER_S = 3.0
REOFFER_WAIT_S = 4 * REOFFER_S + 5.0
#: How often recovery and landing are checked (reads the archive and exports from the TSDB).
POLL_S = 0.25
#: Bad payloads at --duration-scale 1 (six kinds in turn); at least two of each kind always.
MALFORMED_PAYLOADS = 36
#: The last line a sensor prints when it stops (sensor_node/service.py).
SENSOR_COUNTS = re.compile(r"(\d+) frames captured, (\d+) spooled.*?(\d+) still spooled, (\d+) frames dropped")


def deadletter_components(bridges: int) -> dict[str, list[tuple[str, ...]]]:
    """Who must dead-letter a bad payload on each channel: per channel, groups of which one must.

    A frame reaches one bridge of the share group and one inference node; an rfid event reaches
    every bridge (each reports what its own intake refused).
    """
    nodes = [bridge_node_id(k) for k in range(1, bridges + 1)]
    return {"frame": [tuple(nodes), ("inference",)], "rfid": [(n,) for n in nodes]}


@dataclass(frozen=True)
class FaultOptions:
    duration_scale: float = 1.0
    devices: int = 4
    rate: float = 20.0
    sensor_rate: float = 10.0
    scenarios: tuple[str, ...] = SCENARIOS
    model_dir: Path | None = None
    workdir: Path | None = None
    recovery_timeout_s: float = 180.0
    #: Bridges sharing the frames (`[cluster]`): 1, or a sessions bridge and storage bridges.
    bridges: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.bridges <= 4:
            raise ValueError(f"--bridges must be 1..4, got {self.bridges}")
        needs_two = [n for n in self.scenarios if n in CLUSTER_SCENARIOS]
        if needs_two and self.bridges < 2:
            raise ValueError(f"scenario {needs_two[0]} needs --bridges 2 or more")
        if not 0 < self.duration_scale <= 10:
            raise ValueError(f"--duration-scale must be in (0, 10], got {self.duration_scale}")
        if not 1 <= self.devices <= 200:
            raise ValueError(f"--devices must be 1..200, got {self.devices}")
        if not 0 < self.rate <= 500:
            raise ValueError(f"--rate must be in (0, 500] frames/s per device, got {self.rate}")
        for name in self.scenarios:
            scenario(name)  # raises for an unknown name

    @property
    def steady_s(self) -> float:
        """Steady load before the fault and again after recovery."""
        return max(1.0, 10.0 * self.duration_scale)

    @property
    def drain_s(self) -> float:
        """How long the load generator waits for the last PUBACKs and verdicts."""
        return max(3.0, 15.0 * self.duration_scale)

    @property
    def land_timeout_s(self) -> float:
        """How long to wait for the offered frames to land in both stores after the load stops."""
        return max(15.0, 60.0 * self.duration_scale)

    @property
    def malformed_payloads(self) -> int:
        return max(12, 6 * round(MALFORMED_PAYLOADS * self.duration_scale / 6))


@dataclass
class Offered:
    """Frames a device offered: seqs `first .. first + count - 1` (a sensor's first seq is read back)."""

    count: int
    first: int = 1


def run_faults(options: FaultOptions, progress: Progress) -> dict[str, Any]:
    return in_workdir(options.workdir, "faults", lambda workdir: _run(options, workdir, progress))


def _run(options: FaultOptions, workdir: Path, progress: Progress) -> dict[str, Any]:
    load_avg = round(os.getloadavg()[0], 2)
    relay_port = free_port()
    stack_options = StackOptions(
        devices=0,
        nodes=2,
        tsdb=True,
        sessions=None,
        anonymous_capture=True,
        rate_hz=options.sensor_rate,
        model_dir=options.model_dir,
        metrics_interval_s=2.0,
        # Sensors connect through the cuttable relay; load-generator devices straight to the broker.
        sensor_overrides={"mqtt.url": f"mqtts://127.0.0.1:{relay_port}"},
        # Frames a killed node held are offered again after REOFFER_S (30 s in production).
        bridge_overrides={"provenance.reoffer_s": REOFFER_S},
        bridges=options.bridges,
    )
    bridges = f"{options.bridges} bridges sharing the frames" if options.bridges > 1 else "bridge"
    progress(f"starting the stack: secured Mosquitto, 2 inference nodes, {bridges}, VictoriaMetrics")
    results = []
    with LocalStack(workdir / "stack", stack_options) as stack:
        relay = CuttableRelay("127.0.0.1", stack.tls_port, port=relay_port).start()
        try:
            for index, name in enumerate(options.scenarios):
                ctx = FaultContext(stack, relay, options.duration_scale)
                results.append(
                    _scenario(ctx, index, scenario(name), options=options, workdir=workdir, progress=progress)
                )
        finally:
            relay.stop()
    ok = all(
        r["lost"] == 0 and r["duplicates"] == 0 and r["frames_without_verdict"] == 0 and r.get("mixed_records", 0) == 0
        for r in results
    )
    return {
        "scenarios": results,
        "ok": ok,
        "bridges": options.bridges,
        "duration_scale": options.duration_scale,
        "devices": options.devices,
        "rate_per_device": options.rate,
        "sensor_rate": options.sensor_rate,
        "cores": cores(),
        "load_avg": load_avg,
    }


def _component_state(stack: LocalStack) -> dict[str, tuple[int, int | None]]:
    return {name: (stack.component(name).starts, stack.component(name).pid) for name in stack.components}


def _scenario(
    ctx: FaultContext, index: int, sc: Scenario, *, options: FaultOptions, workdir: Path, progress: Progress
) -> dict[str, Any]:
    stack = ctx.stack
    prefix = f"f{index + 1}"
    progress(f"[{sc.name}] {sc.what}")
    ids = [f"{prefix}-d{i + 1}" for i in range(options.devices)]
    hostile_id = f"{prefix}-h1"
    accounts = provision_devices(stack, [*ids, *([hostile_id] if sc.name in HOSTILE else [])])
    ctx.devices = ids
    if sc.name in HOSTILE:
        ctx.hostile, accounts = accounts[-1], accounts[:-1]
    before = _component_state(stack)
    load = LoadGeneratorProcess(
        accounts, url=stack.tls_url, ca_file=stack.ca_file, rate=options.rate, workdir=workdir / "load", name=prefix
    )
    sensor: str | None = None
    injected: list[dict[str, Any]] = []
    try:
        load.wait_ready(120.0)
        if sc.uses_sensor:
            sensor = ctx.sensor = stack.add_device(f"{prefix}-sensor", wait=True)
        time.sleep(options.steady_s / 2)  # steady load before the fault (a duration, not a synchronisation)
        if sc.name == MALFORMED:
            injected = load.inject(options.malformed_payloads)
        time.sleep(options.steady_s / 2)
        stack.check_alive()
        t_fault = time.monotonic()
        sc.inject(ctx)
        sc.repair(ctx)
        repaired_ns, t_repaired = time.time_ns(), time.monotonic()
        outage_s = t_repaired - t_fault
        recovery_s: float | None = None
        if sc.name != MALFORMED:
            progress(f"[{sc.name}] fault over after {outage_s:.1f} s; waiting for recovery")
            recovered = _wait_recovered(
                stack, load, ids, sensor=sensor, since_ns=repaired_ns, timeout=options.recovery_timeout_s
            )
            recovery_s = None if recovered is None else round(recovered - t_repaired, 2)
        time.sleep(options.steady_s)  # steady load after recovery
        stack.check_alive()
        result = load.stop(options.drain_s)
        offered = {d: Offered(n) for d, n in result["frames_per_device"].items()}
        if sensor is not None:
            offered[sensor] = _stop_sensor(stack, sensor, runs=2 if sc.name == DEVICE_REIMAGE else 1)
    finally:
        load.close()
    progress(f"[{sc.name}] load stopped; reading back the archive and the TSDB")
    archive, tsdb = _wait_landed(stack, offered, options.land_timeout_s)
    out = _counts(sc, offered, archive, tsdb, stack)
    everyone = [*offered, *([ctx.hostile.device_id] if ctx.hostile else [])]
    out["frames_without_verdict"] = _wait_verdicts(stack, everyone, timeout=REOFFER_WAIT_S)
    out.update({k: v for k, v in ctx.notes.items() if k != "victim"})
    if sc.name == SESSION_REPLAY:
        out.update(_replay_checks(stack, ctx.notes["victim"]))
    out.update(
        outage_s=round(outage_s, 2),
        recovery_s=recovery_s,
        unacked=result["unacked"],
        device_reconnects=result["reconnects"],
        unexpected_restarts=_unexpected_restarts(before, _component_state(stack), sc),
    )
    if sc.name == MALFORMED:
        out.update(_malformed_checks(stack, injected, ids))
    if sc.name == INFERENCE_KILL:
        stack.start_component(KILLED_NODE, wait=True)  # two nodes again for the next scenario
    progress(
        f"[{sc.name}] offered {out['offered']}, stored {out['stored']}, lost {out['lost']}, "
        f"duplicates {out['duplicates']}, without verdict {out['frames_without_verdict']}, "
        f"recovery {out['recovery_s']} s"
    )
    return out


def _stop_sensor(stack: LocalStack, name: str, runs: int = 1) -> Offered:
    """Stop the sensor gracefully (its spool flushes) and read its own count of captured frames.

    `runs`: how many of its processes' final counts to add up (a re-imaged sensor ran twice).
    """
    code = stack.stop(name)
    text = stack.component(name).log_path.read_text(encoding="utf-8", errors="replace")
    found = SENSOR_COUNTS.findall(text)
    if code != 0 or len(found) < runs:
        raise RuntimeError(f"sensor {name} did not stop cleanly (exit {code}): {stack.component(name).log_tail(3)}")
    total = 0
    for counts in found[-runs:]:
        captured, _spooled, still_spooled, _dropped = (int(v) for v in counts)
        if still_spooled:
            raise RuntimeError(f"sensor {name} stopped with {still_spooled} frames still spooled")
        total += captured
    # Frames dropped by a full spool were offered too: they count as lost, never as absent.
    return Offered(total, first=0)


def _tsdb(stack: LocalStack) -> LocalVictoriaMetrics:
    if stack.tsdb is None:
        raise RuntimeError("the fault bench needs the stack's TSDB")
    return stack.tsdb


def _wait_recovered(
    stack: LocalStack, load: LoadGeneratorProcess, ids: list[str], *, sensor: str | None, since_ns: int, timeout: float
) -> float | None:
    """The monotonic time at which every device was caught up again (see `landed.caught_up`), or None.

    Caught up: each load device got a verdict back for a frame captured after the repair, and
    the archive and the TSDB each hold every frame offered before it plus a newer one.
    """
    devices = [*ids, *([sensor] if sensor else [])]
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        snap = load.snapshot()
        if all(snap["devices"][d]["newest_verdict_capture_ns"] >= since_ns for d in ids):
            archive = archive_frames(stack.archive_path, devices)
            if all(_caught_up(archive, d, d == sensor, since_ns) for d in devices):
                tsdb = tsdb_frames(_tsdb(stack), devices)
                if all(_caught_up(tsdb, d, d == sensor, since_ns) for d in devices):
                    return now
        if now > deadline:
            return None
        time.sleep(POLL_S)  # polling other processes' stores, bounded by the deadline


def _caught_up(stored: StoredFrames, device: str, is_sensor: bool, since_ns: int) -> bool:
    seqs = stored.seqs(device)
    if not seqs:
        return False
    return caught_up(seqs, min(seqs) if is_sensor else 1, since_ns)


def _offered_keys(stored: StoredFrames, device: str, offered: Offered) -> set[FrameKey]:
    """The stored identities of frames `device` offered (a sensor's: all of them; its seqs skip events)."""
    keys = stored.identities(device)
    if offered.first == 0:
        return set(keys)
    return {k for k in keys if offered.first <= k[1] < offered.first + offered.count}


def _landed_count(stored: StoredFrames, device: str, offered: Offered) -> int:
    return len(_offered_keys(stored, device, offered))


def _wait_verdicts(stack: LocalStack, devices: list[str], timeout: float) -> int:
    """Frames in the archive without a stored verdict, once the bridge's re-offers had time to work."""
    deadline = time.monotonic() + timeout
    while True:
        missing = without_verdict(
            archive_frames(stack.archive_path, devices), archive_verdicts(stack.archive_path, devices)
        )
        if missing == 0 or time.monotonic() > deadline:
            return missing
        time.sleep(POLL_S)


def _wait_landed(stack: LocalStack, offered: dict[str, Offered], timeout: float) -> tuple[StoredFrames, StoredFrames]:
    """Read both stores until each holds every offered frame or `timeout` passed; the final reads."""
    expected = sum(o.count for o in offered.values())
    deadline = time.monotonic() + timeout
    while True:
        archive = archive_frames(stack.archive_path, offered)
        tsdb = tsdb_frames(_tsdb(stack), offered)
        got_a = sum(_landed_count(archive, d, o) for d, o in offered.items())
        got_t = sum(_landed_count(tsdb, d, o) for d, o in offered.items())
        if (got_a >= expected and got_t >= expected) or time.monotonic() > deadline:
            return archive, tsdb
        time.sleep(POLL_S)


def _counts(
    sc: Scenario, offered: dict[str, Offered], archive: StoredFrames, tsdb: StoredFrames, stack: LocalStack
) -> dict[str, Any]:
    total = stored = in_archive = in_tsdb = 0
    verdicts = archive_verdicts(stack.archive_path, offered)
    verdicts_missing = 0
    for device, o in offered.items():
        a = _offered_keys(archive, device, o)
        t = _offered_keys(tsdb, device, o)
        total += o.count
        in_archive += len(a)
        in_tsdb += len(t)
        stored += len(a & t)
        have = verdicts.get(device, set())
        verdicts_missing += sum(1 for k in a if k not in have and (NO_INCARNATION, k[1]) not in have)
    return {
        "name": sc.name,
        "offered": total,
        "stored": stored,
        "lost": total - stored,
        "duplicates": archive.duplicates + tsdb.duplicates,
        "stored_archive": in_archive,
        "stored_tsdb": in_tsdb,
        "archive_rewrites": archive.rewrites,
        "tsdb_rewrites": tsdb.rewrites,
        "tsdb_collisions": tsdb.collisions,
        "verdicts_missing": verdicts_missing,
    }


def _unexpected_restarts(
    before: dict[str, tuple[int, int | None]], after: dict[str, tuple[int, int | None]], sc: Scenario
) -> list[str]:
    return sorted(name for name, state in before.items() if after.get(name) != state and name not in sc.restarts)


def _malformed_checks(stack: LocalStack, injected: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """Every bad payload dead-lettered by each consumer that receives it; none of them stored."""
    letters = stack.monitor.deadletters()
    seen: set[tuple[str, str, int, bytes]] = set()
    for letter in letters:
        prefix = base64.b64decode(letter.payload_b64)[:INJECT_PREFIX_BYTES]
        seen.add((letter.component, letter.topic, letter.payload_size, prefix))
    expected = matched = 0
    for item in injected:
        channel = str(item["topic"]).rsplit("/", 1)[-1]
        prefix = base64.b64decode(str(item["prefix_b64"]))
        for group in deadletter_components(stack.options.bridges)[channel]:
            expected += 1
            matched += any((component, item["topic"], int(item["size"]), prefix) in seen for component in group)
    suspects = [*ids, *(impostor_id(d) for d in ids)]
    bad_archive = sum(1 for d in suspects for s in archive_frames(stack.archive_path, [d]).seqs(d) if s >= BAD_SEQ_BASE)
    bad_tsdb = sum(1 for d, f in tsdb_frames(_tsdb(stack), suspects).frames.items() for s in f if s >= BAD_SEQ_BASE)
    return {
        "injected": len(injected),
        "deadletters_expected": expected,
        "deadletters_matched": matched,
        "bad_stored": bad_archive + bad_tsdb,
    }


def _replay_checks(stack: LocalStack, victim: VictimSession) -> dict[str, Any]:
    """Did the replayed session id mix records: its session row or its frames no longer only the victim's?

    `mixed_records`: archive frames under the victim's session id that are not the victim
    device's or carry another patient_ref, plus one if the session row changed owner or woman.
    """
    rows = _archive_session_frames(stack, victim.session_id)
    foreign = sum(1 for device, patient in rows if device != victim.device_id or patient != victim.patient_ref)
    row = archive_session(stack.archive_path, victim.session_id)
    hijacked = row is None or row.device_id != victim.device_id or row.patient_ref != victim.patient_ref
    return {"mixed_records": foreign + int(hijacked), "session_row_hijacked": hijacked}


def _archive_session_frames(stack: LocalStack, session_id: str) -> list[tuple[str, str | None]]:
    import sqlite3

    conn = sqlite3.connect(f"{stack.archive_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = conn.execute("SELECT device_id, patient_ref FROM frames WHERE session_id = ?", (session_id,)).fetchall()
    finally:
        conn.close()
    return [(str(d), None if p is None else str(p)) for d, p in rows]
