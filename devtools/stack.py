"""The whole system on one machine, as real processes: the demo, end-to-end benches, fault drills.

`LocalStack` provisions a broker exactly as production does (a `SecureBroker`, built on
`broker.provisioning`: site CA, TLS listener, loopback listener, one account per process, the
generated ACL), starts
Mosquitto, writes one TOML config per component, and runs N inference nodes, the bridge and
D simulated devices as `thermoscreen <job> --config FILE` child processes (logs in
`workdir/logs/<name>.log`). A `TrafficMonitor` (account `admin.monitor`, which may read
`thermo/v1/#`) counts everything that crosses the broker.

Usage::

    from devtools.stack import LocalStack, StackOptions, SessionPlan

    with LocalStack(workdir, StackOptions(devices=2, nodes=2)) as stack:   # start(): all online
        stack.monitor.wait_until(lambda s: s.verdicts >= 50, timeout=60)
        stack.kill("infer-1")                  # SIGKILL one component (a fault drill)
        stack.restart("infer-1")               # start it again, same config and account
        stack.broker.kill(); stack.start_broker()    # the broker (a LocalMosquitto) itself
        report = stack.shutdown()              # graceful; see ShutdownReport
    # leaving the block without shutdown() stops everything (reverse order, SIGTERM then SIGKILL)

Component names: devices `<device_prefix>-1..D` (also their device ids and usernames),
inference nodes `infer-1..N` (accounts `inference.infer-<i>`), the bridge `bridge` (node id
`main`, account `bridge.main`). `stack.device_ids`, `stack.node_ids`, `BRIDGE` list them.

Options (`StackOptions`): `devices`, `nodes`, `rate_hz` (frames/s per device), `model_dir`
(default: the shipped `contract/model/shipped/thermal`), `replay` (a DMR-IR .npz for the replay source;
default synthetic frames), `sessions` (a `SessionPlan` of scripted card scans; None: no card
reader, and `anonymous_capture` should be True so frames flow), `anonymous_capture`,
`bridge` (False: no bridge), `influx_url` or `tsdb=True` (start a local VictoriaMetrics and
point the bridge's Influx sink at it), `durable` (synchronous=full for spool and queue),
`sensor_overrides` / `inference_overrides` / `bridge_overrides` (dotted config keys, e.g.
`{"spool.window": 64}`), `metrics_interval_s`, `status_interval_s`, `session_grace_s`,
`startup_timeout_s`.

Other methods: `stop(name)` (SIGTERM, graceful), `kill(name)`, `start_component(name)`,
`restart(name, kill=False)`, `pause(name)` / `resume(name)` (SIGSTOP / SIGCONT),
`add_inference_node()` and `add_device()` (scale out while running), `provision(role, name)`
and `provision_device(id)` (extra accounts for bench clients; the running broker reloads),
`settings(creds)` / `connect(creds)` (in-process clients over TLS), `wait_online(names)`,
`drain(timeout)`, `archive_counts()`, `check_alive()`, `start_broker()` / `restart_broker()`
(use these rather than `broker.start()`: they keep the terminal's Ctrl-C away from the
broker), `describe()`. `start_component`/`restart` wait for a *new* online announcement, not
a stale status. Attributes: `secure_broker` (the SecureBroker: provisioning, files,
accounts), `broker` (its LocalMosquitto process), `monitor` (TrafficMonitor), `accounts`
(name -> Credentials, incl. `monitor`), `tls_url`, `local_url`, `ca_file`, `site_key_file`,
`broker_dir`, `archive_path`, `queue_path`, `log_dir`, `config_dir`, `data_dir`, `tsdb`
(LocalVictoriaMetrics or None). Children run in their own session (no terminal Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from broker.accounts import Role
from broker.provisioning import Credentials
from devtools import component_toml, stack_configs
from devtools.local_mosquitto import LocalMosquitto
from devtools.processes import ChildProcess, Supervisor
from devtools.secure_broker import SecureBroker
from devtools.stack_configs import SessionPlan
from devtools.traffic import DeviceSnapshot, NodeSnapshot, TrafficMonitor, TrafficSnapshot
from transport.connection import MqttConnection, MqttSettings

if TYPE_CHECKING:
    from devtools.local_tsdb import LocalVictoriaMetrics

__all__ = ["BRIDGE", "LocalStack", "SessionPlan", "ShutdownReport", "StackOptions", "shipped_model_dir"]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The component name of the bridge, and its node id (account `bridge.main`).
BRIDGE = "bridge"
BRIDGE_NODE_ID = "main"
MONITOR_NAME = "monitor"
PASSWORD_ENV = "THERMOSCREEN_MQTT_PASSWORD"


def bridge_name(k: int) -> str:
    """The component name of bridge k (1-based): `bridge`, `bridge-2`, ..."""
    return BRIDGE if k == 1 else f"{BRIDGE}-{k}"


def bridge_node_id(k: int) -> str:
    return BRIDGE_NODE_ID if k == 1 else f"{BRIDGE_NODE_ID}-{k}"


def shipped_model_dir() -> Path:
    """The model the repository ships (`contract/model/shipped/thermal`); the inference nodes' default."""
    return REPO_ROOT / "contract" / "model" / "shipped" / "thermal"


