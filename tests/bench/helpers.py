"""Shared bits of the bench tests: the benches need Mosquitto, VictoriaMetrics and the shipped model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_servers() -> None:
    """Skip (with the reason) where the real servers the benches start are not installed."""
    from devtools.local_mosquitto import BrokerStartError, find_mosquitto
    from devtools.local_tsdb import TsdbStartError, find_victoria_metrics

    try:
        find_mosquitto()
        find_victoria_metrics()
    except (BrokerStartError, TsdbStartError) as exc:
        pytest.skip(str(exc))
    if not (REPO_ROOT / "contract" / "model" / "shipped" / "thermal" / "manifest.json").exists():
        pytest.skip("the shipped model contract/model/shipped/thermal is missing")


def run_bench(args: list[str], tmp_path: Path, timeout: float) -> dict[str, Any]:
    """`thermoscreen bench ...` as a user runs it; stdout must be exactly one JSON object."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "thermoscreen", "bench", *args, "--json", "--workdir", str(tmp_path / "work")],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env,
    )
    if proc.returncode != 0:
        logs = tmp_path / "work"
        tails = []
        for log in sorted(logs.rglob("*.log")) if logs.exists() else []:
            text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            tails.append(f"--- {log.name}: " + " | ".join(text[-3:]))
        pytest.fail(f"bench exited {proc.returncode}: {proc.stderr[-3000:]}\n" + "\n".join(tails))
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line of JSON on stdout, got {proc.stdout!r}"
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    assert proc.stderr.strip(), "progress belongs on stderr"
    return result
