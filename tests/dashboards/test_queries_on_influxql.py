"""Every dashboard query runs on a real InfluxQL engine against what the bridge really writes.

The schema-drift test proves the queries name only stored measurements, fields and tags; this
one proves they are valid InfluxQL and return data: a real `influxd` (Debian's InfluxDB 1.x,
the same InfluxQL that InfluxDB 2 serves through its v1 API) is fed line protocol made by the
bridge's own encoder (`cloud_bridge.line_protocol`) from real contract messages, then every
panel and variable query of the committed dashboards runs with Grafana's macros expanded the
way Grafana expands them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cloud_bridge import line_protocol
from cloud_bridge.intake import SessionOutcome
from contract.frame import Frame
from contract.messages import (
    DeadLetter,
    DeviceState,
    DeviceStatus,
    NodeMetrics,
    NodeRole,
    NodeStatus,
    RfidEvent,
    RfidEventKind,
    ScreeningResult,
    SessionVerdict,
    Verdict,
)
from contract.sensor import block_average
from dashboards.generate import GENERATED_DIR, iter_panels, iter_queries
from dashboards.panels import OUTCOME_CODES
from devtools.local_influxd import InfluxdStartError, LocalInfluxd, find_influxd
from sensor_node.synthetic_scene import synthetic_thermograms

DB = "thermoscreen"
DEVICE = "dev-01"
PATIENT = "0123456789abcdef"
SESSION = "5e55" * 8
#: An earlier screening of the same patient (no finding): her history has two points.
EARLIER_SESSION = "ea71" * 8
#: Inconclusive (near the threshold, on its flagged side): neither a referral nor a no finding.
UNSURE_SESSION = "c0de" * 8
#: Stored by a bridge from before the inconclusive rule (no `inconclusive` field): still a referral.
OLD_SESSION = "01d0" * 8
THRESHOLD = 0.5


class Influx:
    """The `thermoscreen` database of a local influxd."""

    def __init__(self, server: LocalInfluxd) -> None:
        self.server = server

    def query(self, q: str) -> dict[str, Any]:
        return self.server.query(DB, q)

    def write(self, lines: list[str]) -> None:
        self.server.write(DB, lines)


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    try:
        find_influxd()
    except InfluxdStartError:
        pytest.skip("influxd is not installed (Debian package `influxdb`; scripts/system-deps.sh installs it)")
    with LocalInfluxd(tmp_path_factory.mktemp("influxdb")) as server:
        db = Influx(server)
        db.query(f'CREATE DATABASE "{DB}"')
        db.write(_scenario_lines(time.time_ns()))
        yield db


def _scenario_lines(now_ns: int) -> list[str]:
    """One screening session as the bridge would store it, plus fleet health, ending a minute ago."""
    start = now_ns - 5 * 60 * 10**9
    scene = block_average(synthetic_thermograms(1, seed=3)["temperature_centi_c"][0] / 100.0)
    lines: list[str] = []
    lines.append(
        line_protocol.rfid_line(
            RfidEvent(
                event=RfidEventKind.SESSION_START,
                device_id=DEVICE,
                session_id=SESSION,
                patient_ref=PATIENT,
                ts_ns=start,
                seq=0,
            )
        )
    )
    probabilities = np.linspace(0.3, 0.8, 16)
    for seq, p in enumerate(probabilities):
        capture = start + (seq + 1) * 500_000_000
        frame = Frame.from_celsius(
            scene,
            device_id=DEVICE,
            seq=seq,
            capture_ns=capture,
            ambient_c=24.0,
            session_id=SESSION,
            patient_ref=PATIENT,
        )
        lines += line_protocol.frame_lines(frame, rows_every=8)
        lines.append(
            line_protocol.verdict_line(
                Verdict(
                    device_id=DEVICE,
                    seq=seq,
                    capture_ns=capture,
                    session_id=SESSION,
                    patient_ref=PATIENT,
                    probability=float(p),
                    label="suspect" if p >= THRESHOLD else "normal",
                    flagged=bool(p >= THRESHOLD),
                    threshold=THRESHOLD,
                    model_version="test-1",
                    node_id="infer-1",
                    latency_ms=4.0,
                )
            )
        )
    end = start + 10 * 10**9
    lines.append(
        line_protocol.rfid_line(
            RfidEvent(
                event=RfidEventKind.SESSION_END,
                device_id=DEVICE,
                session_id=SESSION,
                patient_ref=PATIENT,
                ts_ns=end,
                seq=1,
                frame_count=16,
            )
        )
    )
    verdict = SessionVerdict(
        device_id=DEVICE,
        session_id=SESSION,
        patient_ref=PATIENT,
        frames=16,
        probability=0.58,
        flagged=True,
        threshold=THRESHOLD,
        rule="mean-logit-v1",
        model_version="test-1",
        ts_ns=end + 10**9,
    )
    lines.append(line_protocol.session_outcome_line(SessionOutcome(verdict=verdict, started_ns=start, ended_ns=end)))
    lines += _earlier_session_lines(start - 30 * 60 * 10**9, EARLIER_SESSION, probability=0.21)
    lines += _earlier_session_lines(start - 15 * 60 * 10**9, UNSURE_SESSION, probability=0.52, inconclusive=True)
    old = _earlier_session_lines(start - 45 * 60 * 10**9, OLD_SESSION, probability=0.7)
    assert ",inconclusive=0.0 " in old[-1]
    lines += [*old[:-1], old[-1].replace(",inconclusive=0.0 ", " ")]
    lines.append(
        line_protocol.device_status_line(
            DeviceStatus(state=DeviceState.ONLINE, ts_ns=start - 10**9, spool_depth=0, spool_dropped_frames=0),
            DEVICE,
            start,
        )
    )
    for node, role in (("infer-1", NodeRole.INFERENCE), ("bridge", NodeRole.BRIDGE)):
        lines.append(
            line_protocol.node_status_line(
                NodeStatus(node_id=node, role=role, state=DeviceState.ONLINE, ts_ns=start - 10**9), start
            )
        )
    for i in range(4):
        ts = start + i * 10 * 10**9
        inference = {"frames_per_s": 2.0, "batch_size": 1.0, "latency_p50_ms": 3.0, "latency_p99_ms": 9.0}
        inference |= {"frames_total": 20.0 * i, "deadletters": 0.0, "queue_depth": 0.0}
        bridge = {"queue_depth": 5.0 - i, "oldest_age_s": 0.5, "dropped": 0.0, "sink_errors": float(i // 2)}
        bridge |= {"stored": 100.0 * i, "messages_per_s": 4.0}
        for node, role, values in (("infer-1", NodeRole.INFERENCE, inference), ("bridge", NodeRole.BRIDGE, bridge)):
            line = line_protocol.node_metrics_line(NodeMetrics(node_id=node, role=role, ts_ns=ts, values=values))
            assert line is not None
            lines.append(line)
    lines.append(
        line_protocol.deadletter_line(
            DeadLetter.for_payload(
                component="inference",
                reason="bad frame",
                topic="thermo/v1/dev-01/frame",
                payload=b"x",
                ts_ns=start,
                device_id=DEVICE,
            )
        )
    )
    return lines


def _earlier_session_lines(start: int, session_id: str, *, probability: float, inconclusive: bool = False) -> list[str]:
    """A session of the same patient before, as the bridge stores it: start, end, verdict."""
    end = start + 10 * 10**9
    events = [
        RfidEvent(event=RfidEventKind.SESSION_START, device_id=DEVICE, session_id=session_id,
                  patient_ref=PATIENT, ts_ns=start, seq=10),
        RfidEvent(event=RfidEventKind.SESSION_END, device_id=DEVICE, session_id=session_id,
                  patient_ref=PATIENT, ts_ns=end, seq=11, frame_count=16),
    ]  # fmt: skip
    verdict = SessionVerdict(
        device_id=DEVICE, session_id=session_id, patient_ref=PATIENT, frames=16, probability=probability,
        flagged=probability >= THRESHOLD, threshold=THRESHOLD, rule="mean-logit-v1", model_version="test-1",
        ts_ns=end + 10**9, inconclusive=inconclusive, member_spread=0.4 if inconclusive else None,
    )  # fmt: skip
    outcome = SessionOutcome(verdict=verdict, started_ns=start, ended_ns=end)
    return [*(line_protocol.rfid_line(e) for e in events), line_protocol.session_outcome_line(outcome)]


def grafana_expand(query: str, variables: dict[str, str], *, interval_s: int = 10) -> str:
    """Grafana's macro expansion for raw InfluxQL (time range: the last hour)."""
    now_ms = time.time_ns() // 10**6
    q = query.replace("$timeFilter", f"time >= {now_ms - 3_600_000}ms and time <= {now_ms}ms")
    q = q.replace("$__interval_ms", str(interval_s * 1000)).replace("$__interval", f"{interval_s}s")
    for name, value in variables.items():
        q = q.replace(f"${name}", value)
    assert not re.search(r"\$[A-Za-z_{]", q), f"unexpanded macro in {q}"
    return q


