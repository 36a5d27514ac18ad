"""The committed dashboard JSON is what the code generates, and what Grafana expects to load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.wording import RESULT_LABEL
from dashboards.doctor import HISTORY_RANGE
from dashboards.generate import DASHBOARDS, GENERATED_DIR, iter_panels, render
from dashboards.influxql import DATASOURCE_VARIABLE, PROVISIONED_DATASOURCE_UID
from dashboards.panels import DISCLAIMER_MARKDOWN, OUTCOME_CODES

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "dashboards", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )


def test_committed_json_is_current() -> None:
    """Fails when someone edits the dashboard code without regenerating (or edits the JSON by hand)."""
    fresh = render()
    assert sorted(fresh) == sorted(p.name for p in GENERATED_DIR.glob("*.json"))
    for name, text in fresh.items():
        committed = (GENERATED_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"dashboards/generated/{name} is stale: run `thermoscreen dashboards generate`"


#: Two string-hash seeds: set and dict-of-set iteration order differs between them.
HASH_SEEDS = ("1", "2718")


def test_generate_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Two processes with different PYTHONHASHSEED write byte-identical files (set order cannot leak in)."""
    written: list[dict[str, bytes]] = []
    for seed in HASH_SEEDS:
        out = tmp_path / f"seed{seed}"
        done = subprocess.run(
            [sys.executable, "-m", "thermoscreen", "dashboards", "generate", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.returncode == 0, done.stderr
        written.append({p.name: p.read_bytes() for p in sorted(out.glob("*.json"))})
    assert sorted(written[0]) == sorted(DASHBOARDS)
    assert written[0] == written[1]


def test_cli_check_flags_stale_then_generate_fixes_it(tmp_path: Path) -> None:
    out = run_cli("generate", "--out", str(tmp_path), "--check", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["stale"] == sorted(DASHBOARDS)
    assert "stale" in out.stderr

    out = run_cli("generate", "--out", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["written"]) == sorted(DASHBOARDS)

    assert run_cli("generate", "--out", str(tmp_path), "--check").returncode == 0
    doctor = tmp_path / "doctor.json"
    doctor.write_text(doctor.read_text().replace("probability", "probabilty"))
    out = run_cli("generate", "--out", str(tmp_path), "--check", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["stale"] == ["doctor.json"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    data = json.loads((GENERATED_DIR / name).read_text())
    panels = list(iter_panels(data))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} overflows the grid"
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "influxdb", "uid": "${" + DATASOURCE_VARIABLE + "}"}
            assert target["rawQuery"] is True
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables[DATASOURCE_VARIABLE]["type"] == "datasource"
    assert variables[DATASOURCE_VARIABLE]["current"]["value"] == PROVISIONED_DATASOURCE_UID


def test_doctor_dashboard_has_what_a_clinician_needs() -> None:
    data = json.loads((GENERATED_DIR / "doctor.json").read_text())
    by_title = {p["title"]: p for p in iter_panels(data)}
    variables = {v["name"] for v in data["templating"]["list"]}
    assert {"patient", "device"} <= variables
    assert by_title["Screening aid, not a diagnosis"]["options"]["content"] == DISCLAIMER_MARKDOWN
    assert {"Refer for follow-up", "No finding", "Inconclusive: repeat the capture"} <= set(by_title)
    for title in ("Refer for follow-up", "No finding"):  # per-interval counts, summed (see doctor._outcome_counts)
        assert by_title[title]["options"]["reduceOptions"]["calcs"] == ["sum"]
        assert "fill(0)" in by_title[title]["targets"][0]["query"]
    inconclusive = by_title["Inconclusive: repeat the capture"]
    assert 'sum("inconclusive")' in inconclusive["targets"][0]["query"]
    assert [s["color"] for s in inconclusive["fieldConfig"]["defaults"]["thresholds"]["steps"]] == ["green", "orange"]

    sessions = by_title["Sessions and verdicts"]
    assert "\"event\" = 'end'" in sessions["targets"][0]["query"]
    override = sessions["fieldConfig"]["overrides"][0]
    assert override["matcher"]["options"] == "Outcome"
    mapping = override["properties"][0]["value"][0]["options"]
    # The words of contract.wording, as on the device and in the HTML report: never healthy/sick.
    assert {code: (m["text"], m["color"]) for code, m in mapping.items()} == {
        "0": ("no finding", "green"),
        "1": ("refer for follow-up", "red"),
        "2": ("inconclusive: repeat the capture", "orange"),
        "3": ("inconclusive: repeat the capture", "orange"),
    }
    assert {int(c): m["text"] for c, m in mapping.items()} == {c: RESULT_LABEL[r] for c, r in OUTCOME_CODES.items()}
    assert "screening aid, not a diagnosis" in DISCLAIMER_MARKDOWN
    assert "inconclusive: repeat the capture" in DISCLAIMER_MARKDOWN
    columns = " ".join(t["query"] for t in sessions["targets"])
    assert "patient_ref" in columns and "name" not in columns.lower()  # pseudonyms only

    history = by_title["Patient history: session probability over time"]
    query = history["targets"][0]["query"]
    assert query.startswith('SELECT "probability" FROM "session" WHERE "event" = \'end\'')
    assert '"patient_ref" =~ /^$patient$/' in query and query.endswith('GROUP BY "patient_ref"')
    assert history["targets"][0]["alias"] == "patient $tag_patient_ref"  # the pseudonym, never a name
    assert 'max("threshold")' in history["targets"][1]["query"]
    assert history["timeFrom"] == HISTORY_RANGE  # years of screenings, not the dashboard's 7 days
    assert history["fieldConfig"]["defaults"]["custom"]["showPoints"] == "always"
    unsure = history["targets"][2]
    assert unsure["alias"] == "inconclusive: repeat the capture" and '"inconclusive" = 1' in unsure["query"]
    styles = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in history["fieldConfig"]["overrides"]
    }
    assert styles[unsure["alias"]]["color"] == {"mode": "fixed", "fixedColor": "orange"}
    assert styles[unsure["alias"]]["custom.drawStyle"] == "points"
    assert "screening aid, not a diagnosis" in history["description"]

    probability = by_title["Probability per frame"]
    assert [t["refId"] for t in probability["targets"]] == ["A", "B"]
    assert 'max("threshold")' in probability["targets"][1]["query"]

    frame = by_title["Latest thermal frame (24 x 32, C)"]
    query = frame["targets"][0]["query"]
    assert all(f'last("c{c:02d}")' in query for c in range(32))
    assert query.endswith('GROUP BY "row"')
    assert frame["fieldConfig"]["defaults"]["custom"]["cellOptions"]["type"] == "color-background"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_dashboard_says_screening_aid_not_diagnosis(name: str) -> None:
    data = json.loads((GENERATED_DIR / name).read_text())
    first = next(iter_panels(data))
    assert first["title"] == "Screening aid, not a diagnosis"
    assert first["options"]["content"] == DISCLAIMER_MARKDOWN


def test_fleet_dashboard_covers_every_component() -> None:
    data = json.loads((GENERATED_DIR / "fleet.json").read_text())
    queries = " ".join(t["query"] for p in iter_panels(data) for t in p.get("targets", []))
    for needle in (
        'FROM "device_status"',
        'FROM "frame_stats"',
        'FROM "node_status"',
        '"latency_p50_ms"',
        '"latency_p99_ms"',
        '"frames_per_s"',
        'FROM "deadletter"',
        '"queue_depth"',
        '"oldest_age_s"',
        '"sink_errors"',
    ):
        assert needle in queries, needle
