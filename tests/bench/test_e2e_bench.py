"""`thermoscreen bench e2e` at small scale: the whole stack, two simulated devices, a few seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench.helpers import run_bench


def test_e2e_bench_small_prints_one_sane_json_object(tmp_path: Path, bench_servers: None) -> None:
    devices, rate = 2, 5.0
    result = run_bench(
        ["e2e", "--devices", str(devices), "--rate", str(rate), "--duration", "3", "--warmup", "1"], tmp_path, 240
    )

    for key in ("devices", "offered_fps", "verdict_fps", "p50_ms", "p95_ms", "p99_ms", "nodes", "lost", "cpu"):
        assert key in result, key
    assert result["devices"] == devices and result["nodes"] == 1
    assert result["lost"] == 0
    assert result["offered"] == result["verdicts"] == result["stored"] > 0
    assert result["verdict_duplicates"] == 0 and result["unacked"] == 0
    # Paced load: about devices x rate frames/s offered, and every one answered.
    assert 0.6 * devices * rate <= result["offered_fps"] <= 1.4 * devices * rate
    assert result["verdict_fps"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"] < 10_000
    assert 0 <= result["node_p50_ms"] <= result["node_p99_ms"]
    assert result["cores"] == os.cpu_count()
    cpu = result["cpu"]
    assert {"broker", "tsdb", "bridge", "infer-1", "load_generator", "bench"} <= set(cpu)
    assert all(v is not None and v >= 0 for v in cpu.values())
    assert result["machine_cpu"] >= 0
    assert cpu["infer-1"] > 0 and cpu["load_generator"] > 0
    assert isinstance(result["limits"], str) and "cores" in result["limits"]
    # Cost per frame: the server side's CPU ms per verdicted frame, and that over the broker's own.
    per_frame = result["cpu_ms_per_frame"]
    assert set(per_frame) == {"broker", "tsdb", "bridge", "infer-1"}
    assert result["server_cpu_ms_per_frame"] == pytest.approx(sum(per_frame.values()), abs=1e-3)
    assert result["pipeline_vs_broker"] >= 1.0
    assert result["asked_fps"] == devices * rate and isinstance(result["offered_as_asked"], bool)
    assert result["bridges"] == 1 and result["sessions_ok"] is True


def test_e2e_bench_with_two_bridges_stores_everything_and_judges_each_session_once(
    tmp_path: Path, bench_servers: None
) -> None:
    devices = 4
    result = run_bench(
        ["e2e", "--devices", str(devices), "--rate", "5", "--duration", "3", "--warmup", "1", "--bridges", "2"],
        tmp_path,
        240,
    )
    assert result["bridges"] == 2 and result["lost"] == 0
    assert result["offered"] == result["verdicts"] == result["stored"] > 0
    # Both bridges worked (the frames are shared), and both count in the server side's cost.
    assert {"bridge", "bridge-2"} <= set(result["cpu_ms_per_frame"])
    assert result["cpu"]["bridge"] > 0 and result["cpu"]["bridge-2"] > 0
    assert result["sessions"] == result["sessions_expected"] == devices
    assert result["sessions_from_all_frames"] == devices and result["sessions_computed_twice"] == 0
    assert result["sessions_ok"] is True
