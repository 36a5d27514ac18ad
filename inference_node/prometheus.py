"""The inference node's figures for Prometheus, read from the node at scrape time.

The same numbers the node publishes as NodeMetrics / NodeStatus over MQTT, named by Prometheus
conventions: cumulative counters (`*_total`, Prometheus computes rates), the latency as a
summary in seconds (the last metrics window's p50/p99 as quantiles, cumulative sum and count),
gauges for the queue and the last window's throughput and batch size, and the served model as
an info-style gauge with `version` and `sha256` labels. Imported only when metrics are on
(prometheus-client is part of the `inference` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from inference_node.stats import NodeStats
from transport.metrics_http import metric_name

COMPONENT = "inference"


def _name(name: str) -> str:
    return metric_name(COMPONENT, name)


class ScrapedNode(Protocol):
    """What a scrape reads of the node (InferenceNode; a Protocol so this module does not import node.py)."""

    @property
    def node_id(self) -> str: ...
    @property
    def stats(self) -> NodeStats: ...
    @property
    def last_metrics(self) -> dict[str, float]: ...
    @property
    def frames_dropped(self) -> int: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def model_sha256(self) -> str | None: ...


class NodeCollector(Collector):
    """One scrape = one consistent read of the node's counters plus its last published window."""

    def __init__(self, node: ScrapedNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        frames, batches, deadletters, swaps, refused, latency_sum_ms = node.stats.totals()
        window = node.last_metrics
        labels = ["node_id"]
        ident = [node.node_id]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(_name(name), doc, labels=labels)
            family.add_metric(ident, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(_name(name), doc, labels=labels)
            family.add_metric(ident, value)
            return family

        yield counter("frames", "Frames scored (a verdict published)", frames)
        yield counter("batches", "Micro-batches scored", batches)
        yield counter("deadletters", "Dead letters published (bad frames, refused swaps)", deadletters)
        yield counter("frames_dropped", "Frames dropped because the queue was full", node.frames_dropped)
        yield counter("model_swaps", "Model swaps adopted", swaps)
        yield counter("model_swaps_refused", "Model swaps refused (old model kept)", refused)
        yield gauge("queue_depth", "Frames waiting for the worker", node.queue_depth)
        yield gauge(
            "frames_per_second", "Frames per second in the last metrics window", window.get("frames_per_s", 0.0)
        )
        yield gauge("batch_size", "Mean micro-batch size in the last metrics window", window.get("batch_size", 0.0))
        latency = SummaryMetricFamily(
            _name("latency_seconds"), "Arrival-to-verdict latency (quantiles: last metrics window)", labels=labels
        )
        latency.add_metric(ident, count_value=frames, sum_value=latency_sum_ms / 1000.0)
        for quantile, key in (("0.5", "latency_p50_ms"), ("0.99", "latency_p99_ms")):
            latency.add_sample(
                _name("latency_seconds"),
                {"node_id": node.node_id, "quantile": quantile},
                window.get(key, 0.0) / 1000.0,
            )
        yield latency
        model = GaugeMetricFamily(
            _name("model_info"), "The model served (value 1)", labels=[*labels, "version", "sha256"]
        )
        model.add_metric([*ident, node.model_version or "", node.model_sha256 or ""], 1.0)
        yield model
