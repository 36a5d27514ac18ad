"""The engineers' fleet dashboard: is every part of the pipeline alive and keeping up?

Devices (online, frames/s, spool), inference nodes (online, frames/s, latency, batch size),
the bridge (queue depth, oldest item, sink errors, throughput) and dead letters: the numbers
that show where frames pile up or get lost before a doctor would notice missing results.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

from dashboards.influxql import DATASOURCE, InfluxQL
from dashboards.panels import (
    Table,
    by_name,
    color_background,
    datasource_variable,
    disclaimer,
    online_mappings,
    stat,
    tag_variable,
    thresholds,
    timeseries,
    transformation,
)

UID = "thermoscreen-fleet"
TITLE = "thermoscreen: fleet health"

#: How far back "last known state" panels look for a status point (statuses are sparse:
#: they are published on change, retained, and on a last will).
STATE_LOOKBACK = "now() - 30d"
DEVICE_FILTER = '"device_id" =~ /^$device$/'
PER_INTERVAL = "GROUP BY time($__interval), "


def _online_count(measurement: str, key: str, where: str = "") -> InfluxQL:
    condition = f"{where} AND " if where else ""
    return InfluxQL(
        "A",
        f"""SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "{measurement}"
        WHERE {condition}time > {STATE_LOOKBACK} GROUP BY "{key}")""",
    )


def _summary() -> list[cogbuilder.Builder[dash.Panel]]:
    return [
        stat("Devices online", _online_count("device_status", "device_id"), span=6),
        stat("Inference nodes online", _online_count("node_status", "node_id", "\"role\" = 'inference'"), span=6),
        stat(
            "Bridge queue depth",
            InfluxQL(
                "A",
                """SELECT max("queue_depth") FROM "node_metrics" WHERE "role" = 'bridge' AND $timeFilter
                GROUP BY time($__interval) fill(none)""",
            ),
            span=6,
            description="Items waiting in the bridge's on-disk queue for a sink (InfluxDB, Firestore).",
        ).thresholds(thresholds((None, "green"), (1000, "orange"), (100000, "red"))),
        stat(
            "Dead letters in range",
            InfluxQL("A", 'SELECT sum("count") FROM "deadletter" WHERE $timeFilter'),
            span=6,
            description="Rejected inputs (bad payloads, unknown devices, ...), all components.",
        ).thresholds(thresholds((None, "green"), (1, "orange"))),
    ]


def _devices() -> list[cogbuilder.Builder[dash.Panel]]:
    status = InfluxQL(
        "A",
        f"""SELECT last("online") AS "online", last("spool_depth") AS "spool depth",
        last("spool_dropped_frames") AS "dropped frames" FROM "device_status"
        WHERE {DEVICE_FILTER} AND time > {STATE_LOOKBACK} GROUP BY "device_id"
        """,
    ).table()
    table = (
        Table()
        .title("Device status")
        .datasource(DATASOURCE)
        .with_target(status)
        .height(8)
        .span(8)
        .with_transformation(transformation("merge", {}))
        .with_transformation(
            transformation(
                "organize",
                {
                    "indexByName": {"device_id": 0, "online": 1, "Time": 2},
                    "renameByName": {"device_id": "Device", "Time": "Last status"},
                    "excludeByName": {},
                },
            )
        )
        .overrides([by_name("online", ("mappings", online_mappings()), ("custom.cellOptions", color_background()))])
    )
    frames = InfluxQL(
        "A",
        f"""SELECT count("seq") * 1000 / $__interval_ms FROM "frame_stats" WHERE {DEVICE_FILTER} AND $timeFilter
        {PER_INTERVAL}"device_id" fill(0)""",
    ).alias("$tag_device_id")
    spool = InfluxQL(
        "A",
        f"""SELECT max("spool_depth") AS "spool depth" FROM "device_status" WHERE {DEVICE_FILTER} AND $timeFilter
        {PER_INTERVAL}"device_id" fill(previous)""",
    ).alias("$tag_device_id")
    return [
        table,
        timeseries("Frames/s per device", frames, span=8, unit="short").interval("10s"),
        timeseries(
            "Device spool depth",
            spool,
            span=8,
            unit="short",
            description="Messages a device holds while it cannot reach the broker (store and forward).",
        ),
    ]


def _inference() -> list[cogbuilder.Builder[dash.Panel]]:
    nodes = InfluxQL(
        "A",
        f"""SELECT last("online") AS "online" FROM "node_status" WHERE "role" = 'inference'
        AND time > {STATE_LOOKBACK} GROUP BY "node_id"
        """,
    ).table()
    table = (
        Table()
        .title("Inference nodes")
        .datasource(DATASOURCE)
        .with_target(nodes)
        .height(8)
        .span(6)
        .with_transformation(transformation("merge", {}))
        .with_transformation(
            transformation(
                "organize",
                {
                    "indexByName": {"node_id": 0, "online": 1, "Time": 2},
                    "renameByName": {"node_id": "Node", "Time": "Last status"},
                    "excludeByName": {},
                },
            )
        )
        .overrides([by_name("online", ("mappings", online_mappings()), ("custom.cellOptions", color_background()))])
    )
    inference = "\"role\" = 'inference' AND $timeFilter"
    fps = InfluxQL(
        "A",
        f'SELECT mean("frames_per_s") FROM "node_metrics" WHERE {inference} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id")
    p50 = InfluxQL(
        "A",
        f'SELECT mean("latency_p50_ms") FROM "node_metrics" WHERE {inference} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id p50")
    p99 = InfluxQL(
        "B",
        f'SELECT max("latency_p99_ms") FROM "node_metrics" WHERE {inference} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id p99")
    batch = InfluxQL(
        "A",
        f'SELECT mean("batch_size") FROM "node_metrics" WHERE {inference} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id")
    backlog = InfluxQL(
        "A",
        f'SELECT max("queue_depth") FROM "node_metrics" WHERE {inference} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id")
    return [
        table,
        timeseries("Frames/s per inference node", fps, span=9, unit="short"),
        timeseries("Processing latency p50 / p99", p50, p99, span=9, unit="ms"),
        timeseries(
            "Frames waiting in each node",
            backlog,
            span=12,
            unit="short",
            description="Frames a node has received but not yet verdicted: a steady rise means add inference nodes "
            "(docs/scaling.md).",
        ),
        timeseries("Mean micro-batch size", batch, span=12, unit="short"),
    ]


def _bridge() -> list[cogbuilder.Builder[dash.Panel]]:
    bridge = "\"role\" = 'bridge' AND $timeFilter"
    depth = InfluxQL(
        "A",
        f'SELECT max("queue_depth") FROM "node_metrics" WHERE {bridge} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id")
    age = InfluxQL(
        "A",
        f'SELECT max("oldest_age_s") FROM "node_metrics" WHERE {bridge} {PER_INTERVAL}"node_id" fill(null)',
    ).alias("$tag_node_id")
    errors = InfluxQL(
        "A",
        f"""SELECT non_negative_difference(max("sink_errors")) AS "sink errors",
        non_negative_difference(max("dropped")) AS "dropped" FROM "node_metrics" WHERE {bridge}
        {PER_INTERVAL}"node_id" fill(null)""",
    ).alias("$tag_node_id $col")
    throughput = InfluxQL(
        "A",
        f"""SELECT mean("messages_per_s") AS "received/s", non_negative_derivative(max("stored"), 1s) AS "stored/s"
        FROM "node_metrics" WHERE {bridge} {PER_INTERVAL}"node_id" fill(null)""",
    ).alias("$tag_node_id $col")
    deadletters = InfluxQL(
        "A",
        f'SELECT sum("count") FROM "deadletter" WHERE $timeFilter {PER_INTERVAL}"component" fill(0)',
    ).alias("$tag_component")
    return [
        timeseries("Bridge queue depth", depth, span=8, unit="short"),
        timeseries(
            "Oldest queued item age",
            age,
            span=8,
            unit="s",
            description="How long the oldest item has waited for a sink: grows during a sink outage.",
        ),
        timeseries("Sink errors and dropped items", errors, span=8, unit="short").draw_style(
            common.GraphDrawStyle.BARS
        ),
        timeseries("Bridge throughput", throughput, span=12, unit="short"),
        timeseries("Dead letters per component", deadletters, span=12, unit="short").draw_style(
            common.GraphDrawStyle.BARS
        ),
    ]


def build() -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard(TITLE)
        .uid(UID)
        .description("Health of devices, inference nodes and the cloud bridge.")
        .tags(["thermoscreen", "operations"])
        .time("now-1h", "now")
        .refresh("10s")
        .timezone(common.TimeZoneBrowser)
        .editable()
        .variables(
            [
                datasource_variable(),
                tag_variable("device", "Device", 'SHOW TAG VALUES FROM "device_status" WITH KEY = "device_id"'),
            ]
        )
        .with_panel(disclaimer())
    )
    for title, panels in (
        ("Summary", _summary()),
        ("Devices", _devices()),
        ("Inference nodes", _inference()),
        ("Bridge and dead letters", _bridge()),
    ):
        board = board.with_row(dashboard_builders.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return board
