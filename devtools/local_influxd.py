"""Starts a real InfluxDB 1.x (`influxd`, Debian's `influxdb`) on loopback, for InfluxQL tests.

InfluxDB 1.x serves the same InfluxQL that InfluxDB 2 serves through its v1 API, so the
dashboards' queries are checked against a real engine. The server keeps its data under
`workdir`; reporting, the query log, self-monitoring and continuous queries are off.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

from devtools.managed_process import ManagedProcess, ProcessStartError, find_program, free_port

INFLUXD_CANDIDATES = ("influxd", "/usr/bin/influxd")


class InfluxdStartError(ProcessStartError):
    """influxd is missing or did not start listening; the message says why."""


class InfluxQLError(RuntimeError):
    """influxd answered a query with an error; the message holds the query and the error."""


def find_influxd() -> str:
    return find_program(
        INFLUXD_CANDIDATES, InfluxdStartError, "influxd not found: install it (Debian: apt-get install influxdb)"
    )


class LocalInfluxd(ManagedProcess):
    """An influxd with a generated config on two free loopback ports (HTTP and RPC)."""

    name = "influxd"
    start_error = InfluxdStartError
    start_timeout_s = 30.0
    stop_timeout_s = 30.0

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.config_path = self.workdir / "influxdb.conf"
        super().__init__(self.workdir / "influxd.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        root = str(self.workdir)
        return {
            "reporting-disabled": True,
            "bind-address": f"127.0.0.1:{self.rpc_port}",
            "meta": {"dir": f"{root}/meta"},
            "data": {"dir": f"{root}/data", "wal-dir": f"{root}/wal", "query-log-enabled": False},
            "http": {"bind-address": f"127.0.0.1:{self.port}", "log-enabled": False},
            "monitor": {"store-enabled": False},
            "continuous_queries": {"enabled": False},
        }

    def command(self) -> list[str]:
        binary = find_influxd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomli_w.dumps(self.config()), encoding="utf-8")
        return [binary, "-config", str(self.config_path)]

    def wait_ready(self, timeout: float) -> None:
        self.wait_for_port(self.port, timeout)

    # -- the HTTP API ------------------------------------------------------------------------
    def _post(self, path: str, params: dict[str, str], body: bytes = b"") -> bytes:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as resp:
            data: bytes = resp.read()
            return data

    def query(self, db: str, q: str) -> dict[str, Any]:
        """The first result of InfluxQL `q` on `db` (times in ms); InfluxQLError on an error."""
        reply = json.loads(self._post("/query", {"db": db, "q": q, "epoch": "ms"}))
        result: dict[str, Any] = reply["results"][0]
        if "error" in result:
            raise InfluxQLError(f"{q}\n-> {result['error']}")
        return result

    def write(self, db: str, lines: list[str]) -> None:
        """Write line protocol (nanosecond timestamps) into `db`."""
        self._post("/write", {"db": db, "precision": "ns"}, "\n".join(lines).encode("utf-8"))
