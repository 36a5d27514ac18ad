"""Simulated devices for the end-to-end and fault benches: D devices at R frames/s each, one process.

Each device logs in with its own device account (username = device id, as the ACL wants)
over its own connection, opens a session (RfidEvent `session_start`), publishes frames at a
paced rate on its frame topic (QoS 1) and subscribes to its own verdict topic, so latency is
measured where a clinician would see it: from `capture_ns` in the frame to the verdict
arriving back at the device. Publishing is paced by one thread for all devices (tick k
goes to device k mod D), so the offered load is even; a tick more than `MAX_LAG_S` late is
skipped and counted instead of being sent in a burst.

Why it is cheap per frame (issue 17: 1,000 frames/s from 200 TLS devices): each device's
frames are encoded once per image at start (`FrameTemplates`) and each frame is that
template with its seq and capture time patched in (a 1.6 KB copy, not an encode and pixel
check); the pacer keeps a deadline schedule (tick k is due at t0 + k/rate), wakes at most
every `PACE_QUANTUM_S` and sends every tick that is due, instead of one sleep per frame; and
acknowledgements are counted for one device per tick instead of all devices every 64.
The ACL lets each device account publish only on its own topics, so it stays one connection
(and paho network thread) per device; `bench e2e --load-procs N` splits the devices over N
generator processes.

Run as its own process (so it never shares a GIL with what it measures):

    python -m devtools.load_generator --accounts FILE --url URL --ca CA --rate R

`FILE` is JSON `[{"device_id": ..., "password": ...}, ...]` (mode 0600, written by the bench).
It prints one JSON line per event on stdout and reads commands on stdin, one per line:

- (printed at start) `{"event": "ready", ...}` once every device is connected and subscribed;
- `snapshot` -> `{"event": "snapshot", ...}`: counts so far and, per device, the capture time
  of the newest frame whose verdict came back (the benches' recovery check);
- `inject N` -> `{"event": "injected", "payloads": [...]}`: N malformed or oversized payloads
  published on the devices' own frame and rfid topics between good frames (fault bench);
- `stop DRAIN_S [WINDOW_START_NS WINDOW_END_NS]` -> `{"event": "result", ...}`: stop
  publishing, end the sessions, wait up to DRAIN_S for every PUBACK and verdict, then report
  (latency percentiles over verdicts of frames captured inside the window, if given).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import json
import os
import secrets
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.frame import Frame, SensorKind, decode_frame, encode_frame
from contract.ids import INCARNATION_BYTES, new_incarnation, new_session_id, validate_device_id
from contract.messages import RfidEvent, RfidEventKind, SessionEndReason, encode_message
from contract.sensor import CENTI_PER_C, MAX_OBJECT_C, MIN_OBJECT_C, MLX_SHAPE
from contract.topics import frame_topic, rfid_topic, verdict_topic
from devtools.load_loop import DeviceLoop, LoopConnection
from transport.connection import Message, MqttConnection, MqttSettings, PublishReceipt

#: Distinct synthetic images cycled through (encoding is per frame; the pixels are reused).
IMAGE_POOL = 32
#: A tick this late is skipped (and counted) rather than sent in a catch-up burst.
MAX_LAG_S = 0.25
#: A device's frames are at least this far apart in capture time, as a real camera's are
#: (32 frames/s at most). Stores keyed by time at ms precision (VictoriaMetrics trims Influx
#: timestamps to 1 ms) would otherwise fold two frames of one device into one point.
MIN_CAPTURE_GAP_NS = 1_000_000
#: The pacer sleeps at least this long between wake-ups and then sends every tick that is due
#: (at 1,000 frames/s: about 2 frames per wake-up instead of a sleep per frame).
PACE_QUANTUM_S = 0.002
#: seq and capture_ns in the TSF header (contract/frame.py): after magic, version, id length,
#: the device id and the incarnation.
_SEQ_CAPTURE = struct.Struct("<Qq")
_HEADER_BEFORE_ID = 5
#: Sequence numbers of injected bad frames start here, far from any good frame's.
BAD_SEQ_BASE = 1_000_000_000
#: Bytes of each injected payload reported back, enough to recognise its dead letter.
INJECT_PREFIX_BYTES = 48
#: However much is still arriving, the generator stops waiting for verdicts after this long.
MAX_DRAIN_S = 600.0
#: Sequence numbers without a verdict reported per device (all of them, up to this many).
MISSING_REPORTED = 100_000
#: Oversized payloads stay under the broker's max_packet_size (1 MiB) so consumers see them.
OVERSIZED_BYTES = (70_000, 900_000)


@dataclass(frozen=True)
class DeviceAccount:
    device_id: str
    password: str


def read_accounts(path: Path) -> list[DeviceAccount]:
    """The accounts file the bench wrote (a JSON list of device_id/password objects)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read device accounts: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of accounts")
    return [DeviceAccount(validate_device_id(str(a["device_id"])), str(a["password"])) for a in raw]


