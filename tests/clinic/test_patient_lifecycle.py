"""A patient's whole life at the site, end to end against the real broker, bridge, VictoriaMetrics and
Firestore emulator: enrol, screen, look up, report, forget; then nothing of her is left in any store
while another patient's data is untouched, and her late messages do not bring her back.

"Screened on a device": the devtools synthetic stream publishes her sessions on a device's topics
(card scan, synthetic MLX90640 frames, session end) the way a sensor node does; a real inference
node with the shipped LiteRT model judges the frames, and the real bridge (in this process)
stores everything and computes the session verdicts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from cloud_bridge.archive import Archive
from cloud_bridge.config import load_config
from cloud_bridge.firestore_sink import FirestoreSink
from cloud_bridge.service import Bridge
from contract.ids import make_patient_ref
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.managed_process import free_port
from devtools.stack import shipped_model_dir
from devtools.synthetic_stream import SyntheticSession, make_session
from inference_node.config import load_config as load_inference_config
from inference_node.node import InferenceNode
from tests.clinic.erasure_helpers import sessions_of
from tests.cloud_bridge.helpers import publish_all, wait_until
from tests.mqtt_helpers import connect

HER_UID, OTHER_UID = "04:a2:2b:19", "04:11:22:33:44:55:66"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )


def _json(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = _cli(env, *args, "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _bridge_toml(workdir: Path, broker_url: str, influx_url: str, project: str | None) -> Path:
    raw: dict[str, Any] = {
        "bridge": {"metrics_interval_s": 0.5, "shutdown_drain_s": 5.0},
        "mqtt": {"url": broker_url, "client_id": f"bridge-{workdir.name}"[:60]},
        "queue": {"path": str(workdir / "queue.sqlite")},
        "archive": {"path": str(workdir / "archive.sqlite"), "backoff_max_s": 1.0},
        "influx": {"enabled": True, "url": influx_url, "frame_rows_every": 1, "backoff_max_s": 1.0},
        "firestore": {"enabled": project is not None, **({"project_id": project} if project else {})},
        "sessions": {"grace_s": 1.0, "max_wait_s": 5.0},
        "provenance": {"hold_s": 3.0},  # the shipped model's verdicts only (the default)
        "erasure": {"tombstones": str(workdir / "erased.txt")},
    }
    path = workdir / "bridge.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


@pytest.fixture
def clinic_env(registry_key: bytes, site_key: bytes) -> dict[str, str]:
    return {
        **os.environ,
        "THERMOSCREEN_REGISTRY_KEY": registry_key.hex(),
        "THERMOSCREEN_SITE_KEY": site_key.hex(),
        "THERMOSCREEN_LOG_FORMAT": "text",
    }


def _enrol(env: dict[str, str], registry: Path, uid: str, name: str) -> str:
    out = _json(
        env, "patients", "enrol", "--registry", str(registry), "--uid", uid, "--name", name,
        "--dob", "1979-05-06", "--clinic-id", f"K-{name[:3]}", "--actor", "nurse-a",
    )  # fmt: skip
    return str(out["patient_ref"])


def _device_messages(session: SyntheticSession) -> list[tuple[str, bytes]]:
    """What a sensor node publishes: card scan, frames, session end (the verdicts come from inference)."""
    return [(t, p) for t, p in session.ordered_messages() if not t.endswith("/verdict")]


def _screen(broker_url: str, sessions: list[SyntheticSession]) -> None:
    publisher = connect(broker_url)
    try:
        publish_all(publisher, [m for s in sessions for m in _device_messages(s)])
    finally:
        publisher.stop()


@pytest.fixture
def inference(mosquitto: LocalMosquitto) -> Iterator[InferenceNode]:
    """A real inference node with the shipped model (LiteRT), in this process."""
    config = load_inference_config(
        None, {"mqtt.url": mosquitto.url, "node_id": "infer-clinic", "model_dir": str(shipped_model_dir())}
    )
    node = InferenceNode(config).start()
    try:
        yield node
    finally:
        node.stop()


def _archive_ids(path: Path) -> dict[str, set[str]]:
    """Per table, the patient refs and session ids it holds."""
    conn = sqlite3.connect(path)
    try:
        return {
            table: {str(v) for row in conn.execute(f"SELECT patient_ref, session_id FROM {table}") for v in row if v}
            for table in ("sessions", "frames", "verdicts")
        }
    finally:
        conn.close()


def _queue_mentions(path: Path, needles: list[bytes]) -> list[str]:
    """Tables of the queue file whose rows hold any needle (payloads and text alike)."""
    conn = sqlite3.connect(path)
    try:
        tables = [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        hits = []
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                blob = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
                if any(n in blob for n in needles):
                    hits.append(table)
                    break
        return hits
    finally:
        conn.close()


def _firestore_docs(project: str) -> dict[str, dict[str, dict[str, Any]]]:
    from cloud_bridge.config import FirestoreSettings

    reader = FirestoreSink(FirestoreSettings(enabled=True, project_id=project))
    try:
        return {
            c: {d.id: d.to_dict() for d in reader.client.collection(c).stream()}
            for c in ("patients", "sessions", "frames")
        }
    finally:
        reader.close()


def _wait_verdicts(archive: Path, session_ids: set[str]) -> None:
    def judged() -> set[str]:
        if not archive.exists():
            return set()
        with Archive(archive) as a:
            return {s.session_id for s in a.sessions() if s.has_verdict}

    wait_until(judged, lambda done: session_ids <= done, 30.0, "the session verdicts in the archive")


def test_enrol_screen_lookup_report_forget_leaves_nothing_of_her(
    *,
    tmp_path: Path,
    mosquitto: LocalMosquitto,
    inference: InferenceNode,
    victoria: LocalVictoriaMetrics,
    emulator_project: str,
    clinic_env: dict[str, str],
    registry_path: Path,
    site_key: bytes,
) -> None:
    env = clinic_env
    reg = ["--registry", str(registry_path)]
    her = _enrol(env, registry_path, HER_UID, "Ama Mensah")
    other = _enrol(env, registry_path, OTHER_UID, "Efua Owusu")
    assert her == make_patient_ref(bytes.fromhex(HER_UID.replace(":", "")), site_key)
    workdir = tmp_path / "bridge"
    workdir.mkdir()
    config_path = _bridge_toml(workdir, mosquitto.url, victoria.url, emulator_project)
    config = load_config(config_path)
    hers, others = sessions_of(her, "clinic-a", 2, seed=1), sessions_of(other, "clinic-b", 1, seed=5)
    her_ids, other_ids = {s.session_id for s in hers}, {s.session_id for s in others}
    reports = tmp_path / "reports"
    reports.mkdir()

    bridge = Bridge(config).start()
    try:
        _screen(mosquitto.url, hers + others)
        _wait_verdicts(config.archive.path, her_ids | other_ids)
        assert bridge.wait_idle(30.0)
        victoria.wait_for_points(f'{{patient_ref="{her}"}}', 1)

        looked_up = _json(env, "patients", "lookup", her, *reg, "--reason", "flagged screening follow-up")
        assert looked_up["name"] == "Ama Mensah"
        # Her history for the doctor: every session of hers, with names (the registry is at hand).
        out = _cli(env, "report", "--patient", her, "--archive", str(config.archive.path), *reg,
                   "--reason", "history review", "--out", str(reports / "her.html"))  # fmt: skip
        assert out.returncode == 0, out.stderr
        history = (reports / "her.html").read_text()
        assert f'<meta name="thermoscreen-patient" content="{her}">' in history and "Ama Mensah" in history
        assert all(sid in history for sid in her_ids) and "Efua Owusu" not in history
        session_args = [a for sid in sorted(other_ids) for a in ("--session", sid)]
        out = _cli(env, "report", *session_args, "--archive", str(config.archive.path),
                   "--out", str(reports / "other.html"))  # fmt: skip
        assert out.returncode == 0, out.stderr
        before_other = {t: ids & ({other} | other_ids) for t, ids in _archive_ids(config.archive.path).items()}
        other_series = len(victoria.export(f'{{patient_ref="{other}"}}'))
        docs_before = _firestore_docs(emulator_project)
        assert her in docs_before["patients"] and her_ids <= set(docs_before["sessions"])

        receipt = _json(env, "patients", "forget", her, *reg, "--reason", "erasure request", "--actor", "dpo",
                        "--bridge-config", str(config_path), "--reports-dir", str(reports))  # fmt: skip

        assert receipt["complete"] and receipt["failed"] == [] and receipt["sessions"] == 2
        stores = receipt["stores"]
        assert stores["archive"]["removed"] == {"sessions": 2, "frames": 6, "verdicts": 6}
        assert stores["influx"]["removed"]["series"] > 0
        assert stores["firestore"]["removed"] == {"sessions": 2, "frames": 6, "patients": 1}
        assert stores["reports"]["removed"] == {"files": 1}
        assert stores["registry"]["removed"] == {"patients": 1}

        # Her late messages (a sensor's spool replayed, a new scan of her card) are dropped at intake.
        late = sessions_of(her, "clinic-a", 1, seed=7)[0]
        control = make_session("clinic-b", 3, patient_ref=other, seed=8, first_seq=100)  # new frames, new seqs
        _screen(mosquitto.url, [late, hers[0], control])
        _wait_verdicts(config.archive.path, {control.session_id})
        # Every message of hers: card scans, frames and ends from the device, verdicts from inference.
        expected = 2 * len(list(late.ordered_messages()))
        wait_until(lambda: dict(bridge.summary().dead_letters), lambda d: d.get("intake/erased", 0) >= expected,
                   30.0, "her late messages dropped")  # fmt: skip
        assert bridge.wait_idle(30.0)
        dropped = bridge.summary().dead_letters.get("intake/erased", 0)
    finally:
        bridge.stop()

    assert dropped == expected
    left = _archive_ids(config.archive.path)
    gone = {her} | her_ids | {late.session_id}
    assert all(not (ids & gone) for ids in left.values()), left
    assert {t: ids & ({other} | other_ids) for t, ids in left.items()} == before_other
    needles = [her.encode(), bytes.fromhex(her)] + [n for sid in gone if sid != her for n in (sid.encode(),)]
    assert _queue_mentions(config.queue.path, needles) == []
    assert victoria.export(f'{{patient_ref="{her}"}}') == []
    assert all(victoria.export(f'{{session_id="{sid}"}}') == [] for sid in her_ids)
    assert len(victoria.export(f'{{patient_ref="{other}"}}')) >= other_series
    docs = _firestore_docs(emulator_project)
    assert her not in docs["patients"] and not (set(docs["sessions"]) & gone)
    assert all(d.get("patient_ref") != her and d.get("session_id") not in gone for d in docs["frames"].values())
    assert other in docs["patients"] and other_ids <= set(docs["sessions"])
    assert sorted(p.name for p in reports.iterdir()) == ["other.html"]
    shown = _cli(env, "patients", "show", her, *reg)
    assert shown.returncode == 2 and f"no patient {her}" in shown.stderr
    assert _json(env, "patients", "show", other, *reg)["patient_ref"] == other
    assert her not in config.erasure.tombstones.read_text()

    again = _json(env, "patients", "forget", her, *reg, "--reason", "erasure request (rerun)",
                  "--bridge-config", str(config_path), "--reports-dir", str(reports))  # fmt: skip
    assert again["complete"]
    assert all(sum(s.get("removed", {}).values()) == 0 for s in again["stores"].values())
    audit = _json(env, "patients", "audit", *reg, "--verify")
    # enrolments, lookup, the named history report, two forgets (each 2 lines)
    assert audit["intact"] and audit["lines"] == 2 + 1 + 1 + 4
    log_lines = [json.loads(line) for line in registry_path.with_name("patients.sqlite.audit.jsonl").open()]
    assert [(e["action"], e["patient_ref"]) for e in log_lines if e["action"] == "report"] == [("report", her)]
    forgets = [e for e in log_lines if e["action"] == "forget"]
    assert [e["detail"]["status"] for e in forgets] == ["attempted", "completed", "attempted", "completed"]
    assert forgets[1]["actor"] == "dpo" and forgets[1]["reason"] == "erasure request"
    assert forgets[1]["detail"]["removed"]["archive"] == {"sessions": 2, "frames": 6, "verdicts": 6}


def test_an_unreachable_store_exits_non_zero_naming_it_and_a_rerun_completes(
    *,
    tmp_path: Path,
    mosquitto: LocalMosquitto,
    inference: InferenceNode,
    victoria: LocalVictoriaMetrics,
    clinic_env: dict[str, str],
    registry_path: Path,
) -> None:
    env = clinic_env
    reg = ["--registry", str(registry_path)]
    her = _enrol(env, registry_path, HER_UID, "Ama Mensah")
    workdir = tmp_path / "bridge"
    workdir.mkdir()
    config_path = _bridge_toml(workdir, mosquitto.url, victoria.url, None)
    config = load_config(config_path)
    hers = sessions_of(her, "clinic-u", 1, seed=3)
    bridge = Bridge(config).start()
    try:
        _screen(mosquitto.url, hers)
        _wait_verdicts(config.archive.path, {hers[0].session_id})
        assert bridge.wait_idle(30.0)
    finally:
        bridge.stop()
    victoria.wait_for_points(f'{{patient_ref="{her}"}}', 1)
    dead_tsdb = _bridge_toml(tmp_path / "bridge", mosquitto.url, f"http://127.0.0.1:{free_port()}", None)
    forget = ["patients", "forget", her, *reg, "--reason", "erasure request", "--reports-dir", str(tmp_path / "r")]

    first = _cli(env, *forget, "--bridge-config", str(dead_tsdb), "--json")

    assert first.returncode == 1
    assert "incomplete: influx:" in first.stderr and "unreachable" in first.stderr
    receipt = json.loads(first.stdout)
    assert receipt["failed"] == ["influx"] and not receipt["complete"]
    assert receipt["stores"]["archive"]["removed"]["sessions"] == 1  # erased what it could
    assert receipt["stores"]["registry"]["status"] == "kept"
    assert _json(env, "patients", "show", her, *reg)["patient_ref"] == her
    assert victoria.export(f'{{patient_ref="{her}"}}') != []

    live_tsdb = _bridge_toml(tmp_path / "bridge", mosquitto.url, victoria.url, None)
    second = _json(env, *forget, "--bridge-config", str(live_tsdb))

    assert second["complete"] and second["stores"]["influx"]["removed"]["series"] > 0
    assert second["stores"]["archive"]["removed"]["sessions"] == 0
    assert second["stores"]["registry"]["removed"] == {"patients": 1}
    assert victoria.export(f'{{patient_ref="{her}"}}') == []
    statuses = [json.loads(line)["detail"].get("status") for line in registry_path.with_name(
        "patients.sqlite.audit.jsonl").open()]  # fmt: skip
    assert statuses == [None, "attempted", "incomplete", "attempted", "completed"]
