"""The Firestore sink against the real Firestore emulator: deterministic ids, no duplicates on retry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud_bridge.archive import decompress_centi
from cloud_bridge.config import FirestoreSettings
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.firestore_sink import FirestoreSink, frame_doc_id
from cloud_bridge.intake import Kind
from cloud_bridge.service import Bridge
from contract.frame import encode_frame
from contract.messages import encode_message
from devtools.local_firestore import LocalFirestoreEmulator
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import connect


@pytest.fixture
def emulator_env(firestore_emulator: LocalFirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """FIRESTORE_EMULATOR_HOST set, and a project id of this test's own (the emulator is shared)."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    yield f"demo-{uuid.uuid4().hex[:12]}"


def _docs(sink: FirestoreSink, collection: str) -> dict[str, dict[str, Any]]:
    return {doc.id: doc.to_dict() for doc in sink.client.collection(collection).stream()}


def test_firestore_documents_have_deterministic_ids_and_retries_do_not_duplicate(emulator_env: str) -> None:
    session = make_session("fs-1", 3, probabilities=[0.2, 0.7, 0.9], seed=8)
    items = [
        QueuedItem(i + 1, kind, topic, payload, 0)
        for i, (kind, (topic, payload)) in enumerate(
            zip(
                [Kind.RFID] + [Kind.FRAME, Kind.VERDICT] * 3 + [Kind.RFID],
                session.ordered_messages(),
                strict=True,
            )
        )
    ]
    sink = FirestoreSink(FirestoreSettings(enabled=True, project_id=emulator_env))
    try:
        assert sink.write(items) == 2 + 3 * 2 + 2
        first = {c: _docs(sink, c) for c in ("frames", "sessions", "patients")}
        # A retried batch (e.g. the bridge died before confirming it) rewrites the same documents.
        sink.write(items)
        sink.write(items[3:5])
        again = {c: _docs(sink, c) for c in ("frames", "sessions", "patients")}
    finally:
        sink.close()
    assert again == first
    inc = session.frames[0].incarnation
    assert sorted(first["frames"]) == [frame_doc_id("fs-1", seq, inc) for seq in range(3)]
    assert list(first["sessions"]) == [session.session_id]
    assert list(first["patients"]) == [session.patient_ref]
    doc = first["frames"][frame_doc_id("fs-1", 1, inc)]
    assert doc["verdict"]["probability"] == 0.7 and doc["verdict"]["flagged"] is True
    assert doc["session_id"] == session.session_id and doc["patient_ref"] == session.patient_ref
    pixels = decompress_centi(doc["temperatures"], doc["rows"], doc["cols"])
    assert np.array_equal(pixels, session.frames[1].centi)
    assert first["patients"][session.patient_ref]["session_ids"] == [session.session_id]
    s = first["sessions"][session.session_id]
    assert s["started_ns"] == session.start.ts_ns and s["ended_ns"] == session.end.ts_ns
    assert s["frames_reported"] == 3


def test_bridge_stores_sessions_with_their_verdict_in_firestore(
    emulator_env: str, mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url, firestore={"enabled": True, "project_id": emulator_env})
    session = make_session("fs-2", 4, probabilities=[0.6, 0.7, 0.8, 0.9], seed=9)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    reader = FirestoreSink(FirestoreSettings(enabled=True, project_id=emulator_env))
    try:
        publish_all(publisher, session.ordered_messages())
        # A duplicate delivery of a frame and its verdict: same document ids, nothing added.
        publish_all(
            publisher,
            [
                ("thermo/v1/fs-2/frame", encode_frame(session.frames[0])),
                ("thermo/v1/fs-2/verdict", encode_message(session.verdicts[0])),
            ],
        )
        doc = wait_until(
            lambda: reader.client.collection("sessions").document(session.session_id).get().to_dict() or {},
            lambda d: "verdict" in d,
            20.0,
            "the session verdict in Firestore",
        )
        assert bridge.wait_idle(20.0)
        frames = _docs(reader, "frames")
    finally:
        reader.close()
        publisher.stop()
        bridge.stop()
    assert doc["verdict"]["frames"] == 4 and doc["verdict"]["flagged"] is True
    assert doc["verdict"]["rule"] == "mean-logit-v1"
    assert sorted(frames) == [frame_doc_id("fs-2", seq, session.frames[0].incarnation) for seq in range(4)]
    assert all("temperatures" in d and "verdict" in d for d in frames.values())