def write_accounts(path: Path, accounts: list[DeviceAccount]) -> Path:
    """Write the accounts file with owner-only permissions (it holds passwords)."""
    data = json.dumps([{"device_id": a.device_id, "password": a.password} for a in accounts])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data)
    return path


def image_pool(n: int = IMAGE_POOL, seed: int = 11) -> list[npt.NDArray[np.int16]]:
    """Emulated MLX90640 frames (int16 centi-degrees) of synthetic patients, half with a hot spot."""
    from contract.sensor import emulate_mlx_frame
    from sensor_node.synthetic_scene import random_patient, torso_scene

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        temps = emulate_mlx_frame(torso_scene(96, 128, random_patient(rng, sick=bool(i % 2)), rng), rng)
        out.append(np.rint(np.clip(temps, MIN_OBJECT_C, MAX_OBJECT_C) * CENTI_PER_C).astype(np.int16))
    return out


class FrameTemplates:
    """One device's frames encoded once per image; `frame(seq, capture_ns)` patches the two fields in.

    Why: encoding checks every pixel against the contract and joins the parts, which was the
    generator's own largest cost per frame after paho; the pixels and the session fields of a
    device never change during a run, only seq and capture time do. Each template is checked
    once by decoding a patched copy, so a template that would not decode as the frame it
    claims to be is refused at start, not sent 5,000 times.
    """

    def __init__(self, frames: list[Frame]) -> None:
        if not frames:
            raise ValueError("no images to build frame templates from")
        device = frames[0].device_id.encode("ascii")
        self._offset = _HEADER_BEFORE_ID + len(device) + INCARNATION_BYTES
        self._templates = [encode_frame(f) for f in frames]
        for k, frame in enumerate(frames):
            check = decode_frame(self.frame(k, frame.seq + 1, frame.capture_ns + 1))
            if (check.device_id, check.seq, check.capture_ns) != (frame.device_id, frame.seq + 1, frame.capture_ns + 1):
                raise ValueError(f"{frame.device_id}: frame template {k} does not patch (header layout changed?)")

    def __len__(self) -> int:
        return len(self._templates)

    def frame(self, index: int, seq: int, capture_ns: int) -> bytes:
        """Template `index` with `seq` and `capture_ns` written into its header (a new bytes object)."""
        buf = bytearray(self._templates[index])
        _SEQ_CAPTURE.pack_into(buf, self._offset, seq, capture_ns)
        return bytes(buf)  # paho keeps the payload for redelivery: never a shared, mutable buffer


@dataclass
class _Verdicts:
    """Verdicts a device received (network thread writes, under the device lock)."""

    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    malformed: int = 0
    newest_capture_ns: int = 0
    #: (capture_ns, latency_ns) of each first verdict per seq.
    latencies: list[tuple[int, int]] = field(default_factory=list)


