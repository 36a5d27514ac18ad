"""The node's health numbers: counters since start and a latency/throughput window per metrics period.

Names of the published values are those of `contract.timeseries.NODE_METRICS` (so the bridge
and dashboards can store them) plus `queue_depth`, `frames_dropped` (refused because the queue was full), `model_swaps`
and `model_swaps_refused`.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class NodeStats:
    """Thread-safe: the worker records batches, the housekeeping thread takes snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_total = 0
        self.deadletters = 0
        self.model_swaps = 0
        self.model_swaps_refused = 0
        #: Cumulative, for Prometheus (a summary's _count and _sum).
        self.batches_total = 0
        self.latency_sum_ms = 0.0
        self._window_start = time.monotonic()
        self._window_frames = 0
        self._window_batches = 0
        self._window_latencies: list[float] = []

    def record_batch(self, latencies_ms: list[float]) -> None:
        with self._lock:
            self.frames_total += len(latencies_ms)
            self._window_frames += len(latencies_ms)
            self._window_batches += 1
            self._window_latencies.extend(latencies_ms)
            self.batches_total += 1
            self.latency_sum_ms += sum(latencies_ms)

    def record_deadletter(self) -> None:
        with self._lock:
            self.deadletters += 1

    def record_swap(self, accepted: bool) -> None:
        with self._lock:
            if accepted:
                self.model_swaps += 1
            else:
                self.model_swaps_refused += 1

    def totals(self) -> tuple[int, int, int, int, int, float]:
        """frames, batches, dead letters, swaps, refused swaps and latency sum (ms) since start, consistent."""
        with self._lock:
            return (
                self.frames_total,
                self.batches_total,
                self.deadletters,
                self.model_swaps,
                self.model_swaps_refused,
                self.latency_sum_ms,
            )

    def snapshot(self, queue_depth: int, frames_dropped: int = 0) -> dict[str, float]:
        """The values of one NodeMetrics message; starts a new rate/latency window."""
        now = time.monotonic()
        with self._lock:
            elapsed = max(now - self._window_start, 1e-9)
            frames, batches, latencies = self._window_frames, self._window_batches, self._window_latencies
            self._window_start, self._window_frames, self._window_batches = now, 0, 0
            self._window_latencies = []
            totals = (self.frames_total, self.deadletters, self.model_swaps, self.model_swaps_refused)
        p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else [0.0, 0.0]
        return {
            "frames_per_s": frames / elapsed,
            "batch_size": frames / batches if batches else 0.0,
            "latency_p50_ms": float(p50),
            "latency_p99_ms": float(p99),
            "deadletters": float(totals[1]),
            "frames_total": float(totals[0]),
            "queue_depth": float(queue_depth),
            "frames_dropped": float(frames_dropped),
            "model_swaps": float(totals[2]),
            "model_swaps_refused": float(totals[3]),
        }
