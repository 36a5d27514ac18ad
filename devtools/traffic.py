"""What crosses the broker, counted by one read-everything subscriber (the demo, benches, drills).

Why a broker-side count: "frames published" and "verdicts" must be the same numbers however
the components are built, so they are counted where every message passes, by an account of
the admin role (the ACL lets it read `thermo/v1/#`). Frames are counted as distinct
(device, seq) pairs, so a redelivered frame counts once; `frames_received` keeps the raw count.

    monitor = TrafficMonitor(settings, password=...).start()
    monitor.wait_until(lambda s: s.frames_published >= 10, timeout=30)
    snap = monitor.snapshot()          # TrafficSnapshot: counts, per device, per node, sessions
    monitor.stop()

The handler runs on paho's network thread, so it only parses and counts: frame payloads are
read by their fixed header (device id, seq, capture time), not decoded pixel by pixel.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from contract.errors import ContractError
from contract.frame import FORMAT_VERSION
from contract.ids import INCARNATION_BYTES, LEGACY_INCARNATION
from contract.messages import (
    DeadLetter,
    DeviceState,
    DeviceStatus,
    NodeMetrics,
    NodeStatus,
    RfidEvent,
    RfidEventKind,
    SessionVerdict,
    Verdict,
    decode_message,
)
from contract.topics import ROOT, parse_topic
from transport.connection import Message, MqttConnection, MqttSettings

#: The TSF frame header up to the capture time (see contract/frame.py): magic, version, id length,
#: [device id], incarnation (format 2 only), seq, capture time.
_PREFIX = struct.Struct("<3sBB")
_INCARNATION = struct.Struct(f"<{INCARNATION_BYTES}s")
_SEQ_CAPTURE = struct.Struct("<Qq")
#: Recent session verdicts kept for display.
RECENT_SESSIONS = 20
#: Rate window: frames/s and verdicts/s are averaged over this many seconds.
RATE_WINDOW_S = 3.0
#: How often `wait_until` re-checks its predicate (snapshots are O(devices + nodes)).
CHECK_INTERVAL_S = 0.05
#: Capture-to-verdict latencies kept (the newest ones) for percentiles.
MAX_LATENCIES = 200_000


def frame_header(payload: bytes) -> tuple[str, str, int, int]:
    """(device id, incarnation, seq, capture_ns) from a frame's fixed header; ContractError if it is no frame.

    A format-1 frame has no incarnation and reads as the legacy one, as `decode_frame` does.
    """
    if len(payload) < _PREFIX.size:
        raise ContractError("frame truncated")
    magic, version, id_len = _PREFIX.unpack_from(payload, 0)
    at = _PREFIX.size + id_len
    incarnation_len = _INCARNATION.size if version == FORMAT_VERSION else 0
    if magic != b"TSF" or len(payload) < at + incarnation_len + _SEQ_CAPTURE.size:
        raise ContractError("not a thermoscreen frame")
    device = payload[_PREFIX.size : at].decode("ascii", errors="replace")
    incarnation = _INCARNATION.unpack_from(payload, at)[0].hex() if incarnation_len else LEGACY_INCARNATION
    seq, capture_ns = _SEQ_CAPTURE.unpack_from(payload, at + incarnation_len)
    return device, incarnation, int(seq), int(capture_ns)


def frame_key(payload: bytes) -> tuple[str, int, int]:
    """(device id, seq, capture_ns) from a frame's fixed header; ContractError if it is no frame."""
    device, _incarnation, seq, capture_ns = frame_header(payload)
    return device, seq, capture_ns


@dataclass
class DeviceTraffic:
    """One device as seen on the broker."""

    state: str = "unknown"
    #: (incarnation, seq): a re-imaged device starts its seq at 0 again under a new incarnation.
    frames: set[tuple[str, int]] = field(default_factory=set)
    verdicts: set[tuple[str, int]] = field(default_factory=set)
    flagged_verdicts: int = 0
    session_id: str | None = None
    session_started: float | None = None  # monotonic time the session_start was seen
    last_probability: float | None = None
    spool_depth: int | None = None
    online_count: int = 0  # "online" statuses received (a restart shows as one more)


