"""No single message can stop the bridge (issue 13.2), and a device speaks only for itself (13.3).

Against a real Mosquitto and the real bridge: a hostile device sends a status with a
5,000-digit integer (which made `json` raise a plain ValueError and killed ingest) and an
rfid event with a 2**64 integer (which passed validation and made the archive raise
OverflowError, retried forever), both retained, interleaved with valid traffic of another
device; then the bridge restarts and gets the retained ones again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cloud_bridge.archive import Archive
from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.channels import Kind
from cloud_bridge.durable_queue import DurableQueue, NewItem
from cloud_bridge.intake import Accepted, Rejected, RejectReason, classify
from cloud_bridge.service import Bridge
from cloud_bridge.sink import Backoff, SinkWorker
from contract.frame import encode_frame
from contract.messages import DeviceState, DeviceStatus, encode_message
from contract.topics import NodeChannel, frame_topic, node_topic, rfid_topic, status_topic, verdict_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import connect

HUGE = b"9" * 5000
ABOVE_U64 = str(2**64).encode()


def _hostile_status() -> bytes:
    return b'{"v": 1, "state": "online", "spool_depth": ' + HUGE + b"}"


def _hostile_end(device: str) -> bytes:
    end = make_session(device, 1, seed=3).end
    text = encode_message(end).decode()
    return text.replace(f'"frame_count":{end.frame_count}', '"frame_count":' + ABOVE_U64.decode()).encode()


def _session_stored(path: Path, session_id: str, frames: int) -> bool:
    with Archive(path) as archive:
        record = archive.session(session_id)
        return (
            record is not None
            and record.has_verdict
            and len(archive.verdicts(session_id)) == frames
            and len(archive.frames(session_id)) == frames
        )


def test_a_hostile_device_cannot_stop_the_bridge_even_with_retained_messages(
    mosquitto: LocalMosquitto, bridge_dir: Path
) -> None:
    config = bridge_config(bridge_dir, mosquitto.url)
    hostile = [
        (status_topic("evil-1"), _hostile_status()),
        (rfid_topic("evil-1"), _hostile_end("evil-1")),
    ]
    assert b'"frame_count":18446744073709551616' in hostile[1][1]
    publisher = connect(mosquitto.url)
    fatal: list[str] = []
    try:
        # Retained first: the bridge gets them on every subscribe, i.e. at every start.
        receipts = [publisher.publish(t, p, qos=1, retain=True) for t, p in hostile]
        assert all(r.wait(10.0) and r.accepted for r in receipts)
        bridge = Bridge(config, on_fatal=fatal.append).start()
        good = make_session("good-1", 4, seed=1)
        messages = list(good.ordered_messages())
        interleaved = [m for pair in zip(messages, hostile * len(messages), strict=False) for m in pair]
        interleaved += messages[len(hostile) * len(messages) :]
        publish_all(publisher, interleaved + messages[len(interleaved) // 2 :])
        wait_until(
            lambda: _session_stored(config.archive.path, good.session_id, 4), bool, 20.0, "the good session stored"
        )
        assert bridge.wait_idle(20.0)
        first = bridge.summary()
        assert bridge.dead_threads() == [] and first.fatal == ""
        assert bridge.queue is not None
        letters = bridge.queue.dead_letters("intake")
        bridge.stop()
        # Restart: the retained hostile messages come again; valid traffic keeps being stored.
        again = Bridge(config, on_fatal=fatal.append).start()
        second_good = make_session("good-2", 3, seed=2)
        publish_all(publisher, second_good.ordered_messages())
        wait_until(
            lambda: _session_stored(config.archive.path, second_good.session_id, 3), bool, 20.0, "session after restart"
        )
        assert again.queue is not None
        after = wait_until(
            lambda: again.queue.stats().dead if again.queue else {},
            lambda dead: sum(dead.values()) >= sum(first.dead_letters.values()) + len(hostile),
            10.0,
            "the retained hostile messages dead-lettered again",
        )
        assert again.dead_threads() == []
        again.stop()
    finally:
        for topic, _ in hostile:  # clear the retained messages
            publisher.publish(topic, b"", qos=1, retain=True).wait(5.0)
        publisher.stop()
    assert fatal == []
    by_topic = {d.topic: d for d in letters}
    assert set(by_topic) == {t for t, _ in hostile}
    status_letter, end_letter = by_topic[hostile[0][0]], by_topic[hostile[1][0]]
    # Today json's own ValueError (reason "decoder"); "malformed" once the contract raises ContractError for it.
    assert status_letter.payload == hostile[0][1] and status_letter.detail
    assert status_letter.reason in {RejectReason.DECODER, RejectReason.MALFORMED}
    # Refused by the bridge's range check ("malformed" if the contract comes to bound frame_count itself).
    assert end_letter.reason in {RejectReason.RANGE, RejectReason.MALFORMED} and "frame_count" in end_letter.detail
    assert first.dead_letters.get(f"intake/{end_letter.reason}", 0) >= 1
    assert sum(after.values()) >= sum(first.dead_letters.values()) + 2
    with Archive(config.archive.path) as archive:  # nothing of evil-1 is stored
        assert archive.sessions(device_id="evil-1") == []


def test_a_permanent_sink_error_dead_letters_that_item_and_stores_the_rest(tmp_path: Path) -> None:
    """A queued item the archive cannot hold (2**64 in an INTEGER column) is isolated by bisection."""
    queue = DurableQueue(tmp_path / "q.sqlite", ["archive"])
    good = make_session("bisect-1", 5, seed=4)
    items = [NewItem(Kind.RFID, rfid_topic("bisect-1"), encode_message(good.start), 1)]
    for frame, verdict in zip(good.frames, good.verdicts, strict=True):
        items.append(NewItem(Kind.FRAME, frame_topic("bisect-1"), encode_frame(frame), 1))
        items.append(NewItem(Kind.VERDICT, verdict_topic("bisect-1"), encode_message(verdict), 1))
    # Bypasses intake (as an older bridge version, or a contract gap, would have queued it).
    items.insert(4, NewItem(Kind.RFID, rfid_topic("poison-2"), _hostile_end("poison-2"), 1))
    items.append(NewItem(Kind.RFID, rfid_topic("bisect-1"), encode_message(good.end), 1))
    queue.append(items)
    sink = ArchiveSink(tmp_path / "archive.sqlite")
    worker = SinkWorker(sink, queue, batch_items=100, backoff=Backoff(0.1, 1.0))
    while worker.drain_once():
        pass
    sink.close()
    counters = worker.counters()
    assert counters.rejected == 1 and counters.errors == 0  # refused once, never retried as "store down"
    [dead] = queue.dead_letters("archive")
    # With the hardened contract the sink's own decode refuses 2**64 ("refused"); a contract without
    # that bound would let it reach SQLite ("range", OverflowError). Either way: isolated, never retried.
    assert dead.kind == Kind.RFID and ("frame_count" in dead.detail or "OverflowError" in dead.detail), dead
    assert dead.reason in {"range", "refused"}, dead
    assert dead.payload == items[4].payload  # kept whole: it can be replayed once the cause is fixed
    assert queue.stats().dead == {f"archive/{dead.reason}": 1} and queue.stats().depth == 0
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert archive.counts() == {"sessions": 1, "verdicts": 5, "frames": 5}
    queue.close()


class _InjectedFault(BaseException):
    """Fault injection: an error no worker loop catches (stands for a bug outside the write)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the injected fault
