"""A re-imaged device (issue 12.2): two incarnations with overlapping seq numbers, through the real
bridge into the archive, VictoriaMetrics and the Firestore emulator; and a version-1 archive file
migrated to (device, incarnation, seq) keys without losing a row."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.archive import SCHEMA_SQL, Archive
from cloud_bridge.firestore_sink import FirestoreSink, frame_doc_id
from cloud_bridge.service import Bridge
from contract.frame import encode_frame
from contract.ids import LEGACY_INCARNATION
from contract.messages import SessionVerdict, decode_message, encode_message
from contract.topics import frame_topic, rfid_topic, verdict_topic
from devtools.local_firestore import LocalFirestoreEmulator
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import SyntheticSession, make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait

FIRST, SECOND = "0123456789abcdef", "fedcba9876543210"


@pytest.fixture
def emulator_project(firestore_emulator: LocalFirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    yield f"demo-{uuid.uuid4().hex[:12]}"


def _messages(s: SyntheticSession, incarnation: str) -> list[tuple[str, bytes]]:
    out = [(rfid_topic(s.device_id), encode_message(s.start.model_copy(update={"incarnation": incarnation})))]
    for frame, verdict in zip(s.frames, s.verdicts, strict=True):
        out.append((frame_topic(s.device_id), encode_frame(dataclasses.replace(frame, incarnation=incarnation))))
        out.append(
            (verdict_topic(s.device_id), encode_message(verdict.model_copy(update={"incarnation": incarnation})))
        )
    out.append((rfid_topic(s.device_id), encode_message(s.end.model_copy(update={"incarnation": incarnation}))))
    return out


def test_two_incarnations_with_overlapping_seq_lose_and_overwrite_nothing(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path, emulator_project: str
) -> None:
    config = bridge_config(
        bridge_dir,
        mosquitto.url,
        influx_url=running_victoria.url,
        firestore={"enabled": True, "project_id": emulator_project},
    )
    before = make_session("reimg-1", 3, seed=11, t0_ns=None)
    after = make_session("reimg-1", 3, seed=12)  # seq 0, 1, 2 again, a later capture time
    assert [f.seq for f in before.frames] == [f.seq for f in after.frames]
    publisher = connect(mosquitto.url)
    results = Collector()
    subscribe_and_wait(publisher, "thermo/v1/reimg-1/session_verdict", results)
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, _messages(before, FIRST) + _messages(after, SECOND))
        wait_until(lambda: bridge.summary().stored, lambda n: n >= 2 * 8, 20.0, "both sessions stored")
        assert bridge.wait_idle(30.0)
        summary = bridge.summary()
        published = [decode_message(m.payload, SessionVerdict) for m in results.wait_for(2, 20.0)]
    finally:
        bridge.stop()
        publisher.stop()
    assert summary.dead_letters == {}
    # Each session verdict goes back under its own incarnation, so the re-imaged device knows it is its own.
    assert {(v.session_id, v.incarnation) for v in published} == {
        (before.session_id, FIRST),
        (after.session_id, SECOND),
    }
    with Archive(config.archive.path) as archive:
        assert archive.counts() == {"sessions": 2, "verdicts": 6, "frames": 6}
        for s, inc in ((before, FIRST), (after, SECOND)):
            stored = archive.verdicts(s.session_id)
            assert [(v.seq, v.incarnation, v.probability) for v in stored] == [
                (v.seq, inc, v.probability) for v in s.verdicts
            ]
            assert len(archive.frames(s.session_id)) == 3
    keys, _ = running_victoria.wait_for_points('{device_id="reimg-1",__name__="frame_stats_mean_c"}', 6)
    assert len(keys) == 6
    sink = FirestoreSink(config.firestore)
    try:
        docs = {d.id: d.to_dict() for d in sink.client.collection("frames").stream()}
    finally:
        sink.close()
    assert sorted(docs) == sorted(frame_doc_id("reimg-1", seq, inc) for inc in (FIRST, SECOND) for seq in range(3))
    assert {d["session_id"] for d in docs.values()} == {before.session_id, after.session_id}
    assert all("verdict" in d for d in docs.values())


def test_a_version_1_archive_is_migrated_to_incarnation_keys_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    v1 = SCHEMA_SQL.replace(",\n    incarnation   TEXT NOT NULL DEFAULT '0000000000000000'", "")
    v1 = v1.replace(",\n    incarnation TEXT NOT NULL DEFAULT '0000000000000000'", "")
    v1 = v1.replace("(device_id, incarnation, seq)", "(device_id, seq)")
    # nor the later inconclusive columns
    v1 = re.sub(
        r",\n    (member_spread|band_low|band_high|max_member_spread|inconclusive)\s+[A-Z][^,\n]*(?=[,\n])", "", v1
    )
    assert "incarnation" not in v1 and "inconclusive" not in v1
    conn = sqlite3.connect(path)
    conn.executescript(v1)
    conn.execute("INSERT INTO verdicts VALUES ('old-1', 5, 's', 'p', 1, 0.5, 1, 0.5, 'm', 'n', 1.0)")
    conn.execute("INSERT INTO frames VALUES ('old-1', 5, 's', 'p', 1, 1, 1, 20.0, x'00')")
    conn.commit()
    conn.close()
    Archive(path, readonly=False).close()
    with Archive(path) as archive:
        assert archive.counts() == {"sessions": 0, "verdicts": 1, "frames": 1}
        (v,) = archive.verdicts("s")
        assert (v.device_id, v.seq, v.incarnation) == ("old-1", 5, LEGACY_INCARNATION)
        pk = [r[1] for r in archive.connection.execute("PRAGMA table_info(frames)") if r[5]]
        assert pk == ["device_id", "seq", "incarnation"]
