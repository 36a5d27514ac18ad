"""Upload the dashboards to a running Grafana through its HTTP API (grafana-client).

For installs that do not use file provisioning (a hosted Grafana, an existing server): the
dashboards go into one folder, overwriting older versions by uid, so pushing is idempotent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKEN_ENV = "GRAFANA_TOKEN"
FOLDER_UID = "thermoscreen"
FOLDER_TITLE = "thermoscreen"


@dataclass(frozen=True)
class Pushed:
    uid: str
    title: str
    version: int | None
    url: str | None


def load_dashboards(source_dir: Path | None) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON: freshly generated, or read from `source_dir`."""
    if source_dir is None:
        from dashboards.generate import render

        return {name: json.loads(text) for name, text in render().items()}
    files = sorted(source_dir.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{source_dir}: no dashboard .json files")
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "uid" not in data:
            raise ValueError(f"{path}: not a Grafana dashboard (no uid)")
        out[path.name] = data
    return out


def push(
    url: str,
    token: str | None,
    dashboards: dict[str, dict[str, Any]],
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    timeout_s: float = 10.0,
) -> list[Pushed]:
    """Create the folder if needed and upload every dashboard (overwrite by uid)."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        info = api.health.check()
        log.info("connected to Grafana %s at %s", (info or {}).get("version", "?"), url)
        _warn_without_influxdb(api)
        try:
            api.folder.get_folder(folder_uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(folder_title, uid=folder_uid)
        pushed = []
        for data in dashboards.values():
            body = {
                "dashboard": {**data, "id": None},
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "thermoscreen dashboards push",
            }
            reply = api.dashboard.update_dashboard(body) or {}
            pushed.append(
                Pushed(
                    uid=str(data["uid"]),
                    title=str(data.get("title", "")),
                    version=reply.get("version"),
                    url=reply.get("url"),
                )
            )
        return pushed
    except GrafanaException as exc:
        raise RuntimeError(f"Grafana at {url}: {exc.message}") from None


def _warn_without_influxdb(api: Any) -> None:
    """The dashboards need an InfluxDB datasource; say so early instead of showing "No data"."""
    from grafana_client.client import GrafanaException

    try:
        sources = api.datasource.list_datasources()
    except GrafanaException as exc:
        log.info("cannot list datasources (%s); not checking for InfluxDB", exc.message)
        return
    if not any(isinstance(s, dict) and s.get("type") == "influxdb" for s in sources or []):
        log.warning(
            "Grafana has no InfluxDB datasource: add one (InfluxQL, database = the bucket) "
            "or use dashboards/provisioning/datasources/influxdb.yaml"
        )
