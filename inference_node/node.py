"""`InferenceNode`: a stateless worker. Frames in (shared subscription), verdicts out, health on the side.

Threads and why:
- paho's network thread queues incoming frames (`MicroBatcher.put`) and swap requests, so
  receiving never waits for scoring; except when frames come further apart than the
  micro-batch wait and nothing is queued or being scored: then it scores the frame itself
  (`_score_inline`). Why: at 200 frames/s a node cost 2.0 ms of CPU per frame against 0.46
  saturated (`bench inference`), most of it handing each lone frame to the worker and its
  verdict back to the network thread (about 25 futex calls per frame: the GIL passed back
  and forth); a lone frame has no batch to wait for anyway;
- the worker thread takes micro-batches, decodes, scores and publishes; it and the inline
  path score under one lock (`_scoring`), and the worker adopts a new `ModelRunner` only
  between batches under that lock (atomic swap);
- the housekeeping thread publishes metrics, polls the model directory, and loads and warms
  up new models, so a swap costs the worker nothing.

Who may change the model (docs/security.md): only a manifest signed by a pinned key
(`model_public_keys`), for a directory inside `models_root`, that fits the thermal contract
and answers a real frame during warm-up; an admin swap must name the version it expects and
is ignored when it arrives retained (a retained command would be replayed on every
reconnect). On any refusal the old model keeps serving; the reason goes to a dead letter,
the log and `last_refusal`.

Buffers are bounded: at most `max_pending_frames` frames wait for the worker (further ones
are dropped and counted in `frames_dropped`), at most `max_unacked_verdicts` verdicts wait
for the broker's acknowledgement (then the worker waits, so the frame bound applies).

Shutdown (`stop`) loses no frame it was given: unsubscribe, answer everything that still
arrives until the line is quiet, publish the retained `offline` status, then disconnect.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.errors import ContractError
from contract.frame import decode_frame
from contract.messages import (
    DeadLetter,
    DeviceState,
    ModelSwap,
    NodeMetrics,
    NodeRole,
    NodeStatus,
    decode_message,
    encode_message,
)
from contract.model.manifest import ManifestError
from contract.model.model_runner import ModelRunner
from contract.topics import (
    ADMIN_MODEL_TOPIC,
    ALL_FRAMES,
    ALL_REOFFERS,
    NodeChannel,
    deadletter_topic,
    node_topic,
    parse_topic,
    shared,
)
from inference_node.batcher import Arrival, MicroBatcher
from inference_node.config import InferenceConfig
from inference_node.model_paths import confined, swap_target
from inference_node.model_watch import ModelDirWatch, directory_signature
from inference_node.stats import NodeStats
from inference_node.verdicts import VerdictEncoder
from transport.connection import Message, MqttConnection, PublishReceipt, Will
from transport.metrics_http import MetricsServer, start_metrics_server

log = logging.getLogger(__name__)

#: Dead letters of this component go to `thermo/v1/deadletter/inference`.
COMPONENT = "inference"
#: How long the worker blocks for a first frame before checking for swaps and shutdown.
IDLE_POLL_S = 0.05
#: The worker counts as stalled (systemd watchdog withheld) when its loop has not turned for this long.
WORKER_STALL_S = 30.0
#: At most one "queue full" log line per this many seconds (the count is in the metrics).
DROP_LOG_INTERVAL_S = 5.0


def load_runner(config: InferenceConfig, model_dir: Path) -> ModelRunner:
    """`model_dir` loaded as the node would serve it: confined to the models root, signature checked."""
    return ModelRunner.load(
        confined(config.resolved_models_root, model_dir),
        variant=config.variant,
        num_threads=config.num_threads,
        max_batch=config.batch_max,
        trusted_keys=config.model_public_keys,
    )


@dataclass(frozen=True)
class SwapRequest:
    """Load `model_dir`; `source` says who asked (admin topic or file watch) for the refusal message."""

    model_dir: Path
    source: str
    expected_version: str | None = None
    payload: bytes = b""


@functools.lru_cache(maxsize=4096)
def device_from_topic(topic: str) -> str | None:
    """The device id a frame topic names, or None when the topic itself is not valid (cached: few devices)."""
    try:
        return parse_topic(topic).device_id
    except ContractError:
        return None


class InferenceNode:
    """One worker. `start()` connects and serves; `stop()` drains and leaves cleanly."""

    def __init__(self, config: InferenceConfig, *, runner: ModelRunner | None = None) -> None:
        self.config = config
        self.node_id = config.node_id
        self.stats = NodeStats()
        self.last_refusal: str | None = None
        self._runner = runner
        self._pending_runner: ModelRunner | None = None
        self._pending_lock = threading.Lock()
        self._batcher: MicroBatcher[tuple[str, bytes]] = MicroBatcher(
            config.batch_max, config.batch_ms / 1000.0, config.max_pending_frames
        )
        self._next_drop_log = 0.0
        #: The last real frame scored (degrees C): a swap candidate is warmed up on it.
        self._last_frame_c: np.ndarray | None = None
        self._swaps: queue.SimpleQueue[SwapRequest | None] = queue.SimpleQueue()
        self._receipts: collections.deque[PublishReceipt] = collections.deque()
        #: Held while a batch is scored and published, by the worker or inline by the network
        #: thread, and while a new model is adopted; the network thread only ever tries it.
        self._scoring = threading.Lock()
        #: Frames the network thread scored itself (lone frames: see `_score_inline`).
        self.frames_scored_inline = 0
        self._stop_housekeeping = threading.Event()
        self._draining = threading.Event()
        self._worker_done = threading.Event()
        self._swap_adopted = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._frame_filter = shared(config.group, ALL_FRAMES)
        self._reoffer_filter = shared(config.group, ALL_REOFFERS)  # frames the bridge offers again (no verdict)
        self._status_topic = node_topic(self.node_id, NodeChannel.STATUS)
        self._metrics_topic = node_topic(self.node_id, NodeChannel.METRICS)
        self._deadletter_topic = deadletter_topic(COMPONENT)
        self._watch: ModelDirWatch | None = None
        self._encoder: VerdictEncoder | None = None
        self._conn: MqttConnection | None = None
        self._started = False
        #: The values of the last NodeMetrics published (Prometheus shows the same window figures).
        self.last_metrics: dict[str, float] = {}
        self._metrics_server: MetricsServer | None = None
        #: monotonic time of the worker loop's last turn (the watchdog's "still consuming").
        self._worker_beat = time.monotonic()

    # -- properties ------------------------------------------------------------------------
    @property
    def runner(self) -> ModelRunner:
        if self._runner is None:
            raise RuntimeError("inference node has no model loaded (call start())")
        return self._runner

    @property
    def model_version(self) -> str | None:
        return self._runner.version if self._runner is not None else None

    @property
    def model_sha256(self) -> str | None:
        return self._runner.model_sha256 if self._runner is not None else None

    @property
    def frames_dropped(self) -> int:
        return self._batcher.dropped

    @property
    def queue_depth(self) -> int:
        return self._batcher.qsize()

    @property
    def prometheus_port(self) -> int | None:
        """The bound `/metrics` port (None when metrics are off or the node is not started)."""
        return self._metrics_server.port if self._metrics_server is not None else None

    @property
    def connection(self) -> MqttConnection:
        if self._conn is None:
            raise RuntimeError("inference node is not started")
        return self._conn

    def healthy(self, stall_s: float = WORKER_STALL_S) -> bool:
        """The worker thread is alive and its loop turned within `stall_s` (it takes frames as they come)."""
        if not self._threads or not self._threads[0].is_alive():
            return False
        return time.monotonic() - self._worker_beat < stall_s

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> InferenceNode:
        """Load the model (unless given), connect, subscribe and start serving.

        Raises ManifestError for a model that must not be served and MqttConnectionError when
        the broker cannot be reached; in both cases nothing is left running.
        """
        cfg = self.config
        signature = directory_signature(cfg.model_dir)
        if self._runner is None:
            runner = load_runner(cfg, cfg.model_dir)
            runner.warm_up()
            self._runner = runner
        self._encoder = VerdictEncoder(self.node_id, self.runner)
        if cfg.model_poll_s > 0:
            same_dir = self.runner.model_dir == cfg.model_dir
            self._watch = ModelDirWatch(self.runner.model_dir, signature if same_dir else None)
        will = Will(self._status_topic, self._status_payload(DeviceState.OFFLINE, with_version=False), qos=1)
        conn = MqttConnection(cfg.mqtt, client_id=self.node_id, will=will, on_connect=self._on_connect)
        conn.subscribe(self._frame_filter, self._on_frame)
        conn.subscribe(self._reoffer_filter, self._on_frame)
        conn.subscribe(ADMIN_MODEL_TOPIC, self._on_admin)
        self._conn = conn
        conn.start(wait=True)
        self._threads = [
            threading.Thread(target=self._serve_loop, name=f"{self.node_id}-worker", daemon=True),
            threading.Thread(target=self._housekeeping_loop, name=f"{self.node_id}-housekeeping", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._started = True
        self._start_prometheus()
        log.info(
            "inference node %s serving model %s (%s, %s) from %s, group %s",
            self.node_id,
            self.runner.version,
            self.runner.variant,
            self.runner.runtime,
            self.runner.model_dir,
            cfg.group,
        )
        return self

    def stop(self) -> None:
        """Graceful: stop taking frames, answer those in hand, publish `offline`, disconnect.

        Bounded by `drain_max_s` (plus a few seconds for acknowledgements); frames still
        unanswered then are logged as lost.
        """
        if not self._started or self._conn is None:
            return
        self._started = False
        conn = self._conn
        unsub = conn.unsubscribe(self._frame_filter)
        conn.unsubscribe(self._reoffer_filter)
        if conn.connected.is_set() and not unsub.wait(5.0):
            log.warning("no UNSUBACK from the broker; draining what arrived")
        self._draining.set()
        deadline = time.monotonic() + self.config.drain_max_s + 5.0
        self._worker_done.wait(max(0.0, deadline - time.monotonic()))
        with self._scoring:  # a frame the network thread was scoring when draining began is published
            pass
        self._stop_housekeeping.set()
        self._swaps.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._wait_receipts(max(1.0, deadline - time.monotonic()))
        if conn.connected.is_set():
            offline = conn.publish(self._status_topic, self._status_payload(DeviceState.OFFLINE), qos=1, retain=True)
            offline.wait(5.0)
        conn.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        log.info("inference node %s stopped after %d frames", self.node_id, self.stats.frames_total)

    def _start_prometheus(self) -> None:
        """Serve `/metrics` when `[metrics] prometheus_port` is set; a taken port stops the node (one line)."""
        if self.config.metrics.prometheus_port is None:
            return
        from prometheus_client import CollectorRegistry

        from inference_node.prometheus import NodeCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(self))
        try:
            self._metrics_server = start_metrics_server(self.config.metrics, registry)
        except OSError as exc:
            self.stop()
            raise OSError(
                f"[metrics] cannot serve Prometheus on {self.config.metrics.prometheus_bind}:"
                f"{self.config.metrics.prometheus_port}: {exc}"
            ) from exc
        assert self._metrics_server is not None
        log.info("Prometheus metrics on http://%s:%d/metrics", self._metrics_server.bind, self._metrics_server.port)

    def __enter__(self) -> InferenceNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- network-thread handlers (keep short) ----------------------------------------------
    def _on_frame(self, message: Message) -> None:
        at = time.perf_counter()
        if self._score_inline(message, at):
            return
        if not self._batcher.put((message.topic, message.payload), at):
            now = time.monotonic()
            if now >= self._next_drop_log:
                self._next_drop_log = now + DROP_LOG_INTERVAL_S
                log.warning(
                    "inference queue full (%d frames): dropping frames, %d so far",
                    self.config.max_pending_frames,
                    self._batcher.dropped,
                )

    def _score_inline(self, message: Message, at: float) -> bool:
        """Score a lone frame on the network thread; False (queue it) unless it is truly alone.

        Alone: no frame queued, none expected within the micro-batch wait, the worker not
        scoring, not draining, and room for one more unacknowledged verdict, so this thread
        never waits (for the worker or for the broker, whose acks it must itself read).
        """
        batcher = self._batcher
        if (
            batcher.qsize()
            or batcher.company_expected()
            or self._draining.is_set()
            or len(self._receipts) >= self.config.max_unacked_verdicts
            or not self._scoring.acquire(blocking=False)
        ):
            return False
        try:
            batcher.note_arrival(at)
            self._process_safely([Arrival(at, (message.topic, message.payload))], wait_for_broker=False)
            self.frames_scored_inline += 1
        finally:
            self._scoring.release()
        return True

    def _on_admin(self, message: Message) -> None:
        """Validate an admin swap on the network thread; loading happens on the housekeeping thread."""
        if message.retain:
            # A retained command is the broker replaying an old order on (re)connect, not an admin now.
            self._refuse(
                "retained admin message ignored (publish swaps without retain)", message.topic, message.payload
            )
            return
        try:
            swap = decode_message(message.payload, ModelSwap)
        except ContractError as exc:
            self._dead_letter(str(exc), message.topic, message.payload, None)
            return
        if swap.expected_version is None:
            self._refuse("expected_version is required", message.topic, message.payload)
            return
        try:
            target = swap_target(self.config.resolved_models_root, swap.model_dir)
        except ManifestError as exc:
            self._refuse(str(exc), message.topic, message.payload)
            return
        self.request_swap(target, source=message.topic, expected_version=swap.expected_version, payload=message.payload)

    def _on_connect(self) -> None:
        # Also after a reconnect: the broker may have published our last will meanwhile.
        self.connection.publish(self._status_topic, self._status_payload(DeviceState.ONLINE), qos=1, retain=True)

    # -- swap ------------------------------------------------------------------------------
    def request_swap(
        self, model_dir: Path, *, source: str = "api", expected_version: str | None = None, payload: bytes = b""
    ) -> None:
        """Ask the housekeeping thread to load, verify and warm up `model_dir`, then serve it."""
        self._swaps.put(SwapRequest(model_dir, source, expected_version, payload))

    def wait_for_model(self, version: str, timeout: float) -> bool:
        """Block until the worker serves `version` (for tests and admin tools)."""
        deadline = time.monotonic() + timeout
        with self._swap_adopted:
            while self.model_version != version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._swap_adopted.wait(remaining)
        return True

    def _refuse(self, detail: str, source: str, payload: bytes) -> None:
        """Keep the serving model; say why on every channel an operator looks at."""
        reason = f"model swap refused, still serving {self.model_version}: {' '.join(detail.split())}"
        self.last_refusal = reason
        self.stats.record_swap(accepted=False)
        log.warning("%s", reason)
        self._dead_letter(reason, source, payload, None)

    def _load_candidate(self, request: SwapRequest) -> None:
        """Housekeeping thread: verify and warm up a model, then leave it for the worker to adopt."""
        signature = directory_signature(request.model_dir)  # before loading: a change meanwhile is seen later
        try:
            candidate = load_runner(self.config, request.model_dir)
            if request.expected_version is not None and candidate.version != request.expected_version:
                raise ManifestError(
                    f"{request.model_dir}: manifest version {candidate.version}, expected {request.expected_version}"
                )
            candidate.warm_up(self._last_frame_c)
        except Exception as exc:  # whatever is wrong with a candidate, the answer is the same: refuse it
            self._refuse(str(exc), request.source, request.payload or str(request.model_dir).encode())
            return
        if self._watch is not None:
            self._watch.follow(request.model_dir, signature)
        with self._pending_lock:
            self._pending_runner = candidate
        log.info("model %s from %s verified and warm; switching between batches", candidate.version, request.model_dir)

    def _adopt_pending(self) -> None:
        """Worker thread, between batches: switch to a verified, warm model if one is waiting."""
        with self._pending_lock:
            candidate, self._pending_runner = self._pending_runner, None
        if candidate is None:
            return
        old = self.model_version
        with self._scoring, self._swap_adopted:
            self._runner = candidate
            self._encoder = VerdictEncoder(self.node_id, candidate)
            self._swap_adopted.notify_all()
        self.stats.record_swap(accepted=True)
        log.warning("model swapped: %s -> %s (%s)", old, candidate.version, candidate.model_dir)
        if self._conn is not None and self._conn.connected.is_set():
            self._conn.publish(self._status_topic, self._status_payload(DeviceState.ONLINE), qos=1, retain=True)

    # -- worker ----------------------------------------------------------------------------
    def _serve_loop(self) -> None:
        quiet_s = self.config.drain_quiet_ms / 1000.0
        drain_deadline: float | None = None
        last_item = time.monotonic()
        try:
            while True:
                self._worker_beat = time.monotonic()
                self._adopt_pending()
                batch = self._batcher.next_batch(IDLE_POLL_S)
                now = time.monotonic()
                if drain_deadline is None and self._draining.is_set():
                    drain_deadline = now + self.config.drain_max_s
                if batch:
                    last_item = now
                    with self._scoring:
                        self._process_safely(batch)
                if drain_deadline is not None:
                    if now >= drain_deadline:
                        left = self._batcher.qsize()
                        if left:
                            log.warning(
                                "shutdown: %d frames left unanswered after %.0f s", left, self.config.drain_max_s
                            )
                        break
                    if not batch and now - last_item >= quiet_s:
                        break
        finally:
            self._worker_done.set()

    def _process_safely(self, batch: list[Arrival[tuple[str, bytes]]], *, wait_for_broker: bool = True) -> None:
        """A failing batch is dead-lettered frame by frame; the worker itself never dies."""
        try:
            self._process(batch, wait_for_broker=wait_for_broker)
        except Exception as exc:
            log.exception("inference failed for a batch of %d frames", len(batch))
            reason = f"inference failed: {' '.join(str(exc).split()) or type(exc).__name__}"
            for arrival in batch:
                topic, payload = arrival.item
                self._dead_letter(reason, topic, payload, device_from_topic(topic))

    def _process(self, batch: list[Arrival[tuple[str, bytes]]], *, wait_for_broker: bool) -> None:
        runner = self.runner
        encoder = self._encoder
        assert encoder is not None
        rows, cols = runner.frame_shape
        frames = []
        topics = []
        centi = []
        arrived = []
        for arrival in batch:
            topic, payload = arrival.item
            try:
                frame = decode_frame(payload)
            except ContractError as exc:
                self._dead_letter(str(exc), topic, payload, device_from_topic(topic))
                continue
            topic_device = device_from_topic(topic)
            if topic_device != frame.device_id:
                self._dead_letter(
                    f"frame device id {frame.device_id} does not match its topic {topic}", topic, payload, topic_device
                )
                continue
            if frame.centi.shape != (rows, cols):
                self._dead_letter(
                    f"frame shape {frame.centi.shape[0]}x{frame.centi.shape[1]} does not match model "
                    f"{runner.version} input {rows}x{cols}",
                    topic,
                    payload,
                    frame.device_id,
                )
                continue
            frames.append(frame)
            topics.append(topic)
            centi.append(frame.centi)
            arrived.append(arrival.at)
        if not frames:
            return
        temperatures = np.stack(centi).astype(np.float32) / np.float32(100.0)
        self._last_frame_c = temperatures[-1].copy()
        probabilities, spreads = runner.predict_celsius_with_spread(temperatures)
        spread_list = spreads.tolist() if spreads is not None else [None] * len(frames)
        done = time.perf_counter()
        latencies = [(done - at) * 1000.0 for at in arrived]
        conn = self.connection
        receipts = self._receipts
        for frame, frame_topic, probability, spread, latency_ms in zip(
            frames, topics, probabilities.tolist(), spread_list, latencies, strict=True
        ):
            if not 0.0 <= probability <= 1.0:  # also catches NaN
                self._dead_letter(
                    f"model {runner.version} returned probability {probability!r} outside 0..1",
                    frame_topic,
                    b"",
                    frame.device_id,
                )
                continue
            topic, payload = encoder.encode(frame, probability, latency_ms, spread)
            receipts.append(conn.publish(topic, payload, qos=1))
        self._trim_receipts(wait_for_broker)
        self.stats.record_batch(latencies)

    def _trim_receipts(self, wait_for_broker: bool) -> None:
        """Forget acknowledged verdicts; past the bound, wait for the broker (frames back up, bounded)."""
        receipts = self._receipts
        limit = self.config.max_unacked_verdicts if wait_for_broker else len(receipts)
        while receipts and (receipts[0].done or len(receipts) > limit):
            if not receipts[0].done and not receipts[0].wait(IDLE_POLL_S):
                self._worker_beat = time.monotonic()  # waiting for the broker is not a stalled worker
                if self._draining.is_set():
                    return
                continue
            receipts.popleft()

    def _wait_receipts(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._receipts:
            if not self._receipts[0].wait(max(0.0, deadline - time.monotonic())):
                log.warning("%d verdicts not acknowledged by the broker at shutdown", len(self._receipts))
                return
            self._receipts.popleft()

    # -- housekeeping ----------------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        cfg = self.config
        next_metrics = time.monotonic() + cfg.metrics_interval_s
        next_poll = time.monotonic() + cfg.model_poll_s if cfg.model_poll_s > 0 else float("inf")
        while not self._stop_housekeeping.is_set():
            timeout = max(0.0, min(next_metrics, next_poll) - time.monotonic())
            try:
                request = self._swaps.get(timeout=timeout)
            except queue.Empty:
                request = None
            if self._stop_housekeeping.is_set():
                break
            try:
                if request is not None:
                    self._load_candidate(request)
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + cfg.model_poll_s
                    if self._watch is not None and self._watch.changed():
                        log.info("model directory %s changed; loading it", self._watch.model_dir)
                        self._load_candidate(
                            SwapRequest(self._watch.model_dir, source=f"file-watch:{self._watch.model_dir}")
                        )
                if now >= next_metrics:
                    next_metrics = now + cfg.metrics_interval_s
                    self.publish_metrics()
            except Exception:  # keep health reporting alive whatever happened
                log.exception("inference node housekeeping failed")

    def publish_metrics(self) -> NodeMetrics:
        metrics = NodeMetrics(
            node_id=self.node_id,
            role=NodeRole.INFERENCE,
            ts_ns=time.time_ns(),
            values=self.stats.snapshot(self._batcher.qsize(), self._batcher.dropped),
            model_version=self.model_version,
        )
        self.last_metrics = dict(metrics.values)
        conn = self._conn
        if conn is not None and conn.connected.is_set():
            conn.publish(self._metrics_topic, encode_message(metrics), qos=1)
        return metrics

    # -- helpers ---------------------------------------------------------------------------
    def _status_payload(self, state: DeviceState, *, with_version: bool = True) -> bytes:
        return encode_message(
            NodeStatus(
                node_id=self.node_id,
                role=NodeRole.INFERENCE,
                state=state,
                ts_ns=time.time_ns(),
                model_version=self.model_version if with_version else None,
                model_sha256=self.model_sha256 if with_version else None,
            )
        )

    def _dead_letter(self, reason: str, topic: str, payload: bytes, device_id: str | None) -> None:
        self.stats.record_deadletter()
        log.info("dead letter (%s): %s", topic, reason)
        letter = DeadLetter.for_payload(
            component=COMPONENT, reason=reason, topic=topic, payload=payload, ts_ns=time.time_ns(), device_id=device_id
        )
        conn = self._conn
        if conn is not None:
            conn.publish(self._deadletter_topic, encode_message(letter), qos=1)
