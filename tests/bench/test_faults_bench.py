"""`thermoscreen bench faults` at a tiny duration scale: every scenario, nothing lost, duplicated or unverdicted.

The assertions are the issue's goals (lost 0, duplicates 0, frames_without_verdict 0 and, for
the session replay, no mixed records, in every scenario) plus what each scenario promises:
malformed payloads all dead-lettered by every consumer and none stored, no component
restarted by them, and each fault recovered from.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.bench.helpers import run_bench

SCENARIOS = [
    "broker_restart",
    "tsdb_outage",
    "bridge_kill",
    "inference_kill",
    "device_cutoff",
    "malformed_payloads",
    "device_reimage",
    "session_replay",
    "hostile_flood",
]
#: Scenarios reported but not asserted (none: incarnations, session ownership and re-offers are merged).
KNOWN_OPEN: set[str] = set()
KNOWN_OPEN_VERDICTS: set[str] = set()
#: Scenarios in which nothing is delivered twice, so no archive row may be written twice: the
#: archive's raw-write counter must stay 0 (its rows are keyed, so `duplicates` cannot show it).
#: Broker restart, bridge kill and device cut-off may legitimately redeliver (QoS 1 resends).
NO_REDELIVERY = (
    "tsdb_outage",
    "inference_kill",
    "malformed_payloads",
    "device_reimage",
    "session_replay",
    "hostile_flood",
)
#: Fields every scenario reports.
FIELDS = (
    "offered",
    "stored",
    "lost",
    "duplicates",
    "frames_without_verdict",
    "stored_archive",
    "stored_tsdb",
    "archive_rewrites",
    "tsdb_rewrites",
)


def _goals(s: dict[str, Any]) -> bool:
    clean = s["lost"] == 0 and s["duplicates"] == 0 and s["frames_without_verdict"] == 0
    return bool(clean and s.get("mixed_records", 0) == 0)


def test_faults_bench_every_scenario_loses_and_duplicates_nothing(tmp_path: Path, bench_servers: None) -> None:
    result = run_bench(["faults", "--duration-scale", "0.04", "--devices", "2", "--rate", "10"], tmp_path, timeout=420)
    scenarios = {s["name"]: s for s in result["scenarios"]}
    assert [s["name"] for s in result["scenarios"]] == SCENARIOS
    assert result["ok"] is all(_goals(s) for s in result["scenarios"])

    for name, s in scenarios.items():
        assert all(isinstance(s[f], int) for f in FIELDS), (name, s)
        assert s["offered"] > 0, name
        if name in KNOWN_OPEN:
            print(f"KNOWN_OPEN {name}: {s}", file=sys.stderr)  # reported, not yet asserted
            continue
        assert s["lost"] == 0, (name, s)
        assert s["duplicates"] == 0, (name, s)
        assert s.get("mixed_records", 0) == 0, (name, s)
        if name in KNOWN_OPEN_VERDICTS:
            print(f"KNOWN_OPEN_VERDICTS {name}: {s['frames_without_verdict']} frames without verdict", file=sys.stderr)
        else:
            assert s["frames_without_verdict"] == 0, (name, s)
        assert s["stored"] == s["stored_archive"] == s["stored_tsdb"] == s["offered"], (name, s)
        assert s["tsdb_collisions"] == 0, (name, s)
        assert s["unacked"] == 0, (name, s)
        assert s["unexpected_restarts"] == [], (name, s)
        if name != "malformed_payloads":
            assert s["recovery_s"] is not None and s["recovery_s"] >= 0, (name, s)

    for name in NO_REDELIVERY:
        assert scenarios[name]["archive_rewrites"] == 0, (name, scenarios[name])
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

    # The new faults really happened: a wiped spool, a replayed session, a bounded flood of both kinds.
    assert scenarios["device_reimage"]["spool_deleted"] is True
    replay = scenarios["session_replay"]
    assert replay["replay_frames"] > 0 and isinstance(replay["mixed_records"], int)
    assert isinstance(replay["session_row_hijacked"], bool)
    flood = scenarios["hostile_flood"]
    assert flood["flood_frames"] > 0 and flood["flood_bad"] > 0
