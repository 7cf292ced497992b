"""The dbt project against a real Postgres.

Expected values are worked out independently of the SQL: the acquisition cohort sizes are the
published reference numbers for the bundled data, the month-1 retention is recomputed here
with pandas from the CSV, and the hand-made rows were worked out on paper (see each test).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import create_database, drop_database
from dbt_helpers import copy_project, fetch, run_dbt

from cohortcast.warehouse import ConnectionSettings

# UCI Online Retail, customers by month of first purchase (data/online_retail.SOURCE.md, issue 2).
ACQUISITION_COHORT_SIZES = {
    "2010-12": 885,
    "2011-01": 417,
    "2011-02": 380,
    "2011-03": 452,
    "2011-04": 300,
    "2011-05": 284,
    "2011-06": 242,
    "2011-07": 188,
    "2011-08": 169,
    "2011-09": 299,
    "2011-10": 358,
    "2011-11": 324,
    "2011-12": 41,
}

# Hand-made raw lines, in UK local time as the source records them:
# (invoice_no, stock_code, quantity, invoice_date, unit_price, customer_id, country)
HAND_MADE_LINES = [
    # 90003's first line is a cancellation; their first purchase is on 10 February.
    ("C900001", "85123A", -1, "2011-01-03 10:00:00", 2.00, "90003", "France"),
    # 90002 buys in January, skips February, returns in March.
    ("900002", "85123A", 10, "2011-01-05 10:00:00", 2.00, "90002", "United Kingdom"),
    # 90001 buys late on the last day of January (GMT, so also 31 January UTC).
    ("900003", "85123A", 5, "2011-01-31 23:30:00", 2.00, "90001", "United Kingdom"),
    ("900004", "85123A", 20, "2011-02-10 10:00:00", 2.00, "90003", "France"),
    ("900004", "POST", 1, "2011-02-10 10:00:00", 15.00, "90003", "France"),
    ("900006", "85123A", 1, "2011-03-02 10:00:00", 2.00, "90002", "United Kingdom"),
    # 00:30 on 1 April in London (BST) is 23:30 UTC on 31 March: acquired in 2011-03.
    ("900007", "85123A", 3, "2011-04-01 00:30:00", 2.00, "90004", "Germany"),
    # The last event: a line without a customer, 12:00 BST on 10 June.
    ("900008", "85123A", 1, "2011-06-10 12:00:00", 2.00, None, "United Kingdom"),
]

# One new cohort, one file: customers by the UTC weekday of their first purchase.
EXTRA_COHORT_SQL = """\
select
    customer_id,
    'first_order_weekday' as cohort_name,
    trim(to_char(first_ordered_at at time zone 'UTC', 'Day')) as cohort_key,
    first_ordered_at as entered_at,
    null::timestamptz as exited_at
