"""The doctor's dashboard: one patient (pseudonym) or device, their sessions and verdicts.

What a clinician needs at a glance: which sessions were flagged for follow-up, how the
per-frame probability evolved against the model's threshold, and what the camera actually
saw (the latest 24x32 thermal frame), always next to the screening-aid disclaimer.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

from contract.timeseries import PIXEL_COLS
from dashboards.influxql import DATASOURCE, InfluxQL
from dashboards.panels import (
    Table,
    by_name,
    color_background,
    datasource_variable,
    disclaimer,
    stat,
    tag_variable,
    thresholds,
    timeseries,
    transformation,
    verdict_mappings,
)

UID = "thermoscreen-doctor"
TITLE = "thermoscreen: screening sessions"

#: WHERE clause shared by every patient-level panel (variables are regexes; "All" is `.*`).
PATIENT_FILTER = '"patient_ref" =~ /^$patient$/ AND "device_id" =~ /^$device$/'
SESSION_FILTER = PATIENT_FILTER + ' AND "session_id" =~ /^$session$/'
#: How far back the patient's history reaches, whatever the dashboard's time range (default 7 days).
HISTORY_YEARS = 2
HISTORY_RANGE = f"{HISTORY_YEARS}y"
#: Colour range of the thermal heatmap, C: skin is about 30..36 C, a room about 20..25 C.
HEATMAP_MIN_C = 24.0
HEATMAP_MAX_C = 36.0


def _variables() -> list[dashboard_builders.QueryVariable | dashboard_builders.DatasourceVariable]:
    return [
        datasource_variable(),
        tag_variable("device", "Device", 'SHOW TAG VALUES FROM "session" WITH KEY = "device_id"'),
        tag_variable(
            "patient",
            "Patient (pseudonym)",
            'SHOW TAG VALUES FROM "session" WITH KEY = "patient_ref" WHERE "device_id" =~ /^$device$/',
        ),
        tag_variable(
            "session",
            "Session",
            f'SHOW TAG VALUES FROM "session" WITH KEY = "session_id" WHERE {PATIENT_FILTER}',
        ),
    ]


def _ended_sessions(select: str) -> InfluxQL:
    return InfluxQL(
        "A", f"""SELECT {select} FROM "session" WHERE "event" = 'end' AND {PATIENT_FILTER} AND $timeFilter"""
    )


def _counts() -> list[cogbuilder.Builder[dash.Panel]]:
    return [
        stat("Sessions completed", _ended_sessions('count("flagged")'), span=6),
        stat(
            "Refer for follow-up",
            _ended_sessions('sum("flagged")'),
            span=6,
            description="Sessions whose combined probability reached the model threshold: refer for follow-up.",
        ).thresholds(thresholds((None, "green"), (1, "red"))),
        stat(
            "No finding",
            _ended_sessions('count("flagged") - sum("flagged")'),
            span=6,
        ),
        stat(
            "Frames analysed",
            InfluxQL("A", f'SELECT count("probability") FROM "verdict" WHERE {SESSION_FILTER} AND $timeFilter'),
            span=6,
        ),
    ]


def _session_list() -> Table:
    query = InfluxQL(
        "A",
        f"""SELECT last("probability") AS "probability", last("flagged") AS "verdict",
        last("frames") AS "frames", last("threshold") AS "threshold"
        FROM "session" WHERE "event" = 'end' AND {PATIENT_FILTER} AND $timeFilter
        GROUP BY "patient_ref", "device_id", "session_id"
        """,
    ).table()
    return (
        Table()
        .title("Sessions and verdicts")
        .description("One row per completed session; the verdict combines all frames of the session.")
        .datasource(DATASOURCE)
        .with_target(query)
        .height(9)
        .span(24)
        .with_transformation(transformation("merge", {}))
        .with_transformation(
            transformation(
                "organize",
                {
                    "indexByName": {
                        "Time": 0,
                        "patient_ref": 1,
                        "device_id": 2,
                        "verdict": 3,
                        "probability": 4,
                        "threshold": 5,
                        "frames": 6,
                        "session_id": 7,
                    },
                    "renameByName": {
                        "Time": "Ended",
                        "patient_ref": "Patient (pseudonym)",
                        "device_id": "Device",
                        "verdict": "Verdict",
                        "probability": "Session probability",
                        "threshold": "Threshold",
                        "frames": "Frames",
                        "session_id": "Session",
                    },
                    "excludeByName": {},
                },
            )
        )
        .with_transformation(transformation("sortBy", {"sort": [{"field": "Ended", "desc": True}]}))
        .overrides(
            [
                by_name("Verdict", ("mappings", verdict_mappings()), ("custom.cellOptions", color_background())),
                by_name("Session probability", ("decimals", 3)),
                by_name("Threshold", ("decimals", 3)),
            ]
        )
    )


def _patient_history() -> timeseries_builders.Panel:
    """One point per completed session of the selected patient(s): the session probability over
    time against the threshold, so a doctor sees a trend across screenings, not one session."""
    ended = f""""event" = 'end' AND {PATIENT_FILTER} AND $timeFilter"""
    sessions = InfluxQL("A", f'SELECT "probability" FROM "session" WHERE {ended} GROUP BY "patient_ref"').alias(
        "patient $tag_patient_ref"
    )
    threshold = InfluxQL(
        "B",
        f"""SELECT max("threshold") AS "threshold" FROM "session" WHERE {ended}
        GROUP BY time($__interval) fill(previous)""",
    ).alias("threshold")
    return (
        timeseries(
            "Patient history: session probability over time",
            sessions,
            threshold,
            span=24,
            unit="percentunit",
            description=(
                "Choose one patient (pseudonym) above. One point per completed session over the last "
                f"{HISTORY_YEARS} years, whatever the dashboard's time range; at or above the dashed threshold: "
                "refer for follow-up. Pseudonyms only: names stay in the clinic's registry. A screening aid, not a "
                "diagnosis."
            ),
        )
        .time_from(HISTORY_RANGE)
        .min(0)
        .max(1)
        .draw_style(common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.ALWAYS)
        .point_size(7)
        .overrides([_threshold_style()])
    )


def _threshold_style() -> dashboard_builders.DashboardFieldConfigSourceOverrides:
    """The threshold as a dashed red line."""
    return by_name(
        "threshold",
        ("color", {"mode": "fixed", "fixedColor": "red"}),
        ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
        ("custom.lineWidth", 2),
        ("custom.fillOpacity", 0),
        ("custom.showPoints", "never"),
    )


def _probability() -> timeseries_builders.Panel:
    per_frame = InfluxQL(
        "A",
        f'SELECT "probability" FROM "verdict" WHERE {SESSION_FILTER} AND $timeFilter GROUP BY "session_id"',
    ).alias("session $tag_session_id")
    threshold = InfluxQL(
        "B",
        f"""SELECT max("threshold") AS "threshold" FROM "verdict" WHERE {SESSION_FILTER} AND $timeFilter
        GROUP BY time($__interval) fill(previous)""",
    ).alias("threshold")
    return (
        timeseries(
            "Probability per frame",
            per_frame,
            threshold,
            span=24,
            unit="percentunit",
            description=(
                "Model probability of each frame; frames at or above the dashed threshold line count as positive."
            ),
        )
        .min(0)
        .max(1)
        .draw_style(common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.ALWAYS)
        .point_size(4)
        .overrides([_threshold_style()])
    )


def _frame_stats() -> timeseries_builders.Panel:
    query = InfluxQL(
        "A",
        f"""SELECT mean("max_c") AS "max", mean("mean_c") AS "mean", mean("asymmetry_c") AS "left-right asymmetry"
        FROM "frame_stats" WHERE {SESSION_FILTER} AND $timeFilter GROUP BY time($__interval) fill(null)""",
    )
    return timeseries(
        "Skin temperature and left-right asymmetry",
        query,
        span=24,
        unit="celsius",
        description=(
            "Per-frame statistics: maximum and mean temperature, and the mean difference between the frame "
            "and its mirror image."
        ),
    )


def _latest_frame() -> Table:
    columns = [f"c{c:02d}" for c in range(PIXEL_COLS)]
    select = ", ".join(f'last("{c}") AS "{c}"' for c in columns)
    query = InfluxQL(
        "A", f'SELECT {select} FROM "frame_row" WHERE {SESSION_FILTER} AND $timeFilter GROUP BY "row"'
    ).table()
    return (
        Table()
        .title("Latest thermal frame (24 x 32, C)")
        .description(
            "The last sampled frame in the time range for the selected patient/device/session, one table row per "
            "sensor row, coloured from blue (cool) to red (warm). As seen by the camera: the patient's left is on "
            "the image's right."
        )
        .datasource(DATASOURCE)
        .with_target(query)
        .height(24)
        .span(24)
        .show_header(False)
        .cell_height(common.TableCellHeight.SM)
        .unit("celsius")
        .decimals(1)
        .min(HEATMAP_MIN_C)
        .max(HEATMAP_MAX_C)
        .color_scheme(dashboard_builders.FieldColor().mode(dash.FieldColorModeId.CONTINUOUS_BL_YL_RD))
        .cell_options(color_background(), align="center")
        .with_transformation(transformation("merge", {}))
        .with_transformation(transformation("sortBy", {"sort": [{"field": "row", "desc": False}]}))
        .with_transformation(
            transformation(
                "organize",
                {"excludeByName": {"Time": True, "row": True}, "indexByName": {c: i for i, c in enumerate(columns)}},
            )
        )
    )


def build() -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard(TITLE)
        .uid(UID)
        .description("Screening sessions per patient pseudonym or device. A screening aid, not a diagnosis.")
        .tags(["thermoscreen", "clinical"])
        .time("now-7d", "now")
        .refresh("30s")
        .timezone(common.TimeZoneBrowser)
        .editable()
        .variables(list(_variables()))
        .with_panel(disclaimer())
    )
    for panel in _counts():
        board = board.with_panel(panel)
    board = board.with_panel(_session_list()).with_panel(_patient_history())
    board = board.with_row(dashboard_builders.Row("Selected session(s)"))
    board = board.with_panel(_probability()).with_panel(_frame_stats()).with_panel(_latest_frame())
    return board