@dataclass(frozen=True)
class StackOptions:
    devices: int = 3
    nodes: int = 2
    rate_hz: float = 4.0
    model_dir: Path | None = None
    replay: Path | None = None
    sessions: SessionPlan | None = field(default_factory=SessionPlan)
    anonymous_capture: bool = False
    bridge: bool = True
    #: Bridges: 1 (role single), or a `sessions` bridge plus `bridges - 1` `storage` bridges
    #: sharing the frames (`[cluster]`), one archive file and one TSDB.
    bridges: int = 1
    influx_url: str | None = None
    tsdb: bool = False
    durable: bool = False
    device_prefix: str = "demo"
    metrics_interval_s: float = 1.0
    status_interval_s: float = 1.0
    session_grace_s: float = 0.5
    startup_timeout_s: float = 120.0
    sensor_overrides: Mapping[str, object] = field(default_factory=dict)
    inference_overrides: Mapping[str, object] = field(default_factory=dict)
    bridge_overrides: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.devices <= 999:
            raise ValueError(f"devices must be 0..999, got {self.devices}")
        if not 0 <= self.nodes <= 99:
            raise ValueError(f"inference nodes must be 0..99, got {self.nodes}")
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        if not 1 <= self.bridges <= 8:
            raise ValueError(f"bridges must be 1..8, got {self.bridges}")
        if self.influx_url is not None and self.tsdb:
            raise ValueError("give either influx_url or tsdb=True, not both")


@dataclass(frozen=True)
class ShutdownReport:
    """How a graceful shutdown went."""

    drained: bool  # every frame verdicted, every ended session verdicted, every frame archived
    traffic: TrafficSnapshot  # the monitor's final counts
    archive: dict[str, int]  # rows per archive table after the bridge stopped ({} without bridge)
    exit_codes: dict[str, int | None]
    drain_s: float


