"""`thermoscreen dashboards push` against a recording HTTP server.

A documented stand-in: Grafana cannot be installed on this machine (no Debian package, no
network for its release archives), so a tiny local HTTP server answers the few Grafana API
endpoints grafana-client calls, the way Grafana's API documents them, and records every
request. The test asserts the calls grafana-client makes: authentication header, folder
lookup and creation, one overwrite upload per dashboard with the generated JSON.

The stand-in does not accept any body: `upload_problem` checks each upload against what
Grafana's `POST /api/dashboards/db` requires (and parses the dashboard with the
grafana-foundation-sdk model), answering 400 like Grafana otherwise; and it keeps a version
per uid that each upload increments, so the version the client reports is one it was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dashboards.generate import DASHBOARDS, GENERATED_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glsa_test-token-123"


@dataclass
class FakeGrafana:
    """State of the stand-in: folders that exist and every request received."""

    folders: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    datasources: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Grafana's limit on a dashboard uid.
MAX_UID_LENGTH = 40
UPLOAD_KEYS = {"dashboard", "overwrite", "folderUid", "folderId", "message"}


def panel_problem(panel: Any) -> str | None:
    if not isinstance(panel, dict) or not isinstance(panel.get("type"), str) or not isinstance(panel.get("id"), int):
        return f"panel without type and id: {panel!r:.80}"
    grid = panel.get("gridPos")
    if not isinstance(grid, dict) or not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
        return f"panel {panel['id']} without gridPos h/w/x/y"
    for child in panel.get("panels", []):  # a collapsed row carries its panels
        if (problem := panel_problem(child)) is not None:
            return problem
    return None


def upload_problem(body: Any, folders: set[str]) -> str | None:
    """Why Grafana would refuse this dashboard upload, or None when it is well formed."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    if not isinstance(body, dict) or not set(body) <= UPLOAD_KEYS or "dashboard" not in body:
        return f"upload body must be an object with dashboard and only {sorted(UPLOAD_KEYS)}"
    if not isinstance(body.get("overwrite"), bool) or body.get("folderUid") not in folders:
        return "upload needs overwrite (bool) and the folderUid of an existing folder"
    dashboard = body["dashboard"]
    if not isinstance(dashboard, dict):
        return "dashboard must be an object"
    uid, title, panels = dashboard.get("uid"), dashboard.get("title"), dashboard.get("panels")
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_UID_LENGTH or not isinstance(title, str) or not title:
        return "dashboard needs a uid (1-40 characters) and a title"
    if not isinstance(panels, list) or not panels:
        return "dashboard needs panels"
    for panel in panels:
        if (problem := panel_problem(panel)) is not None:
            return problem
    try:
        model = Dashboard.from_json(dashboard)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return f"dashboard does not parse as the SDK's model: {exc}"
    if model.uid != uid or model.title != title or len(model.panels or []) != len(panels):
        return "dashboard does not round-trip through the SDK's model"
    return None


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with state.lock:
                state.requests.append((self.command, self.path, dict(self.headers.items()), body))
            return body

        def do_GET(self) -> None:
            self._record()
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "Unauthorized"})
            elif self.path == "/api/frontend/settings":
                self._reply(200, {"buildInfo": {"version": "10.4.2"}})
            elif self.path == "/api/datasources":
                self._reply(200, state.datasources)
            elif self.path.startswith("/api/folders/"):
                uid = self.path.rsplit("/", 1)[1]
                if uid in state.folders:
                    self._reply(200, {"uid": uid, "title": uid})
                else:
                    self._reply(404, {"message": "folder not found"})
            else:
                self._reply(404, {"message": "not found"})

        def do_POST(self) -> None:
            body = self._record()
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "Unauthorized"})
            elif self.path == "/api/folders":
                state.folders.add(body["uid"])
                self._reply(200, {"uid": body["uid"], "title": body["title"]})
            elif self.path == "/api/dashboards/db":
                problem = upload_problem(body, state.folders)
                if problem is not None:
                    state.rejected.append(problem)
                    self._reply(400, {"message": problem})
                    return
                uid = body["dashboard"]["uid"]
                with state.lock:
                    version = state.versions[uid] = state.versions.get(uid, 0) + 1
                self._reply(200, {"status": "success", "uid": uid, "version": version, "url": f"/d/{uid}/x"})
            else:
                self._reply(404, {"message": "not found"})

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def push(url: str, *extra: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_TOKEN"}
    if token is not None:
        env["GRAFANA_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "dashboards", "push", "--url", url, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


def test_push_creates_folder_and_uploads_every_dashboard(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    state.versions.update({"thermoscreen-doctor": 6, "thermoscreen-fleet": 2})  # older versions exist
    out = push(url, "--json")
    assert out.returncode == 0, out.stderr
    assert state.rejected == []
    result = json.loads(out.stdout)
    assert {d["uid"]: d["version"] for d in result["dashboards"]} == {"thermoscreen-doctor": 7, "thermoscreen-fleet": 3}
    assert "no InfluxDB datasource" in out.stderr  # the stand-in has none: the user is told

    calls = [(method, path) for method, path, _, _ in state.requests]
    assert calls[0] == ("GET", "/api/frontend/settings")
    assert ("GET", "/api/folders/thermoscreen") in calls
    assert calls.index(("POST", "/api/folders")) < calls.index(("POST", "/api/dashboards/db"))
    assert calls.count(("POST", "/api/dashboards/db")) == len(DASHBOARDS)
    assert all(headers.get("Authorization") == f"Bearer {TOKEN}" for _, _, headers, _ in state.requests)

    uploads = [body for method, path, _, body in state.requests if path == "/api/dashboards/db"]
    committed = {json.loads((GENERATED_DIR / n).read_text())["uid"]: n for n in DASHBOARDS}
    for body in uploads:
        assert body["overwrite"] is True
        assert body["folderUid"] == "thermoscreen"
        assert body["dashboard"]["id"] is None
        expected = json.loads((GENERATED_DIR / committed[body["dashboard"]["uid"]]).read_text())
        assert {k: v for k, v in body["dashboard"].items() if k != "id"} == expected


def test_the_stand_in_refuses_what_grafana_refuses() -> None:
    good = {
        "dashboard": json.loads((GENERATED_DIR / "doctor.json").read_text()),
        "folderUid": "thermoscreen",
        "overwrite": True,
    }
    assert upload_problem(good, {"thermoscreen"}) is None
    bad: list[Any] = [
        {k: v for k, v in good.items() if k != "folderUid"},
        {k: v for k, v in good.items() if k != "overwrite"},
        {**good, "extra": 1},
        {**good, "dashboard": {k: v for k, v in good["dashboard"].items() if k != "title"}},
        {**good, "dashboard": {k: v for k, v in good["dashboard"].items() if k != "uid"}},
        {**good, "dashboard": {**good["dashboard"], "uid": "x" * 41}},
        {**good, "dashboard": {**good["dashboard"], "panels": [{"type": "stat", "id": 1}]}},
        [good],
    ]
    assert all(upload_problem(body, {"thermoscreen"}) is not None for body in bad)
    assert upload_problem(good, set()) is not None  # the folder must exist


def test_second_push_reuses_the_folder(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    state.folders.add("thermoscreen")
    state.datasources.append({"type": "influxdb", "uid": "x"})
    out = push(url, "--dir", str(GENERATED_DIR))
    assert out.returncode == 0, out.stderr
    assert state.rejected == [] and set(state.versions.values()) == {1}
    assert "no InfluxDB datasource" not in out.stderr
    assert ("POST", "/api/folders") not in [(m, p) for m, p, _, _ in state.requests]


def test_push_without_token_is_a_one_line_error(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    out = push(url, token=None)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "thermoscreen dashboards: error: set GRAFANA_TOKEN to a Grafana API token (or put user:password in --url)"
    ]
    assert state.requests == []


def test_rejected_token_is_a_one_line_error(grafana: tuple[str, FakeGrafana]) -> None:
    url, _ = grafana
    out = push(url, token="wrong")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("thermoscreen dashboards: error: Grafana at") and "Unauthorized" in lines[0]


def test_unreachable_grafana_is_a_one_line_error() -> None:
    from devtools.local_mosquitto import free_port

    out = push(f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("thermoscreen dashboards: error:")
