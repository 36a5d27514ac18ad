"""InfluxQL panel queries for grafana-foundation-sdk, which ships no InfluxDB query type.

Why InfluxQL rather than Flux: a raw InfluxQL statement names its measurement, fields and
tags in fixed places (SELECT, FROM, WHERE, GROUP BY), so the drift check
(`dashboards.query_refs`) can parse every panel query and compare it with the bridge schema.
InfluxDB 2 serves InfluxQL through its v1 compatibility API (a bucket is a database there).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

#: Grafana's plugin id of the InfluxDB datasource.
INFLUXDB_TYPE = "influxdb"
#: Uid of the provisioned datasource (dashboards/provisioning/datasources/influxdb.yaml).
PROVISIONED_DATASOURCE_UID = "thermoscreen-influxdb"
PROVISIONED_DATASOURCE_NAME = "InfluxDB (thermoscreen)"
#: Dashboards refer to their datasource through this variable, so a pushed dashboard works
#: with whatever InfluxDB datasource a Grafana already has.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = DataSourceRef(type_val=INFLUXDB_TYPE, uid="${" + DATASOURCE_VARIABLE + "}")


class ResultFormat(StrEnum):
    TIME_SERIES = "time_series"
    TABLE = "table"


class InfluxQLDataquery(cogvariants.Dataquery):
    """One raw InfluxQL target, serialised the way Grafana's InfluxDB datasource stores it."""

    def __init__(self, ref_id: str, query: str, result_format: ResultFormat, alias: str | None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.query,
            "resultFormat": str(self.result_format),
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for a raw InfluxQL target: `InfluxQL("A", 'SELECT ...').table().alias("...")`."""

    def __init__(self, ref_id: str, query: str) -> None:
        self._ref_id = ref_id
        self._query = " ".join(query.split())
        self._format = ResultFormat.TIME_SERIES
        self._alias: str | None = None

    def table(self) -> Self:
        self._format = ResultFormat.TABLE
        return self

    def alias(self, alias: str) -> Self:
        self._alias = alias
        return self

    def build(self) -> cogvariants.Dataquery:
        return InfluxQLDataquery(self._ref_id, self._query, self._format, self._alias)
