"""The sensor node: capture frames, track sessions from card scans, spool everything, publish.

Threads: `capture` reads the thermal source at the configured rate and spools frames of the
open session (or all frames with anonymous capture); `rfid` turns card scans into session
events; `status` publishes the retained `DeviceStatus` on every connect and periodically;
`SpoolPublisher` drains the spool to the broker; in edge mode `edge` scores the session frames
with LiteRT and shows a provisional result when a session ends (sensor_node/edge.py). Frames
and events take their sequence numbers from the spool under one lock, so a session's start,
frames and end are numbered in order. Every frame and message carries the spool's
incarnation, so a re-imaged device (new spool, seq from 0 again) never reuses a (device,
incarnation, seq). Never imports TensorFlow.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from contract.frame import Frame, encode_frame
from contract.ids import make_patient_ref
from contract.messages import DeviceState, DeviceStatus, RfidEvent, RfidEventKind, SessionEndReason, encode_message
from contract.sensor import MAX_AMBIENT_C, MAX_OBJECT_C, MIN_AMBIENT_C, MIN_OBJECT_C
from contract.topics import frame_topic, rfid_topic, session_verdict_topic, status_topic
from sensor_node.config import SensorConfig
from sensor_node.edge import EdgeScorer, ProvisionalResult
from sensor_node.publisher import SpoolPublisher
from sensor_node.result_display import Indicator, ResultDisplay, ShownResult
from sensor_node.rfid import TapSource
from sensor_node.session import OpenSessionSlot, SessionChange
from sensor_node.spool import RowKind, Spool
from sensor_node.thermal_source import SensorTimeout, TemperatureArray, ThermalSource
from transport.connection import Message, MqttConnection, Will

if TYPE_CHECKING:
    from contract.model.model_runner import ModelRunner

log = logging.getLogger(__name__)

FIRMWARE = "thermoscreen-sensor-0.1.0"
#: How long the rfid loop waits for a scan before checking the session timeout again.
RFID_WAIT_S = 0.2
#: A capture loop this far behind its schedule skips ahead instead of catching up.
MAX_CATCH_UP_S = 0.25


@dataclass
class NodeCounters:
    frames_captured: int = 0
    frames_spooled: int = 0
    frames_outside_session: int = 0
    sensor_errors: int = 0
    reader_errors: int = 0
    late_ticks: int = 0
    sessions_started: int = 0
    sessions_ended: int = 0


class SensorNode:
    """One device. Owns its source, reader, spool and connection, and closes them at the end of `run`."""

    def __init__(
        self,
        config: SensorConfig,
        *,
        source: ThermalSource,
        taps: TapSource,
        site_key: bytes,
        spool: Spool,
        connection: MqttConnection | None = None,
        edge_model: ModelRunner | None = None,
    ) -> None:
        self.config = config
        self.device_id = config.device.id
        self.source = source
        self.taps = taps
        self.spool = spool
        self.incarnation = spool.incarnation
        self._site_key = site_key
        self.counters = NodeCounters()
        self._frame_topic = frame_topic(self.device_id)
        self._rfid_topic = rfid_topic(self.device_id)
        self._status_topic = status_topic(self.device_id)
        self._qos = config.mqtt.qos
        self._session_slot = OpenSessionSlot(config.session.timeout_s)
        self._session_lock = threading.Lock()
        self._new_subject = threading.Event()
        self._halt = threading.Event()
        self._status_due = threading.Event()
        will = Will(
            self._status_topic,
            encode_message(DeviceStatus(state=DeviceState.OFFLINE, incarnation=self.incarnation)),
            qos=1,
            retain=True,
        )
        self.connection = connection or MqttConnection(
            config.mqtt,
            client_id=config.mqtt.client_id or f"thermoscreen-sensor-{self.device_id}",
            will=will,
            on_connect=self._status_due.set,
        )
        self.publisher = SpoolPublisher(
            spool, self.connection, window=config.spool.window, ack_timeout_s=config.spool.ack_timeout_s
        )
        self._threads: list[threading.Thread] = []
        self.results = ResultDisplay(
            self.device_id, self.incarnation, Indicator(config.result), on_shown=self._result_shown
        )
        #: Edge mode (a model given): scores session frames on its own thread for a provisional result.
        self.edge = EdgeScorer(edge_model, config.edge, self._provisional) if edge_model is not None else None

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self, stop: threading.Event, duration_s: float | None = None) -> NodeCounters:
        """Run until `stop` is set or `duration_s` passed; then end the session, flush and close."""
        try:
            self.start()
            stop.wait(duration_s)
        finally:
            self.shutdown()
        return self.counters

    def start(self) -> None:
        self.connection.subscribe(session_verdict_topic(self.device_id), self._on_session_verdict, qos=1)
        self.connection.start(wait=False)
        self.publisher.start()
        if self.edge is not None:
            self.edge.start()
        for name, target in (("capture", self._capture_loop), ("rfid", self._rfid_loop), ("status", self._status_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """End the open session (reason shutdown), wait up to flush_timeout_s for the spool, go offline."""
        self._halt.set()
        self._status_due.set()  # wakes the status thread so it can exit
        for thread in self._threads[:2]:
            thread.join(timeout=max(5.0, self.config.frame_timeout_s + 1))
        with self._session_lock:
            self._store_change(self._session_slot.end(SessionEndReason.SHUTDOWN))
        if self.edge is not None:
            self.edge.close()  # the ended session still gets its provisional result
        flush_s = self.config.spool.flush_timeout_s
        if self.connection.connected.is_set() and not self.spool.wait_until_empty(flush_s):
            log.warning("%d messages still spooled at exit; they are sent on the next start", self.spool.depth)
        self.publisher.stop()
        for thread in self._threads[2:]:
            thread.join(timeout=5)
        if self.connection.connected.is_set():
            receipt = self.connection.publish(
                self._status_topic, encode_message(self._status(DeviceState.OFFLINE)), qos=1, retain=True
            )
            receipt.wait(2.0)
        self.connection.stop()
        self.results.close()
        for close in (self.taps.close, self.source.close, self.spool.close):
            try:
                close()
            except Exception:
                log.exception("closing %s failed", getattr(close, "__self__", close))

    # -- frames --------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        period = 1.0 / self.config.source.rate_hz
        next_tick = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if now < next_tick:
                self._halt.wait(next_tick - now)
                continue
            next_tick += period
            if now - next_tick > max(MAX_CATCH_UP_S, 2 * period):  # far behind: skip, do not burst
                self.counters.late_ticks += 1
                next_tick = now + period
            try:
                self._capture_once(now)
            except SensorTimeout as exc:
                self.counters.sensor_errors += 1
                log.error("sensor timeout: %s", exc)
            except sqlite3.Error as exc:
                log.error("cannot write to the spool: %s", exc)
                self._halt.wait(1.0)
            except Exception as exc:  # a device keeps capturing; the log says what went wrong
                self.counters.sensor_errors += 1
                log.error("sensor read failed: %s: %s", type(exc).__name__, exc)
                self._halt.wait(min(1.0, 10 * period))

    def _capture_once(self, now: float) -> None:
        self._check_timeout(now)
        if self._new_subject.is_set():
            self._new_subject.clear()
            self.source.next_subject()
        temps, ambient = self.source.read()
        self.counters.frames_captured += 1
        self._store_frame(temps, ambient, time.time_ns())

    def _store_frame(self, temps: TemperatureArray, ambient_c: float, capture_ns: int) -> None:
        temps = np.clip(temps, MIN_OBJECT_C, MAX_OBJECT_C)
        ambient = float(min(max(ambient_c, MIN_AMBIENT_C), MAX_AMBIENT_C))
        with self._session_lock:
            session = self._session_slot.current
            if session is None and not self.config.session.anonymous_capture:
                self.counters.frames_outside_session += 1
                return

            def payload(seq: int) -> bytes:
                return encode_frame(
                    Frame.from_celsius(
                        temps,
                        device_id=self.device_id,
                        seq=seq,
                        capture_ns=capture_ns,
                        ambient_c=ambient,
                        sensor=self.source.sensor_kind,
                        session_id=session.session_id if session else None,
                        patient_ref=session.patient_ref if session else None,
                        incarnation=self.incarnation,
                    )
                )

            self.spool.append(RowKind.FRAME, self._frame_topic, payload, qos=self._qos)
            self._session_slot.count_frame()
            self.counters.frames_spooled += 1
            if self.edge is not None and session is not None:
                self.edge.submit(session.session_id, temps)  # hands the frame over; never waits for scoring

    # -- sessions ------------------------------------------------------------------------------
    def _rfid_loop(self) -> None:
        while not self._halt.is_set():
            try:
                uid = self.taps.next_tap(RFID_WAIT_S)
            except Exception as exc:  # a flaky reader must not stop the device; the UID is never logged
                self.counters.reader_errors += 1
                log.error("card reader failed: %s", type(exc).__name__)
                self._halt.wait(1.0)
                continue
            try:
                if uid is None:
                    self._check_timeout(time.monotonic())
                else:
                    self.scan(make_patient_ref(uid, self._site_key))
            except sqlite3.Error as exc:
                log.error("cannot spool a session event: %s", exc)

    def scan(self, patient_ref: str) -> None:
        """A card with this pseudonym was scanned."""
        with self._session_lock:
            changes = self._session_slot.on_scan(patient_ref, time.monotonic())
            for change in changes:
                self._store_change(change)
        if any(change.event is RfidEventKind.SESSION_START for change in changes):
            self._new_subject.set()
        self._status_due.set()

    def _check_timeout(self, now: float) -> None:
        with self._session_lock:
            change = self._session_slot.check_timeout(now)
            self._store_change(change)
        if change is not None:
            self._status_due.set()

    def _store_change(self, change: SessionChange | None) -> None:
        """Spool the RfidEvent for a session change (caller holds the session lock)."""
        if change is None:
            return
        session = change.session
        ending = change.event is RfidEventKind.SESSION_END
        ts_ns = time.time_ns()

        def payload(seq: int) -> bytes:
            return encode_message(
                RfidEvent(
                    event=change.event,
                    device_id=self.device_id,
                    session_id=session.session_id,
                    patient_ref=session.patient_ref,
                    ts_ns=ts_ns,
                    seq=seq,
                    frame_count=session.frame_count if ending else None,
                    reason=change.reason,
                    incarnation=self.incarnation,
                )
            )

        self.spool.append(RowKind.EVENT, self._rfid_topic, payload, qos=self._qos)
        if ending:
            if self.edge is not None:
                self.edge.end_session(session.session_id)
            self.counters.sessions_ended += 1
            log.info("session %s ended (%s) after %d frames", session.session_id, change.reason, session.frame_count)
        else:
            self.counters.sessions_started += 1
            log.info("session %s started for patient_ref %s", session.session_id, session.patient_ref)

    @property
    def current_session_id(self) -> str | None:
        session = self._session_slot.current
        return session.session_id if session else None

    # -- status --------------------------------------------------------------------------------
    def _on_session_verdict(self, message: Message) -> None:
        self.results.handle(message.payload)

    def _provisional(self, result: ProvisionalResult) -> None:
        self.results.show_provisional(result.session_id, result.result)

    def _result_shown(self, shown: ShownResult) -> None:
        self._status_due.set()  # the retained status carries the result at once

    def _status(self, state: DeviceState) -> DeviceStatus:
        last, provisional = self.results.shown()
        return DeviceStatus(
            last_session_id=last.session_id if last else None,
            last_result=last.result if last else None,
            provisional_session_id=provisional.session_id if provisional else None,
            provisional_result=provisional.result if provisional else None,
            state=state,
            ts_ns=time.time_ns(),
            firmware=self.config.device.firmware or FIRMWARE,
            source=self.config.source.kind.value,
            spool_depth=self.spool.depth,
            spool_dropped_frames=self.spool.dropped_frames,
            session_id=self.current_session_id if state is DeviceState.ONLINE else None,
            incarnation=self.incarnation,
        )

    def _status_loop(self) -> None:
        interval = self.config.status.interval_s
        while not self._halt.is_set():
            self._status_due.wait(interval)
            self._status_due.clear()
            if self._halt.is_set():
                break
            c = self.counters
            log.info(
                "frames captured %d, spooled %d, outside sessions %d; spool depth %d, dropped %d; "
                "acked %d; sensor errors %d; %s",
                c.frames_captured,
                c.frames_spooled,
                c.frames_outside_session,
                self.spool.depth,
                self.spool.dropped_frames,
                self.publisher.stats.acked,
                c.sensor_errors,
                "connected" if self.connection.connected.is_set() else "not connected",
            )
            if self.connection.connected.is_set():
                self.connection.publish(
                    self._status_topic, encode_message(self._status(DeviceState.ONLINE)), qos=1, retain=True
                )
