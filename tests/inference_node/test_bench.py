"""`thermoscreen bench inference --json` runs end to end and prints one JSON object (no speed asserted here).

It runs the shipped model: the bench starts a bare `thermoscreen infer`, which trusts only the
shipped model's pinned signing key (the test models are signed with a per-session key).
"""

from __future__ import annotations

import json
import subprocess
import sys

from contract.model.manifest import load_manifest
from tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "contract" / "model" / "shipped" / "thermal"


def test_bench_inference_prints_one_json_object(local_servers: None) -> None:
    args = ["bench", "inference", "--json", "--model", str(SHIPPED), "--frames", "300", "--rounds", "1"]
    args += ["--paced-frames", "40", "--paced-rate", "400"]
    out = subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)  # exactly one JSON object, progress went to stderr
    assert "round 1/1" in out.stderr
    for key in ("broker_relay_frames_per_s", "node_frames_per_s", "model_only_frames_per_s", "p50_ms", "p99_ms"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["frames_lost"] == 0 and result["verdict_duplicates"] == 0
    assert result["node_exit_codes"] == [0]
    assert result["bytes_per_frame"] > 1500 and result["model_version"] == load_manifest(SHIPPED).version
