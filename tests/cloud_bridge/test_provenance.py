"""Record integrity (issue 12.3, 12.4) against a real Mosquitto and the bridge: session ownership
survives a restart, and only verdicts with provenance are stored."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.service import Bridge
from contract.frame import encode_frame
from contract.messages import encode_message
from contract.topics import ALL_REOFFERS, frame_topic, reoffer_topic, rfid_topic, verdict_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait


def test_a_session_cannot_be_taken_over_by_another_device_or_patient_even_after_a_restart(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url)
    owner = make_session("own-a", 2, seed=1)
    thief = make_session("own-b", 1, seed=2)
    # The same patient card on another device: only the device differs.
    hijack = thief.start.model_copy(update={"session_id": owner.session_id, "patient_ref": owner.patient_ref})
    other_patient = owner.start.model_copy(update={"patient_ref": thief.patient_ref})
    stray_frame = dataclasses.replace(thief.frames[0], session_id=owner.session_id, patient_ref=owner.patient_ref)
    publisher = connect(mosquitto.url)
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, owner.ordered_messages(with_end=False))
        publish_all(
            publisher,
            [
                (rfid_topic("own-b"), encode_message(hijack)),
                (rfid_topic("own-a"), encode_message(other_patient)),
                (frame_topic("own-b"), encode_frame(stray_frame)),
            ],
        )
        wait_until(lambda: bridge.summary().dead_letters, lambda d: sum(d.values()) >= 3, 15.0, "dead letters")
        assert bridge.wait_idle(20.0)
    finally:
        bridge.stop()
    bridge = Bridge(config).start()  # ownership is persisted: a restart does not forget it
    try:
        publish_all(publisher, [(rfid_topic("own-b"), encode_message(hijack))])
        dead = wait_until(
            lambda: bridge.summary().dead_letters,
            lambda d: d.get("intake/session-owner", 0) >= 4,
            15.0,
            "the hijack after a restart refused",
        )
        assert bridge.wait_idle(20.0)
    finally:
        bridge.stop()
        publisher.stop()
    assert dead["intake/session-owner"] == 4
    with Archive(config.archive.path) as archive:
        record = archive.session(owner.session_id)
        assert record is not None
        assert (record.device_id, record.patient_ref) == ("own-a", owner.patient_ref)
        assert record.started_ns == owner.start.ts_ns
        assert len(archive.frames(owner.session_id)) == 2  # the stray frame is not among them


def test_a_queue_file_without_owners_takes_them_from_the_archive(mosquitto: LocalMosquitto, bridge_dir: Path) -> None:
    config = bridge_config(bridge_dir, mosquitto.url)
    owner = make_session("seed-a", 1, seed=31)
    hijack = make_session("seed-b", 1, seed=32).start.model_copy(
        update={"session_id": owner.session_id, "patient_ref": owner.patient_ref}
    )
    publisher = connect(mosquitto.url)
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, owner.ordered_messages(with_end=False))
        assert bridge.wait_idle(20.0)
    finally:
        bridge.stop()
    for leftover in bridge_dir.glob("queue.sqlite*"):  # as a queue file of a bridge before ownership
        leftover.unlink()
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, [(rfid_topic("seed-b"), encode_message(hijack))])
        dead = wait_until(lambda: bridge.summary().dead_letters, bool, 15.0, "the hijack refused")
        assert bridge.wait_idle(20.0)
    finally:
        bridge.stop()
        publisher.stop()
    assert dead == {"intake/session-owner": 1}
    with Archive(config.archive.path) as archive:
        record = archive.session(owner.session_id)
        assert record is not None and record.device_id == "seed-a"


def test_only_verdicts_with_provenance_are_stored_and_early_ones_wait_for_their_frame(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url)
    s = make_session("prov-a", 3, seed=3)
    v0, v1, v2 = s.verdicts
    forged = [
        v0.model_copy(update={"seq": 999}),  # no such frame: held, then refused
        v1.model_copy(update={"flagged": not v1.flagged}),  # flagged contradicts the probability
        v1.model_copy(update={"model_version": "rogue-model-1"}),  # not approved here
        # inside its own inconclusive band, yet not inconclusive
        v1.model_copy(update={"band_low": 0.0, "band_high": 1.0, "inconclusive": False}),
        v1.model_copy(
            update={"patient_ref": make_session("prov-b", 1, seed=4).patient_ref}
        ),  # another patient than the frame's
    ]
    publisher = connect(mosquitto.url)
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, [(rfid_topic("prov-a"), encode_message(s.start))])
        # v2 arrives before its frame: it must wait, not be dropped.
        publish_all(publisher, [(verdict_topic("prov-a"), encode_message(v2))])
        publish_all(publisher, [(frame_topic("prov-a"), encode_frame(f)) for f in s.frames])
        publish_all(publisher, [(verdict_topic("prov-a"), encode_message(v)) for v in (v0, v1, *forged)])
        second = v0.model_copy(update={"node_id": "other-node", "latency_ms": v0.latency_ms + 1})
        publish_all(publisher, [(verdict_topic("prov-a"), encode_message(second))])  # another verdict for frame 0
        publish_all(publisher, [(verdict_topic("prov-a"), encode_message(v1))])  # a replay: admitted, idempotent
        dead = wait_until(
            lambda: bridge.summary().dead_letters,
            lambda d: sum(d.values()) >= 6,
            config.provenance.hold_s + 15.0,
            "every forged verdict refused",
        )
        assert bridge.wait_idle(20.0)
    finally:
        bridge.stop()
        publisher.stop()
    assert dead == {
        "intake/verdict-no-frame": 1,
        "intake/verdict-flagged": 1,
        "intake/verdict-inconclusive": 1,
        "intake/verdict-model": 1,
        "intake/verdict-mismatch": 1,
        "intake/verdict-duplicate": 1,
    }
    with Archive(config.archive.path) as archive:
        stored = archive.verdicts(s.session_id)
    assert [(v.seq, v.flagged, v.patient_ref, v.model_version, v.node_id) for v in stored] == [
        (v.seq, v.flagged, v.patient_ref, v.model_version, v.node_id) for v in (v0, v1, v2)
    ]


def test_a_frame_without_a_verdict_is_offered_again_until_one_verdict_is_stored(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url, provenance={"reoffer_s": 1.0, "max_reoffers": 5})
    s = make_session("reoffer-a", 2, seed=21)
    answered, orphan = s.frames
    watcher = connect(mosquitto.url)
    offers = Collector()
    subscribe_and_wait(watcher, ALL_REOFFERS, offers)
    publisher = connect(mosquitto.url)
    bridge = Bridge(config).start()
    try:
        publish_all(publisher, [(rfid_topic("reoffer-a"), encode_message(s.start))])
        publish_all(publisher, [(frame_topic("reoffer-a"), encode_frame(f)) for f in s.frames])
        publish_all(publisher, [(verdict_topic("reoffer-a"), encode_message(s.verdicts[0]))])
        first = offers.wait_for(1, 10.0)[0]  # as an inference node that took over would see it
        publish_all(publisher, [(verdict_topic("reoffer-a"), encode_message(s.verdicts[1]))])
        assert bridge.wait_idle(20.0)
        seen = len(offers.messages)
        time.sleep(2.5)  # answered now: no more offers
        after = len(offers.messages)
    finally:
        bridge.stop()
        publisher.stop()
        watcher.stop()
    assert first.topic == reoffer_topic("reoffer-a")
    assert first.payload == encode_frame(orphan)
    assert all(m.payload != encode_frame(answered) for m in offers.messages)
    assert after == seen
    with Archive(config.archive.path) as archive:
        assert [v.seq for v in archive.verdicts(s.session_id)] == [answered.seq, orphan.seq]
