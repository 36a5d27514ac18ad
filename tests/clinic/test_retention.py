"""Retention (`[retention] days`): old sessions, frames and verdicts leave the archive (also from a
running bridge's own schedule) and Firestore (emulator); the compose stack's InfluxDB bucket keeps
the same days (checked from the files: no Docker engine here)."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import yaml

from cloud_bridge.config import BridgeConfig, FirestoreSettings, RetentionSettings
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.firestore_sink import FirestoreSink
from cloud_bridge.retention import NS_PER_DAY, RetentionWorker, cutoff_ns, purge_archive, purge_firestore
from cloud_bridge.service import Bridge
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import SyntheticSession, make_session
from tests.clinic.erasure_helpers import fill_archive, queue_items
from tests.cloud_bridge.helpers import bridge_config, wait_until
from transport.config_file import validate_model

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = time.time_ns()


def _session(ref: str, device: str, age_days: float, first_seq: int) -> SyntheticSession:
    return make_session(device, 3, t0_ns=NOW - int(age_days * NS_PER_DAY), patient_ref=ref, first_seq=first_seq)


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("sessions", "frames")}
    finally:
        conn.close()


def test_retention_is_off_by_default_and_strict() -> None:
    assert BridgeConfig().retention.days is None
    with pytest.raises(ValueError, match="days"):
        RetentionSettings(days=0)
    with pytest.raises(ValueError, match="Extra inputs"):
        RetentionSettings.model_validate({"days": 30, "weeks": 2})
    with pytest.raises(ValueError, match=r"retention\.days is not set"):
        RetentionWorker(RetentionSettings(), archive=Path("a.sqlite"), firestore=None)


def test_purge_archive_removes_sessions_older_than_the_cutoff_with_their_frames(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    old, new = _session("a" * 16, "ret-a", 40, 0), _session("a" * 16, "ret-a", 1, 100)
    fill_archive(path, [old, new])

    removed = purge_archive(path, cutoff_ns(30, NOW))

    assert removed == {"sessions": 1, "frames": 3, "verdicts": 3}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT session_id FROM sessions").fetchall() == [(new.session_id,)]
        assert {r[0] for r in conn.execute("SELECT session_id FROM frames")} == {new.session_id}
    finally:
        conn.close()
    assert purge_archive(path, cutoff_ns(30, NOW)) == {"sessions": 0, "frames": 0, "verdicts": 0}


def test_the_bridge_runs_retention_on_its_schedule(tmp_path: Path, mosquitto: LocalMosquitto) -> None:
    workdir = tmp_path / "bridge"
    workdir.mkdir()
    config = bridge_config(workdir, mosquitto.url, retention={"days": 30, "interval_s": 3600})
    fill_archive(config.archive.path, [_session("b" * 16, "ret-b", 45, 0), _session("b" * 16, "ret-b", 2, 100)])
    bridge = Bridge(config).start()
    try:
        wait_until(lambda: _counts(config.archive.path), lambda c: c["sessions"] == 1, 20.0, "the retention run")
        assert bridge.retention is not None and bridge.retention.runs >= 1
        assert bridge.retention.removed["archive"]["sessions"] == 1
    finally:
        bridge.stop()
    assert _counts(config.archive.path) == {"sessions": 1, "frames": 3}


def _items(session: SyntheticSession) -> list[QueuedItem]:
    return [QueuedItem(i + 1, item.kind, item.topic, item.payload, 0) for i, item in enumerate(queue_items(session))]


def test_purge_firestore_removes_old_sessions_frames_and_emptied_patients(emulator_project: str) -> None:
    settings = FirestoreSettings(enabled=True, project_id=emulator_project)
    keeps, leaves = f"{uuid.uuid4().int % 16**16:016x}", f"{uuid.uuid4().int % 16**16:016x}"
    old_a, new_a = _session(keeps, "fs-ret-a", 50, 0), _session(keeps, "fs-ret-a", 1, 100)
    old_b = _session(leaves, "fs-ret-b", 60, 0)
    sink = FirestoreSink(settings)
    try:
        for s in (old_a, new_a, old_b):
            sink.write(_items(s))
        removed = purge_firestore(settings, cutoff_ns(30, NOW))
        docs = {c: {d.id: d.to_dict() for d in sink.client.collection(c).stream()} for c in ("patients", "sessions")}
        frames = [d.to_dict() for d in sink.client.collection("frames").stream()]
    finally:
        sink.close()
    assert removed == {"sessions": 2, "frames": 6, "patients": 1}
    assert set(docs["sessions"]) == {new_a.session_id}
    assert {f["session_id"] for f in frames} == {new_a.session_id}
    assert set(docs["patients"]) == {keeps} and docs["patients"][keeps]["session_ids"] == [new_a.session_id]


def test_the_compose_influx_bucket_keeps_what_the_bridge_archive_keeps() -> None:
    """The same days in the bridge's compose config, the InfluxDB bucket's default and .env.example."""
    rendered = (REPO_ROOT / "docker" / "config" / "bridge.toml.in").read_text().replace("@ACCOUNT@", "bridge")
    import tomllib

    bridge = validate_model(tomllib.loads(rendered), BridgeConfig, source="bridge.toml.in")
    assert bridge.retention.days is not None
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    influx_retention = compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_RETENTION"]
    default = re.fullmatch(r"\$\{INFLUX_RETENTION:-(\d+)d\}", influx_retention)
    assert default is not None, influx_retention
    assert int(default.group(1)) == bridge.retention.days
    example = dict(line.split("=", 1) for line in (REPO_ROOT / ".env.example").read_text().splitlines() if "=" in line)
    assert example["INFLUX_RETENTION"] == f"{int(bridge.retention.days)}d"
