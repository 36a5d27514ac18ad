"""The channel registry is the one description of what the bridge takes, and the session
stage's results reach the archive only through the queue (real SQLite queue and archive)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cloud_bridge import archive_sink, firestore_sink, line_protocol
from cloud_bridge.archive import Archive
from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.channels import BY_KIND, CHANNELS, NEVER_QUEUED, SUBSCRIPTIONS, Kind, SessionOutcome
from cloud_bridge.config import SessionSettings
from cloud_bridge.durable_queue import DurableQueue, NewItem
from cloud_bridge.session_verdicts import STAGE_NAME, PendingSessionVerdicts
from cloud_bridge.sink import Backoff, SinkWorker
from contract.messages import encode_message
from contract.topics import rfid_topic
from devtools.synthetic_stream import SyntheticSession, make_session


def test_every_kind_has_one_channel_and_every_sink_handles_only_registered_kinds() -> None:
    assert set(BY_KIND) == {k.value for k in Kind} and len(CHANNELS) == len(Kind)
    assert len(set(SUBSCRIPTIONS)) == len(SUBSCRIPTIONS) == sum(c.subscription is not None for c in CHANNELS)
    queued = set(BY_KIND) - NEVER_QUEUED
    assert set(line_protocol._HANDLERS) == queued  # Influx writes every queued kind (or says why not)
    assert {Kind.RECEIPTS} == NEVER_QUEUED
    assert set(BY_KIND) >= archive_sink.ARCHIVE_KINDS and set(BY_KIND) >= firestore_sink.FIRESTORE_KINDS


def test_a_session_without_verdicts_is_closed_through_the_queue(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", ["archive", STAGE_NAME])
    session = make_session("closed-1", 2, seed=8)
    queue.append(
        [
            NewItem(Kind.RFID, rfid_topic("closed-1"), encode_message(session.start), 0),
            NewItem(Kind.RFID, rfid_topic("closed-1"), encode_message(session.end), 0),
        ]
    )
    sink = ArchiveSink(tmp_path / "archive.sqlite")
    worker = SinkWorker(sink, queue, batch_items=100, backoff=Backoff(0.1, 1.0))
    while worker.drain_once():
        pass
    stage = PendingSessionVerdicts(
        queue,
        SessionSettings(grace_s=0.0, max_wait_s=0.3),
        archive_path=tmp_path / "archive.sqlite",
        archive_sink="archive",
    )
    assert stage._resume()  # the archive has everything queued before the start
    deadline = time.monotonic() + 5.0
    while stage.closed_without_verdict == 0 and time.monotonic() < deadline:
        stage.step()
        time.sleep(0.05)
    assert stage.closed_without_verdict == 1 and stage.pending == []
    with Archive(tmp_path / "archive.sqlite") as archive:  # the stage itself wrote nothing
        record = archive.session(session.session_id)
        assert record is not None and record.ended_ns is not None and record.verdict_ns is None
    [closed] = queue.read("archive", max_items=10).items
    assert closed.kind == Kind.SESSION_CLOSED
    while worker.drain_once():
        pass
    sink.close()
    with Archive(tmp_path / "archive.sqlite") as archive:
        record = archive.session(session.session_id)
        assert record is not None and record.rule == "no-verdicts" and record.verdict_ns is not None
        assert archive.pending_sessions() == []
    queue.close()


def test_the_stage_does_not_judge_a_session_while_intake_holds_one_of_its_verdicts(tmp_path: Path) -> None:
    """Several bridges: a verdict waits at intake for its frame's receipt; the session waits for it."""
    queue = DurableQueue(tmp_path / "q.sqlite", [STAGE_NAME, "archive"])
    session = make_session("held-1", 2, seed=9)
    held = {session.session_id}
    queue.append(
        [
            NewItem(Kind.RFID, rfid_topic("held-1"), encode_message(session.start), 0),
            NewItem(Kind.VERDICT, "t", encode_message(session.verdicts[0]), 0),
            NewItem(Kind.RFID, rfid_topic("held-1"), encode_message(session.end), 0),
        ]
    )
    stage = PendingSessionVerdicts(
        queue,
        SessionSettings(grace_s=0.0, max_wait_s=60.0),
        archive_path=tmp_path / "archive.sqlite",
        archive_sink=STAGE_NAME,
        held_at_intake=lambda session_id: session_id in held,
    )
    stage._startup_mark = None  # nothing to resume: a fresh queue
    for _ in range(3):
        stage.step()
    assert stage.published == 0 and stage.pending == [session.session_id]  # grace is over, but one is held
    queue.append([NewItem(Kind.VERDICT, "t", encode_message(session.verdicts[1]), 0)])  # released...
    held.clear()  # ... and committed
    stage.step()
    stage.step()
    assert stage.published == 1
    [outcome] = [i for i in queue.read("archive", max_items=10).items if i.kind == Kind.SESSION_OUTCOME]
    assert SessionOutcome.model_validate_json(outcome.payload).verdict.frames == 2  # both verdicts counted
    queue.close()


