"""The dbt test that snapshot features use only events before their as_of_date.

`assert_snapshot_features_use_only_past_events` recomputes `order_count` and
`days_since_last_order` from the staging lines. Here it must pass on the demo data and on
hand-made lines, and fail once the feature SQL is changed to let in an event on the as-of
date: at midnight exactly (`<=` instead of `<`) or later that day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import create_database, drop_database
from dbt_helpers import copy_project, fetch, run_dbt

from cohortcast.warehouse import ConnectionSettings

POINT_IN_TIME_TEST = "assert_snapshot_features_use_only_past_events"
FEATURE_MODEL = Path("models") / "features" / "customer_feature_snapshots.sql"
# The join that keeps a snapshot's history strictly before its as-of midnight (UTC).
PAST_EVENTS_ONLY = "customer_snapshots.as_of_at > invoices.invoiced_at"
# Each variant of that join, and how many snapshots of LINES it leaks into: the midnight
# order of 91001 on 1 February; with the whole day also the 09:30 order of 91002 on 1 March.
LEAKS = {
    "as written": (PAST_EVENTS_ONLY, 0),
    "midnight on the as-of date (<=)": ("customer_snapshots.as_of_at >= invoices.invoiced_at", 1),
    "the whole as-of date": (
        "customer_snapshots.as_of_at + interval '1 day' > invoices.invoiced_at",
        2,
    ),
}

# Raw lines in UK local time, which is UTC in winter:
# (invoice_no, stock_code, quantity, invoice_date, unit_price, customer_id, country)
LINES = [
    ("910001", "85123A", 2, "2011-01-10 10:00:00", 2.00, "91001", "United Kingdom"),
    # 91001 orders again at midnight exactly on 1 February: not a feature of that snapshot.
    ("910002", "85123A", 1, "2011-02-01 00:00:00", 2.00, "91001", "United Kingdom"),
    ("910003", "85123A", 3, "2011-01-12 10:00:00", 2.00, "91002", "France"),
    # 91002 orders again at 09:30 on 1 March: not a feature of the 1 March snapshot.
    ("910004", "85123A", 1, "2011-03-01 09:30:00", 2.00, "91002", "France"),
    ("910005", "85123A", 4, "2011-01-20 10:00:00", 2.00, "91003", "Germany"),
    # The last event: snapshots run from 1 February to 1 March.
    ("910006", "85123A", 1, "2011-03-15 10:00:00", 2.00, None, "United Kingdom"),
]


@dataclass(frozen=True)
class Built:
    project: Path
    settings: ConnectionSettings
    original_sql: str


@pytest.fixture(scope="module")
def built(
    pg_settings: ConnectionSettings, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """A copy of the project with the hand-made lines built up to the snapshots."""
    project = copy_project(repo_root, tmp_path_factory.mktemp("dbt") / "project")
    settings = create_database(pg_settings, "cc_pit")
    try:
        created = run_dbt(project, settings, "run-operation", "create_python_tables")
        assert created.returncode == 0, created.stdout
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            conn.cursor().executemany(
                "insert into raw.online_retail_lines (invoice_no, stock_code, quantity,"
                " invoice_date, unit_price, customer_id, country)"
                " values (%s, %s, %s, %s, %s, %s, %s)",
                LINES,
            )
        upstream = run_dbt(project, settings, "run", "--select", "+customer_feature_snapshots")
        assert upstream.returncode == 0, upstream.stdout
        yield Built(project, settings, (project / FEATURE_MODEL).read_text())
    finally:
        drop_database(pg_settings, settings.dbname)


def test_the_snapshots_keep_history_strictly_before_the_as_of_date(built: Built) -> None:
    # Worked out by hand from LINES: the 1 February and 1 March orders are labels only.
    rows = fetch(
        built.settings,
        "select customer_id, as_of_date::text, order_count, days_since_last_order"
        " from analytics.customer_feature_snapshots order by customer_id, as_of_date",
    )
    assert rows == [
        ("91001", "2011-02-01", 1, 22),
        ("91001", "2011-03-01", 2, 28),
        ("91002", "2011-02-01", 1, 20),
        ("91002", "2011-03-01", 1, 48),
        ("91003", "2011-02-01", 1, 12),
        ("91003", "2011-03-01", 1, 40),
    ]


@pytest.mark.parametrize("variant", list(LEAKS))
def test_point_in_time_test_fails_exactly_when_a_feature_leaks(built: Built, variant: str) -> None:
    assert built.original_sql.count(PAST_EVENTS_ONLY) == 1, "the feature join was rewritten"
    join_condition, leaked_snapshots = LEAKS[variant]
    (built.project / FEATURE_MODEL).write_text(
        built.original_sql.replace(PAST_EVENTS_ONLY, join_condition)
    )
    try:
        result = run_dbt(
            built.project,
            built.settings,
            "build",
            "--select",
            f"customer_feature_snapshots {POINT_IN_TIME_TEST}",
        )
    finally:
        (built.project / FEATURE_MODEL).write_text(built.original_sql)
    verdicts = [line for line in result.stdout.splitlines() if POINT_IN_TIME_TEST in line]
    if leaked_snapshots == 0:
        assert result.returncode == 0, result.stdout[-4000:]
        assert any(" PASS " in line for line in verdicts), verdicts
    else:
        assert result.returncode != 0
        assert any(f" FAIL {leaked_snapshots} " in line for line in verdicts), verdicts


def test_point_in_time_test_passes_on_the_demo_data(
    demo_warehouse: ConnectionSettings, repo_root: Path, tmp_path: Path
) -> None:
    project = copy_project(repo_root, tmp_path / "project")
    result = run_dbt(project, demo_warehouse, "test", "--select", POINT_IN_TIME_TEST)
    assert result.returncode == 0, result.stdout[-4000:]
