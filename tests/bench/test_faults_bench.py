"""`thermoscreen bench faults` at a tiny duration scale: every scenario, nothing lost or duplicated.

The assertions are the issue's goals (lost 0, duplicates 0 in every scenario) plus what each
scenario promises: malformed payloads all dead-lettered by every consumer and none stored,
no component restarted by them, and each fault recovered from.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.helpers import run_bench

SCENARIOS = ["broker_restart", "tsdb_outage", "bridge_kill", "inference_kill", "device_cutoff", "malformed_payloads"]


def test_faults_bench_every_scenario_loses_and_duplicates_nothing(tmp_path: Path, bench_servers: None) -> None:
    result = run_bench(["faults", "--duration-scale", "0.04", "--devices", "2", "--rate", "10"], tmp_path, timeout=420)
    scenarios = {s["name"]: s for s in result["scenarios"]}
    assert [s["name"] for s in result["scenarios"]] == SCENARIOS

    for name, s in scenarios.items():
        assert s["offered"] > 0, name
        assert s["lost"] == 0, (name, s)
        assert s["duplicates"] == 0, (name, s)
        assert s["stored"] == s["stored_archive"] == s["stored_tsdb"] == s["offered"], (name, s)
        assert s["tsdb_collisions"] == 0, (name, s)
        assert s["unacked"] == 0, (name, s)
        assert s["unexpected_restarts"] == [], (name, s)
        if name != "malformed_payloads":
            assert s["recovery_s"] is not None and s["recovery_s"] >= 0, (name, s)
    assert result["ok"] is True

    # Faults that never touch the path from the broker to the nodes leave no frame unverdicted.
    for name in ("tsdb_outage", "bridge_kill", "device_cutoff", "malformed_payloads"):
        assert scenarios[name]["verdicts_missing"] == 0, (name, scenarios[name])
    # The outages really happened, at the requested scale (60 s and 120 s x 0.04).
    assert scenarios["tsdb_outage"]["outage_s"] >= 2.4
    assert scenarios["device_cutoff"]["outage_s"] >= 4.8
    assert scenarios["broker_restart"]["device_reconnects"] >= 2  # every simulated device reconnected

    bad = scenarios["malformed_payloads"]
    assert bad["recovery_s"] is None
    assert bad["injected"] >= 12
    assert bad["deadletters_matched"] == bad["deadletters_expected"] > bad["injected"]
    assert bad["bad_stored"] == 0
    assert bad["device_reconnects"] == 0
