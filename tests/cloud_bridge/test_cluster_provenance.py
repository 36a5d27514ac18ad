"""The provenance gate in the roles of several bridges (`[cluster]`), driven directly.

A sessions bridge admits verdicts for frames another bridge committed, from that bridge's
receipts; every bridge in a cluster lets only rfid events claim a session, and holds a frame
of an unclaimed session until its claim comes (or refuses it). These pin each rule and that
held frames survive a restart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from cloud_bridge.channels import Kind
from cloud_bridge.durable_queue import NewItem
from cloud_bridge.intake import RejectReason
from cloud_bridge.provenance import MAX_HELD_FRAMES_PER_SOURCE, Decision, OwnerLookup, Provenance
from cloud_bridge.receipt_publisher import receipt_messages
from contract.frame import encode_frame
from contract.messages import MAX_RECEIPT_FRAMES, FrameReceipts, decode_message, encode_message
from devtools.synthetic_stream import MODEL_VERSION, SyntheticSession, make_session

S = 1_000_000_000


def _gate(
    conn: sqlite3.Connection, *, storage: bool = False, lookup: OwnerLookup | None = None, reoffer_s: float = 0.0
) -> Provenance:
    return Provenance(
        conn,
        approved_models=frozenset({MODEL_VERSION}),
        hold_s=10.0,
        max_held=100,
        frame_memory_s=600.0,
        reoffer_s=reoffer_s,
        max_reoffers=1,
        rfid_claims_only=True,
        storage_role=storage,
        owner_lookup=lookup,
    )


def _commit(gate: Provenance, conn: sqlite3.Connection) -> None:
    writes = gate.take_writes()
    if writes is not None:
        writes(conn)
    conn.commit()


def _frame_item(session: SyntheticSession, k: int, at: int) -> NewItem:
    return NewItem(Kind.FRAME, "thermo/v1/d/frame", encode_frame(session.frames[k]), at, session.device_id)


def _verdict_item(session: SyntheticSession, k: int, at: int) -> NewItem:
    return NewItem(Kind.VERDICT, "thermo/v1/d/verdict", encode_message(session.verdicts[k]), at, "node")


def _start(gate: Provenance, session: SyntheticSession, at: int) -> Decision:
    item = NewItem(Kind.RFID, "thermo/v1/d/rfid", encode_message(session.start), at, session.device_id)
    return gate.decide(Kind.RFID, session.start, item)


def test_a_frame_before_its_sessions_claim_is_held_durably_and_released_by_the_claim() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    session = make_session("dev-1", 2, seed=1)
    first = _frame_item(session, 0, 1 * S)
    assert gate.decide(Kind.FRAME, session.frames[0], first).held  # its own first frame claims nothing here
    _commit(gate, conn)
    assert conn.execute("SELECT COUNT(*) FROM held_frames").fetchone() == (1,)
    restarted = _gate(conn)  # the hold is in the queue file: a restart keeps the frame
    assert restarted.held == 1
    released = _start(restarted, session, 2 * S)
    assert released.refused is None and not released.state_only
    assert released.released == [first] and released.rejected == []
    _commit(restarted, conn)
    assert conn.execute("SELECT COUNT(*) FROM held_frames").fetchone() == (0,)
    assert restarted.held == 0


def test_a_held_frame_of_another_device_is_refused_when_the_real_owner_claims_the_session() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    owner = make_session("dev-1", 1, seed=2)
    thief = make_session("dev-2", 1, seed=3)
    forged = replace(thief.frames[0], session_id=owner.session_id, patient_ref=owner.patient_ref)
    item = NewItem(Kind.FRAME, "thermo/v1/dev-2/frame", encode_frame(forged), 1 * S, "dev-2")
    assert gate.decide(Kind.FRAME, forged, item).held
    claimed = _start(gate, owner, 2 * S)
    assert claimed.released == []
    assert [(i, r.reason) for i, r in claimed.rejected] == [(item, RejectReason.SESSION_OWNER)]


def test_a_frame_never_claimed_is_refused_after_hold_s_unless_the_archive_knows_its_owner() -> None:
    lost = make_session("dev-1", 1, seed=4)
    known = make_session("dev-3", 1, seed=5)
    archive = {known.session_id: (known.device_id, known.patient_ref)}
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn, lookup=archive.get)
    lost_item, known_item = _frame_item(lost, 0, 1 * S), _frame_item(known, 0, 1 * S)
    assert gate.decide(Kind.FRAME, lost.frames[0], lost_item).held
    assert gate.decide(Kind.FRAME, known.frames[0], known_item).held
    assert gate.expired(5 * S).released == []  # not yet
    late = gate.expired(12 * S)
    assert late.released == [known_item]
    assert [(i, r.reason) for i, r in late.rejected] == [(lost_item, RejectReason.SESSION_UNCLAIMED)]
    assert gate.held == 0


def _receipt(bridge: str, session: SyntheticSession, seqs: range) -> FrameReceipts:
    messages = receipt_messages(bridge, [(session.frames[k], 5 * S) for k in seqs])
    assert len(messages) == 1
    return messages[0]


def test_the_sessions_bridge_admits_verdicts_from_another_bridges_receipts() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    session = make_session("dev-1", 3, seed=6)
    _start(gate, session, 1 * S)
    early = _verdict_item(session, 0, 2 * S)
    assert gate.decide(Kind.VERDICT, session.verdicts[0], early).held  # its receipt is not here yet
    receipt = _receipt("main-2", session, range(2))
    item = NewItem(Kind.RECEIPTS, "thermo/v1/bridges/main-2/receipts", encode_message(receipt), 3 * S, "bridges")
    decision = gate.decide(Kind.RECEIPTS, receipt, item)
    assert decision.state_only and decision.refused is None
    assert decision.released == [early] and decision.rejected == []
    on_time = _verdict_item(session, 1, 4 * S)
    assert gate.decide(Kind.VERDICT, session.verdicts[1], on_time) == Decision()  # queued as it is
    duplicate = session.verdicts[1].model_copy(update={"latency_ms": 99.0})
    dup_item = NewItem(Kind.VERDICT, "t", encode_message(duplicate), 4 * S, "node")
    assert gate.decide(Kind.VERDICT, duplicate, dup_item).refused is not None  # one verdict per frame
    orphan = _verdict_item(session, 2, 4 * S)  # no bridge ever committed frame 2
    assert gate.decide(Kind.VERDICT, session.verdicts[2], orphan).held
    assert [r.reason for _, r in gate.expired(15 * S).rejected] == [RejectReason.VERDICT_NO_FRAME]


def test_a_receipt_naming_a_session_of_another_device_admits_nothing() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    owner, thief = make_session("dev-1", 1, seed=7), make_session("dev-2", 1, seed=8)
    _start(gate, owner, 1 * S)
    forged = replace(thief.frames[0], session_id=owner.session_id, patient_ref=owner.patient_ref)
    receipt = receipt_messages("main-2", [(forged, 2 * S)])[0]
    item = NewItem(Kind.RECEIPTS, "thermo/v1/bridges/main-2/receipts", encode_message(receipt), 2 * S, "bridges")
    decision = gate.decide(Kind.RECEIPTS, receipt, item)
    assert [r.reason for _, r in decision.rejected] == [RejectReason.SESSION_OWNER]
    verdict = thief.verdicts[0].model_copy(update={"session_id": owner.session_id, "patient_ref": owner.patient_ref})
    v_item = NewItem(Kind.VERDICT, "t", encode_message(verdict), 3 * S, "node")
    assert gate.decide(Kind.VERDICT, verdict, v_item).held  # no frame known: held, then refused


def test_a_storage_bridge_only_follows_rfid_and_verdicts_and_re_offers_what_has_no_verdict() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn, storage=True, reoffer_s=30.0)
    session = make_session("dev-1", 2, seed=9)
    assert _start(gate, session, 1 * S).state_only  # the sessions bridge stores it, not this one
    for k in range(2):
        frame_decision = gate.decide(Kind.FRAME, session.frames[k], _frame_item(session, k, 2 * S))
        assert frame_decision == Decision()  # stored here
    followed = gate.decide(Kind.VERDICT, session.verdicts[0], _verdict_item(session, 0, 3 * S))
    assert followed.state_only and followed.refused is None
    assert [payload for _, payload in gate.due_reoffers(40 * S)] == [encode_frame(session.frames[1])]
    _commit(gate, conn)
    assert conn.execute("SELECT COUNT(*) FROM frame_keys").fetchone() == (0,)  # it matches no verdicts


def test_receipts_are_split_under_the_message_bound_and_keep_every_frame_in_order() -> None:
    sessions = [make_session(f"dev-{i}", 300, seed=10 + i) for i in range(2)]
    frames = [(f, 7 * S) for s in sessions for f in s.frames]
    messages = receipt_messages("main-2", frames)
    assert [m.frames for m in messages] == [MAX_RECEIPT_FRAMES, MAX_RECEIPT_FRAMES, 100]
    decoded = [decode_message(encode_message(m), FrameReceipts) for m in messages]
    keys = [(g.device_id, g.incarnation, g.session_id, seq) for m in decoded for g in m.groups for seq in g.seqs]
    assert keys == [(f.device_id, f.incarnation, f.session_id, f.seq) for f, _ in frames]


def test_the_session_stage_is_told_to_wait_until_a_released_verdict_is_committed() -> None:
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    session = make_session("dev-1", 1, seed=20)
    _start(gate, session, 1 * S)
    assert not gate.waits_for(session.session_id)
    assert gate.decide(Kind.VERDICT, session.verdicts[0], _verdict_item(session, 0, 2 * S)).held
    assert gate.waits_for(session.session_id)
    receipt = _receipt("main-2", session, range(1))
    item = NewItem(Kind.RECEIPTS, "thermo/v1/bridges/main-2/receipts", encode_message(receipt), 3 * S, "bridges")
    assert len(gate.decide(Kind.RECEIPTS, receipt, item).released) == 1
    assert gate.waits_for(session.session_id)  # released, but not in the queue until the commit
    _commit(gate, conn)
    gate.after_commit()
    assert not gate.waits_for(session.session_id)
    restarted = _gate(conn)
    assert not restarted.waits_for(session.session_id) and restarted.held == 0


def test_one_device_naming_sessions_nobody_opens_cannot_fill_the_hold_for_the_others() -> None:
    conn = sqlite3.connect(":memory:")
    gate = Provenance(
        conn, approved_models=frozenset({MODEL_VERSION}), hold_s=10.0, max_held=10 * MAX_HELD_FRAMES_PER_SOURCE,
        frame_memory_s=600.0, rfid_claims_only=True,
    )  # fmt: skip
    flood = make_session("dev-flood", 1, seed=21)
    refused = 0
    for k in range(MAX_HELD_FRAMES_PER_SOURCE + 5):
        made_up = replace(flood.frames[0], seq=k, session_id=f"{k:032x}")
        item = NewItem(Kind.FRAME, "t", encode_frame(made_up), 1 * S, "dev-flood")
        decision = gate.decide(Kind.FRAME, made_up, item)
        refused += decision.refused is not None
        assert decision.held or decision.refused is not None
    assert refused == 5 and gate.held == MAX_HELD_FRAMES_PER_SOURCE
    calm = make_session("dev-calm", 1, seed=22)  # another device's early frame still waits for its claim
    assert gate.decide(Kind.FRAME, calm.frames[0], _frame_item(calm, 0, 1 * S)).held
    assert _start(gate, calm, 2 * S).released == [_frame_item(calm, 0, 1 * S)]


def test_a_session_awaits_verdicts_until_each_frame_in_hand_has_one_committed() -> None:
    """The stage's signal that the nodes are behind: frames in hand without a committed verdict.
    It survives a restart (from the frame keys) and drops only after the verdict's commit."""
    conn = sqlite3.connect(":memory:")
    gate = _gate(conn)
    session = make_session("dev-aw", 2, seed=4)
    sid = session.start.session_id
    _start(gate, session, 1 * S)
    for k in range(2):
        assert gate.decide(Kind.FRAME, session.frames[k], _frame_item(session, k, (2 + k) * S)).refused is None
    _commit(gate, conn)
    gate.after_commit()
    assert gate.awaits_verdicts(sid)
    assert gate.decide(Kind.VERDICT, session.verdicts[0], _verdict_item(session, 0, 5 * S)).refused is None
    assert gate.awaits_verdicts(sid), "decided but not committed: the stage must not judge yet"
    _commit(gate, conn)
    gate.after_commit()
    assert gate.awaits_verdicts(sid)  # frame 1 still has none
    restarted = _gate(conn)
    assert restarted.awaits_verdicts(sid)
    assert restarted.decide(Kind.VERDICT, session.verdicts[1], _verdict_item(session, 1, 6 * S)).refused is None
    _commit(restarted, conn)
    restarted.after_commit()
    assert not restarted.awaits_verdicts(sid)
    assert not _gate(conn).awaits_verdicts(sid)