ALL = {"device": ".*", "patient": ".*", "session": ".*"}
SELECTED = {"device": DEVICE, "patient": PATIENT, "session": SESSION}


@pytest.mark.parametrize("name", sorted(p.name for p in GENERATED_DIR.glob("*.json")))
@pytest.mark.parametrize("variables", [ALL, SELECTED], ids=["all", "selected"])
def test_every_query_runs_and_returns_data(influx: Influx, name: str, variables: dict[str, str]) -> None:
    data = json.loads((GENERATED_DIR / name).read_text())
    empty = []
    for where, query in iter_queries(data):
        result = influx.query(grafana_expand(query, variables))
        if not result.get("series"):
            empty.append(where)
    assert empty == [], f"queries without data: {empty}"


def _summed(result: dict[str, Any]) -> float:
    """What a stat panel with the `sum` reducer shows (`lastNotNull` of a single value is the same)."""
    (series,) = result["series"]
    return float(sum(v[1] for v in series["values"] if v[1] is not None))


def test_doctor_panels_show_the_session(influx: Influx) -> None:
    data = json.loads((GENERATED_DIR / "doctor.json").read_text())
    queries = {where: q for where, q in iter_queries(data)}

    frame = influx.query(grafana_expand(queries["panel 'Latest thermal frame (24 x 32, C)' target A"], SELECTED))
    rows = {s["tags"]["row"]: s for s in frame["series"]}
    assert sorted(rows) == [f"{r:02d}" for r in range(24)]
    assert all(len(s["values"][0]) == 1 + 32 for s in rows.values())  # time + 32 columns

    sessions = influx.query(grafana_expand(queries["panel 'Sessions and verdicts' target A"], SELECTED))
    by_session = {s["tags"]["session_id"]: s for s in sessions["series"]}
    # Every session of the selected patient, one row each.
    assert sorted(by_session) == sorted([SESSION, EARLIER_SESSION, UNSURE_SESSION, OLD_SESSION])
    assert all(len(s["values"]) == 1 for s in by_session.values())
    rows = {sid: dict(zip(s["columns"], s["values"][0], strict=True)) for sid, s in by_session.items()}
    series = by_session[SESSION]
    assert series["tags"] == {"patient_ref": PATIENT, "device_id": DEVICE, "session_id": SESSION}
    row = rows[SESSION]
    assert row["frames"] == 16.0 and row["probability"] == pytest.approx(0.58)
    # The outcome code as the table's value mapping words it (the old row reads as conclusive).
    outcomes = {sid: OUTCOME_CODES[int(r["outcome"])] for sid, r in rows.items()}
    assert outcomes == {
        SESSION: ScreeningResult.REFER,
        EARLIER_SESSION: ScreeningResult.NO_FINDING,
        UNSURE_SESSION: ScreeningResult.INCONCLUSIVE,
        OLD_SESSION: ScreeningResult.REFER,
    }
    table = next(p for p in iter_panels(data) if p["title"] == "Sessions and verdicts")
    mapping = table["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["options"]
    assert mapping[str(int(rows[UNSURE_SESSION]["outcome"]))]["text"] == "inconclusive: repeat the capture"

    counts = {
        title: _summed(influx.query(grafana_expand(queries[f"panel '{title}' target A"], ALL)))
        for title in ("Sessions completed", "Refer for follow-up", "Inconclusive: repeat the capture", "No finding")
    }
    # The inconclusive session reached the threshold but is no referral; the old one still is.
    assert counts == {
        "Sessions completed": 4,
        "Refer for follow-up": 2,
        "Inconclusive: repeat the capture": 1,
        "No finding": 1,
    }

    devices = influx.query(grafana_expand(queries["variable 'patient'"], ALL))
    assert devices["series"][0]["values"] == [["patient_ref", PATIENT]]


def test_patient_history_has_one_point_per_session(influx: Influx) -> None:
    data = json.loads((GENERATED_DIR / "doctor.json").read_text())
    queries = {where: q for where, q in iter_queries(data)}
    panel = "panel 'Patient history: session probability over time'"
    for variables in (SELECTED, ALL):
        result = influx.query(grafana_expand(queries[f"{panel} target A"], variables))
        (series,) = result["series"]
        assert series["tags"] == {"patient_ref": PATIENT}
        assert [round(v[1], 2) for v in series["values"]] == [0.7, 0.21, 0.52, 0.58]  # oldest first: the trend
        unsure = influx.query(grafana_expand(queries[f"{panel} target C"], variables))
        assert [round(v[1], 2) for v in unsure["series"][0]["values"]] == [0.52]  # its own amber points
    other = influx.query(grafana_expand(queries[f"{panel} target A"], {**SELECTED, "patient": "f" * 16}))
    assert not other.get("series")
    threshold = influx.query(grafana_expand(queries[f"{panel} target B"], SELECTED))
    assert {v[1] for v in threshold["series"][0]["values"] if v[1] is not None} == {THRESHOLD}
