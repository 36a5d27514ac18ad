"""Helpers of the bridge tests: configs, publishing with PUBACK receipts, waiting on the archive."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from cloud_bridge.archive import Archive
from cloud_bridge.config import BridgeConfig
from cloud_bridge.provenance import shipped_model_version
from contract import timeseries as schema
from devtools.local_tsdb import LocalVictoriaMetrics, PointKey
from devtools.synthetic_stream import MODEL_VERSION as SYNTHETIC_MODEL
from devtools.synthetic_stream import SyntheticSession, session_verdict_points
from transport.config_file import validate_model
from transport.connection import MqttConnection, PublishReceipt

T = TypeVar("T")


def bridge_config(
    workdir: Path, broker_url: str, *, influx_url: str | None = None, **sections: dict[str, Any]
) -> BridgeConfig:
    raw: dict[str, Any] = {
        "bridge": {"metrics_interval_s": 0.5, "shutdown_drain_s": 5.0},
        "mqtt": {"url": broker_url, "client_id": f"bridge-test-{workdir.name}"[:64]},
        "queue": {"path": str(workdir / "queue.sqlite")},
        "archive": {"path": str(workdir / "archive.sqlite"), "backoff_max_s": 1.0},
        "influx": {
            "enabled": influx_url is not None,
            "url": influx_url or "http://127.0.0.1:1",
            "frame_rows_every": 4,
            "backoff_min_s": 0.1,
            "backoff_max_s": 1.0,
        },
        "sessions": {"grace_s": 1.0, "max_wait_s": 5.0},
        # The synthetic streams' model next to the shipped one.
        "provenance": {"approved_models": [SYNTHETIC_MODEL, shipped_model_version()], "hold_s": 3.0},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return validate_model(raw, BridgeConfig, source="<test>")


def publish_all(conn: MqttConnection, messages: Iterable[tuple[str, bytes]], timeout: float = 30.0) -> int:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    receipts: list[PublishReceipt] = [conn.publish(topic, payload, qos=1) for topic, payload in messages]
    deadline = time.monotonic() + timeout
    for receipt in receipts:
        assert receipt.wait(max(0.0, deadline - time.monotonic())), "broker did not acknowledge a publish"
        assert receipt.accepted, f"broker refused a publish: {receipt.reason_code}"
    return len(receipts)


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll `probe` until `done(value)`; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        time.sleep(0.1)


def archive_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {"sessions": 0, "verdicts": 0, "frames": 0}
    with Archive(path) as archive:
        return archive.counts()


def repeated_samples(victoria: LocalVictoriaMetrics, selector: str) -> Counter[PointKey]:
    """Raw VictoriaMetrics samples beyond the first of each point (it keeps every sample written)."""
    counts: Counter[PointKey] = Counter()
    for series in victoria.export(selector):
        labels = tuple(sorted(series.labels.items()))
        counts.update((series.name, labels, ts) for ts in series.timestamps_ms)
    return Counter({key: n - 1 for key, n in counts.items() if n > 1})


def end_point_active(session: SyntheticSession) -> PointKey:
    """The one point written twice by design: the session verdict completes the rfid end's
    `event=end` point and writes its `active` field (0) again, same tags and timestamp."""
    _, labels, ts = next(iter(session_verdict_points(session)))
    return (f"{schema.SESSION.name}_active", labels, ts)
