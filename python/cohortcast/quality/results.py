"""Where gate results go: `quality.validation_runs` and `quality.validation_results`.

Their contract is in docs/contracts.md and their DDL in the dbt macro `create_python_tables`
(macros/python_tables.sql). `ensure_quality_tables` creates the same two tables, with the same
DDL, when they are missing, so the gate also
works on a database that dbt has not touched yet (a user's own warehouse, `cohortcast check`
on a fresh database). It never alters a table that exists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cohortcast.warehouse import append_rows, ensure_schema, table_columns

logger = logging.getLogger(__name__)

SCHEMA = "quality"
RUNS_TABLE = "validation_runs"
RESULTS_TABLE = "validation_results"

RUN_COLUMNS = (
    "validation_run_id",
    "pipeline_step",
    "started_at",
    "success",
    "blocking_failures",
    "warnings",
    "data_docs_path",
)
RESULT_COLUMNS = (
    "validation_run_id",
    "table_name",
    "expectation",
    "column_name",
    "success",
    "severity",
    "observed_value",
    "failing_examples",
    "checked_at",
)

RUNS_DDL = """
create table if not exists quality.validation_runs (
    validation_run_id text not null primary key,
    pipeline_step text,
    started_at timestamptz,
    success boolean,
    blocking_failures int,
    warnings int,
    data_docs_path text
)
"""
RESULTS_DDL = """
create table if not exists quality.validation_results (
    validation_run_id text not null,
    table_name text,
    expectation text,
    column_name text,
    success boolean,
    severity text check (severity in ('blocking', 'warning')),
    observed_value text,
    failing_examples text,
    checked_at timestamptz
)
"""

ROW_COUNT_EXPECTATION = "expect_table_row_count_to_be_between"


@dataclass(frozen=True)
class RunRecord:
    """One row of quality.validation_runs."""

    validation_run_id: str
    pipeline_step: str
    started_at: datetime
    success: bool
    blocking_failures: int
    warnings: int
    data_docs_path: str

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, column) for column in RUN_COLUMNS)


@dataclass(frozen=True)
class ResultRecord:
    """One row of quality.validation_results: one expectation checked in one run."""

    validation_run_id: str
    table_name: str
    expectation: str
    column_name: str | None
    success: bool
    severity: str
    observed_value: str | None
    failing_examples: str | None
    checked_at: datetime

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, column) for column in RESULT_COLUMNS)


def ensure_quality_tables(conn: psycopg.Connection) -> None:
    """Create the quality schema and its two tables from the contract when missing."""
    with conn.transaction():
        ensure_schema(conn, SCHEMA)
        conn.execute(RUNS_DDL)
        conn.execute(RESULTS_DDL)


def previous_accepted_row_count(conn: psycopg.Connection, table_name: str) -> int | None:
    """The row count `table_name` had in the latest run that passed the gate, if any.

    A run is accepted when it had no blocking failure (`validation_runs.success`); its row
    count is the observed value of the row-count expectation on that table.
    """
    if not table_columns(conn, SCHEMA, RESULTS_TABLE) or not table_columns(
        conn, SCHEMA, RUNS_TABLE
    ):
        return None
    row = conn.execute(
        """
        select results.observed_value
        from quality.validation_results as results
        inner join quality.validation_runs as runs
            on runs.validation_run_id = results.validation_run_id
        where runs.success
            and results.table_name = %s
            and results.expectation = %s
            and results.observed_value ~ '^[0-9]+$'
        order by runs.started_at desc, results.checked_at desc
        limit 1
        """,
        (table_name, ROW_COUNT_EXPECTATION),
    ).fetchone()
    return int(row[0]) if row else None


def record_run(conn: psycopg.Connection, run: RunRecord, results: Sequence[ResultRecord]) -> None:
    """Write one run and its results in one transaction: readers see all of it or none."""
    with conn.transaction():
        append_rows(conn, SCHEMA, RUNS_TABLE, RUN_COLUMNS, [run.as_row()])
        append_rows(conn, SCHEMA, RESULTS_TABLE, RESULT_COLUMNS, [r.as_row() for r in results])
    logger.info(
        "recorded validation run %s: %d expectations in %s.%s",
        run.validation_run_id,
        len(results),
        SCHEMA,
        RESULTS_TABLE,
    )