@dataclass
class NodeTraffic:
    """One inference node or bridge as seen on the broker."""

    role: str = "unknown"
    state: str = "unknown"
    model_version: str | None = None
    verdicts: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    online_count: int = 0


@dataclass(frozen=True)
class SessionResult:
    device_id: str
    session_id: str
    patient_ref: str
    frames: int
    probability: float
    flagged: bool
    threshold: float
    model_version: str
    seen_ns: int
    inconclusive: bool = False


@dataclass(frozen=True)
class DeviceSnapshot:
    device_id: str
    state: str
    frames: int
    verdicts: int
    flagged_verdicts: int
    session_id: str | None
    session_age_s: float | None
    last_probability: float | None
    spool_depth: int | None
    online_count: int


@dataclass(frozen=True)
class NodeSnapshot:
    node_id: str
    role: str
    state: str
    model_version: str | None
    verdicts: int
    verdicts_per_s: float
    metrics: dict[str, float]
    online_count: int


@dataclass(frozen=True)
class TrafficSnapshot:
    """A consistent copy of the counters at one moment."""

    at: float  # time.monotonic()
    frames_published: int  # distinct (device, seq)
    frames_received: int  # every frame delivery, duplicates included
    verdicts: int  # distinct (device, seq) frame verdicts
    verdicts_received: int
    flagged_verdicts: int
    frames_per_s: float
    verdicts_per_s: float
    unverdicted: int  # frames without a verdict so far
    sessions_started: int
    sessions_ended: int
    sessions_awaiting_verdict: int  # ended with frames, no session verdict yet
    session_verdicts: int
    sessions_flagged: int  # to refer for follow-up: flagged and not inconclusive
    sessions_inconclusive: int  # inconclusive: repeat the capture
    deadletters: int
    recent_sessions: tuple[SessionResult, ...]
    devices: tuple[DeviceSnapshot, ...]
    nodes: tuple[NodeSnapshot, ...]

    @property
    def devices_online(self) -> int:
        return sum(d.state == DeviceState.ONLINE.value for d in self.devices)

    def node(self, node_id: str) -> NodeSnapshot | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def device(self, device_id: str) -> DeviceSnapshot | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    @property
    def all_verdicted(self) -> bool:
        """Every frame seen has a frame verdict, and every ended session with frames a session verdict."""
        return self.unverdicted == 0 and self.sessions_awaiting_verdict == 0


