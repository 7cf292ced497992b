"""Issue #6, done when: an imported 10,000-row cohort appears in cohort_retention.

Needs the generic dbt cohort model over raw.metabase_cohort_* (models/cohorts/
metabase_imports.sql); the test skips, saying so, if no model in models/cohorts/ reads them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from metabase_double import MetabaseDouble, running_double

from cohortcast.metabase.client import MetabaseClient, MetabaseSettings
from cohortcast.metabase.cohorts import import_cohort
from cohortcast.warehouse import ConnectionSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "mb_test_key_0123456789"
MEMBERS = 10_000
FIRST_ID = 50_000
ENTERED = "2011-01-03T00:00:00Z"


def generic_cohort_model_exists() -> bool:
    # The model names the tables in a LIKE pattern, perhaps with escaped underscores.
    pattern = re.compile(r"metabase\\*_cohort")
    return any(
        pattern.search(path.read_text(encoding="utf-8"))
        for path in (REPO_ROOT / "models" / "cohorts").glob("*.sql")
    )


pytestmark = pytest.mark.skipif(
    not generic_cohort_model_exists(),
    reason="no cohort model reads raw.metabase_cohort_* yet (dbt side of issue #6)",
)


@pytest.fixture
def double() -> Iterator[MetabaseDouble]:
    with running_double() as server:
        yield server
        assert server.violations == []


def test_imported_cohort_reaches_cohort_retention(
    double: MetabaseDouble,
    fresh_database: ConnectionSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dbt.cli.main import dbtRunner

    columns = [
        ("customer_id", "Customer ID", "type/Text"),
        ("entered_at", "Entered At", "type/DateTimeWithLocalTZ"),
    ]
    rows = [[str(FIRST_ID + offset), ENTERED] for offset in range(MEMBERS)]
    card_id = double.add_saved_question("Campaign responders", columns, rows)
    settings = MetabaseSettings(url=double.url, api_key=API_KEY)
    with MetabaseClient(settings) as client:
        imported = import_cohort(
            client, fresh_database, card_id, "responders", now=datetime(2026, 3, 1, tzinfo=UTC)
        )
    assert imported.rows_loaded == MEMBERS

    for name in ("models", "macros", "tests"):
        if (REPO_ROOT / name).exists():
            shutil.copytree(REPO_ROOT / name, tmp_path / name)
    shutil.copy(REPO_ROOT / "dbt_project.yml", tmp_path / "dbt_project.yml")
    shutil.copy(REPO_ROOT / "profiles.example.yml", tmp_path / "profiles.yml")
    for name, value in fresh_database.environment().items():
        monkeypatch.setenv(name, value)
    # The raw and Python-written tables, from their contract in the project.
    created = dbtRunner().invoke(
        [
            "--quiet",
            "run-operation",
            "create_python_tables",
            "--project-dir",
            str(tmp_path),
            "--profiles-dir",
            str(tmp_path),
        ]
    )
    assert created.success, created.exception
    with psycopg.connect(**fresh_database.connect_kwargs()) as conn:
        # Raw order lines: every member orders in January 2011, the even ids again in
        # February, and one unrelated order in April closes the data window.
        conn.execute(
            """
            insert into raw.online_retail_lines
                (invoice_no, stock_code, quantity, invoice_date, unit_price, customer_id,
                country)
            select 'J' || id, '85123A', 1, timestamp '2011-01-10 12:00', 2.55, id::text,
                'United Kingdom'
            from generate_series(%(first)s, %(last)s) as id
            union all
            select 'F' || id, '85123A', 1, timestamp '2011-02-10 12:00', 2.55, id::text,
                'United Kingdom'
            from generate_series(%(first)s, %(last)s) as id
            where id %% 2 = 0
            union all
            select 'A1', '85123A', 1, timestamp '2011-04-28 12:00', 2.55, '99999',
                'United Kingdom'
            """,
            {"first": FIRST_ID, "last": FIRST_ID + MEMBERS - 1},
        )

    built = dbtRunner().invoke(
        [
            "--quiet",
            "run",
            "--project-dir",
            str(tmp_path),
            "--profiles-dir",
            str(tmp_path),
            "--select",
            "+cohort_retention",
        ]
    )
    assert built.success, built.exception

    with psycopg.connect(**fresh_database.connect_kwargs()) as conn:
        [(members,)] = conn.execute(
            """
            select count(distinct customer_id) from analytics.cohort_membership
            where cohort_key like 'responders%'
            """
        ).fetchall()
        retention = conn.execute(
            """
            select period_number, cohort_customer_count, retained_customer_count
            from analytics.cohort_retention
            where cohort_key like 'responders%%' and period_grain = 'month'
                and period_number in (0, 1)
            order by period_number
            """
        ).fetchall()
    assert members == MEMBERS
    # Period 0 counts every member; in period 1 (February) the 5,000 even ids ordered.
    assert retention == [(0, MEMBERS, MEMBERS), (1, MEMBERS, MEMBERS // 2)]
