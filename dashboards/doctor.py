"""The doctor's dashboard: one patient (pseudonym) or device, their sessions and verdicts.

What a clinician needs at a glance: which sessions were flagged for follow-up, how the
per-frame probability evolved against the model's threshold, and what the camera actually
saw (the latest 24x32 thermal frame), always next to the screening-aid disclaimer.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

from contract.messages import ScreeningResult
from contract.timeseries import PIXEL_COLS
from contract.wording import RESULT_LABEL
from dashboards.influxql import DATASOURCE, InfluxQL
from dashboards.panels import (
    RESULT_COLOUR,
    Table,
    by_name,
    color_background,
    datasource_variable,
    disclaimer,
    outcome_mappings,
    stat,
    tag_variable,
    thresholds,
    timeseries,
    transformation,
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
#: The history chart's series of inconclusive sessions (its own colour, on top of the probability line).
INCONCLUSIVE_SERIES = RESULT_LABEL[ScreeningResult.INCONCLUSIVE]


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


def _outcome_counts(select: str) -> InfluxQL:
    """Counts by outcome over ended sessions, `both` = flagged and inconclusive.

    Why the subquery and `fill(0)`: sessions stored before the inconclusive rule have no
    `inconclusive` field, and InfluxQL has no COALESCE: `sum("both")` of a bucket holding only
    such sessions is null, which would make the whole difference null (a referral then counted
    nowhere). fill(0) turns that null into 0 before the arithmetic (checked on influxd 1.6 in
    tests/dashboards/test_queries_on_influxql.py); the stat sums the buckets.
    """
    return InfluxQL(
        "A",
        f"""SELECT {select} FROM (SELECT "flagged" AS "flagged", "inconclusive" AS "inconclusive",
        "flagged" * "inconclusive" AS "both"
        FROM "session" WHERE "event" = 'end' AND {PATIENT_FILTER} AND $timeFilter)
        WHERE $timeFilter GROUP BY time($__interval) fill(0)""",
    )


def _summed(panel: stat_builders.Panel) -> stat_builders.Panel:
    return panel.reduce_options(common_builders.ReduceDataOptions().calcs(["sum"]).values(False))


def _counts() -> list[cogbuilder.Builder[dash.Panel]]:
    return [
        stat("Sessions completed", _ended_sessions('count("flagged")'), span=5),
        _summed(
            stat(
                "Refer for follow-up",
                _outcome_counts('sum("flagged") - sum("both") AS "refer"'),
                span=5,
                description=(
                    "Sessions whose combined probability reached the model threshold and that are not "
                    "inconclusive: refer for follow-up."
                ),
            )
        ).thresholds(thresholds((None, "green"), (1, "red"))),
        stat(
            "Inconclusive: repeat the capture",
            _ended_sessions('sum("inconclusive")'),
            span=5,
            description=(
                "Sessions the model could not decide (its members disagree or the probability lies near the "
                "threshold), whichever side of the threshold: capture the session again. Neither a referral nor "
                "a no finding."
            ),
        ).thresholds(thresholds((None, "green"), (1, "orange"))),
        _summed(
            stat(
                "No finding",
                _outcome_counts('count("flagged") - sum("flagged") - sum("inconclusive") + sum("both") AS "clear"'),
                span=5,
            )
        ),
        stat(
            "Frames analysed",
            InfluxQL("A", f'SELECT count("probability") FROM "verdict" WHERE {SESSION_FILTER} AND $timeFilter'),
            span=4,
        ),
    ]


def _session_list() -> Table:
    """One row per ended session; its outcome code (panels.OUTCOME_CODES) is computed per interval
    bucket with fill(0) (a session from before the inconclusive rule has no such field; see
    `_outcome_counts`), and the buckets without the session (`n` = 0) are dropped."""
    query = InfluxQL(
        "A",
        f"""SELECT last("probability") AS "probability", last("outcome") AS "outcome",
        last("frames") AS "frames", last("threshold") AS "threshold"
        FROM (SELECT last("probability") AS "probability", last("flagged") + 2 * last("inconclusive") AS "outcome",
        last("frames") AS "frames", last("threshold") AS "threshold", count("flagged") AS "n"
        FROM "session" WHERE "event" = 'end' AND {PATIENT_FILTER} AND $timeFilter
        GROUP BY time($__interval), "patient_ref", "device_id", "session_id" fill(0))
        WHERE "n" > 0 AND $timeFilter
        GROUP BY "patient_ref", "device_id", "session_id"
        """,
    ).table()
    return (
        Table()
        .title("Sessions and verdicts")
        .description(
            "One row per completed session; the outcome combines all frames of the session: refer for follow-up, "
            "no finding, or inconclusive: repeat the capture (whichever side of the threshold its probability lies)."
        )
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
                        "outcome": 3,
                        "probability": 4,
                        "threshold": 5,
                        "frames": 6,
                        "session_id": 7,
                    },
                    "renameByName": {
                        "Time": "Ended",
                        "patient_ref": "Patient (pseudonym)",
                        "device_id": "Device",
                        "outcome": "Outcome",
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
                by_name("Outcome", ("mappings", outcome_mappings()), ("custom.cellOptions", color_background())),
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
    inconclusive = InfluxQL("C", f'SELECT "probability" FROM "session" WHERE {ended} AND "inconclusive" = 1').alias(
        INCONCLUSIVE_SERIES
    )
    return (
        timeseries(
            "Patient history: session probability over time",
            sessions,
            threshold,
            inconclusive,
            span=24,
            unit="percentunit",
            description=(
                "Choose one patient (pseudonym) above. One point per completed session over the last "
                f"{HISTORY_YEARS} years, whatever the dashboard's time range; at or above the dashed threshold: "
                "refer for follow-up, unless the session is inconclusive (large amber point: repeat the capture). "
                "Pseudonyms only: names stay in the clinic's registry. A screening aid, not a "
                "diagnosis."
            ),
        )
        .time_from(HISTORY_RANGE)
        .min(0)
        .max(1)
        .draw_style(common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.ALWAYS)
        .point_size(7)
        .overrides([_threshold_style(), _inconclusive_style()])
    )


def _inconclusive_style() -> dashboard_builders.DashboardFieldConfigSourceOverrides:
    """Inconclusive sessions as amber points on top of the patient's line, without a line."""
    return by_name(
        INCONCLUSIVE_SERIES,
        ("color", {"mode": "fixed", "fixedColor": RESULT_COLOUR[ScreeningResult.INCONCLUSIVE]}),
        ("custom.drawStyle", "points"),
        ("custom.pointSize", 12),
        ("custom.fillOpacity", 0),
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
