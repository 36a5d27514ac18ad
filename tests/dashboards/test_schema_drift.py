"""Every panel and variable query names only measurements, fields and tags the bridge stores."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contract.timeseries import MEASUREMENTS
from dashboards.generate import GENERATED_DIR, iter_queries, query_problems
from dashboards.query_refs import QueryParseError, parse_query, schema_problems

DASHBOARD_FILES = sorted(p.name for p in GENERATED_DIR.glob("*.json"))


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_committed_queries_match_the_bridge_schema(name: str) -> None:
    data = json.loads((GENERATED_DIR / name).read_text())
    queries = list(iter_queries(data))
    assert len(queries) >= 8, "expected every panel query to be found"
    assert query_problems(data) == []


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_query_names_its_measurement(name: str) -> None:
    """The parser really sees each query's measurement (a parser that saw nothing would pass the check)."""
    data = json.loads((GENERATED_DIR / name).read_text())
    for where, query in iter_queries(data):
        refs = parse_query(query)
        while refs.source is not None:
            refs = refs.source
        assert refs.measurement in MEASUREMENTS, where
        assert refs.selected or refs.grouped, where


def test_renamed_field_or_tag_in_the_schema_is_caught() -> None:
    data = json.loads((GENERATED_DIR / "doctor.json").read_text())
    verdict = MEASUREMENTS["verdict"]
    renamed_field = dict(MEASUREMENTS)
    renamed_field["verdict"] = dataclasses.replace(
        verdict, fields={("prob" if k == "probability" else k): v for k, v in verdict.fields.items()}
    )
    problems = query_problems(data, renamed_field)
    assert any("'probability' is not a field of measurement 'verdict'" in p for p in problems), problems

    session = MEASUREMENTS["session"]
    renamed_tag = dict(MEASUREMENTS)
    renamed_tag["session"] = dataclasses.replace(session, tags=tuple(t for t in session.tags if t != "patient_ref"))
    problems = query_problems(data, renamed_tag)
    assert any("variable 'patient'" in p and "'patient_ref' in GROUP BY" in p for p in problems), problems
    assert any("'patient_ref' in WHERE" in p for p in problems), problems

    without_rows = {k: v for k, v in MEASUREMENTS.items() if k != "frame_row"}
    assert any("measurement 'frame_row' is not in the schema" in p for p in query_problems(data, without_rows))


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('SELECT "probabilty" FROM "verdict" WHERE $timeFilter', "'probabilty' is not a field"),
        ('SELECT mean("probability") FROM "verdicts"', "measurement 'verdicts' is not in the schema"),
        ('SELECT "probability" FROM "verdict" WHERE "device" = \'a\'', "'device' in WHERE"),
        ('SELECT "probability" FROM "verdict" GROUP BY "probability"', "'probability' in GROUP BY is not a tag"),
        ('SELECT * FROM "verdict"', "wildcard"),
        (
            'SELECT sum("x") FROM (SELECT last("online") AS "online" FROM "device_status")',
            "'x' is not a field of subquery",
        ),
        ('SELECT "online" FROM (SELECT last("onlne") AS "online" FROM "device_status")', "'onlne' is not a field"),
        ("SELECT probability FROM verdict", "unquoted identifier"),
        ('SHOW TAG VALUES FROM "verdict" WITH KEY = "node_id"', "'node_id' in GROUP BY is not a tag"),
    ],
)
def test_mismatches_are_reported(query: str, problem: str) -> None:
    problems = schema_problems(query, MEASUREMENTS)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "query",
    [
        'SELECT count("seq") * 1000 / $__interval_ms FROM "frame_stats" WHERE "device_id" =~ /^$device$/ '
        'AND $timeFilter GROUP BY time($__interval), "device_id" fill(0)',
        'SELECT non_negative_derivative(max("stored"), 1s) AS "stored/s" FROM "node_metrics" '
        "WHERE \"role\" = 'bridge' AND time > now() - 30d GROUP BY time(1m) fill(null) ORDER BY time DESC LIMIT 10",
        'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "device_status" GROUP BY "device_id")',
        'SHOW TAG VALUES FROM "session" WITH KEY = "patient_ref" WHERE "device_id" =~ /^(a|b)$/',
        'SELECT "probability" FROM "verdict" WHERE "flagged" = 1 AND NOT ("seq" < 3 OR "seq" > 9);',
    ],
)
def test_valid_queries_have_no_problems(query: str) -> None:
    assert schema_problems(query, MEASUREMENTS) == []


def test_subquery_exposes_aliases_and_tags() -> None:
    refs = parse_query(
        'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "device_status" GROUP BY "device_id")'
    )
    assert refs.selected == {"online"}
    assert refs.source is not None
    assert refs.source.measurement == "device_status"
    assert refs.source.aliases == {"online"}
    assert refs.source.grouped == {"device_id"}


@pytest.mark.parametrize(
    "query",
    [
        'SELECT "a" FROM "m" WHERE "x" =~ abc',
        'SELECT "a" FROM "db"."rp"."m"',
        'SELECT "a" FROM "m" GROUP BY 5',
        'SELECT "a" FROM "m" BOGUS',
        'DROP MEASUREMENT "verdict"',
        'SELECT "a" FROM',
    ],
)
def test_queries_outside_the_subset_are_rejected(query: str) -> None:
    with pytest.raises(QueryParseError):
        parse_query(query)