def _ended(queue: DurableQueue, session: SyntheticSession, verdicts: int = 0) -> None:
    """Queue the session's start and end, then its first `verdicts` frame verdicts."""
    rfid = [session.start, session.end]
    queue.append(
        [NewItem(Kind.RFID, rfid_topic(session.device_id), encode_message(e), 0) for e in rfid]
        + [NewItem(Kind.VERDICT, "t", encode_message(v), 0) for v in session.verdicts[:verdicts]]
    )


def _stage(queue: DurableQueue, archive: Path, settings: SessionSettings, **waits: Any) -> PendingSessionVerdicts:
    stage = PendingSessionVerdicts(queue, settings, archive_path=archive, archive_sink=STAGE_NAME, **waits)
    stage._startup_mark = None  # nothing to resume: a fresh queue
    return stage


def _step_until_published(stage: PendingSessionVerdicts, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while stage.published == 0 and time.monotonic() < deadline:
        stage.step()
        time.sleep(0.05)


def _outcome_frames(queue: DurableQueue) -> int:
    """Frames counted by the one session outcome in the queue."""
    [outcome] = [i for i in queue.read("archive", max_items=20).items if i.kind == Kind.SESSION_OUTCOME]
    return SessionOutcome.model_validate_json(outcome.payload).verdict.frames


def test_late_verdicts_still_coming_extend_the_grace(tmp_path: Path) -> None:
    """Overload: verdicts trickle in after session_end for longer than grace_s; the session counts all."""
    queue = DurableQueue(tmp_path / "q.sqlite", [STAGE_NAME, "archive"])
    # The device reported 5 frames; one never gets a verdict, so only the grace can close the session.
    session = make_session("late-1", 4, seed=10, frame_count=5)
    _ended(queue, session)
    stage = _stage(queue, tmp_path / "a.sqlite", SessionSettings(grace_s=0.3, max_wait_s=60.0))
    stage.step()
    for verdict in session.verdicts:  # one every 0.2 s: 0.8 s in all, well past the first grace
        time.sleep(0.2)  # the verdicts' arrival times are the point of the test
        queue.append([NewItem(Kind.VERDICT, "t", encode_message(verdict), 0)])
        stage.step()
        assert stage.published == 0
    _step_until_published(stage)
    assert _outcome_frames(queue) == 4
    queue.close()


def test_the_stage_waits_past_the_grace_while_frames_in_hand_await_verdicts(tmp_path: Path) -> None:
    """The nodes are behind: the verdicts pause longer than the grace, but intake still has
    frames of the session without a verdict, so the stage waits (never past max_wait_s)."""
    queue = DurableQueue(tmp_path / "q.sqlite", [STAGE_NAME, "archive"])
    session = make_session("behind-1", 3, seed=11)
    _ended(queue, session, verdicts=1)
    awaiting = {session.start.session_id}
    settings = SessionSettings(grace_s=0.1, max_wait_s=60.0)
    stage = _stage(queue, tmp_path / "a.sqlite", settings, awaiting_verdicts=lambda sid: sid in awaiting)
    stage.step()
    time.sleep(0.5)  # five graces without a verdict: a duration is the point of the test
    stage.step()
    assert stage.published == 0, "judged while frames in hand still awaited their verdicts"
    queue.append([NewItem(Kind.VERDICT, "t", encode_message(v), 0) for v in session.verdicts[1:]])
    awaiting.clear()
    _step_until_published(stage)
    assert _outcome_frames(queue) == 3

    other_queue = DurableQueue(tmp_path / "q2.sqlite", [STAGE_NAME, "archive"])
    _ended(other_queue, make_session("behind-2", 2, seed=12), verdicts=1)
    short = SessionSettings(grace_s=0.1, max_wait_s=0.3)
    bounded = _stage(other_queue, tmp_path / "a2.sqlite", short, awaiting_verdicts=lambda sid: True)
    _step_until_published(bounded)
    assert bounded.published == 1, "max_wait_s must bound the wait for verdicts that never come"
    queue.close()
    other_queue.close()
