"""Starts a real VictoriaMetrics on loopback (tests, benchmarks, the demo) and reads data back.

VictoriaMetrics accepts the InfluxDB v2 write API (`/api/v2/write`) that the bridge uses,
so the Influx sink is tested against a real server. What to know when reading back:

- Each line-protocol field becomes a series named `<measurement>_<field>`; tags become
  labels; string fields are stored as 0 (the schema has none).
- Timestamps are kept with millisecond precision (`-influxTrimTimestamp=1ms`).
- Identical samples written twice (same series and timestamp) are both kept (no
  deduplication is configured), so a rewrite is visible in `/api/v1/export`; InfluxDB
  would overwrite the point instead. `export_keys` therefore reports distinct points and
  rewrites separately.
- Fresh data is not visible at once: new points of known series showed up in
  `/api/v1/export` after ~0.2 s, points of *new* series only after ~10 s (measured here,
  VictoriaMetrics from Debian bookworm). A call to `/internal/force_flush` before reading
  makes both visible within ~0.1-0.7 s, so `export` flushes first and `wait_for_points`
  polls until the expected points are there. `-search.latencyOffset=0s` matters only for
  queries (`/api/v1/query*`), not for the export.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from devtools.managed_process import ManagedProcess, ProcessStartError, find_program, free_port

VICTORIA_CANDIDATES = ("victoria-metrics", "victoria-metrics-prod", "/usr/bin/victoria-metrics")


class TsdbStartError(ProcessStartError):
    """VictoriaMetrics is missing or did not become healthy; the message says why."""


def find_victoria_metrics() -> str:
    return find_program(
        VICTORIA_CANDIDATES,
        TsdbStartError,
        "victoria-metrics not found: install it (Debian: apt-get install victoria-metrics)",
    )


@dataclass(frozen=True)
class ExportedSeries:
    name: str
    labels: dict[str, str]
    values: list[float]
    timestamps_ms: list[int]


#: A series: (name, sorted labels).
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
#: A point as the TSDB keys it: (series name, sorted labels, timestamp in ms).
PointKey = tuple[str, tuple[tuple[str, str], ...], int]


@dataclass(frozen=True)
class Comparison:
    """What landed against what should have: counts of samples (one per series and timestamp)."""

    present: int
    lost: int
    unexpected: int
    rewrites: int


def compare_series(expected: dict[SeriesKey, set[int]], exported: dict[SeriesKey, list[int]]) -> Comparison:
    """Per series, compare the expected timestamps with the exported ones (set operations, fast)."""
    present = lost = unexpected = rewrites = 0
    for key, want in expected.items():
        got_list = exported.get(key, [])
        got = set(got_list)
        rewrites += len(got_list) - len(got)
        hit = len(want & got)
        present += hit
        lost += len(want) - hit
        unexpected += len(got) - hit
    for key, got_list in exported.items():
        if key not in expected:
            got = set(got_list)
            unexpected += len(got)
            rewrites += len(got_list) - len(got)
    return Comparison(present, lost, unexpected, rewrites)


class LocalVictoriaMetrics(ManagedProcess):
    """A VictoriaMetrics process; `restart()` keeps the port and the data directory."""

    name = "victoria-metrics"
    start_error = TsdbStartError
    start_timeout_s = 30.0
    #: SIGTERM makes VictoriaMetrics flush its buffers to disk before exiting: give it time.
    stop_timeout_s = 30.0

    def __init__(self, data_dir: Path, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = extra_args
        super().__init__(self.data_dir.parent / f"victoria-metrics-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = find_victoria_metrics()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
            *self.extra_args,
        ]

    def wait_ready(self, timeout: float) -> None:
        self.wait_http_ok(f"{self.url}/health", timeout)

    # -- reading back ----------------------------------------------------------------------
    def flush(self) -> None:
        """Make everything ingested so far searchable (new series included)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30.0) as resp:
            resp.read()

    def export(self, selector: str, timeout: float = 60.0) -> list[ExportedSeries]:
        """Raw samples of every series matching the PromQL `selector` (e.g. `{device_id="d1"}`)."""
        self.flush()
        body = urllib.parse.urlencode({"match[]": selector}).encode("ascii")
        request = urllib.request.Request(f"{self.url}/api/v1/export", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"victoria-metrics export failed: HTTP {exc.code} {exc.read()[:200]!r}") from None
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            labels = {k: str(v) for k, v in raw["metric"].items() if k != "__name__"}
            out.append(
                ExportedSeries(
                    str(raw["metric"].get("__name__", "")),
                    labels,
                    [float(v) for v in raw["values"]],
                    [int(t) for t in raw["timestamps"]],
                )
            )
        return out

    def export_timestamps(self, selector: str) -> dict[SeriesKey, list[int]]:
        """Every matching series with its sample timestamps (ms), repeats included."""
        out: dict[SeriesKey, list[int]] = {}
        for series in self.export(selector):
            out.setdefault((series.name, tuple(sorted(series.labels.items()))), []).extend(series.timestamps_ms)
        return out

    def export_keys(self, selector: str) -> tuple[set[PointKey], int]:
        """Distinct points matching `selector`, and how many samples repeated an existing point."""
        counts: Counter[PointKey] = Counter()
        for series in self.export(selector):
            labels = tuple(sorted(series.labels.items()))
            for ts in series.timestamps_ms:
                counts[(series.name, labels, ts)] += 1
        rewrites = sum(n - 1 for n in counts.values())
        return set(counts), rewrites

    def wait_for_points(self, selector: str, expected: int, timeout: float = 30.0) -> tuple[set[PointKey], int]:
        """Poll until at least `expected` distinct points match (or timeout); returns `export_keys`."""
        deadline = time.monotonic() + timeout
        while True:
            keys, rewrites = self.export_keys(selector)
            if len(keys) >= expected or time.monotonic() > deadline:
                return keys, rewrites
            time.sleep(0.2)

    def write_lines(self, lines: list[str]) -> None:
        """Write line protocol directly (tests of the read-back path)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/write?precision=ns", data="\n".join(lines).encode("utf-8"), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30.0) as resp:
            if resp.status not in (200, 204):
                raise RuntimeError(f"victoria-metrics write failed: HTTP {resp.status}")
