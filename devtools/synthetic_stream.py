"""Synthetic screening sessions as MQTT messages, and the points they must leave in the TSDB.

Used by the bridge's tests and `thermoscreen bench bridge`: a session is a `session_start`,
frames, one verdict per frame and a `session_end`, published the way a device and an
inference node would. `expected_points` derives, from the schema alone (not from the
bridge's line-protocol code), which points (series, labels, millisecond timestamp) a
complete, exactly-once delivery leaves in VictoriaMetrics.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from contract import timeseries as schema
from contract.frame import Frame, SensorKind, encode_frame
from contract.ids import INCARNATION_BYTES, LEGACY_INCARNATION, new_session_id
from contract.messages import (
    RfidEvent,
    RfidEventKind,
    SessionEndReason,
    Verdict,
    encode_message,
)
from contract.sensor import MLX_SHAPE
from contract.topics import frame_topic, rfid_topic, verdict_topic
from devtools.local_tsdb import PointKey, SeriesKey

MODEL_VERSION = "synthetic-test-1"
THRESHOLD = 0.5
FRAME_PERIOD_NS = 250_000_000  # 4 Hz, like the MLX90640 at its screening refresh rate


@dataclass
class SyntheticSession:
    device_id: str
    session_id: str
    patient_ref: str
    start: RfidEvent
    frames: list[Frame]
    verdicts: list[Verdict]
    end: RfidEvent
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def ordered_messages(self, *, with_end: bool = True) -> Iterator[tuple[str, bytes]]:
        """start, then each frame followed by its verdict, then (optionally) the end."""
        yield rfid_topic(self.device_id), encode_message(self.start)
        for frame, verdict in zip(self.frames, self.verdicts, strict=True):
            yield frame_topic(self.device_id), encode_frame(frame)
            yield verdict_topic(self.device_id), encode_message(verdict)
        if with_end:
            yield rfid_topic(self.device_id), encode_message(self.end)


def simulated_incarnation(device_id: str) -> str:
    """A simulated device's incarnation: stable per device id, so its sessions share one (as a real
    device's do until its spool is replaced), and never the legacy value."""
    digest = hashlib.sha256(f"thermoscreen-simulated-device:{device_id}".encode()).hexdigest()
    incarnation = digest[: 2 * INCARNATION_BYTES]
    return incarnation if incarnation != LEGACY_INCARNATION else "0" * 15 + "1"


def make_session(
    device_id: str,
    n_frames: int,
    *,
    t0_ns: int | None = None,
    first_seq: int = 0,
    probabilities: list[float] | None = None,
    seed: int = 0,
    patient_ref: str | None = None,
    frame_count: int | None = None,
    incarnation: str | None = None,
) -> SyntheticSession:
    """A session of `n_frames` frames 250 ms apart, each with a verdict.

    By default the session ends just now: readers such as `/api/v1/export` do not return
    points with future timestamps.
    """
    rng = np.random.default_rng(seed)
    t0 = time.time_ns() - (n_frames + 2) * FRAME_PERIOD_NS if t0_ns is None else t0_ns
    session_id = new_session_id()
    inc = simulated_incarnation(device_id) if incarnation is None else incarnation
    pref = patient_ref or f"{int(rng.integers(0, 2**63)):016x}"[-16:]
    probs = probabilities if probabilities is not None else [float(p) for p in rng.uniform(0.05, 0.95, n_frames)]
    if len(probs) != n_frames:
        raise ValueError("one probability per frame")
    base = 33.0 + rng.normal(0.0, 0.6, MLX_SHAPE)
    frames: list[Frame] = []
    verdicts: list[Verdict] = []
    for i in range(n_frames):
        capture = t0 + (i + 1) * FRAME_PERIOD_NS
        frame = Frame.from_celsius(
            base + rng.normal(0.0, 0.1, MLX_SHAPE),
            device_id=device_id,
            seq=first_seq + i,
            capture_ns=capture,
            ambient_c=24.5,
            sensor=SensorKind.SYNTHETIC,
            session_id=session_id,
            patient_ref=pref,
            incarnation=inc,
        )
        frames.append(frame)
        verdicts.append(
            Verdict(
                device_id=device_id,
                seq=first_seq + i,
                capture_ns=capture,
                session_id=session_id,
                patient_ref=pref,
                probability=probs[i],
                label="abnormal" if probs[i] >= THRESHOLD else "normal",
                flagged=probs[i] >= THRESHOLD,
                threshold=THRESHOLD,
                model_version=MODEL_VERSION,
                node_id="synthetic-node",
                latency_ms=3.5,
                incarnation=inc,
            )
        )
    start = RfidEvent(
        event=RfidEventKind.SESSION_START,
        device_id=device_id,
        session_id=session_id,
        patient_ref=pref,
        ts_ns=t0,
        seq=0,
        incarnation=inc,
    )
    end = RfidEvent(
        event=RfidEventKind.SESSION_END,
        device_id=device_id,
        session_id=session_id,
        patient_ref=pref,
        ts_ns=t0 + (n_frames + 1) * FRAME_PERIOD_NS,
        seq=1,
        frame_count=n_frames if frame_count is None else frame_count,
        reason=SessionEndReason.CARD,
        incarnation=inc,
    )
    return SyntheticSession(device_id, session_id, pref, start, frames, verdicts, end)


