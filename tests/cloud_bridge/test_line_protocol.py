"""Line protocol from queued items: schema names only, idempotent, frame statistics right."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_bridge.frame_stats import frame_stats
from cloud_bridge.intake import Kind, classify
from cloud_bridge.line_protocol import frame_lines, item_lines, point, verdict_line
from contract import timeseries as schema
from contract.frame import Frame, encode_frame
from contract.messages import DeviceState, DeviceStatus, NodeMetrics, NodeRole, encode_message
from devtools.synthetic_stream import make_session


def test_asymmetry_is_zero_for_a_mirror_symmetric_frame_and_measures_a_hot_side() -> None:
    half = np.random.default_rng(1).normal(33.0, 0.5, (24, 16))
    symmetric = np.round(np.hstack([half, half[:, ::-1]]) * 100).astype(np.int16)
    assert frame_stats(symmetric).asymmetry_c == pytest.approx(0.0)
    hot = symmetric.copy()
    hot[:, :16] += 100  # left half 1 C warmer
    stats = frame_stats(hot)
    assert stats.asymmetry_c == pytest.approx(1.0)
    assert stats.max_c == pytest.approx(hot.max() / 100) and stats.mean_c == pytest.approx(hot.mean() / 100)


def test_a_redelivered_frame_gives_identical_lines_and_rows_follow_the_seq() -> None:
    session = make_session("lp-1", 5, seed=2)
    frame = session.frames[4]
    redelivered = classify("thermo/v1/lp-1/frame", encode_frame(frame))
    lines = frame_lines(frame, rows_every=4)
    assert item_lines(Kind.FRAME, "thermo/v1/lp-1/frame", redelivered.decoded, 123, rows_every=4) == lines  # type: ignore[union-attr]
    assert len(lines) == 1 + 24  # seq 4 is sampled
    inc = session.frames[0].incarnation
    assert lines[1].startswith(f"frame_row,device_id=lp-1,incarnation={inc},patient_ref={session.patient_ref},row=00,")
    assert lines[1].endswith(f" {frame.capture_ns}") and "c31=" in lines[1]
    assert len(frame_lines(session.frames[3], rows_every=4)) == 1
    assert len(frame_lines(frame, rows_every=0)) == 1


def test_frame_rows_hold_every_pixel_under_its_column_name() -> None:
    """Parsed back, the 24 frame_row points give the frame's centi-degrees, column by column."""
    frame = make_session("lp-rows", 1, seed=5).frames[0]
    rows = frame_lines(frame, rows_every=1)[1:]
    parsed = np.zeros_like(frame.centi)
    for line in rows:
        tags, fields, _ = line.split(" ")
        row = int(dict(t.split("=") for t in tags.split(",")[1:])["row"])
        pairs = [f.split("=") for f in fields.split(",")]
        assert [name for name, _ in pairs] == [f"c{c:02d}" for c in range(32)]
        parsed[row] = [round(float(value) * 100) for _, value in pairs]
    assert np.array_equal(parsed, frame.centi)


def test_absent_ids_are_left_out_rather_than_empty() -> None:
    frame = Frame.from_celsius(np.full((24, 32), 30.0), device_id="lp-2", seq=1, capture_ns=5)
    line = frame_lines(frame, rows_every=0)[0]
    assert line.startswith("frame_stats,device_id=lp-2 ") and "session_id" not in line
    assert "seq=1.0" in line and line.endswith(" 5")


def test_every_field_is_a_float_and_verdicts_carry_the_capture_time() -> None:
    verdict = make_session("lp-3", 1, probabilities=[0.75]).verdicts[0]
    line = verdict_line(verdict)
    _, fields, ts = line.split(" ")
    assert ts == str(verdict.capture_ns)
    assert dict(f.split("=") for f in fields.split(",")) == {
        "probability": "0.75",
        "flagged": "1.0",
        "threshold": "0.5",
        "latency_ms": "3.5",
        "seq": "0.0",
        "inconclusive": "0.0",
    }
    ensemble = verdict.model_copy(
        update={"member_spread": 0.25, "band_low": 0.4, "band_high": 0.8, "inconclusive": True}
    )
    assert "inconclusive=1.0" in verdict_line(ensemble) and "member_spread=0.25" in verdict_line(ensemble)


def test_names_outside_the_schema_are_refused() -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        point(schema.VERDICT, {"device_id": "d"}, {"probabilty": 1.0}, 1)


def test_status_without_time_uses_the_receive_time_and_undocumented_metrics_are_left_out() -> None:
    status = DeviceStatus(state=DeviceState.OFFLINE)
    decoded = classify("thermo/v1/dev-9/status", encode_message(status)).decoded  # type: ignore[union-attr]
    assert item_lines(Kind.DEVICE_STATUS, "thermo/v1/dev-9/status", decoded, 77, rows_every=0) == [
        "device_status,device_id=dev-9 online=0.0 77"
    ]
    metrics = NodeMetrics(node_id="n1", role=NodeRole.INFERENCE, ts_ns=9, values={"frames_per_s": 4.0, "x": 1.0})
    assert item_lines(Kind.NODE_METRICS, "thermo/v1/nodes/n1/metrics", metrics, 0, rows_every=0) == [
        "node_metrics,node_id=n1,role=inference frames_per_s=4.0 9"
    ]


def test_fast_frame_statistics_match_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    for shape in [(24, 32), (7, 5), (1, 1)]:
        centi = rng.integers(-4000, 30000, shape).astype(np.int16)
        t = centi.astype(np.float64) / 100.0
        stats = frame_stats(centi)
        assert stats.p90_c == pytest.approx(float(np.percentile(t, 90)), abs=1e-9)
        assert stats.std_c == pytest.approx(float(t.std()), abs=1e-9)
        assert stats.mean_c == pytest.approx(float(t.mean()), abs=1e-9)
        assert stats.min_c == pytest.approx(t.min()) and stats.max_c == pytest.approx(t.max())
        assert stats.asymmetry_c == pytest.approx(float(np.abs(t - t[:, ::-1]).mean()), abs=1e-9)


def test_row_values_are_the_frame_temperatures() -> None:
    frame = make_session("lp-4", 1, seed=5).frames[0]
    for r, line in enumerate(frame_lines(frame, rows_every=1)[1:]):
        fields = line.split(" ")[1].split(",")
        assert [f.split("=")[0] for f in fields] == [f"c{c:02d}" for c in range(32)]
        assert np.allclose([float(f.split("=")[1]) for f in fields], frame.centi[r] / 100.0, atol=1e-9)


def test_legacy_frames_keep_their_series_and_incarnations_keep_reimaged_devices_apart() -> None:
    """A pre-incarnation frame's series is what it always was; two incarnations are two series."""
    from dataclasses import replace

    from contract.ids import LEGACY_INCARNATION

    frame = make_session("lp-3", 1, seed=5).frames[0]
    legacy = frame_lines(replace(frame, incarnation=LEGACY_INCARNATION), rows_every=0)[0]
    first = frame_lines(replace(frame, incarnation="00000000000000aa"), rows_every=0)[0]
    second = frame_lines(replace(frame, incarnation="00000000000000bb"), rows_every=0)[0]
    assert "incarnation=" not in legacy
    assert first.split(" ")[0] != second.split(" ")[0]  # same device and seq, different series
    assert ",incarnation=00000000000000aa," in first