class TrafficMonitor:
    """Subscribes to `thermo/v1/#` and keeps the counts; thread-safe `snapshot()` and `wait_until()`."""

    def __init__(self, settings: MqttSettings, *, password: str | None = None, client_id: str | None = None) -> None:
        self.connection = MqttConnection(settings, password=password, client_id=client_id)
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceTraffic] = {}
        self._nodes: dict[str, NodeTraffic] = {}
        self._frames_received = 0
        self._verdicts_received = 0
        self._session_frames: dict[str, int] = {}  # ended sessions -> frames reported
        self._session_devices: dict[str, str] = {}
        self._session_verdicts: dict[str, SessionResult] = {}
        self._recent: deque[SessionResult] = deque(maxlen=RECENT_SESSIONS)
        self._deadletters: list[DeadLetter] = []
        self._history: deque[tuple[float, int, int]] = deque()
        self._node_history: dict[str, deque[tuple[float, int]]] = {}
        #: time.time() when the first frame verdict arrived (None before): the demo's time to first verdict.
        self.first_verdict_at: float | None = None
        self._frames_distinct = 0
        self._verdicts_distinct = 0
        self._flagged = 0
        #: Frames seen without a verdict yet, as (device, seq).
        self._pending: set[tuple[str, str, int]] = set()
        #: Capture-to-verdict latency in ms as the monitor sees it (verdict arrival - frame capture).
        self.latencies_ms: deque[float] = deque(maxlen=MAX_LATENCIES)
        self.malformed = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> TrafficMonitor:
        receipt = self.connection.subscribe(f"{ROOT}/#", self._on_message, qos=1)
        self.connection.start(wait=True)
        if not receipt.wait(timeout) or not receipt.granted:
            self.connection.stop()
            raise ConnectionError(f"the broker refused the monitor's subscription to {ROOT}/#")
        return self

    def stop(self) -> None:
        self.connection.stop()

    # -- counting (paho's network thread) --------------------------------------------------
    def _device(self, device_id: str) -> DeviceTraffic:
        dev = self._devices.get(device_id)
        if dev is None:
            dev = self._devices[device_id] = DeviceTraffic()
        return dev

    def _node(self, node_id: str) -> NodeTraffic:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = NodeTraffic()
        return node

    def _on_message(self, message: Message) -> None:
        try:
            info = parse_topic(message.topic)
            with self._lock:
                self._count(info.scope, info.channel, info.device_id, info.node_id, message.payload)
        except (ContractError, ValueError):
            self.malformed += 1

    def _count(self, scope: str, channel: str, device_id: str | None, node_id: str | None, payload: bytes) -> None:
        if scope == "device" and device_id is not None:
            dev = self._device(device_id)
            if channel == "frame":
                _, incarnation, seq, _capture_ns = frame_header(payload)
                key = (incarnation, seq)
                self._frames_received += 1
                if key not in dev.frames:
                    dev.frames.add(key)
                    self._frames_distinct += 1
                    if key not in dev.verdicts:
                        self._pending.add((device_id, incarnation, seq))
            elif channel == "verdict":
                verdict = decode_message(payload, Verdict)
                self._verdicts_received += 1
                key = (verdict.incarnation, verdict.seq)
                if key not in dev.verdicts:
                    if self.first_verdict_at is None:
                        self.first_verdict_at = time.time()
                    dev.verdicts.add(key)
                    self._verdicts_distinct += 1
                    dev.flagged_verdicts += int(verdict.flagged)
                    self._flagged += int(verdict.flagged)
                    dev.last_probability = verdict.probability
                    self._node(verdict.node_id).verdicts += 1
                    self._pending.discard((device_id, verdict.incarnation, verdict.seq))
                    self.latencies_ms.append((time.time_ns() - verdict.capture_ns) / 1e6)
            elif channel == "rfid":
                event = decode_message(payload, RfidEvent)
                self._session_devices[event.session_id] = device_id
                if event.event is RfidEventKind.SESSION_START:
                    dev.session_id, dev.session_started = event.session_id, time.monotonic()
                else:
                    self._session_frames[event.session_id] = event.frame_count or 0
                    if dev.session_id == event.session_id:
                        dev.session_id, dev.session_started = None, None
            elif channel == "status":
                status = decode_message(payload, DeviceStatus)
                dev.state = status.state.value
                dev.online_count += status.state is DeviceState.ONLINE
                dev.spool_depth = status.spool_depth
            elif channel == "session_verdict":
                sv = decode_message(payload, SessionVerdict)
                result = SessionResult(
                    device_id=sv.device_id,
                    session_id=sv.session_id,
                    patient_ref=sv.patient_ref,
                    frames=sv.frames,
                    probability=sv.probability,
                    flagged=sv.flagged,
                    threshold=sv.threshold,
                    model_version=sv.model_version,
                    seen_ns=time.time_ns(),
                    inconclusive=sv.inconclusive,
                )
                if sv.session_id not in self._session_verdicts:
                    self._recent.append(result)
                self._session_verdicts[sv.session_id] = result
        elif scope == "node" and node_id is not None:
            node = self._node(node_id)
            if channel == "status":
                node_status = decode_message(payload, NodeStatus)
                node.role, node.state = node_status.role.value, node_status.state.value
                node.online_count += node_status.state is DeviceState.ONLINE
                node.model_version = node_status.model_version or node.model_version
            else:
                metrics = decode_message(payload, NodeMetrics)
                node.role, node.metrics = metrics.role.value, dict(metrics.values)
                node.model_version = metrics.model_version or node.model_version
        elif scope == "deadletter":
            self._deadletters.append(decode_message(payload, DeadLetter))

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> TrafficSnapshot:
        now = time.monotonic()
        with self._lock:
            frames, verdicts = self._frames_distinct, self._verdicts_distinct
            self._history.append((now, frames, verdicts))
            while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_S:
                self._history.popleft()
            t0, f0, v0 = self._history[0]
            span = now - t0
            frames_per_s = (frames - f0) / span if span > 0.5 else 0.0
            verdicts_per_s = (verdicts - v0) / span if span > 0.5 else 0.0
            node_rate = self._node_rates(now)
            awaiting = sum(1 for sid, n in self._session_frames.items() if n > 0 and sid not in self._session_verdicts)
            devices = tuple(
                DeviceSnapshot(
                    device_id=name,
                    state=d.state,
                    frames=len(d.frames),
                    verdicts=len(d.verdicts),
                    flagged_verdicts=d.flagged_verdicts,
                    session_id=d.session_id,
                    session_age_s=None if d.session_started is None else now - d.session_started,
                    last_probability=d.last_probability,
                    spool_depth=d.spool_depth,
                    online_count=d.online_count,
                )
                for name, d in sorted(self._devices.items())
            )
            nodes = tuple(
                NodeSnapshot(
                    node_id=name,
                    role=n.role,
                    state=n.state,
                    model_version=n.model_version,
                    verdicts=n.verdicts,
                    verdicts_per_s=node_rate.get(name, 0.0),
                    metrics=dict(n.metrics),
                    online_count=n.online_count,
                )
                for name, n in sorted(self._nodes.items())
            )
            return TrafficSnapshot(
                at=now,
                frames_published=frames,
                frames_received=self._frames_received,
                verdicts=verdicts,
                verdicts_received=self._verdicts_received,
                flagged_verdicts=self._flagged,
                frames_per_s=frames_per_s,
                verdicts_per_s=verdicts_per_s,
                unverdicted=len(self._pending),
                sessions_started=len(self._session_devices),
                sessions_ended=len(self._session_frames),
                sessions_awaiting_verdict=awaiting,
                session_verdicts=len(self._session_verdicts),
                sessions_flagged=sum(r.flagged and not r.inconclusive for r in self._session_verdicts.values()),
                sessions_inconclusive=sum(r.inconclusive for r in self._session_verdicts.values()),
                deadletters=len(self._deadletters),
                recent_sessions=tuple(self._recent),
                devices=devices,
                nodes=nodes,
            )

    def _node_rates(self, now: float) -> dict[str, float]:
        """Verdicts/s per node over the rate window (caller holds the lock)."""
        rates = {}
        for name, node in self._nodes.items():
            hist = self._node_history.setdefault(name, deque())
            hist.append((now, node.verdicts))
            while len(hist) > 2 and now - hist[1][0] >= RATE_WINDOW_S:
                hist.popleft()
            t0, v0 = hist[0]
            rates[name] = (node.verdicts - v0) / (now - t0) if now - t0 > 0.5 else 0.0
        return rates

    def deadletters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._deadletters)

    def session_results(self) -> list[SessionResult]:
        with self._lock:
            return list(self._session_verdicts.values())

    def wait_until(
        self, predicate: Callable[[TrafficSnapshot], bool], timeout: float, *, poll: Callable[[], None] | None = None
    ) -> bool:
        """Block until `predicate(snapshot)` holds, checked every `CHECK_INTERVAL_S` (cheap at any rate).

        `poll` runs before every check (e.g. to raise if a component died). Returns False on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if poll is not None:
                poll()
            if predicate(self.snapshot()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, CHECK_INTERVAL_S))