from {{ ref('customers') }}
where first_ordered_at is not null
"""


def load_hand_made_lines(settings: ConnectionSettings) -> None:
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        conn.cursor().executemany(
            "insert into raw.online_retail_lines"
            " (invoice_no, stock_code, quantity, invoice_date, unit_price, customer_id, country)"
            " values (%s, %s, %s, %s, %s, %s, %s)",
            HAND_MADE_LINES,
        )


@pytest.fixture(scope="module")
def hand_made_warehouse(
    pg_settings: ConnectionSettings, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectionSettings]:
    """The hand-made lines, built by a copy of the project with one cohort file added."""
    project = copy_project(repo_root, tmp_path_factory.mktemp("dbt") / "project")
    (project / "models" / "cohorts" / "first_order_weekday.sql").write_text(EXTRA_COHORT_SQL)
    settings = create_database(pg_settings, "cc_dbt")
    try:
        created = run_dbt(project, settings, "run-operation", "create_python_tables")
        assert created.returncode == 0, created.stdout
        load_hand_made_lines(settings)
        built = run_dbt(project, settings, "build")
        assert built.returncode == 0, built.stdout
        yield settings
    finally:
        drop_database(pg_settings, settings.dbname)


def test_acquisition_cohort_sizes_on_the_demo_data(demo_warehouse: ConnectionSettings) -> None:
    rows = fetch(
        demo_warehouse,
        "select cohort_key, count(*) from analytics.cohort_membership"
        " where cohort_name = 'acquisition_month' group by cohort_key",
    )
    assert dict(rows) == ACQUISITION_COHORT_SIZES
    assert sum(ACQUISITION_COHORT_SIZES.values()) == 4339


def test_month_one_retention_matches_pandas(
    demo_warehouse: ConnectionSettings, repo_root: Path
) -> None:
    pandas = pytest.importorskip("pandas")
    lines = pandas.read_csv(
        repo_root / "data" / "online_retail.csv.gz",
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
        parse_dates=["InvoiceDate"],
    )
    purchases = lines[
        lines["CustomerID"].notna()
        & ~lines["InvoiceNo"].str.startswith(("C", "A"))
        & (lines["Quantity"] > 0)
    ].copy()
    # UK local and UTC months agree here: no purchase falls between midnight and 01:00.
    purchases["month"] = purchases["InvoiceDate"].dt.strftime("%Y-%m")
    first_month = purchases.groupby("CustomerID")["month"].min()
    december = set(first_month[first_month == "2010-12"].index)
    january_buyers = set(purchases.loc[purchases["month"] == "2011-01", "CustomerID"])
    expected = len(december & january_buyers)

    rows = fetch(
        demo_warehouse,
        "select cohort_customer_count, retained_customer_count from analytics.cohort_retention"
        " where cohort_name = 'acquisition_month' and cohort_key = '2010-12'"
        " and period_grain = 'month' and period_number = 1",
    )
    assert rows == [(885, expected)]


def test_hand_made_acquisition_cohorts(hand_made_warehouse: ConnectionSettings) -> None:
    rows = fetch(
        hand_made_warehouse,
        "select customer_id, cohort_key, entered_at from analytics.cohort_membership"
        " where cohort_name = 'acquisition_month' order by customer_id",
    )
    utc = datetime.fromisoformat
    assert rows == [
        ("90001", "2011-01", utc("2011-01-31 23:30:00+00:00")),
        ("90002", "2011-01", utc("2011-01-05 10:00:00+00:00")),
        ("90003", "2011-02", utc("2011-02-10 10:00:00+00:00")),
        ("90004", "2011-03", utc("2011-03-31 23:30:00+00:00")),
    ]


def test_hand_made_month_retention(hand_made_warehouse: ConnectionSettings) -> None:
    rows = fetch(
        hand_made_warehouse,
        "select cohort_key, period_number, cohort_customer_count, retained_customer_count,"
        " is_partial_period from analytics.cohort_retention"
        " where cohort_name = 'acquisition_month' and period_grain = 'month'"
        " order by cohort_key, period_number",
    )
    # The data ends on 10 June: June is the last, partial, month for every cohort.
    assert rows == [
        ("2011-01", 0, 2, 2, False),
        ("2011-01", 1, 2, 0, False),  # nobody in February: present, as zero
        ("2011-01", 2, 2, 1, False),  # 90002 returns on 2 March
        ("2011-01", 3, 2, 0, False),
        ("2011-01", 4, 2, 0, False),
        ("2011-01", 5, 2, 0, True),
        ("2011-02", 0, 1, 1, False),
        ("2011-02", 1, 1, 0, False),
        ("2011-02", 2, 1, 0, False),
        ("2011-02", 3, 1, 0, False),
        ("2011-02", 4, 1, 0, True),
        ("2011-03", 0, 1, 1, False),
        ("2011-03", 1, 1, 0, False),
        ("2011-03", 2, 1, 0, False),
        ("2011-03", 3, 1, 0, True),
    ]


def test_hand_made_week_retention(hand_made_warehouse: ConnectionSettings) -> None:
    rows = fetch(
        hand_made_warehouse,
        "select period_number, retained_customer_count, is_partial_period"
        " from analytics.cohort_retention"
        " where cohort_name = 'acquisition_month' and cohort_key = '2011-01'"
        " and period_grain = 'week' order by period_number",
    )
    # Weeks start on Monday. 90002 enters in the week of Monday 3 January and returns on
    # Wednesday 2 March, in the week of 28 February: 8 weeks later. 90001 enters in the week
    # of Monday 31 January. The last event (Friday 10 June) is in the week of 6 June, 22
    # weeks after 3 January. A week k is partial once 31 January + (k + 1) weeks passes
    # 10 June: from k = 18 (13 June).
    assert [row[0] for row in rows] == list(range(23))
    assert {row[0]: row[1] for row in rows if row[1]} == {0: 2, 8: 1}
    assert [row[0] for row in rows if row[2]] == list(range(18, 23))


def test_hand_made_snapshot_labels(hand_made_warehouse: ConnectionSettings) -> None:
    rows = fetch(
        hand_made_warehouse,
        "select customer_id, as_of_date, order_count, days_since_last_order, is_churned"
        " from analytics.customer_feature_snapshots order by customer_id, as_of_date",
    )
    # Snapshots run from 1 February (the month after the first event) to 1 June (the month
    # of the last). Labels need 90 observed days before 10 June: 1 February and 1 March.
    feb, mar, apr, may, jun = (date(2011, month, 1) for month in range(2, 7))
    assert rows == [
        ("90001", feb, 1, 1, True),
        ("90001", mar, 1, 29, True),
        ("90001", apr, 1, 60, None),
        ("90001", may, 1, 90, None),
        ("90001", jun, 1, 121, None),
        ("90002", feb, 1, 27, False),  # returns on 2 March, inside the window
        ("90002", mar, 1, 55, False),  # the 2 March purchase is a label, not a feature
        ("90002", apr, 2, 30, None),
        ("90002", may, 2, 60, None),
        ("90002", jun, 2, 91, None),
        ("90003", mar, 1, 19, True),  # the January cancellation does not make them a customer
        ("90003", apr, 1, 50, None),
        ("90003", may, 1, 80, None),
        ("90003", jun, 1, 111, None),
        ("90004", apr, 1, 1, None),  # acquired 23:30 UTC on 31 March: in the 1 April snapshot
        ("90004", may, 1, 31, None),
        ("90004", jun, 1, 62, None),
    ]
    assert (
        date(2011, 3, 1) + timedelta(days=90)
        <= date(2011, 6, 10)
        < date(2011, 4, 1) + timedelta(days=90)
    )


def test_snapshot_cohort_keys_are_as_of_the_snapshot(
    hand_made_warehouse: ConnectionSettings,
) -> None:
    rows = fetch(
        hand_made_warehouse,
        "select as_of_date, cohort_lifecycle_stage from analytics.customer_feature_snapshots"
        " where customer_id = '90001' order by as_of_date",
    )
    # One purchase at 23:30 on 31 January: new for 30 days (to 2 March 23:30), active until
    # 90 days after it (1 May 23:30), then at risk until 180 days after, past the data's end.
    assert rows == [
        (date(2011, 2, 1), "new"),
        (date(2011, 3, 1), "new"),
        (date(2011, 4, 1), "active"),
        (date(2011, 5, 1), "active"),
        (date(2011, 6, 1), "at_risk"),
    ]


def test_one_new_cohort_file_shows_up_everywhere(hand_made_warehouse: ConnectionSettings) -> None:
    membership = fetch(
        hand_made_warehouse,
        "select customer_id, cohort_key from analytics.cohort_membership"
        " where cohort_name = 'first_order_weekday' order by customer_id",
    )
    # 5 Jan 2011 was a Wednesday, 31 Jan a Monday, 10 Feb a Thursday, 31 Mar a Thursday.
    assert membership == [
        ("90001", "Monday"),
        ("90002", "Wednesday"),
        ("90003", "Thursday"),
        ("90004", "Thursday"),
    ]
    retention = fetch(
        hand_made_warehouse,
        "select cohort_key, cohort_customer_count from analytics.cohort_retention"
        " where cohort_name = 'first_order_weekday' and period_grain = 'month'"
        " and period_number = 0 order by cohort_key",
    )
    assert retention == [("Monday", 1), ("Thursday", 2), ("Wednesday", 1)]
    snapshot = fetch(
        hand_made_warehouse,
        "select cohort_first_order_weekday from analytics.customer_feature_snapshots"
        " where customer_id = '90004' and as_of_date = '2011-04-01'",
    )
    assert snapshot == [("Thursday",)]


@pytest.mark.parametrize(
    ("cohort_sql", "rule"),
    [
        (
            "select customer_id, 'broken_cohort' as cohort_name, null::text as cohort_key,"
            " first_ordered_at as entered_at, null::timestamptz as exited_at"
            " from {{ ref('customers') }} where first_ordered_at is not null",
            "customer_id, cohort_name, cohort_key and entered_at are never null",
        ),
        (
            "select customer_id, 'broken_cohort' as cohort_name, 'twice' as cohort_key,"
            " first_ordered_at as entered_at, null::timestamptz as exited_at"
            " from {{ ref('customers') }} cross join generate_series(1, 2)"
            " where first_ordered_at is not null",
            "a customer is in the cohort at most once at a time",
        ),
        (
            "select customer_id, 'broken_cohort' as cohort_name, 'no exit' as cohort_key,"
            " first_ordered_at as entered_at"
            " from {{ ref('customers') }} where first_ordered_at is not null",
            "has every contract column",
        ),
    ],
)
def test_a_cohort_that_breaks_the_contract_fails_naming_model_and_rule(
    pg_settings: ConnectionSettings, repo_root: Path, tmp_path: Path, cohort_sql: str, rule: str
) -> None:
    project = copy_project(repo_root, tmp_path / "project")
    (project / "models" / "cohorts" / "broken_cohort.sql").write_text(cohort_sql + "\n")
    settings = create_database(pg_settings, "cc_dbt")
    try:
        assert run_dbt(project, settings, "run-operation", "create_python_tables").returncode == 0
        load_hand_made_lines(settings)
        result = run_dbt(project, settings, "run", "--select", "+cohort_membership")
    finally:
        drop_database(pg_settings, settings.dbname)
    assert result.returncode != 0
    assert "cohort model 'broken_cohort' breaks the cohort contract" in result.stdout
    assert rule in result.stdout


def test_metabase_reader_reads_marts_and_not_raw(demo_warehouse: ConnectionSettings) -> None:
    with psycopg.connect(**demo_warehouse.connect_kwargs(), autocommit=True) as conn:
        conn.execute("set role metabase_reader")
        for relation in (
            "analytics.customers",
            "analytics.cohort_membership",
            "analytics.cohort_retention",
            "analytics.customer_feature_snapshots",
        ):
            conn.execute(f"select count(*) from {relation}").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from raw.online_retail_lines")


# The marts on what Python writes (models/ml/, models/quality/), which must exist, empty,
# before any run.
PYTHON_MARTS = (
    "churn_risk_by_cohort",
    "model_run_metrics",
    "model_run_calibration",
    "model_run_lift",
    "model_run_cohort_metrics",
    "model_run_feature_drift",
    "data_quality_results",
)


def test_plain_build_on_an_empty_database_passes_with_empty_python_marts(
    fresh_database: ConnectionSettings, repo_root: Path, tmp_path: Path
) -> None:
    project = copy_project(repo_root, tmp_path / "project")
    built = run_dbt(project, fresh_database, "build")
    assert built.returncode == 0, built.stdout[-6000:]
    counts = {
        name: fetch(fresh_database, f"select count(*) from analytics.{name}")[0][0]
        for name in PYTHON_MARTS
    }
    assert counts == dict.fromkeys(PYTHON_MARTS, 0)
    with psycopg.connect(**fresh_database.connect_kwargs(), autocommit=True) as conn:
        conn.execute("set role metabase_reader")
        for name in PYTHON_MARTS:
            conn.execute(f"select count(*) from analytics.{name}").fetchone()
        # The quality tables themselves stay out of reach; the mart is the way in.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from quality.validation_results")