class LocalStack:
    """A secured broker plus the system's processes in `workdir` (see the module docstring)."""

    def __init__(self, workdir: Path, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.workdir = Path(workdir).resolve()
        self.log_dir = self.workdir / "logs"
        self.config_dir = self.workdir / "config"
        self.data_dir = self.workdir / "data"
        self.archive_path = self.data_dir / "archive.sqlite"
        self.queue_path = self.data_dir / "bridge-queue.sqlite"
        self.model_dir = (self.options.model_dir or shipped_model_dir()).resolve()
        self.supervisor = Supervisor(self.log_dir)
        self.accounts: dict[str, Credentials] = {}
        self.device_ids: list[str] = []
        self.node_ids: list[str] = []
        self._secure: SecureBroker | None = None
        self._monitor: TrafficMonitor | None = None
        self.tsdb: LocalVictoriaMetrics | None = None
        self._device_count = 0
        self._node_count = 0

    # -- addresses -------------------------------------------------------------------------
    @property
    def secure_broker(self) -> SecureBroker:
        """The provisioned broker (files, accounts, the Mosquitto process)."""
        if self._secure is None:
            raise RuntimeError("the stack's broker was not started")
        return self._secure

    @property
    def broker(self) -> LocalMosquitto:
        return self.secure_broker.process

    @property
    def port(self) -> int:
        return self.secure_broker.port

    @property
    def tls_port(self) -> int:
        return self.secure_broker.tls_port

    @property
    def tls_url(self) -> str:
        """Where the components connect: the TLS listener, as in production."""
        return self.secure_broker.tls_url

    @property
    def local_url(self) -> str:
        """The plaintext loopback listener (passwords and ACL still apply); the monitor uses it."""
        return self.secure_broker.local_url

    @property
    def broker_dir(self) -> Path:
        return self.secure_broker.dir

    @property
    def ca_file(self) -> Path:
        return self.secure_broker.ca_file

    @property
    def site_key_file(self) -> Path:
        return self.secure_broker.site_key_file

    @property
    def monitor(self) -> TrafficMonitor:
        if self._monitor is None:
            raise RuntimeError("the stack's monitor was not started")
        return self._monitor

    @property
    def influx_url(self) -> str | None:
        return self.tsdb.url if self.tsdb is not None else self.options.influx_url

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalStack:
        """Broker, monitor, bridge and inference nodes (online), then the devices (online)."""
        try:
            self._start_broker()
            if self.options.tsdb:
                from devtools.local_tsdb import LocalVictoriaMetrics

                self.tsdb = LocalVictoriaMetrics(self.workdir / "tsdb" / "data").start()
            services = []
            if self.options.bridge:
                services += [self._spawn_bridge(k) for k in range(1, self.options.bridges + 1)]
            for _ in range(self.options.nodes):
                services.append(self._spawn_inference())
            self.wait_online(services)
            devices = [self._spawn_device() for _ in range(self.options.devices)]
            self.wait_online(devices)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop whatever still runs, in reverse start order (SIGTERM, SIGKILL after 10 s)."""
        self.supervisor.stop_all(timeout=10.0)
        if self._monitor is not None:
            self._monitor.stop()
        if self._secure is not None:
            self._secure.stop()
        if self.tsdb is not None:
            self.tsdb.stop()

    def shutdown(self, drain_timeout_s: float = 30.0, stop_timeout_s: float = 30.0) -> ShutdownReport:
        """Graceful: devices first (sessions end, spools flush), wait until every frame and ended
        session has its verdict and every frame is archived (at most `drain_timeout_s`), then
        the inference nodes, the bridge, the monitor and the broker."""
        codes: dict[str, int | None] = {}
        codes.update(self._stop_group(self.device_ids, stop_timeout_s))
        started = time.monotonic()
        drained = self.drain(drain_timeout_s)
        drain_s = time.monotonic() - started
        codes.update(self._stop_group(self.node_ids, stop_timeout_s))
        if self.options.bridge:
            codes.update(self._stop_group(self.bridge_names, stop_timeout_s))
        traffic = self.monitor.snapshot()
        archive = self.archive_counts() if self.options.bridge else {}
        self.close()
        return ShutdownReport(drained=drained, traffic=traffic, archive=archive, exit_codes=codes, drain_s=drain_s)

    def drain(self, timeout: float) -> bool:
        """Wait until the monitor saw a verdict for every frame and every ended session, and the
        bridge archived every frame seen; False if that did not happen within `timeout`."""

        def done(snap: TrafficSnapshot) -> bool:
            if not snap.all_verdicted:
                return False
            if not self.options.bridge:
                return True
            counts = self.archive_counts()
            return (
                counts.get("frames", 0) >= snap.frames_published
                and counts.get("session_verdicts", 0) >= snap.session_verdicts
            )

        return self.monitor.wait_until(done, timeout)

    def archive_counts(self) -> dict[str, int]:
        """Rows in the bridge's archive: sessions, verdicts, frames, session_verdicts ({} before it exists)."""
        from cloud_bridge.archive import Archive, ArchiveError

        if not self.archive_path.exists():
            return {}
        try:
            with Archive(self.archive_path) as archive:
                counts = archive.counts()
                row = archive.connection.execute("SELECT COUNT(*) FROM sessions WHERE probability IS NOT NULL")
                counts["session_verdicts"] = int(row.fetchone()[0])
                return counts
        except (ArchiveError, OSError):
            return {}

    # -- the broker and accounts -----------------------------------------------------------
    def _start_broker(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._secure = SecureBroker(self.workdir)
        self.accounts[MONITOR_NAME] = self._secure.add_service(Role.ADMIN, MONITOR_NAME)
        self.start_broker()
        creds = self.accounts[MONITOR_NAME]
        settings = self.settings(creds, tls=False)
        self._monitor = TrafficMonitor(settings, password=creds.password).start()

    def start_broker(self) -> None:
        """Start (or start again, after `broker.stop()`/`broker.kill()`) Mosquitto, same config and ports.

        Use this rather than `broker.start()`: it keeps the terminal's Ctrl-C away from the broker.
        """
        self.secure_broker.start()

    def restart_broker(self) -> None:
        """Stop the broker (SIGTERM) and start it again; clients reconnect on their own."""
        self.secure_broker.restart()

    def provision(self, role: Role | str, name: str) -> Credentials:
        """A new service account `<role>.<name>` (the running broker reloads before this returns)."""
        return self.secure_broker.add_service(role, name)

    def provision_device(self, device_id: str) -> Credentials:
        """A new device account (username = device id); the running broker reloads."""
        return self.secure_broker.add_device(device_id)

    def settings(self, creds: Credentials, *, tls: bool = True, **overrides: Any) -> MqttSettings:
        """MqttSettings for an in-process client with this account (TLS by default)."""
        return self.secure_broker.settings(creds, tls=tls, **{"connect_timeout_s": 10.0, **overrides})

    def connect(self, creds: Credentials, *, tls: bool = True, **overrides: Any) -> MqttConnection:
        """A started connection as this account."""
        return MqttConnection(self.settings(creds, tls=tls, **overrides), password=creds.password).start()

    # -- components ------------------------------------------------------------------------
    def _write_config(self, name: str, config: BaseModel) -> Path:
        header = f"{name}: generated by devtools.stack; the password is in ${PASSWORD_ENV}"
        return component_toml.write(self.config_dir / f"{name}.toml", config, header=header)

    def _spawn(self, name: str, args: list[str], creds: Credentials) -> ChildProcess:
        env = {PASSWORD_ENV: creds.password, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        return self.supervisor.spawn(name, args, env=env, cwd=self.workdir)

    @property
    def bridge_names(self) -> list[str]:
        """Component names of the bridges: `bridge` (the single or sessions one), `bridge-2`, ..."""
        return [bridge_name(k) for k in range(1, self.options.bridges + 1)] if self.options.bridge else []

    def _spawn_bridge(self, k: int = 1) -> str:
        name, node_id = bridge_name(k), bridge_node_id(k)
        creds = self.accounts[name] = self.provision(Role.BRIDGE, node_id)
        role = "single" if self.options.bridges == 1 else ("sessions" if k == 1 else "storage")
        config = stack_configs.bridge_config(
            node_id=node_id,
            url=self.tls_url,
            creds=creds,
            queue=self.queue_path if k == 1 else self.data_dir / f"bridge-queue-{k}.sqlite",
            archive=self.archive_path,
            influx_url=self.influx_url,
            metrics_interval_s=self.options.metrics_interval_s,
            session_grace_s=self.options.session_grace_s,
            durable=self.options.durable,
            overrides={"cluster.role": role, **self.options.bridge_overrides},
        )
        path = self._write_config(name, config)
        self._spawn(name, ["bridge", "--config", str(path), "--progress-s", "5", "--json"], creds)
        return name

    def _spawn_inference(self, name: str | None = None) -> str:
        if name is None:
            self._node_count += 1
            name = f"infer-{self._node_count}"
        creds = self.accounts[name] = self.provision(Role.INFERENCE, name)
        config = stack_configs.inference_config(
            node_id=name,
            url=self.tls_url,
            creds=creds,
            model_dir=self.model_dir,
            metrics_interval_s=self.options.metrics_interval_s,
            overrides=self.options.inference_overrides,
        )
        path = self._write_config(name, config)
        self._spawn(name, ["infer", "--config", str(path), "--node-id", name], creds)
        self.node_ids.append(name)
        return name

    def _spawn_device(self, device_id: str | None = None) -> str:
        index = self._device_count
        self._device_count += 1
        device_id = device_id or f"{self.options.device_prefix}-{index + 1}"
        creds = self.accounts[device_id] = self.provision_device(device_id)
        cards = None
        if self.options.sessions is not None:
            cards = self.config_dir / f"{device_id}.cards"
            self.config_dir.mkdir(parents=True, exist_ok=True)
            cards.write_text(stack_configs.card_script(self.options.sessions, index), encoding="utf-8")
        config = stack_configs.sensor_config(
            device_id=device_id,
            url=self.tls_url,
            creds=creds,
            rate_hz=self.options.rate_hz,
            spool=self.data_dir / f"spool-{device_id}.sqlite",
            site_key_file=self.site_key_file,
            cards=cards,
            replay=self.options.replay,
            anonymous_capture=self.options.anonymous_capture,
            status_interval_s=self.options.status_interval_s,
            durable=self.options.durable,
            overrides=self.options.sensor_overrides,
        )
        path = self._write_config(device_id, config)
        self._spawn(device_id, ["sensor", "--config", str(path)], creds)
        self.device_ids.append(device_id)
        return device_id

    def add_inference_node(self, *, wait: bool = True) -> str:
        """Start one more inference node (scale out); returns its name."""
        name = self._spawn_inference()
        if wait:
            self.wait_online([name])
        return name

    def add_device(self, device_id: str | None = None, *, wait: bool = True) -> str:
        """Start one more simulated device; returns its device id."""
        name = self._spawn_device(device_id)
        if wait:
            self.wait_online([name])
        return name

    def component(self, name: str) -> ChildProcess:
        return self.supervisor.get(name)

    @property
    def components(self) -> list[str]:
        return [c.name for c in self.supervisor.children]

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful) and wait; returns the exit code."""
        return self.component(name).stop(timeout)

    def kill(self, name: str) -> None:
        """SIGKILL: the component vanishes mid-work."""
        self.component(name).kill()

    def pause(self, name: str) -> None:
        """SIGSTOP: the component hangs (its connection goes silent) until `resume`."""
        self.component(name).send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.component(name).send_signal(signal.SIGCONT)

    def start_component(self, name: str, *, wait: bool = True) -> None:
        """Start a stopped or killed component again with its config (spools and queues persist).

        With `wait`, returns once the *new* process announced itself online (not a stale status).
        """
        before = self._online_counts([name])
        self.component(name).start()
        if wait:
            self.wait_online([name], after=before)

    def restart(self, name: str, *, kill: bool = False, wait: bool = True) -> None:
        """Stop (SIGTERM, or SIGKILL with `kill`) and start again; with `wait`, until it is back online."""
        child = self.component(name)
        if kill:
            child.kill()
        else:
            child.stop()
        self.start_component(name, wait=wait)

    def check_alive(self) -> None:
        """Raise RuntimeError (with its log tail) if a component died that nobody stopped."""
        self.supervisor.check_alive()

    def wait_online(
        self, names: Iterable[str], timeout: float | None = None, *, after: Mapping[str, int] | None = None
    ) -> None:
        """Block until each named component announced itself online on the broker, or raise.

        `after` ({name: count} from `_online_counts`) asks for an announcement newer than that.
        """
        wanted = list(names)
        timeout = self.options.startup_timeout_s if timeout is None else timeout
        after = after or {}

        def announced(snap: TrafficSnapshot, name: str) -> bool:
            status = self._status_of(snap, name)
            return status is not None and status.state == "online" and status.online_count > after.get(name, 0)

        if not self.monitor.wait_until(lambda s: all(announced(s, n) for n in wanted), timeout, poll=self.check_alive):
            snap = self.monitor.snapshot()
            missing = [n for n in wanted if not announced(snap, n)]
            tails = "; ".join(f"{n}: {self.component(n).log_tail(2)}" for n in missing)
            raise RuntimeError(f"not online after {timeout:.0f} s: {', '.join(missing)} ({tails})")

    def _status_of(self, snap: TrafficSnapshot, name: str) -> DeviceSnapshot | NodeSnapshot | None:
        """What the monitor knows of component `name` (the bridge under its node id)."""
        if name in self.bridge_names:
            return snap.node(bridge_node_id(self.bridge_names.index(name) + 1))
        if name in self.node_ids:
            return snap.node(name)
        return snap.device(name)

    def _online_counts(self, names: Iterable[str]) -> dict[str, int]:
        snap = self.monitor.snapshot()
        counts = {}
        for name in names:
            status = self._status_of(snap, name)
            counts[name] = 0 if status is None else status.online_count
        return counts

    def _stop_group(self, names: Iterable[str], timeout: float) -> dict[str, int | None]:
        """SIGTERM all of them at once, then wait for each (they shut down in parallel)."""
        children = [self.component(n) for n in names]
        for child in children:
            child.request_stop()
        return {child.name: child.stop(timeout) for child in children}

    def describe(self) -> str:
        """One line: what runs where (for logs and the demo's header)."""
        parts = [
            f"broker {self.tls_url} (TLS, {len(self.accounts)} accounts)",
            f"{len(self.device_ids)} devices",
            f"{len(self.node_ids)} inference nodes",
        ]
        if self.options.bridge:
            parts.append(f"{self.options.bridges} bridge(s) (archive {self.archive_path})")
        return ", ".join(parts) + f"; pid {os.getpid()}, logs in {self.log_dir}"