class SimulatedDevice:
    """One device: its own account and connection, a session, paced frames, its verdicts."""

    def __init__(
        self,
        account: DeviceAccount,
        settings: MqttSettings,
        images: list[npt.NDArray[np.int16]],
        loop: DeviceLoop | None = None,
    ) -> None:
        self.device_id = account.device_id
        #: New per simulated device and run: a rerun starts seq at 0 again, like a re-imaged device.
        self.incarnation = new_incarnation()
        device_settings = settings.model_copy(update={"username": account.device_id, "client_id": account.device_id})
        #: With a loop, paho is driven by its one thread (see devtools.load_loop); without, by its own.
        self.connection: MqttConnection = (
            LoopConnection(device_settings, password=account.password, loop=loop)
            if loop is not None
            else MqttConnection(device_settings, password=account.password)
        )
        self._loop = loop
        self.session_id = new_session_id()
        self.patient_ref = secrets.token_hex(8)
        self._templates = FrameTemplates(
            [
                Frame(
                    device_id=self.device_id,
                    seq=0,
                    capture_ns=0,
                    centi=image,
                    ambient_c=24.0,
                    sensor=SensorKind.SYNTHETIC,
                    session_id=self.session_id,
                    patient_ref=self.patient_ref,
                    incarnation=self.incarnation,
                )
                for image in images
            ]
        )
        self._frame_topic = frame_topic(self.device_id)
        self._rfid_topic = rfid_topic(self.device_id)
        self.seq = 0  # last sequence number used (0: the session_start)
        self._last_capture_ns = 0
        self.frames = 0
        self.sent_ns: dict[int, int] = {}
        self._receipts: deque[PublishReceipt] = deque()
        self._reap_lock = threading.Lock()
        self.acked = 0
        self.rejected = 0
        self.verdicts = _Verdicts()
        self._lock = threading.Lock()
        self._verdict_topic = verdict_topic(self.device_id)

    # -- lifecycle -----------------------------------------------------------------------------
    def connect(self, timeout: float) -> None:
        receipt = self.connection.subscribe(self._verdict_topic, self._on_verdict, qos=1)
        self.connection.start(wait=True)
        if not receipt.wait(timeout) or not receipt.granted:
            raise ConnectionError(f"{self.device_id}: subscription to its verdicts refused: {receipt.reason_codes}")
        self.on_network(lambda: self._publish_event(RfidEventKind.SESSION_START, 0))

    def on_network(self, fn: Callable[[], None]) -> None:
        """Run `fn` where this device's paho client may be used: the loop's thread, or here."""
        if self._loop is not None:
            self._loop.run(fn)
        else:
            fn()

    def _publish_event(self, kind: RfidEventKind, seq: int) -> None:
        event = RfidEvent(
            event=kind,
            device_id=self.device_id,
            session_id=self.session_id,
            patient_ref=self.patient_ref,
            ts_ns=time.time_ns(),
            seq=seq,
            frame_count=self.frames if kind is RfidEventKind.SESSION_END else None,
            reason=SessionEndReason.CARD if kind is RfidEventKind.SESSION_END else None,
            incarnation=self.incarnation,
        )
        self._receipts.append(self.connection.publish(self._rfid_topic, encode_message(event), qos=1))

    def end_session(self) -> None:
        self.seq += 1
        self._publish_event(RfidEventKind.SESSION_END, self.seq)

    # -- frames (publisher thread) -------------------------------------------------------------
    def publish_frame(self) -> None:
        self.seq += 1
        seq = self.seq
        capture_ns = time.time_ns()
        gap = capture_ns - self._last_capture_ns
        if gap < MIN_CAPTURE_GAP_NS:  # catching up after a stall: never two captures in one ms
            time.sleep((MIN_CAPTURE_GAP_NS - gap) / 1e9)
            capture_ns = time.time_ns()
        self._last_capture_ns = capture_ns
        payload = self._templates.frame(seq % len(self._templates), seq, capture_ns)
        self.sent_ns[seq] = capture_ns
        self.frames += 1
        self._receipts.append(self.connection.publish(self._frame_topic, payload, qos=1))

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._receipts.append(self.connection.publish(topic, payload, qos=1))

    def reap(self) -> int:
        """Count acknowledged publishes from the head of the window; returns how many remain."""
        with self._reap_lock:
            receipts = self._receipts
            while receipts and receipts[0].done:
                if receipts.popleft().accepted:
                    self.acked += 1
                else:
                    self.rejected += 1
            return len(receipts)

    # -- verdicts (network thread) -------------------------------------------------------------
    def _on_verdict(self, message: Message) -> None:
        now = time.time_ns()
        try:
            data = json.loads(message.payload)
            seq, capture_ns = int(data["seq"]), int(data["capture_ns"])
            incarnation = data.get("incarnation")
        except (ValueError, KeyError, TypeError, AttributeError):
            with self._lock:
                self.verdicts.malformed += 1
            return
        if incarnation != self.incarnation:  # a verdict for an earlier run's frame with the same seq
            return
        with self._lock:
            v = self.verdicts
            if seq in v.seqs:
                v.duplicates += 1
                return
            v.seqs.add(seq)
            v.latencies.append((capture_ns, now - capture_ns))
            v.newest_capture_ns = max(v.newest_capture_ns, capture_ns)

    def verdict_state(self) -> tuple[int, int, int]:
        """(verdicts received, duplicates, newest verdicted capture_ns)."""
        with self._lock:
            return len(self.verdicts.seqs), self.verdicts.duplicates, self.verdicts.newest_capture_ns

    def missing_verdicts(self) -> list[int]:
        with self._lock:
            return [s for s in self.sent_ns if s not in self.verdicts.seqs]


