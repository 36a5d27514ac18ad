"""The faults of `thermoscreen bench faults` (nine; ten with `--bridges 2`): what each breaks, how, how repaired.

Each scenario has an `inject` step (the fault) and a `repair` step; the runner puts steady load
on the stack before, during and after, and measures recovery from the end of `repair` (the
moment the broken part is back). Durations are the issue's (TSDB down 60 s, device cut off
2 min) times `--duration-scale`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.cuttable_relay import CuttableRelay
    from devtools.load_generator import DeviceAccount
    from devtools.stack import LocalStack

BROKER_RESTART = "broker_restart"
TSDB_OUTAGE = "tsdb_outage"
BRIDGE_KILL = "bridge_kill"
INFERENCE_KILL = "inference_kill"
DEVICE_CUTOFF = "device_cutoff"
MALFORMED = "malformed_payloads"
DEVICE_REIMAGE = "device_reimage"
SESSION_REPLAY = "session_replay"
HOSTILE_FLOOD = "hostile_flood"
STORAGE_BRIDGE_KILL = "storage_bridge_kill"

SCENARIOS = (
    BROKER_RESTART,
    TSDB_OUTAGE,
    BRIDGE_KILL,
    INFERENCE_KILL,
    DEVICE_CUTOFF,
    MALFORMED,
    DEVICE_REIMAGE,
    SESSION_REPLAY,
    HOSTILE_FLOOD,
)
#: Scenarios that need several bridges (`--bridges 2`); with them, the default runs these too.
CLUSTER_SCENARIOS = (STORAGE_BRIDGE_KILL,)
#: The storage bridge the cluster scenario kills (the sessions bridge is `bridge`).
STORAGE_BRIDGE = "bridge-2"
#: Scenarios whose fault is a hostile device account (provisioned by the runner, not counted as offered).
HOSTILE = (SESSION_REPLAY, HOSTILE_FLOOD)

#: The issue's outage lengths at --duration-scale 1.
TSDB_OUTAGE_S = 60.0
CUTOFF_S = 120.0
#: The node SIGKILLed in the inference scenario (the other one keeps serving).
KILLED_NODE = "infer-2"


@dataclass
class FaultContext:
    """What the steps act on."""

    stack: LocalStack
    relay: CuttableRelay | None
    scale: float
    #: The scenario's real sensor process (device id), if it uses one.
    sensor: str | None = None
    #: The scenario's load devices (the first is the session replayer's victim).
    devices: list[str] = field(default_factory=list)
    #: The hostile device account of a HOSTILE scenario.
    hostile: DeviceAccount | None = None
    #: What the fault itself reports (merged into the scenario's figures).
    notes: dict[str, Any] = field(default_factory=dict)

    def outage(self, seconds: float) -> float:
        return seconds * self.scale


Step = Callable[[FaultContext], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    inject: Step
    repair: Step
    #: Components the fault itself restarts (so they are not "unexpected restarts").
    restarts: tuple[str, ...] = ()
    #: Whether the scenario uses a real sensor process behind the cuttable relay.
    uses_sensor: bool = False


def _nothing(ctx: FaultContext) -> None:
    return None


def _stop_broker(ctx: FaultContext) -> None:
    ctx.stack.broker.stop()  # SIGTERM: Mosquitto saves its persistent sessions and exits


def _start_broker(ctx: FaultContext) -> None:
    ctx.stack.start_broker()  # same config and ports; keeps a terminal Ctrl-C away from the broker


def _stop_tsdb(ctx: FaultContext) -> None:
    assert ctx.stack.tsdb is not None
    ctx.stack.tsdb.stop()
    time.sleep(ctx.outage(TSDB_OUTAGE_S))  # the outage itself: the fault's duration


def _start_tsdb(ctx: FaultContext) -> None:
    assert ctx.stack.tsdb is not None
    ctx.stack.tsdb.start()


def _kill_bridge(ctx: FaultContext) -> None:
    ctx.stack.kill("bridge")


def _restart_bridge(ctx: FaultContext) -> None:
    ctx.stack.start_component("bridge", wait=True)


def _kill_storage_bridge(ctx: FaultContext) -> None:
    ctx.stack.kill(STORAGE_BRIDGE)  # its frames in flight come back to it; their verdicts wait for its receipts


def _restart_storage_bridge(ctx: FaultContext) -> None:
    ctx.stack.start_component(STORAGE_BRIDGE, wait=True)


def _kill_node(ctx: FaultContext) -> None:
    ctx.stack.kill(KILLED_NODE)


def _cut_device(ctx: FaultContext) -> None:
    assert ctx.relay is not None
    ctx.relay.cut()
    time.sleep(ctx.outage(CUTOFF_S))  # the outage itself: the fault's duration


def _reconnect_device(ctx: FaultContext) -> None:
    assert ctx.relay is not None
    ctx.relay.restore()


def _stop_and_wipe_sensor(ctx: FaultContext) -> None:
    """Re-image: the sensor stops (its spool drained to the broker), then its spool files are deleted."""
    assert ctx.sensor is not None
    code = ctx.stack.stop(ctx.sensor)
    if code != 0:
        raise RuntimeError(f"sensor {ctx.sensor} did not stop cleanly (exit {code})")
    spool = ctx.stack.data_dir / f"spool-{ctx.sensor}.sqlite"
    for path in spool.parent.glob(f"{spool.name}*"):  # the database and its -wal/-shm files
        path.unlink()
    ctx.notes["spool_deleted"] = not spool.exists()


def _start_sensor(ctx: FaultContext) -> None:
    assert ctx.sensor is not None
    ctx.stack.start_component(ctx.sensor, wait=True)  # same config and device id, a fresh spool


def _replay_session(ctx: FaultContext) -> None:
    from devtools.bench.faults_hostile import replay_session, victim_session

    assert ctx.hostile is not None and ctx.devices
    victim = victim_session(ctx.stack.archive_path, ctx.devices[0])
    ctx.notes["victim"] = victim
    ctx.notes.update(replay_session(ctx.stack, ctx.hostile, victim))


def _flood(ctx: FaultContext) -> None:
    from devtools.bench.faults_hostile import FLOOD_S, flood

    assert ctx.hostile is not None
    ctx.notes.update(flood(ctx.stack, ctx.hostile, max(1.0, FLOOD_S * min(1.0, ctx.scale * 10))))


def scenario(name: str) -> Scenario:
    table = {
        BROKER_RESTART: Scenario(
            BROKER_RESTART, "Mosquitto stopped (SIGTERM) and started again", _stop_broker, _start_broker
        ),
        TSDB_OUTAGE: Scenario(TSDB_OUTAGE, "VictoriaMetrics stopped for 60 s x scale", _stop_tsdb, _start_tsdb),
        BRIDGE_KILL: Scenario(
            BRIDGE_KILL, "bridge SIGKILLed and started again", _kill_bridge, _restart_bridge, restarts=("bridge",)
        ),
        INFERENCE_KILL: Scenario(
            INFERENCE_KILL, f"{KILLED_NODE} of two nodes SIGKILLed", _kill_node, _nothing, restarts=(KILLED_NODE,)
        ),
        DEVICE_CUTOFF: Scenario(
            DEVICE_CUTOFF,
            "a sensor process's link to the broker cut for 120 s x scale (its spool holds the frames)",
            _cut_device,
            _reconnect_device,
            uses_sensor=True,
        ),
        STORAGE_BRIDGE_KILL: Scenario(
            STORAGE_BRIDGE_KILL,
            "a storage bridge of two SIGKILLed and started again (several bridges)",
            _kill_storage_bridge,
            _restart_storage_bridge,
            restarts=(STORAGE_BRIDGE,),
        ),
        MALFORMED: Scenario(MALFORMED, "malformed and oversized payloads mixed into good traffic", _nothing, _nothing),
        DEVICE_REIMAGE: Scenario(
            DEVICE_REIMAGE,
            "a sensor process re-imaged mid-run (stopped, its spool deleted, started again)",
            _stop_and_wipe_sensor,
            _start_sensor,
            uses_sensor=True,
        ),
        SESSION_REPLAY: Scenario(
            SESSION_REPLAY,
            "a second device account replays the first device's session id, with another patient_ref",
            _replay_session,
            _nothing,
        ),
        HOSTILE_FLOOD: Scenario(
            HOSTILE_FLOOD,
            "one device account floods valid and invalid messages as fast as it can for a few seconds",
            _flood,
            _nothing,
        ),
    }
    try:
        return table[name]
    except KeyError:
        known = ", ".join((*SCENARIOS, *CLUSTER_SCENARIOS))
        raise ValueError(f"unknown scenario {name!r}: expected one of {known}") from None
