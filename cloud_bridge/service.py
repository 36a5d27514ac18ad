"""The bridge process: one MQTT connection, the durable queue, its sinks and the session stage.

Start order matters: queue and sinks first (so anything received can be stored), then the
MQTT connection (persistent session, manual acks, retained `NodeStatus` online with an
`offline` last will), then the subscriptions. Stop order is the reverse, and unacknowledged
messages simply stay with the broker for the next start.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.channels import stale_subscriptions, subscriptions
from cloud_bridge.config import BridgeConfig, ClusterSettings, ProvenanceSettings, SinkRetry
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import DurableQueue, QueueStats, SourceQuota
from cloud_bridge.erasure_tombstones import ErasedIds
from cloud_bridge.ingest import Ingest
from cloud_bridge.provenance import Provenance
from cloud_bridge.receipt_publisher import ReceiptPublisher
from cloud_bridge.retention import RetentionWorker
from cloud_bridge.session_verdicts import STAGE_NAME, PendingSessionVerdicts
from cloud_bridge.sink import Backoff, Sink, SinkCounters, SinkWorker
from cloud_bridge.verdict_publisher import SessionVerdictPublisher
from contract.messages import DeadLetter, DeviceState, NodeMetrics, NodeRole, NodeStatus, encode_message
from contract.topics import NodeChannel, deadletter_topic, node_topic, reoffer_topic
from transport.connection import MqttConnection, PublishReceipt, Will
from transport.metrics_http import MetricsServer, start_metrics_server

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgeSummary:
    """What the bridge did (printed by `thermoscreen bridge --json`)."""

    received: int
    queued: int
    deadletters: int
    stored: int
    dropped: int
    queue_depth: int
    oldest_age_s: float
    sink_errors: int
    sink_rejected: int
    session_verdicts: int
    sink_depth: dict[str, int]
    #: Dead letters per `stage/reason` (stage: intake or a sink), from the queue's dead-letter table.
    dead_letters: dict[str, int]
    #: A thread that died ("" while all live); the process must then exit non-zero.
    fatal: str
    #: Messages dropped per device/node: over its queue quota, or QoS 0 beyond a full inbox.
    dropped_by_source: dict[str, int]
    queue_bytes: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: Exit status of `thermoscreen bridge` when one of its threads died (the supervisor restarts it).
EXIT_THREAD_DIED = 70
#: How often the watchdog checks that every bridge thread is alive.
WATCHDOG_INTERVAL_S = 0.5


def _log_fatal(reason: str) -> None:
    log.critical("%s; the bridge stores nothing more and must be restarted", reason)


#: Dead-letter reasons reported in the metrics message at most (a message holds 64 values).
DEAD_METRICS_MAX = 16
#: Devices with the most quota drops reported in the metrics message at most.
DROP_METRICS_MAX = 16


def _sum_counts(*counts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for key, n in part.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))


def _dead_metric(key: str) -> str:
    """`intake/malformed` -> `dead_intake_malformed` (metric names are flat)."""
    return "dead_" + key.replace("/", "_").replace("-", "_")


class Bridge:
    def __init__(self, config: BridgeConfig, *, on_fatal: Callable[[str], None] = _log_fatal) -> None:
        """`on_fatal(reason)` is called once if a thread dies (the CLI exits non-zero there)."""
        self.config = config
        self._on_fatal = on_fatal
        self.fatal = ""
        self._watchdog: threading.Thread | None = None
        self.node_id = config.bridge.node_id
        self.queue: DurableQueue | None = None
        self.connection: MqttConnection | None = None
        self.workers: dict[str, SinkWorker] = {}
        self.ingest: Ingest | None = None
        self.sessions: PendingSessionVerdicts | None = None
        self._metrics_stop = threading.Event()
        self._metrics_thread: threading.Thread | None = None
        self._last_rate: tuple[float, int] = (time.monotonic(), 0)
        self.prometheus: MetricsServer | None = None
        self.retention: RetentionWorker | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Bridge:
        cfg = self.config
        sinks: list[tuple[Sink, SinkRetry]] = []
        # Shared by ingest and the sinks: each message is decoded once (ingest validates it).
        decoded = DecodedCache()
        archive_sink = ArchiveSink(cfg.archive.path, store_frames=cfg.archive.store_frames, decoded=decoded)
        sinks.append((archive_sink, cfg.archive))
        try:
            if cfg.influx.enabled:
                from cloud_bridge.influx_sink import InfluxSink

                sinks.append((InfluxSink(cfg.influx, decoded=decoded), cfg.influx))
            if cfg.firestore.enabled:
                from cloud_bridge.firestore_sink import FirestoreSink

                sinks.append((FirestoreSink(cfg.firestore, decoded=decoded), cfg.firestore))
            will = Will(node_topic(self.node_id, NodeChannel.STATUS), self._status(DeviceState.OFFLINE), qos=1)
            self.connection = MqttConnection(
                cfg.mqtt, client_id=cfg.mqtt.client_id or f"thermoscreen-{self.node_id}", will=will, manual_ack=True
            )
            sinks.append(self._publishing_sink(decoded))
            stages = [STAGE_NAME] if self.computes_sessions else []
            self.queue = DurableQueue(
                cfg.queue.path,
                [*(s.name for s, _ in sinks), *stages],
                max_items=cfg.queue.max_items,
                max_bytes=cfg.queue.max_bytes,
                quota=SourceQuota(cfg.queue.per_source.max_items, cfg.queue.per_source.max_bytes),
                drop_policy=cfg.queue.drop_policy,
                synchronous=cfg.queue.synchronous,
            )
        except BaseException:
            for sink, _ in sinks:
                sink.close()
            raise
        prov, cluster, archive_path = cfg.provenance, cfg.cluster, cfg.archive.path
        queue = self.queue
        provenance = queue.with_writer(lambda conn: provenance_gate(conn, prov, cluster, archive_path))
        if not provenance.knows_owners:
            with Archive(cfg.archive.path) as archive:
                owners = [(r.session_id, r.device_id, r.patient_ref) for r in archive.sessions() if r.patient_ref]
            queue.with_writer(lambda conn: provenance.seed_owners(conn, owners))
        # The session stage: a queue consumer of its own (rfid + verdict items), whose results
        # go back into the queue for the sinks. A storage bridge has none (it queues no verdicts).
        if self.computes_sessions:
            self.sessions = PendingSessionVerdicts(
                self.queue,
                cfg.sessions,
                archive_path=cfg.archive.path,
                archive_sink=archive_sink.name,
                decode=decoded.decode,
                erased=ErasedIds(cfg.erasure.tombstones),  # one per thread: it is not thread-safe
                held_at_intake=provenance.waits_for,
                awaiting_verdicts=provenance.awaits_verdicts,
            )
        for sink, retry in sinks:
            self.workers[sink.name] = SinkWorker(
                sink,
                self.queue,
                batch_items=retry.batch_items,
                backoff=Backoff(retry.backoff_min_s, retry.backoff_max_s),
                linger_s=retry.linger_ms / 1000.0,
            ).start()
        if self.sessions is not None:
            self.sessions.start()
        self.ingest = Ingest(
            self.queue,
            component=self.node_id,
            batch=cfg.queue.ingest_batch,
            max_inbox=cfg.queue.max_inbox,
            publish_deadletter=self._deadletter,
            decoded=decoded,
            provenance=provenance,
            reoffer=self._reoffer,
            erased=ErasedIds(cfg.erasure.tombstones),
        ).start()
        # Handlers before connecting: a persistent session gets its queued messages right
        # after CONNACK, before any SUBSCRIBE of this connection.
        filters = subscriptions(cfg.cluster.role, cfg.cluster.group)
        receipts = [(f, self.connection.subscribe(f, self.ingest.handle, qos=1)) for f in filters]
        try:
            self.connection.start(wait=True)
        except BaseException:
            self.ingest.close_and_flush()
            self._stop_workers()
            raise
        # A persistent session keeps the filters of an earlier role: drop those (a frame taken twice
        # would only be stored once, but would cost the other bridges their share).
        for stale in stale_subscriptions(cfg.cluster.role, cfg.cluster.group):
            self.connection.unsubscribe(stale)
        self._publish_status(DeviceState.ONLINE)
        for topic_filter, receipt in receipts:
            if not receipt.wait(cfg.mqtt.connect_timeout_s) or not receipt.granted:
                self.stop()
                raise ConnectionError(f"broker refused the subscription to {topic_filter}: {receipt.reason_codes}")
        self._metrics_thread = threading.Thread(target=self._metrics_loop, name="bridge-metrics", daemon=True)
        self._metrics_thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="bridge-watchdog", daemon=True)
        self._watchdog.start()
        self._start_prometheus()
        if cfg.retention.days is not None:
            firestore = cfg.firestore if cfg.firestore.enabled else None
            self.retention = RetentionWorker(cfg.retention, archive=cfg.archive.path, firestore=firestore).start()
        return self

    @property
    def computes_sessions(self) -> bool:
        """A single or sessions bridge computes the session verdicts; a storage bridge does not."""
        return self.config.cluster.role != "storage"

    def _publishing_sink(self, decoded: DecodedCache) -> tuple[Sink, SinkRetry]:
        """What this bridge publishes from its queue: session verdicts, or (storage) frame receipts."""
        assert self.connection is not None
        if self.computes_sessions:
            return SessionVerdictPublisher(self.connection), SinkRetry(
                batch_items=50, backoff_min_s=0.5, backoff_max_s=10.0
            )
        linger = self.config.cluster.receipt_linger_ms
        return ReceiptPublisher(self.connection, self.node_id, decoded=decoded), SinkRetry(
            batch_items=1000, linger_ms=linger, backoff_min_s=0.2, backoff_max_s=10.0
        )

    def _start_prometheus(self) -> None:
        if self.config.metrics.prometheus_port is None:
            return
        from prometheus_client.registry import CollectorRegistry

        from cloud_bridge.prometheus import BridgeCollector

        registry = CollectorRegistry()
        registry.register(BridgeCollector(self))
        try:
            self.prometheus = start_metrics_server(self.config.metrics, registry)
        except OSError as exc:
            self.stop()
            where = f"{self.config.metrics.prometheus_bind}:{self.config.metrics.prometheus_port}"
            raise OSError(f"cannot serve Prometheus metrics on {where}: {exc.strerror or exc}") from None

    @property
    def prometheus_port(self) -> int | None:
        return self.prometheus.port if self.prometheus is not None else None

    # -- what a Prometheus scrape reads (counters only: the MQTT rate window is left alone) --
    def queue_stats(self) -> QueueStats:
        assert self.queue is not None
        return self.queue.stats()

    def ingest_totals(self) -> tuple[int, int, int]:
        ingest = self.ingest
        return (ingest.received, ingest.queued, ingest.deadletters) if ingest is not None else (0, 0, 0)

    def sink_counters(self) -> dict[str, SinkCounters]:
        return {name: worker.counters() for name, worker in self.workers.items()}

    def dead_threads(self) -> list[str]:
        """Names of the bridge's threads that are no longer running."""
        threads: dict[str, bool] = {f"sink {name}": w.alive for name, w in self.workers.items()}
        if self.ingest is not None:
            threads["ingest"] = self.ingest.alive
        if self.sessions is not None:
            threads["session stage"] = self.sessions.alive
        return sorted(name for name, alive in threads.items() if not alive)

    def _watch(self) -> None:
        """A thread that dies would leave the process up but storing nothing: report it once."""
        while not self._metrics_stop.wait(WATCHDOG_INTERVAL_S):
            dead = self.dead_threads()
            if dead and not self._metrics_stop.is_set():
                self.fatal = f"bridge thread(s) died: {', '.join(dead)}"
                self._on_fatal(self.fatal)
                return

    def stop(self) -> BridgeSummary:
        """Graceful stop: commit and ack what arrived, let sinks drain briefly, go offline."""
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        self._metrics_stop.set()
        if self.retention is not None:
            self.retention.stop()
        if self._metrics_thread is not None:
            self._metrics_thread.join(5.0)
        if self._watchdog is not None:
            self._watchdog.join(5.0)
        if self.ingest is not None:
            self.ingest.close_and_flush()
        if self.queue is not None:
            self.queue.wait_empty(self.config.bridge.shutdown_drain_s)
        summary = self.summary()
        if self.connection is not None:
            if self.connection.connected.is_set():
                self.publish_metrics()
                self._publish_status(DeviceState.OFFLINE).wait(2.0)
            self.connection.stop()
        self._stop_workers()
        return summary

    def _stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.request_stop()
        for worker in self.workers.values():
            worker.stop()
        if self.sessions is not None:
            self.sessions.stop()
        if self.queue is not None:
            self.queue.close()

    # -- publishing ------------------------------------------------------------------------
    def _status(self, state: DeviceState) -> bytes:
        return encode_message(NodeStatus(node_id=self.node_id, role=NodeRole.BRIDGE, state=state, ts_ns=time.time_ns()))

    def _publish_status(self, state: DeviceState) -> PublishReceipt:
        assert self.connection is not None
        return self.connection.publish(
            node_topic(self.node_id, NodeChannel.STATUS), self._status(state), qos=1, retain=True
        )

    def _reoffer(self, device_id: str, payload: bytes) -> None:
        if self.connection is not None:
            self.connection.publish(reoffer_topic(device_id), payload, qos=1)

    def _deadletter(self, letter: DeadLetter) -> None:
        if self.connection is not None:
            self.connection.publish(deadletter_topic(self.node_id), encode_message(letter), qos=1)

    def metrics_values(self) -> dict[str, float]:
        """The bridge's health numbers (names from schema.NODE_METRICS, role bridge)."""
        assert self.queue is not None and self.ingest is not None
        stats = self.queue.stats()
        now = time.monotonic()
        received = self.ingest.received
        then, before = self._last_rate
        self._last_rate = (now, received)
        rate = (received - before) / (now - then) if now > then else 0.0
        errors = sum(w.counters().errors for w in self.workers.values())
        influx = self.workers.get("influx")
        return {
            "points_written": float(influx.counters().written if influx else 0),
            "queue_depth": float(stats.depth),
            "oldest_age_s": round(stats.oldest_age_s, 3),
            "dropped": float(stats.dropped),
            "sink_errors": float(errors),
            "stored": float(stats.stored),
            "messages_per_s": round(rate, 2),
            "deadletters": float(self.ingest.deadletters),
            **{_dead_metric(key): float(n) for key, n in sorted(stats.dead.items())[:DEAD_METRICS_MAX]},
            **{
                f"dropped_{source.replace('-', '_').replace('/', '_')}": float(n)
                for source, n in sorted(stats.quota_dropped.items(), key=lambda kv: -kv[1])[:DROP_METRICS_MAX]
            },
        }

    def publish_metrics(self) -> None:
        if self.connection is None:
            return
        message = NodeMetrics(
            node_id=self.node_id, role=NodeRole.BRIDGE, ts_ns=time.time_ns(), values=self.metrics_values()
        )
        self.connection.publish(node_topic(self.node_id, NodeChannel.METRICS), encode_message(message), qos=1)

    def _metrics_loop(self) -> None:
        while not self._metrics_stop.wait(self.config.bridge.metrics_interval_s):
            try:
                self.publish_metrics()
            except Exception:
                log.exception("publishing bridge metrics failed")

    # -- state -----------------------------------------------------------------------------
    def summary(self) -> BridgeSummary:
        assert self.queue is not None
        stats = self.queue.stats()
        counters = [w.counters() for w in self.workers.values()]
        ingest = self.ingest
        return BridgeSummary(
            received=ingest.received if ingest else 0,
            queued=ingest.queued if ingest else 0,
            deadletters=ingest.deadletters if ingest else 0,
            stored=stats.stored,
            dropped=stats.dropped,
            queue_depth=stats.depth,
            oldest_age_s=round(stats.oldest_age_s, 3),
            sink_errors=sum(c.errors for c in counters),
            sink_rejected=sum(c.rejected for c in counters),
            session_verdicts=self.sessions.published if self.sessions else 0,
            sink_depth=stats.sink_depth,
            dead_letters=stats.dead,
            fatal=self.fatal,
            dropped_by_source=_sum_counts(stats.quota_dropped, ingest.inbox_dropped if ingest else {}),
            queue_bytes=stats.depth_bytes,
        )

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty (every sink confirmed everything) or timeout."""
        assert self.queue is not None
        return self.queue.wait_empty(timeout)


def provenance_gate(
    conn: sqlite3.Connection,
    settings: ProvenanceSettings,
    cluster: ClusterSettings | None = None,
    archive_path: Path | None = None,
) -> Provenance:
    """The intake gate as the bridge config's `[provenance]` and `[cluster]` set it up (also the bench's)."""
    role = "single" if cluster is None else cluster.role
    return Provenance(
        conn,
        rfid_claims_only=role != "single",
        storage_role=role == "storage",
        owner_lookup=None if archive_path is None or role == "single" else archived_owner(archive_path),
        approved_models=frozenset(settings.approved_models),
        # A sessions bridge waits longer: a verdict there waits for a receipt another bridge sends.
        hold_s=max(settings.hold_s, cluster.receipt_hold_s) if cluster and role == "sessions" else settings.hold_s,
        max_held=max(settings.max_held, cluster.max_waiting_verdicts)
        if cluster and role == "sessions"
        else settings.max_held,
        frame_memory_s=settings.frame_memory_s,
        reoffer_s=settings.reoffer_s,
        max_reoffers=settings.max_reoffers,
    )


def archived_owner(archive_path: Path) -> Callable[[str], tuple[str, str] | None]:
    """Who owns a session according to the (shared) archive: the last word on a frame held too long.

    Why: a bridge that joined after a session started never saw its rfid claim; the sessions
    bridge stored it in the archive all bridges of the site share.
    """

    def lookup(session_id: str) -> tuple[str, str] | None:
        try:
            with Archive(archive_path) as archive:
                record = archive.session(session_id)
        except Exception:  # no archive yet, or it is busy: the frame is refused, with its reason
            log.warning("cannot look up the owner of session %s in the archive", session_id, exc_info=True)
            return None
        if record is None or record.patient_ref is None:
            return None
        return record.device_id, record.patient_ref

    return lookup
