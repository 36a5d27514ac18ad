"""The provenance gate's own state, driven directly: what it forgets, re-offers and commits.

These pin the cheap paths (front-only scans, grouped writes) to the behaviour of the full
scans they replaced: the same keys forgotten, the same frames re-offered, the same rows.
"""

from __future__ import annotations

import sqlite3

from cloud_bridge.durable_queue import NewItem
from cloud_bridge.provenance import Provenance
from contract.frame import encode_frame
from contract.messages import encode_message
from devtools.synthetic_stream import MODEL_VERSION, make_session

S = 1_000_000_000


def _gate(conn: sqlite3.Connection, **kwargs: float) -> Provenance:
    options = {"hold_s": 10.0, "max_held": 100, "frame_memory_s": 60.0, **kwargs}
    return Provenance(conn, approved_models=frozenset({MODEL_VERSION}), **options)  # type: ignore[arg-type]


def _commit(gate: Provenance, conn: sqlite3.Connection) -> None:
    writes = gate.take_writes()
    if writes is not None:
        writes(conn)
    conn.commit()


def test_old_frame_keys_are_forgotten_in_memory_and_in_the_table_and_survive_a_restart() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    session = make_session("dev-1", 6)
    for k, frame in enumerate(session.frames):  # one frame every 10 s
        item = NewItem("frame", "t", encode_frame(frame), k * 10 * S, "dev-1")
        assert gate.decide("frame", frame, item).refused is None
    _commit(gate, conn)
    gate.forget_old(75 * S)  # memory 60 s: frames received before 15 s go (seq 0 and 1)
    _commit(gate, conn)
    rows = sorted(q for (q,) in conn.execute("SELECT seq FROM frame_keys"))
    assert rows == [2, 3, 4, 5]
    # A verdict for a forgotten frame has no frame any more; one for a remembered frame is stored.
    v0, v2 = session.verdicts[0], session.verdicts[2]
    assert gate.decide("verdict", v0, NewItem("verdict", "t", encode_message(v0), 76 * S, "n")).held
    assert gate.decide("verdict", v2, NewItem("verdict", "t", encode_message(v2), 76 * S, "n")).refused is None
    _commit(gate, conn)
    # After a restart the keys load oldest first, so forgetting from the front still works.
    again = _gate(conn)
    again.forget_old(95 * S)  # before 35 s: seq 2 and 3 go
    _commit(again, conn)
    assert sorted(q for (q,) in conn.execute("SELECT seq FROM frame_keys")) == [4, 5]
    stored = conn.execute("SELECT verdict FROM frame_keys WHERE seq=4").fetchone()
    assert stored == (None,)


def test_frames_without_a_verdict_are_offered_again_in_turn_at_most_max_reoffers_times() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn, reoffer_s=30.0, max_reoffers=2)
    session = make_session("dev-2", 3)
    payloads = [encode_frame(f) for f in session.frames]
    for k, (frame, payload) in enumerate(zip(session.frames, payloads, strict=True)):
        gate.decide("frame", frame, NewItem("frame", "t", payload, k * S, "dev-2"))
    v1 = session.verdicts[1]
    assert gate.decide("verdict", v1, NewItem("verdict", "t", encode_message(v1), 5 * S, "n")).refused is None
    assert gate.due_reoffers(29 * S) == []  # none is 30 s old yet
    assert gate.due_reoffers(30 * S) == [("dev-2", payloads[0])]  # frame 0 only (frame 2 came at 2 s)
    assert gate.due_reoffers(32 * S) == [("dev-2", payloads[2])]  # frame 1 got its verdict: never
    assert gate.due_reoffers(60 * S) == [("dev-2", payloads[0])]  # 30 s after its first re-offer
    assert gate.due_reoffers(62 * S) == [("dev-2", payloads[2])]
    assert gate.due_reoffers(200 * S) == []  # both offered twice: given up
    assert gate.due_reoffers(400 * S) == []
