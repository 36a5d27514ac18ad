"""The bridge's figures for Prometheus, read from the bridge at scrape time.

The numbers the bridge publishes as NodeMetrics over MQTT, named by Prometheus conventions:
cumulative counters (`*_total`; Prometheus computes the rates that the MQTT message carries
as `messages_per_s`), the queue as gauges (depth, bytes, age of the oldest item), per-sink
counters labelled `sink`, dead letters labelled `stage` and `reason`, and quota drops
labelled `source` (the device or node that went over its quota). A scrape reads counters
only and never resets the MQTT message's rate window. Imported only when metrics are on
(prometheus-client is part of the `bridge` extra).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud_bridge.durable_queue import QueueStats
from cloud_bridge.sink import SinkCounters
from transport.metrics_http import metric_name

COMPONENT = "bridge"


def _name(name: str) -> str:
    return metric_name(COMPONENT, name)


class ScrapedBridge(Protocol):
    """What a scrape reads of the bridge (a Protocol so this module does not import service.py)."""

    @property
    def node_id(self) -> str: ...
    def queue_stats(self) -> QueueStats: ...
    def ingest_totals(self) -> tuple[int, int, int]: ...
    def sink_counters(self) -> Mapping[str, SinkCounters]: ...


class BridgeCollector(Collector):
    """One scrape = one read of the queue's statistics, the intake totals and every sink's counters."""

    def __init__(self, bridge: ScrapedBridge) -> None:
        self._bridge = bridge

    def collect(self) -> Iterator[Metric]:
        bridge = self._bridge
        stats = bridge.queue_stats()
        received, queued, deadletters = bridge.ingest_totals()
        node = [bridge.node_id]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(_name(name), doc, labels=["node_id"])
            family.add_metric(node, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(_name(name), doc, labels=["node_id"])
            family.add_metric(node, value)
            return family

        yield counter("messages_received", "MQTT messages taken in", received)
        yield counter("messages_queued", "Messages committed to the durable queue", queued)
        yield counter("intake_deadletters", "Messages refused at intake (dead letters)", deadletters)
        yield counter("items_stored", "Queue items every sink has stored", stats.stored)
        yield counter("items_dropped", "Queue items dropped by the queue's bounds", stats.dropped)
        yield gauge("queue_depth", "Items waiting in the durable queue", stats.depth)
        yield gauge("queue_bytes", "Payload bytes waiting in the durable queue", stats.depth_bytes)
        yield gauge("queue_oldest_item_age_seconds", "Age of the oldest waiting item", stats.oldest_age_s)
        yield from self._sinks(bridge.sink_counters(), stats)
        yield self._labelled("dead_letters", "Dead letters by stage and reason", ("stage", "reason"), stats.dead)
        yield self._labelled(
            "quota_dropped", "Messages refused over a source's quota", ("source",), stats.quota_dropped
        )

    def _sinks(self, sinks: Mapping[str, SinkCounters], stats: QueueStats) -> Iterator[Metric]:
        labels = ["node_id", "sink"]
        node_id = self._bridge.node_id
        written = CounterMetricFamily(_name("sink_written"), "Items (InfluxDB: points) a sink wrote", labels=labels)
        errors = CounterMetricFamily(_name("sink_errors"), "Transient sink errors (retried)", labels=labels)
        rejected = CounterMetricFamily(_name("sink_rejected"), "Items refused for good", labels=labels)
        failing = GaugeMetricFamily(_name("sink_failing_seconds"), "Seconds a sink has been failing", labels=labels)
        depth = GaugeMetricFamily(_name("sink_depth"), "Items a sink has not stored yet", labels=labels)
        for sink, c in sorted(sinks.items()):
            written.add_metric([node_id, sink], c.written)
            errors.add_metric([node_id, sink], c.errors)
            rejected.add_metric([node_id, sink], c.rejected)
            failing.add_metric([node_id, sink], c.failing_s)
            depth.add_metric([node_id, sink], stats.sink_depth.get(sink, 0))
        yield from (written, errors, rejected, failing, depth)

    def _labelled(self, name: str, doc: str, keys: tuple[str, ...], counts: Mapping[str, int]) -> Metric:
        family = CounterMetricFamily(_name(name), doc, labels=["node_id", *keys])
        for key, n in sorted(counts.items()):
            values = key.split("/", len(keys) - 1) if len(keys) > 1 else [key]
            if len(values) == len(keys):
                family.add_metric([self._bridge.node_id, *values], n)
        return family