def test_a_dead_worker_thread_is_reported_as_fatal(mosquitto: LocalMosquitto, bridge_dir: Path) -> None:
    fatal: list[str] = []
    reported = threading.Event()

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        reported.set()

    bridge = Bridge(bridge_config(bridge_dir, mosquitto.url), on_fatal=on_fatal).start()
    try:
        assert not reported.wait(1.0)  # healthy: nothing reported

        def boom() -> bool:
            raise _InjectedFault

        bridge.workers["archive"].drain_once = boom  # type: ignore[method-assign]
        bridge.queue.wake()  # type: ignore[union-attr]
        assert reported.wait(10.0), "the dead archive worker was not reported"
    finally:
        bridge.stop()
    assert fatal == ["bridge thread(s) died: sink archive"]
    assert bridge.fatal == fatal[0]


def test_a_device_status_is_taken_only_from_that_devices_own_topic() -> None:
    status = encode_message(DeviceStatus(state=DeviceState.ONLINE, ts_ns=5))
    own = classify(status_topic("dev-a"), status)
    assert isinstance(own, Accepted) and own.kind == Kind.DEVICE_STATUS and own.device_id == "dev-a"
    # A status naming another device, or sent on a channel that is not its device's status topic.
    naming_other = status[:-1] + b',"device_id":"dev-b"}'
    for topic, payload in [
        (status_topic("dev-a"), naming_other),
        (rfid_topic("dev-a"), status),
        (verdict_topic("dev-a"), status),
        (node_topic("dev-a", NodeChannel.STATUS), status),
        ("thermo/v1/dev-a/session_verdict", status),
    ]:
        result = classify(topic, payload)
        assert isinstance(result, Rejected), topic
    # Whatever names a device in its payload must name the topic's device (the registry's check).
    other = make_session("dev-b", 1, seed=9)
    for topic, payload in [
        (verdict_topic("dev-a"), encode_message(other.verdicts[0])),
        (rfid_topic("dev-a"), encode_message(other.start)),
        (frame_topic("dev-a"), encode_frame(other.frames[0])),
    ]:
        result = classify(topic, payload)
        assert isinstance(result, Rejected) and result.category == RejectReason.OWNERSHIP, topic
        assert "differs from the topic" in result.reason


@pytest.mark.parametrize(
    "payload", [_hostile_status(), b'{"v": 1, "state": "online", "spool_depth": ' + ABOVE_U64 + b"}"]
)
def test_classify_never_raises_on_huge_integers(payload: bytes) -> None:
    result = classify(status_topic("dev-a"), payload)
    assert isinstance(result, Rejected) and result.device_id == "dev-a" and result.reason