def _labels(**tags: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in tags.items() if v))


#: The fields a (single-model) session verdict adds to the `event=end` session point.
SESSION_VERDICT_FIELDS = ("probability", "flagged", "threshold", "verdict_frames", "inconclusive")


def expected_series(
    session: SyntheticSession, *, rows_every: int, with_end: bool = True, with_verdict: bool = True
) -> dict[SeriesKey, set[int]]:
    """Per TSDB series, the millisecond timestamps an exactly-once delivery leaves there."""
    out: dict[SeriesKey, set[int]] = {}
    ids = {"device_id": session.device_id, "patient_ref": session.patient_ref, "session_id": session.session_id}
    # Frame-level series carry the device incarnation (not for legacy devices); session points do not.
    incarnation = session.start.incarnation
    frame_ids = {**ids, "incarnation": incarnation} if incarnation != LEGACY_INCARNATION else ids
    labels = _labels(**frame_ids)
    frame_ts = {f.capture_ns // 1_000_000 for f in session.frames}
    sampled = {f.capture_ns // 1_000_000 for f in session.frames if rows_every and f.seq % rows_every == 0}
    for name in schema.FRAME_STATS.fields:
        out[(f"{schema.FRAME_STATS.name}_{name}", labels)] = frame_ts
    if sampled:
        for row in range(schema.PIXEL_ROWS):
            row_labels = _labels(**frame_ids, row=f"{row:02d}")
            for name in schema.FRAME_ROW.fields:
                out[(f"{schema.FRAME_ROW.name}_{name}", row_labels)] = sampled
    verdict_ts = {v.capture_ns // 1_000_000 for v in session.verdicts}
    for name in schema.VERDICT.fields:
        if name == "member_spread" and all(v.member_spread is None for v in session.verdicts):
            continue  # written only for ensemble verdicts
        out[(f"{schema.VERDICT.name}_{name}", labels)] = verdict_ts
    start_labels = _labels(**ids, event="start")
    for name in ("active", "frames"):
        out[(f"{schema.SESSION.name}_{name}", start_labels)] = {session.start.ts_ns // 1_000_000}
    if with_end:
        end_labels = _labels(**ids, event="end")
        end_names = ["active", "frames"]
        if with_verdict:
            end_names += list(SESSION_VERDICT_FIELDS)
        for name in end_names:
            out[(f"{schema.SESSION.name}_{name}", end_labels)] = {session.end.ts_ns // 1_000_000}
    return out


def expected_points(session: SyntheticSession, *, rows_every: int, with_end: bool = True) -> set[PointKey]:
    """The distinct TSDB points of a session delivered exactly once (before its session verdict)."""
    series = expected_series(session, rows_every=rows_every, with_end=with_end, with_verdict=False)
    return {(name, labels, ts) for (name, labels), stamps in series.items() for ts in stamps}


def session_verdict_points(session: SyntheticSession) -> set[PointKey]:
    """The points the session verdict adds to the `event=end` session point."""
    labels = _labels(
        device_id=session.device_id, patient_ref=session.patient_ref, session_id=session.session_id, event="end"
    )
    ts = session.end.ts_ns // 1_000_000
    return {(f"{schema.SESSION.name}_{f}", labels, ts) for f in SESSION_VERDICT_FIELDS}