def impostor_id(device_id: str) -> str:
    """The device id an injected frame falsely claims (a valid id that is not the publisher's)."""
    return ("y" if device_id.startswith("x") else "x") + device_id[:31]


def bad_payloads(device: SimulatedDevice, index: int) -> list[tuple[str, bytes]]:
    """One malformed or oversized payload for `device` (six kinds in turn), recognisable by its first bytes.

    Near-misses are built from a valid frame: truncated, claiming another device, a pixel
    outside the contract's range; the rest are garbage, oversized and broken JSON.
    """
    marker = f"bad-{device.device_id}-{index}-".encode()
    frame_t, rfid_t = frame_topic(device.device_id), rfid_topic(device.device_id)
    seq = BAD_SEQ_BASE + index

    base = Frame(
        device_id=device.device_id,
        seq=seq,
        capture_ns=time.time_ns(),
        centi=np.full(MLX_SHAPE, 3300, dtype=np.int16),
        session_id=device.session_id,
        patient_ref=device.patient_ref,
        incarnation=device.incarnation,
    )

    def frame_bytes(**changes: Any) -> bytes:
        return encode_frame(dataclasses.replace(base, **changes))

    other_device = impostor_id(device.device_id)
    truncated = frame_bytes()[:-17]
    hot = bytearray(frame_bytes())
    hot[-2:] = (31000).to_bytes(2, "little", signed=True)  # one pixel at 310 C: outside the contract
    kind = index % 6
    if kind == 0:
        return [(frame_t, marker + secrets.token_bytes(200))]  # garbage
    if kind == 1:
        return [(frame_t, truncated)]
    if kind == 2:
        return [(frame_t, bytes(hot))]
    if kind == 3:
        return [(frame_t, frame_bytes(device_id=other_device))]  # claims another device
    if kind == 4:
        size = OVERSIZED_BYTES[(index // 6) % len(OVERSIZED_BYTES)]
        return [(frame_t, marker + bytes(size - len(marker)))]  # oversized
    return [(rfid_t, b'{"v": 1, "event": "session_start", "marker": "' + marker + b'"')]  # broken JSON


class LoadGenerator:
    """D simulated devices, paced by one thread at `rate` frames/s per device."""

    def __init__(
        self, accounts: list[DeviceAccount], settings: MqttSettings, rate: float, *, single_loop: bool = False
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        images = image_pool()
        #: `single_loop`: every connection and the pacer in one thread (devtools.load_loop).
        self._loop = DeviceLoop().start() if single_loop else None
        self.devices = [SimulatedDevice(a, settings, images, self._loop) for a in accounts]
        self.rate = rate
        self.skipped = 0
        self.started_ns = 0
        self.stopped_ns = 0
        self._stop = threading.Event()
        self._inject: deque[tuple[SimulatedDevice, str, bytes]] = deque()
        self._thread = threading.Thread(target=self._pace, name="load-publisher", daemon=True)
        self._period = 1.0 / (rate * max(1, len(self.devices)))
        self._t0 = 0.0
        self._tick = 0

    def connect(self, timeout: float = 30.0) -> None:
        errors: list[str] = []

        def one(device: SimulatedDevice) -> None:
            try:
                device.connect(timeout)
            except Exception as exc:
                errors.append(f"{device.device_id}: {exc}")

        threads = [threading.Thread(target=one, args=(d,)) for d in self.devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise ConnectionError("; ".join(errors[:3]))

    def start(self) -> None:
        self.started_ns = time.time_ns()
        self._t0 = time.monotonic()
        if self._loop is not None:
            self._loop.on_tick = lambda: max(self._pace_step(), PACE_QUANTUM_S)
        else:
            self._thread.start()

    def _pace(self) -> None:
        """The pacer's own thread (without a single loop)."""
        while not self._stop.is_set():
            wait = self._pace_step()
            time.sleep(max(wait, PACE_QUANTUM_S))  # pacing the load, not synchronisation

    def _pace_step(self) -> float:
        """Deadline schedule: tick k is due at t0 + k * period; send every due tick, return s to the next."""
        devices, period = self.devices, self._period
        now = time.monotonic()
        due = self._t0 + self._tick * period
        if due > now:
            return due - now
        if now - due > MAX_LAG_S:
            behind = int((now - due) / period)
            self.skipped += behind
            self._tick += behind
        last_due = int((now - self._t0) / period)
        while self._tick <= last_due and not self._stop.is_set():
            self._send_tick(devices[self._tick % len(devices)], self._tick)
            self._tick += 1
        return self._t0 + self._tick * period - time.monotonic()

    def _send_tick(self, device: SimulatedDevice, tick: int) -> None:
        device.publish_frame()
        if self._inject and tick % 3 == 0:
            bad_device, topic, payload = self._inject.popleft()
            bad_device.publish_raw(topic, payload)
        device.reap()  # each device's acks are counted once per round of ticks

    def inject(self, count: int) -> list[dict[str, object]]:
        """Queue `count` bad payloads to go out between good frames; describe each."""
        described: list[dict[str, object]] = []
        for i in range(count):
            device = self.devices[i % len(self.devices)]
            for topic, payload in bad_payloads(device, i):
                self._inject.append((device, topic, payload))
                described.append(
                    {
                        "topic": topic,
                        "size": len(payload),
                        "prefix_b64": base64.b64encode(payload[:INJECT_PREFIX_BYTES]).decode("ascii"),
                    }
                )
        return described

    def injections_pending(self) -> int:
        return len(self._inject)

    def snapshot(self) -> dict[str, Any]:
        per_device = {}
        offered = verdicts = duplicates = acked = 0
        for d in self.devices:
            d.reap()
            n, dup, newest = d.verdict_state()
            per_device[d.device_id] = {
                "offered": d.frames,
                "verdicts": n,
                "newest_verdict_capture_ns": newest,
                "connects": d.connection.connect_count,
            }
            offered += d.frames
            verdicts += n
            duplicates += dup
            acked += d.acked
        return {
            "event": "snapshot",
            "t_ns": time.time_ns(),
            "offered": offered,
            "acked": acked,
            "verdicts": verdicts,
            "verdict_duplicates": duplicates,
            "skipped_ticks": self.skipped,
            "injections_pending": len(self._inject),
            "reconnects": sum(d.connection.connect_count - 1 for d in self.devices),
            "devices": per_device,
        }

    def stop(self, drain_s: float, window: tuple[int, int] | None) -> dict[str, Any]:
        """Stop publishing, end sessions, wait for PUBACKs and verdicts, report.

        The wait ends when everything is in, or when nothing new arrived for `drain_s` (a
        backlog that is still draining is waited for, up to `MAX_DRAIN_S`).
        """
        self._stop.set()
        if self._loop is not None:
            self._loop.run(self._stop_pacing)
        elif self._thread.is_alive():
            self._thread.join()
        self.stopped_ns = time.time_ns()
        while self._inject:  # anything not yet sent goes out now
            device, topic, payload = self._inject.popleft()
            device.on_network(functools.partial(device.publish_raw, topic, payload))
        for d in self.devices:
            d.on_network(d.end_session)
        hard_deadline = time.monotonic() + MAX_DRAIN_S
        last_progress, last_state = time.monotonic(), (-1, -1)
        while time.monotonic() < hard_deadline:
            pending = sum(d.reap() for d in self.devices)
            verdicts = sum(d.verdict_state()[0] for d in self.devices)
            if pending == 0 and verdicts >= sum(d.frames for d in self.devices):
                break
            if (pending, verdicts) != last_state:
                last_progress, last_state = time.monotonic(), (pending, verdicts)
            elif time.monotonic() - last_progress > drain_s:
                break
            time.sleep(0.02)  # polling other threads' progress, bounded by the deadlines
        result = self._result(window)
        for d in self.devices:
            d.connection.stop()
        if self._loop is not None:
            self._loop.close()
        return result

    def _stop_pacing(self) -> None:
        assert self._loop is not None
        self._loop.on_tick = None

    def _result(self, window: tuple[int, int] | None) -> dict[str, Any]:
        offered = acked = unacked = rejected = verdicts = duplicates = malformed = 0
        latencies: list[int] = []
        in_window = offered_in_window = 0
        missing: dict[str, list[int]] = {}
        for d in self.devices:
            unacked += d.reap()
            offered += d.frames
            acked += d.acked
            rejected += d.rejected
            with d._lock:
                v = d.verdicts
                verdicts += len(v.seqs)
                duplicates += v.duplicates
                malformed += v.malformed
                for capture_ns, latency_ns in v.latencies:
                    if window is None or window[0] <= capture_ns < window[1]:
                        latencies.append(latency_ns)
                if window is not None:
                    in_window += sum(1 for c, lat in v.latencies if window[0] <= c + lat < window[1])
            if window is not None:
                offered_in_window += sum(1 for c in d.sent_ns.values() if window[0] <= c < window[1])
            gone = d.missing_verdicts()
            if gone:
                missing[d.device_id] = gone[:MISSING_REPORTED]
        lat_ms = np.asarray(latencies, dtype=np.float64) / 1e6
        pct = {f"p{q}_ms": round(float(np.percentile(lat_ms, q)), 3) if lat_ms.size else None for q in (50, 95, 99)}
        elapsed_s = max(1e-9, (self.stopped_ns - self.started_ns) / 1e9)
        return {
            "event": "result",
            "devices": len(self.devices),
            "rate_per_device": self.rate,
            "offered": offered,
            "offered_fps": round(offered / elapsed_s, 2),
            "publish_s": round(elapsed_s, 3),
            "skipped_ticks": self.skipped,
            "acked": acked,
            "unacked": unacked,
            "rejected": rejected,
            "verdicts": verdicts,
            "verdict_duplicates": duplicates,
            "verdicts_malformed": malformed,
            "verdicts_missing": offered - verdicts,
            "verdicts_in_window": in_window,
            "offered_in_window": offered_in_window,
            "latency_samples": int(lat_ms.size),
            # The window's samples themselves, so results of several generators can be merged.
            "window_latencies_ms": [round(float(v), 3) for v in lat_ms] if window is not None else [],
            "max_ms": round(float(lat_ms.max()), 3) if lat_ms.size else None,
            **pct,
            "reconnects": sum(d.connection.connect_count - 1 for d in self.devices),
            "frames_per_device": {d.device_id: d.frames for d in self.devices},
            "missing_verdicts": missing,
        }


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.load_generator", description=__doc__)
    parser.add_argument("--accounts", type=Path, required=True, help="JSON file of device accounts")
    parser.add_argument("--url", required=True, help="broker URL (mqtts://...)")
    parser.add_argument("--ca", type=Path, help="CA certificate for TLS")
    parser.add_argument("--rate", type=float, required=True, help="frames/s per device")
    parser.add_argument(
        "--single-loop",
        action="store_true",
        help="drive every connection and the pacer from one thread (healthy broker only: see devtools.load_loop)",
    )
    args = parser.parse_args(argv)
    settings = MqttSettings(url=args.url, ca_file=args.ca, qos=1, connect_timeout_s=30.0)
    generator = LoadGenerator(read_accounts(args.accounts), settings, args.rate, single_loop=args.single_loop)
    generator.connect()
    generator.start()
    _emit({"event": "ready", "devices": len(generator.devices), "t_ns": generator.started_ns})
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        command = parts[0]
        if command == "snapshot":
            _emit(generator.snapshot())
        elif command == "inject":
            _emit({"event": "injected", "payloads": generator.inject(int(parts[1]))})
        elif command == "stop":
            drain = float(parts[1]) if len(parts) > 1 else 30.0
            window = (int(parts[2]), int(parts[3])) if len(parts) > 3 else None
            _emit(generator.stop(drain, window))
            return 0
        else:
            _emit({"event": "error", "message": f"unknown command {command!r}"})
    generator.stop(5.0, None)  # stdin closed: the bench went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
