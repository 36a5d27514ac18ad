"""Dashboards as code -> the JSON files Grafana provisions (dashboards/generated/).

The JSON is committed so a Grafana can be provisioned without Python; `--check` (and the
tests) regenerate it and fail when the committed files are stale. Every panel and variable
query is checked against the bridge schema at generation time, so a dashboard that names a
field the bridge does not store cannot be generated at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from contract.timeseries import MEASUREMENTS, Measurement
from dashboards import doctor, fleet
from dashboards.query_refs import schema_problems

#: Where the committed JSON lives, relative to the repository root.
GENERATED_DIR = Path(__file__).resolve().parent / "generated"
#: file name -> builder; the file names are what the provisioning provider loads.
DASHBOARDS = {"doctor.json": doctor.build, "fleet.json": fleet.build}


def dashboard_json(board: Dashboard) -> dict[str, Any]:
    """The dashboard model as plain JSON data, with panel ids assigned in layout order."""
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for panel_id, panel in enumerate(iter_panels(data), start=1):
        panel["id"] = panel_id
    return data


def iter_panels(data: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in data.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_queries(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, InfluxQL) for every panel target and every query variable of a dashboard."""
    for panel in iter_panels(data):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", str(target.get("query", ""))
    for variable in data.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield f"variable {variable.get('name')!r}", str(variable.get("query", ""))


def query_problems(data: Mapping[str, Any], measurements: Mapping[str, Measurement] = MEASUREMENTS) -> list[str]:
    """Every schema mismatch of every query of a dashboard, each line naming panel and query."""
    return [
        f"{where}: {problem}" for where, query in iter_queries(data) for problem in schema_problems(query, measurements)
    ]


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard. Raises ValueError on a schema mismatch."""
    files: dict[str, str] = {}
    for name, build in DASHBOARDS.items():
        data = dashboard_json(build())
        problems = query_problems(data)
        if problems:
            raise ValueError(f"{name} does not match contract/timeseries.py: " + "; ".join(problems))
        files[name] = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return files


def stale_files(out_dir: Path) -> list[str]:
    """Names of the files in `out_dir` that differ from (or are missing versus) a fresh render."""
    stale = []
    for name, text in render().items():
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
