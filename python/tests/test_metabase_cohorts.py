"""Cohorts in: a saved question exported from the double and loaded into a real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from metabase_double import MetabaseDouble, running_double

from cohortcast.errors import ConfigError, DataError, MetabaseError
from cohortcast.metabase.client import MetabaseClient, MetabaseSettings
from cohortcast.metabase.cohorts import (
    find_customer_column,
    import_cohort,
    normalise_customer_id,
    table_name,
)
from cohortcast.metabase.commands import import_cohort_command
from cohortcast.warehouse import ConnectionSettings

API_KEY = "mb_test_key_0123456789"
FIRST_ID = 10_000
MEMBER_COUNT = 10_000
COLUMNS = [
    ("CUSTOMER_ID", "Customer ID", "type/Integer"),
    ("PLAN", "Plan", "type/Text"),
    ("LIFETIME_VALUE", "Lifetime Value", "type/Float"),
]
IMPORTED_AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def plan_for(customer: int) -> str:
    return "gold" if customer % 3 == 0 else "silver"


def member_rows() -> list[list[Any]]:
    return [
        [customer, plan_for(customer), customer / 4]
        for customer in range(FIRST_ID, FIRST_ID + MEMBER_COUNT)
    ]


@pytest.fixture(params=["v0.57.3", "v0.50.5"])
def double(request: pytest.FixtureRequest) -> Iterator[MetabaseDouble]:
    with running_double(version=request.param) as server:
        yield server
        assert server.violations == []


@pytest.fixture
def client(double: MetabaseDouble) -> Iterator[MetabaseClient]:
    settings = MetabaseSettings(url=double.url, api_key=API_KEY, backoff_factor=0.01)
    with MetabaseClient(settings) as metabase:
        yield metabase


def fetch(settings: ConnectionSettings, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("export_format", ["csv", "json"])
def test_import_loads_ten_thousand_members(
    double: MetabaseDouble,
    client: MetabaseClient,
    fresh_database: ConnectionSettings,
    export_format: str,
) -> None:
    card_id = double.add_saved_question("Loyal customers", COLUMNS, member_rows())

    result = import_cohort(
        client, fresh_database, card_id, "loyal", export_format=export_format, now=IMPORTED_AT
    )

    assert result.rows_received == MEMBER_COUNT
    assert result.rows_loaded == MEMBER_COUNT
    assert result.table == "raw.metabase_cohort_loyal"
    [(count, distinct, smallest, largest, id_sum, gold)] = fetch(
        fresh_database,
        """
        select count(*), count(distinct customer_id), min(customer_id), max(customer_id),
            sum(customer_id::bigint), count(*) filter (where attributes ->> 'Plan' = 'gold')
        from raw.metabase_cohort_loyal
        """,
    )
    assert count == distinct == 10_000
    assert (smallest, largest) == ("10000", "19999")
    # 10,000 consecutive integers from 10,000 to 19,999: n * (first + last) / 2.
    assert id_sum == 10_000 * (10_000 + 19_999) // 2
    # Multiples of 3 in [10000, 19999]: 10002 .. 19998, (19998 - 10002) / 3 + 1.
    assert gold == (19_998 - 10_002) // 3 + 1
    [row] = fetch(
        fresh_database,
        "select cohort_key, entered_at, source_card_id, imported_at, attributes "
        "from raw.metabase_cohort_loyal where customer_id = '12345'",
    )
    assert row[0] == "loyal"
    assert row[1] == IMPORTED_AT
    assert row[2] == card_id
    assert row[3] == IMPORTED_AT
    assert row[4]["Plan"] == "gold"  # 12345 = 3 * 4115
    assert float(row[4]["Lifetime Value"]) == 3086.25


def test_export_parameters_are_encoded_for_the_server_version(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    card_id = double.add_saved_question("Loyal customers", COLUMNS, member_rows()[:5])

    import_cohort(client, fresh_database, card_id, "loyal")

    [export] = [request for request in double.requests if "/query/" in request.path]
    assert export.method == "POST"
    assert export.path == f"/api/card/{card_id}/query/csv"
    if double.version == "v0.57.3":
        assert export.body == {"format_rows": False, "pivot_results": False}
        assert not export.query
    else:
        assert export.body is None
        assert export.query.get("format_rows") == "false"
    # Unformatted: 10000, not "10,000".
    assert fetch(fresh_database, "select min(customer_id) from raw.metabase_cohort_loyal") == [
        ("10000",)
    ]


def test_card_parameters_are_passed_in_the_right_place(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    card_id = double.add_saved_question("Loyal customers", COLUMNS, member_rows()[:2])
    parameters = [
        {"type": "category", "target": ["variable", ["template-tag", "plan"]], "value": "gold"}
    ]

    import_cohort(client, fresh_database, card_id, "loyal", parameters=parameters)

    [export] = [request for request in double.requests if "/query/" in request.path]
    if double.version == "v0.57.3":
        assert export.body["parameters"] == parameters
    else:
        assert json.loads(export.query["parameters"]) == parameters


def test_a_new_import_replaces_the_previous_one(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    first = double.add_saved_question("Big", COLUMNS, member_rows()[:50])
    second = double.add_saved_question("Small", COLUMNS, [[7, "gold", 1.0], [8, "silver", 2.0]])
    import_cohort(client, fresh_database, first, "vip", now=IMPORTED_AT)
    later = datetime(2026, 3, 2, tzinfo=UTC)

    import_cohort(client, fresh_database, second, "vip", now=later)

    rows = fetch(
        fresh_database,
        "select customer_id, source_card_id, imported_at from raw.metabase_cohort_vip "
        "order by customer_id",
    )
    assert rows == [("7", second, later), ("8", second, later)]


def test_card_without_customer_id_column_is_refused(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    good = double.add_saved_question("Good", COLUMNS, member_rows()[:3])
    import_cohort(client, fresh_database, good, "vip")
    bad = double.add_saved_question(
        "Revenue by month",
        [("MONTH", "Month", "type/Date"), ("REVENUE", "Revenue", "type/Float")],
        [["2011-01-01", 10.5]],
    )

    with pytest.raises(DataError) as caught:
        import_cohort(client, fresh_database, bad, "vip")

    assert "no customer id column" in str(caught.value)
    assert "its columns are: Month, Revenue" in str(caught.value)
    assert fetch(fresh_database, "select count(*) from raw.metabase_cohort_vip") == [(3,)]


def test_failed_export_query_leaves_the_previous_import(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    card_id = double.add_saved_question("Good", COLUMNS, member_rows()[:4])
    import_cohort(client, fresh_database, card_id, "vip")
    double.fail_query_next("ERROR: canceling statement due to statement timeout")

    with pytest.raises(MetabaseError, match="statement timeout"):
        import_cohort(client, fresh_database, card_id, "vip")

    assert fetch(fresh_database, "select count(*) from raw.metabase_cohort_vip") == [(4,)]


def test_export_survives_a_burst_of_5xx(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    card_id = double.add_saved_question("Good", COLUMNS, member_rows()[:6])
    double.fail_next(502, count=3, path="/query/")

    result = import_cohort(client, fresh_database, card_id, "vip")

    assert result.rows_loaded == 6
    assert [r.status for r in double.requests if "/query/" in r.path] == [502, 502, 502, 200]


def test_duplicates_and_blank_ids_are_dropped_and_counted(
    double: MetabaseDouble, client: MetabaseClient, fresh_database: ConnectionSettings
) -> None:
    columns = [
        ("customer_id", "customer_id", "type/Text"),
        ("cohort_key", "cohort_key", "type/Text"),
        ("entered_at", "entered_at", "type/DateTimeWithLocalTZ"),
    ]
    rows = [
        ["17850", "2011-03", "2011-03-04T10:00:00Z"],
        ["17850", "2011-04", "2011-04-04T10:00:00Z"],
        [None, "2011-03", "2011-03-05T10:00:00Z"],
        ["13047", "2011-04", "2011-04-01T08:30:00+01:00"],
    ]
    card_id = double.add_saved_question("Keyed", columns, rows)

    result = import_cohort(client, fresh_database, card_id, "keyed", export_format="json")

    assert (result.rows_received, result.rows_loaded) == (4, 2)
    assert (result.duplicates_dropped, result.blank_ids_dropped) == (1, 1)
    assert fetch(
        fresh_database,
        "select customer_id, cohort_key, entered_at, attributes from raw.metabase_cohort_keyed "
        "order by customer_id",
    ) == [
        ("13047", "2011-04", datetime(2011, 4, 1, 7, 30, tzinfo=UTC), {}),
        ("17850", "2011-03", datetime(2011, 3, 4, 10, 0, tzinfo=UTC), {}),
    ]


@pytest.mark.parametrize("name", ["High Value", "1st", "drop;table", "x" * 48, ""])
def test_cohort_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ConfigError, match="cohort name"):
        table_name(name)


def test_longest_allowed_name() -> None:
    assert table_name("x" * 47) == "metabase_cohort_" + "x" * 47


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["Customer ID", "Plan"], "Customer ID"),
        (["plan", "customer_id"], "customer_id"),
        (["CustomerID"], "CustomerID"),
        (["CUSTOMER_ID"], "CUSTOMER_ID"),
    ],
)
def test_customer_column_is_found_by_any_spelling(columns: list[str], expected: str) -> None:
    assert find_customer_column(columns) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(17850, "17850"), (17850.0, "17850"), ("17850.0", "17850"), (" 42 ", "42"), ("", None)],
)
def test_customer_ids_become_text(value: object, expected: str | None) -> None:
    assert normalise_customer_id(value) == expected


def test_import_cohort_command(double: MetabaseDouble, fresh_database: ConnectionSettings) -> None:
    card_id = double.add_saved_question("Loyal customers", COLUMNS, member_rows()[:10])
    settings = MetabaseSettings(url=double.url, api_key=API_KEY)

    result = import_cohort_command(card_id, "loyal", fresh_database, metabase=settings)

    assert result.summary().startswith(
        f"imported card {card_id} into raw.metabase_cohort_loyal: 10 members from 10 rows"
    )


def test_import_command_refuses_bad_parameters(fresh_database: ConnectionSettings) -> None:
    settings = MetabaseSettings(url="http://127.0.0.1:9", api_key=API_KEY)
    with pytest.raises(ConfigError, match="JSON list of objects"):
        import_cohort_command(1, "x", fresh_database, parameters_json='{"a": 1}', metabase=settings)
