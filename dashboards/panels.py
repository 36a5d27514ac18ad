"""Panel and variable building blocks shared by the doctor and fleet dashboards.

Kept in one place so both dashboards word the screening-aid disclaimer, the verdict labels
(from contract.wording) and the datasource the same way.
"""

from __future__ import annotations

from typing import Self

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import text as text_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash
from grafana_foundation_sdk.models.text import TextMode

from contract.messages import ScreeningResult
from contract.wording import DISCLAIMER, RESULT_LABEL
from dashboards.influxql import (
    DATASOURCE,
    DATASOURCE_VARIABLE,
    INFLUXDB_TYPE,
    PROVISIONED_DATASOURCE_NAME,
    PROVISIONED_DATASOURCE_UID,
    InfluxQL,
)

_LEAD, _REST = DISCLAIMER.split(". ", 1)
DISCLAIMER_MARKDOWN = (
    f"**{_LEAD}.** {_REST} Results must be read by a clinician together with the patient's history. "
    "Pseudonyms only: names stay in the clinic's registry."
)
#: The session outcomes are worded by contract.wording (as on the device and in the HTML report).
#: Grafana's colour of each result: inconclusive in amber, neither a referral nor a no finding.
RESULT_COLOUR = {
    ScreeningResult.REFER: "red",
    ScreeningResult.NO_FINDING: "green",
    ScreeningResult.INCONCLUSIVE: "orange",
}
#: A session's outcome as one number, `flagged + 2 * inconclusive` (the doctor dashboard's queries
#: compute it): 0 no finding, 1 refer, 2 or 3 inconclusive, whichever side of the threshold.
OUTCOME_CODES = {
    0: ScreeningResult.NO_FINDING,
    1: ScreeningResult.REFER,
    2: ScreeningResult.INCONCLUSIVE,
    3: ScreeningResult.INCONCLUSIVE,
}

#: Wildcard used by "All" in regex filters such as `"device_id" =~ /^$device$/`.
ALL_REGEX = ".*"


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    return (
        dashboard_builders.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Data source")
        .type(INFLUXDB_TYPE)
        .current(dash.VariableOption(text=PROVISIONED_DATASOURCE_NAME, value=PROVISIONED_DATASOURCE_UID))
    )


def tag_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    """A multi-select tag filter with "All" that queries tag values from InfluxDB."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(" ".join(query.split()))
        .refresh(dash.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL_REGEX)
        .current(dash.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def disclaimer(height: int = 3) -> text_builders.Panel:
    return (
        text_builders.Panel()
        .title("Screening aid, not a diagnosis")
        .mode(TextMode.MARKDOWN)
        .content(DISCLAIMER_MARKDOWN)
        .height(height)
        .span(24)
    )


def outcome_mappings() -> list[dash.ValueMapping]:
    """The words and colour of each outcome code (OUTCOME_CODES)."""
    return [
        dash.ValueMap(
            options={
                str(code): dash.ValueMappingResult(text=RESULT_LABEL[result], color=RESULT_COLOUR[result], index=code)
                for code, result in OUTCOME_CODES.items()
            }
        )
    ]


def online_mappings() -> list[dash.ValueMapping]:
    return [
        dash.ValueMap(
            options={
                "1": dash.ValueMappingResult(text="online", color="green", index=0),
                "0": dash.ValueMappingResult(text="offline", color="red", index=1),
            }
        )
    ]


def thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dash.ThresholdsMode.ABSOLUTE)
        .steps([dash.Threshold(value=value, color=color) for value, color in steps])
    )


def stat(title: str, query: InfluxQL, *, span: int, unit: str = "short", description: str = "") -> stat_builders.Panel:
    panel = (
        stat_builders.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .unit(unit)
        .decimals(0)
        .height(4)
        .span(span)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value("0")
    )
    return panel.description(description) if description else panel


def timeseries(
    title: str, *queries: InfluxQL, span: int, unit: str, description: str = ""
) -> timeseries_builders.Panel:
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .unit(unit)
        .height(8)
        .span(span)
        .line_width(1)
        .fill_opacity(10)
        .span_nulls(True)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    return panel.description(description) if description else panel


class Table(table_builders.Panel):
    """The SDK's table builder for Grafana 10.1 cannot set the table's custom field config
    (cell display mode); this adds that one setter."""

    def __init__(self) -> None:
        super().__init__()
        self.show_header(True)

    def cell_options(self, cell: object, *, align: str = "auto", width: float | None = None) -> Self:
        custom: dict[str, object] = {"align": align, "cellOptions": cell, "inspect": False}
        if width is not None:
            custom["width"] = width
        if self._internal.field_config is None:
            self._internal.field_config = dash.FieldConfigSource()
        if self._internal.field_config.defaults is None:
            self._internal.field_config.defaults = dash.FieldConfig()
        self._internal.field_config.defaults.custom = custom
        return self


def transformation(transform_id: str, options: dict[str, object]) -> dash.DataTransformerConfig:
    return dash.DataTransformerConfig(id_val=transform_id, options=options)


def color_background() -> dict[str, object]:
    return common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.BASIC).to_json()


def by_name(name: str, *properties: tuple[str, object]) -> dashboard_builders.DashboardFieldConfigSourceOverrides:
    return (
        dashboard_builders.DashboardFieldConfigSourceOverrides()
        .matcher(dash.MatcherConfig(id_val="byName", options=name))
        .properties([dash.DynamicConfigValue(id_val=key, value=value) for key, value in properties])
    )
