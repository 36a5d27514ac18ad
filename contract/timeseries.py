"""The time-series schema the bridge writes (InfluxDB line protocol) and dashboards read.

This module is the single source of truth: docs/schema.md is generated from it and the
dashboard tests check every query against it. All fields a dashboard needs are numbers
(some Influx-protocol stores, VictoriaMetrics among them, drop string fields). Ids that
dashboards filter by are tags. Timestamps come from the message (capture or event time), so
a redelivered message overwrites the same point instead of adding one.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.sensor import MLX_COLS, MLX_ROWS

#: The sensor geometry under the names the schema's readers use (defined in contract.sensor).
PIXEL_ROWS = MLX_ROWS
PIXEL_COLS = MLX_COLS


@dataclass(frozen=True)
class Measurement:
    name: str
    doc: str
    timestamp: str
    tags: tuple[str, ...]
    fields: dict[str, str]  # field name -> meaning (all numeric)


VERDICT = Measurement(
    name="verdict",
    doc="One point per frame verdict from an inference node.",
    timestamp="frame capture time",
    tags=("device_id", "incarnation", "patient_ref", "session_id"),
    fields={
        "probability": "model probability of the positive class, 0..1",
        "flagged": "1 if probability >= threshold (refer for follow-up), else 0",
        "threshold": "decision threshold of the model that produced it",
        "latency_ms": "node processing latency",
        "seq": "frame sequence number",
        "inconclusive": "1 if the frame is inconclusive (near the threshold or members disagree), else 0",
        "member_spread": "std of the ensemble members' logits (absent for a single model)",
    },
)

FRAME_STATS = Measurement(
    name="frame_stats",
    doc="Summary statistics of every thermal frame.",
    timestamp="frame capture time",
    tags=("device_id", "incarnation", "patient_ref", "session_id"),
    fields={
        "min_c": "minimum pixel temperature, C",
        "max_c": "maximum pixel temperature, C",
        "mean_c": "mean pixel temperature, C",
        "std_c": "standard deviation of pixel temperatures, C",
        "p90_c": "90th percentile pixel temperature, C",
        "asymmetry_c": "mean absolute difference between the frame and its left-right mirror, C",
        "ambient_c": "sensor ambient (die) temperature, C",
        "seq": "frame sequence number",
    },
)

FRAME_ROW = Measurement(
    name="frame_row",
    doc=(
        f"Pixel temperatures of sampled frames, one point per sensor row (row tag 00..{PIXEL_ROWS - 1:02d}), "
        f"fields c00..c{PIXEL_COLS - 1:02d}: what the doctor's heatmap panel draws."
    ),
    timestamp="frame capture time",
    tags=("device_id", "incarnation", "patient_ref", "session_id", "row"),
    fields={f"c{c:02d}": f"pixel temperature of column {c}, C" for c in range(PIXEL_COLS)},
)

SESSION = Measurement(
    name="session",
    doc="Session start (event=start) and end (event=end, with the session verdict).",
    timestamp="event time on the device (start or end)",
    tags=("device_id", "patient_ref", "session_id", "event"),
    fields={
        "active": "1 at start, 0 at end",
        "frames": "frames in the session (end only; 0 at start)",
        "probability": "session probability from the combination rule (end only)",
        "flagged": "1 if the session is flagged for follow-up (end only)",
        "threshold": "threshold used for the session verdict (end only)",
        "verdict_frames": "frame verdicts combined into the session verdict (end only)",
        "inconclusive": "1 if the session is inconclusive: repeat the capture (end only)",
        "member_spread": "mean member spread of the session's frames (end only; absent for a single model)",
    },
)

DEVICE_STATUS = Measurement(
    name="device_status",
    doc="Device online/offline state and spool health.",
    timestamp="status time (device clock, or bridge receive time for the last will)",
    tags=("device_id",),
    fields={
        "online": "1 online, 0 offline",
        "spool_depth": "messages waiting in the device spool",
        "spool_dropped_frames": "frames dropped because the spool was full (cumulative)",
    },
)

NODE_STATUS = Measurement(
    name="node_status",
    doc="Inference node and bridge online/offline state.",
    timestamp="status time",
    tags=("node_id", "role"),
    fields={"online": "1 online, 0 offline"},
)

NODE_METRICS = Measurement(
    name="node_metrics",
    doc="Health numbers published by inference nodes (role=inference) and the bridge (role=bridge).",
    timestamp="metrics time",
    tags=("node_id", "role"),
    fields={
        "frames_per_s": "inference: frames verdicted per second",
        "batch_size": "inference: mean micro-batch size",
        "latency_p50_ms": "inference: median processing latency",
        "latency_p99_ms": "inference: 99th percentile processing latency",
        "deadletters": "inference/bridge: dead letters published (cumulative)",
        "frames_total": "inference: frames verdicted (cumulative)",
        "model_swaps": "inference: models swapped in without restart (cumulative)",
        "model_swaps_refused": "inference: model swaps refused, old model kept (cumulative)",
        "queue_depth": "bridge: items waiting in the on-disk queue (all sinks); inference: frames waiting for a batch",
        "oldest_age_s": "bridge: age of the oldest queued item, seconds",
        "dropped": "bridge: items dropped because the queue limit was hit (cumulative)",
        "sink_errors": "bridge: failed sink writes (cumulative)",
        "stored": "bridge: items confirmed by all sinks (cumulative)",
        "messages_per_s": "bridge: messages received per second",
        "points_written": "bridge: points written to InfluxDB (cumulative, rewrites included)",
    },
)

DEADLETTER = Measurement(
    name="deadletter",
    doc="Rejected inputs, one point per dead letter.",
    timestamp="dead-letter time",
    tags=("component", "device_id"),
    fields={"count": "always 1 (sum it)", "payload_size": "size of the rejected payload, bytes"},
)

MEASUREMENTS: dict[str, Measurement] = {
    m.name: m for m in (VERDICT, FRAME_STATS, FRAME_ROW, SESSION, DEVICE_STATUS, NODE_STATUS, NODE_METRICS, DEADLETTER)
}


def render_markdown() -> str:
    """docs/schema.md, generated from this module."""
    out = [
        "# Time-series schema (InfluxDB line protocol)",
        "",
        "Generated from `contract/timeseries.py`; do not edit by hand. All fields are numeric;",
        "ids that dashboards filter by are tags. Points are idempotent: a redelivered message",
        "writes the same measurement, tags and timestamp and so overwrites its point.",
        "",
    ]
    for m in MEASUREMENTS.values():
        out += [f"## `{m.name}`", "", m.doc, "", f"- timestamp: {m.timestamp}", f"- tags: {', '.join(m.tags)}", ""]
        out += ["| field | meaning |", "| --- | --- |"]
        if m is FRAME_ROW:
            out.append(f"| c00 .. c{PIXEL_COLS - 1:02d} | pixel temperature of that column, C |")
        else:
            out += [f"| {name} | {meaning} |" for name, meaning in m.fields.items()]
        out.append("")
    return "\n".join(out)
