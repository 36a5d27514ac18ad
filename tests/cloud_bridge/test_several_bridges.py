"""Several bridges behind a shared subscription (issue 17.6), against a real Mosquitto.

A `sessions` bridge and a `storage` bridge share the frames (round robin in Mosquitto 2.0),
one archive file. Every frame must be stored once, every verdict admitted (its frame's
receipt comes from whichever bridge stored the frame), and each session verdict computed
once from all of its frames; nothing is lost while the storage bridge is down; another
device's frames naming a session are refused by whichever bridge receives them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloud_bridge.archive import Archive
from cloud_bridge.config import BridgeConfig
from cloud_bridge.service import Bridge
from contract import encode_frame
from contract.messages import SessionVerdict, decode_message
from contract.topics import ALL_SESSION_VERDICTS, frame_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import SyntheticSession, make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait

FRAMES = 10


def _configs(root: Path, url: str) -> tuple[BridgeConfig, BridgeConfig]:
    shared: dict[str, Any] = {"archive": {"path": str(root / "archive.sqlite")}}
    erasure = {"tombstones": str(root / "erased.txt")}

    def one(name: str, node_id: str, role: str) -> BridgeConfig:
        (root / name).mkdir()
        return bridge_config(
            root / name, url, bridge={"node_id": node_id}, cluster={"role": role}, erasure=erasure, **shared
        )

    return one("a", "main", "sessions"), one("b", "main-2", "storage")


def _publish_sessions(url: str, sessions: list[SyntheticSession]) -> None:
    conn = connect(url)
    try:
        streams = [list(s.ordered_messages()) for s in sessions]
        interleaved = [m for step in zip(*streams, strict=True) for m in step]  # devices take turns
        publish_all(conn, interleaved)
    finally:
        conn.stop()


def _sessions(archive_path: Path, sessions: list[SyntheticSession]) -> dict[str, tuple[int | None, int]]:
    """session id -> (frames its session verdict counts, frame verdicts stored)."""
    with Archive(archive_path) as archive:
        out: dict[str, tuple[int | None, int]] = {}
        for s in sessions:
            record = archive.session(s.session_id)
            out[s.session_id] = (None if record is None else record.frames, len(archive.verdicts(s.session_id)))
        return out


def test_two_bridges_share_the_frames_and_each_session_verdict_counts_all_of_them(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config_a, config_b = _configs(bridge_dir, mosquitto.url)
    listener = connect(mosquitto.url)
    published = Collector()
    subscribe_and_wait(listener, ALL_SESSION_VERDICTS, published)
    sessions_bridge, storage = Bridge(config_a).start(), Bridge(config_b).start()
    storage_stopped = False
    try:
        assert storage.sessions is None  # only the sessions bridge computes session verdicts
        first = [make_session(f"pi-{i}", FRAMES, seed=i) for i in range(4)]
        _publish_sessions(mosquitto.url, first)
        done = wait_until(
            lambda: _sessions(config_a.archive.path, first),
            lambda got: all(v == (FRAMES, FRAMES) for v in got.values()),
            30.0,
            "a session verdict from all frames for every session",
        )
        assert len(done) == 4
        shared_out = storage.summary().queued  # a storage bridge queues only its frames
        assert 0 < shared_out < 4 * FRAMES, f"the storage bridge took {shared_out} of {4 * FRAMES} frames"
        # The storage bridge goes down (gracefully: what it took is committed and acknowledged). Mosquitto
        # 2.0 then gives the whole share to the connected member; nothing may be lost either way.
        storage.stop()
        storage_stopped = True
        later = [make_session(f"pi-late-{i}", FRAMES, seed=10 + i) for i in range(2)]
        _publish_sessions(mosquitto.url, later)
        # Down for longer than the grace after session_end: the sessions bridge must still wait for the
        # verdicts it holds (their frames' receipts come from the storage bridge), not judge half a session.
        time.sleep(2 * config_a.sessions.grace_s)
        storage = Bridge(config_b).start()
        storage_stopped = False
        wait_until(
            lambda: _sessions(config_a.archive.path, later),
            lambda got: all(v == (FRAMES, FRAMES) for v in got.values()),
            60.0,
            "the later sessions, once the storage bridge is back",
        )
        with Archive(config_a.archive.path) as archive:
            counts = archive.counts()
        assert counts["frames"] == counts["verdicts"] == 6 * FRAMES
        for bridge in (sessions_bridge, storage):
            assert bridge.summary().dead_letters == {}
        # One session verdict computed per session: a recomputation would carry another ts_ns.
        computed: dict[str, set[int]] = {}
        for message in published.wait_for(6):
            verdict = decode_message(message.payload, SessionVerdict)
            computed.setdefault(verdict.session_id, set()).add(verdict.ts_ns)
        assert computed == {s.session_id: computed[s.session_id] for s in first + later}
        assert all(len(ts) == 1 for ts in computed.values()), computed
    finally:
        if not storage_stopped:
            storage.stop()
        sessions_bridge.stop()
        listener.stop()


def test_frames_naming_another_devices_session_are_refused_by_whichever_bridge_gets_them(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config_a, config_b = _configs(bridge_dir, mosquitto.url)
    sessions_bridge, storage = Bridge(config_a).start(), Bridge(config_b).start()
    try:
        owner = make_session("pi-owner", FRAMES, seed=30)
        _publish_sessions(mosquitto.url, [owner])
        thief = make_session("pi-thief", FRAMES, seed=31)
        forged = [replace(f, session_id=owner.session_id, patient_ref=owner.patient_ref) for f in thief.frames]
        conn = connect(mosquitto.url)
        try:
            publish_all(conn, [(frame_topic("pi-thief"), encode_frame(f)) for f in forged])
        finally:
            conn.stop()
        wait_until(
            lambda: sum(b.summary().dead_letters.get("intake/session-owner", 0) for b in (sessions_bridge, storage)),
            lambda n: n == FRAMES,
            20.0,
            "every forged frame refused",
        )
        assert all(b.summary().dead_letters.get("intake/session-owner", 0) > 0 for b in (sessions_bridge, storage))
        wait_until(
            lambda: _sessions(config_a.archive.path, [owner]),
            lambda got: got[owner.session_id] == (FRAMES, FRAMES),
            30.0,
            "the owner's session verdict",
        )
        with Archive(config_a.archive.path) as archive:
            rows = archive.connection.execute(
                "SELECT DISTINCT device_id FROM frames WHERE session_id = ?", (owner.session_id,)
            )
            assert rows.fetchall() == [("pi-owner",)]
    finally:
        storage.stop()
        sessions_bridge.stop()
