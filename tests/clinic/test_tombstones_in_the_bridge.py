"""A running bridge and an erasure that happens while it still holds a patient's state in memory:
a verdict held for its frame, a session waiting out its grace period. Neither may bring her back."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cloud_bridge import erasure_tombstones
from cloud_bridge.archive import Archive
from cloud_bridge.service import Bridge
from contract.messages import encode_message
from contract.topics import verdict_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import connect

HER = "5e5e5e5e5e5e5e5e"


def _dead_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deadletters").fetchone()[0])
    finally:
        conn.close()


def test_a_held_verdict_of_an_erased_patient_expires_without_a_trace(tmp_path: Path, mosquitto: LocalMosquitto) -> None:
    tombstones = tmp_path / "erased.txt"
    config = bridge_config(tmp_path, mosquitto.url, provenance={"hold_s": 1.0}, erasure={"tombstones": str(tombstones)})
    session = make_session("tomb-a", 1, patient_ref=HER)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        # The verdict arrives first: it is held for its frame, which never comes.
        publish_all(publisher, [(verdict_topic("tomb-a"), encode_message(session.verdicts[0]))])
        wait_until(lambda: bridge.ingest._provenance.held if bridge.ingest and bridge.ingest._provenance else 0,
                   lambda n: n == 1, 10.0, "the held verdict")  # fmt: skip
        erasure_tombstones.add(tombstones, HER, [session.session_id])
        counts = wait_until(
            lambda: bridge.summary().dead_letters, lambda d: d.get("intake/erased", 0) == 1, 15.0, "the expiry"
        )
    finally:
        publisher.stop()
        bridge.stop()
    assert "intake/verdict-no-frame" not in counts
    assert _dead_rows(config.queue.path) == 0


def test_a_session_in_its_grace_period_is_not_judged_after_the_erasure(
    tmp_path: Path, mosquitto: LocalMosquitto
) -> None:
    tombstones = tmp_path / "erased.txt"
    config = bridge_config(
        tmp_path, mosquitto.url, sessions={"grace_s": 3.0, "max_wait_s": 6.0}, erasure={"tombstones": str(tombstones)}
    )
    # The device reported more frames than arrived, so the stage waits out the grace period.
    session = make_session("tomb-b", 3, patient_ref=HER, frame_count=10)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        publish_all(publisher, session.ordered_messages())
        assert bridge.wait_idle(20.0)
        assert bridge.sessions is not None and session.session_id in bridge.sessions.pending
        erasure_tombstones.add(tombstones, HER, [session.session_id])
        wait_until(lambda: bridge.sessions.pending if bridge.sessions else [], lambda p: p == [], 15.0, "the drop")
        time.sleep(0.5)
        assert bridge.wait_idle(10.0)
        published = bridge.summary().session_verdicts
    finally:
        publisher.stop()
        bridge.stop()
    assert published == 0
    with Archive(config.archive.path) as archive:
        record = archive.session(session.session_id)
    assert record is not None and not record.has_verdict  # (the stores are erased by `forget`, not here)
