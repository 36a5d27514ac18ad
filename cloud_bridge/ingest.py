"""MQTT -> durable queue: validate, commit a group of messages, then acknowledge them.

paho calls `handle` on its network thread; it only hands the message over. The ingest
thread takes whatever has arrived (up to `batch` messages), validates each with the
contract, commits the valid ones in one transaction, and only then sends the PUBACKs (in
arrival order). Until then the broker still owns the message: if the bridge dies first, the
broker redelivers it to the persistent session. Rejected messages are acknowledged too
(they can never become valid, and a retained one would otherwise come back at every start):
each is recorded in the queue's dead-letter table with its reason, in the same transaction
as the valid ones, and published as a `DeadLetter` after the commit.

No single message can stop ingest: each message is classified on its own and any error of
its own (whatever the decoder raises) makes it a dead letter, never a dead thread.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable

from cloud_bridge.channels import Kind, decode_item
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import DeadItem, DurableQueue, NewItem
from cloud_bridge.erasure_tombstones import ErasedIds
from cloud_bridge.intake import Accepted, Rejected, RejectReason, classify
from cloud_bridge.provenance import Decision, Provenance, Refused
from contract.messages import DeadLetter
from transport.connection import Message, ack_in_order

log = logging.getLogger(__name__)

PublishDeadLetter = Callable[[DeadLetter], None]
#: The dead-letter table's stage name for messages refused at intake.
INTAKE_STAGE = "intake"
#: Dead letters kept (a table row and an MQTT DeadLetter) per source and second at most; beyond
#: that a flooding source's rejects are only counted, so invalid floods cannot fill the disk.
DEADLETTERS_PER_SOURCE_S = 50
#: The dead-letter counter (`intake/erased`) of messages dropped because their patient was erased.
ERASED_REASON = "erased"


def source_of(topic: str) -> str:
    """Who sent a message, for quotas: the device id, `nodes/<id>` or `deadletter/<component>`."""
    parts = topic.split("/")
    if len(parts) < 3:
        return topic[:64]
    if parts[2] in ("nodes", "deadletter") and len(parts) > 3:
        return f"{parts[2]}/{parts[3]}"[:64]
    return parts[2][:64]


class Ingest:
    def __init__(
        self,
        queue: DurableQueue,
        *,
        component: str,
        batch: int,
        publish_deadletter: PublishDeadLetter,
        max_inbox: int = 20_000,
        decoded: DecodedCache | None = None,
        provenance: Provenance | None = None,
        reoffer: Callable[[str, bytes], None] | None = None,
        erased: ErasedIds | None = None,
    ) -> None:
        self._queue = queue
        #: Tombstones of erased patients: their late messages are acked and counted, not stored.
        self._erased = erased
        self._reoffer = reoffer
        self._next_reoffer_ns = 0
        #: Frames offered to the inference nodes again (no verdict came in time).
        self.reoffered = 0
        self._provenance = provenance
        self._component = component
        self._batch = batch
        self._max_inbox = max_inbox
        #: QoS 0 messages dropped per source because the inbox was full (a flood).
        self.inbox_dropped: dict[str, int] = {}
        self._letter_budget: dict[str, tuple[int, int]] = {}
        self._publish_deadletter = publish_deadletter
        self._decoded = decoded
        self._inbox: stdqueue.SimpleQueue[Message] = stdqueue.SimpleQueue()
        self._accepting = True
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.received = 0
        self.queued = 0
        self.deadletters = 0
        self.rejected_silently = 0
        self.dropped = 0
        self._last_letter_ns = 0
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def start(self) -> Ingest:
        self._thread.start()
        return self

    def handle(self, message: Message) -> None:
        """paho's network thread: hand over and return at once.

        QoS 1 messages are bounded by the broker's in-flight window (they are acked only after
        the commit); QoS 0 ones are not, so a flood of them is cut at `max_inbox`, per source.
        """
        if not self._accepting:
            return
        if message.qos == 0 and self._inbox.qsize() >= self._max_inbox:
            source = source_of(message.topic)
            with self._lock:
                self.inbox_dropped[source] = self.inbox_dropped.get(source, 0) + 1
            return
        self._inbox.put(message)

    def close_and_flush(self, timeout: float = 10.0) -> None:
        """Stop taking messages (unacknowledged ones stay with the broker) and commit the inbox."""
        self._accepting = False
        self._stop.set()
        self._thread.join(timeout)

    def _take(self) -> list[Message]:
        try:
            first = self._inbox.get(timeout=0.2)
        except stdqueue.Empty:
            return []
        batch = [first]
        while len(batch) < self._batch:
            try:
                batch.append(self._inbox.get_nowait())
            except stdqueue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._stop.is_set():
                    return
                if self._provenance is not None and self._provenance.held:
                    self._process([])  # held verdicts may have timed out
                self._offer_again()
                continue
            self._process(batch)
            self._offer_again()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _classify(self, message: Message) -> Accepted | Rejected:
        try:
            return classify(message.topic, message.payload)
        except Exception as exc:  # classify never raises; if it ever does, the message is still only one
            log.exception("classifying a message on %s failed", message.topic)
            return Rejected(f"intake error: {type(exc).__name__}", None, category=RejectReason.DECODER)

    def _within_letter_budget(self, source: str, now_ns: int) -> bool:
        """True while `source` had fewer than DEADLETTERS_PER_SOURCE_S letters kept this second."""
        second = now_ns // 1_000_000_000
        start, used = self._letter_budget.get(source, (second, 0))
        if start != second:
            start, used = second, 0
            if len(self._letter_budget) > 10_000:  # forget idle sources
                self._letter_budget.clear()
        self._letter_budget[source] = (start, used + 1)
        return used < DEADLETTERS_PER_SOURCE_S

    def _letter(self, message: Message, result: Rejected, now: int) -> DeadLetter | None:
        # Each dead letter gets its own millisecond: stored as points, two letters with
        # the same tags and timestamp would overwrite each other.
        self._last_letter_ns = max(now, self._last_letter_ns + 1_000_000)
        try:
            return DeadLetter.for_payload(
                component=self._component,
                reason=result.reason,
                topic=message.topic,
                payload=message.payload,
                ts_ns=self._last_letter_ns,
                device_id=result.device_id,
            )
        except Exception:
            log.exception("cannot build a dead letter for %s", message.topic)
            return None

    def _process(self, batch: list[Message]) -> None:
        now = time.time_ns()
        items: list[NewItem] = []
        dead: list[DeadItem] = []
        letters: list[DeadLetter] = []
        silent = 0
        if self._erased is not None:
            self._erased.refresh()
        for message in batch:
            result = self._classify(message)
            if isinstance(result, Accepted) and self._is_erased(result):
                dead.append(_erased_item(message.topic, now))
                continue
            if isinstance(result, Accepted):
                source = source_of(message.topic)
                item = NewItem(result.kind.value, message.topic, message.payload, now, source)
                refused = self._admit(result, item, items, dead)
                if refused is not None:
                    result = Rejected(refused.detail, result.device_id, category=refused.reason)
                else:
                    if self._decoded is not None:  # the sinks reuse what validation decoded
                        self._decoded.put(result.kind.value, message.payload, result.decoded)
                    continue
            keep = self._within_letter_budget(source_of(message.topic), now)
            dead.append(
                DeadItem(
                    INTAKE_STAGE,
                    result.category.value,
                    result.reason,
                    message.topic,
                    message.payload,
                    now,
                    keep_row=keep,
                )
            )
            if not keep:
                silent += 1
                continue
            letter = self._letter(message, result, now) if result.dead_letter else None
            if letter is not None:
                letters.append(letter)
                log.info("dead letter for %s: %s", message.topic, result.reason)
            else:
                silent += 1
                log.warning("ignored a malformed message on %s: %s", message.topic, result.reason)
        if self._provenance is not None:
            self._settle(self._provenance.expired(now), items, dead, now)
            self._provenance.forget_old(now)
        state = self._provenance.take_writes() if self._provenance is not None else None
        failures = 0
        while True:
            try:
                dropped = self._queue.append(items, dead, state)
                break
            except Exception as exc:
                # Nothing is acknowledged: keep retrying (the broker still holds every message).
                failures += 1
                log.error("cannot commit %d messages to the queue (try %d): %s", len(items), failures, exc)
                if self._stop.wait(min(5.0, 0.1 * 2**failures)) and failures > 3:
                    return
        if self._provenance is not None:
            self._provenance.after_commit()
        for letter in letters:
            try:
                self._publish_deadletter(letter)
            except Exception:  # recorded in the dead-letter table already
                log.exception("publishing a dead letter for %s failed", letter.topic)
        ack_in_order(batch)  # one wake-up of the network thread for the group, PUBACKs in arrival order
        if not batch:
            return
        with self._lock:
            self.received += len(batch)
            self.queued += len(items) - dropped
            self.dropped += dropped
            self.deadletters += len(letters)
            self.rejected_silently += silent

    def _is_erased(self, accepted: Accepted) -> bool:
        return self._erased is not None and self._erased.covers_decoded(accepted.decoded)

    def _offer_again(self) -> None:
        """Once a second: publish frames that got no verdict on their reoffer topic (after the commit
        that admitted them, so a reoffered frame is always one the bridge holds)."""
        now = time.time_ns()
        if self._provenance is None or self._reoffer is None or now < self._next_reoffer_ns:
            return
        self._next_reoffer_ns = now + 1_000_000_000
        for device_id, payload in self._provenance.due_reoffers(now):
            try:
                self._reoffer(device_id, payload)
                self.reoffered += 1
            except Exception:
                log.exception("re-offering a frame of %s failed", device_id)

    def _admit(self, accepted: Accepted, item: NewItem, items: list[NewItem], dead: list[DeadItem]) -> Refused | None:
        """Apply the provenance rules: queue `item` (and verdicts its frame released), hold it, or refuse it."""
        if self._provenance is None:
            items.append(item)
            return None
        decision = self._provenance.decide(item.kind, accepted.decoded, item)
        if decision.refused is not None:
            return decision.refused
        if not decision.held and not decision.state_only:
            items.append(item)
        self._settle(decision, items, dead, item.received_ns)
        return None

    def _settle(self, decision: Decision, items: list[NewItem], dead: list[DeadItem], now: int) -> None:
        """Held items a decision released (queued after it) or refused (dead letters), in order.

        A held item of a patient erased while it waited is dropped like her live messages.
        """
        for released in decision.released:
            if self._held_erased(released):
                dead.append(_erased_item(released.topic, now))
            else:
                items.append(released)
        for late, refused in decision.rejected:
            if self._held_erased(late):
                dead.append(_erased_item(late.topic, now))
            else:
                dead.append(_refused_item(refused, late))

    def _held_erased(self, item: NewItem) -> bool:
        if self._erased is None or item.kind == Kind.RECEIPTS:
            return False
        return self._erased.covers_decoded(decode_item(item.kind, item.payload))


def _erased_item(topic: str, now: int) -> DeadItem:
    """A message of an erased patient: counted (`intake/erased`), no row and no payload kept."""
    return DeadItem(INTAKE_STAGE, ERASED_REASON, "patient erased", topic, b"", now, keep_row=False)


def _refused_item(refused: Refused, item: NewItem) -> DeadItem:
    return DeadItem(INTAKE_STAGE, refused.reason.value, refused.detail, item.topic, item.payload, item.received_ns)
