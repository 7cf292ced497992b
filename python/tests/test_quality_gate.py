"""The quality gate against a real Postgres: good data passes, each broken rule stops it.

Every test builds the tables it needs in a fresh database from the contracts in
docs/contracts.md, with small hand-made rows whose counts are known by construction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cohortcast import demo
from cohortcast.errors import QualityGateError
from cohortcast.quality import GateResult, run_gate
from cohortcast.warehouse import ConnectionSettings, append_rows, connect

RAW_LINE_COUNT = 100  # distinct lines, plus one exact duplicate of line 5
RAW_COLUMNS = ("source_line_number", *demo.RAW_COLUMNS, "loaded_at")
RAW_DDL = """
create table raw.online_retail_lines (
    source_line_number bigint not null,
    invoice_no text not null,
    stock_code text not null,
    description text,
    quantity integer not null,
    invoice_date timestamp not null,
    unit_price numeric not null,
    customer_id text,
    country text not null,
    loaded_at timestamptz not null
)
"""
FEATURE_DDL = """
create table analytics.customer_feature_snapshots (
    customer_id text,
    as_of_date date,
    order_count integer,
    order_count_last_30_days integer,
    days_since_last_order integer,
    tenure_days integer,
    net_revenue_amount numeric,
    revenue_amount_last_30_days numeric,
    country text,
    is_label_observed boolean,
    is_churned boolean
)
"""
PREDICTION_DDL = """
create table ml.{table} (
    customer_id text not null primary key,
    as_of_date date not null,
    churn_probability double precision not null,
    risk_band text not null,
    model_run_id text not null,
    scored_at timestamptz not null,
    top_driver_1 text,
    top_driver_2 text,
    top_driver_3 text
)
"""
FEATURE_CUSTOMERS = 10
FEATURE_DATES = (date(2011, 3, 1), date(2011, 4, 1), date(2011, 5, 1))
PREDICTION_CUSTOMERS = 20


def raw_rows() -> list[tuple[object, ...]]:
    loaded_at = datetime(2012, 1, 1, tzinfo=UTC)
    rows: list[tuple[object, ...]] = [
        (
            line,
            str(536365 + line // 4),
            f"2{line:04d}",
            f"ITEM {line}",
            1 + line % 5,
            datetime(2011, 1, 1, 8) + timedelta(hours=line),
            Decimal("1.25"),
            None if line % 10 == 0 else str(12000 + line % 20),
            "United Kingdom",
            loaded_at,
        )
        for line in range(1, RAW_LINE_COUNT + 1)
    ]
    duplicate = rows[4]
    rows.append((RAW_LINE_COUNT + 1, *duplicate[1:]))
    return rows


def feature_rows() -> list[tuple[object, ...]]:
    return [
        (
            str(12000 + customer),
            as_of_date,
            customer % 4,
            customer % 2,
            10 + customer,
            100 + customer,
            # Refunds can make revenue negative: not a count, so not range-checked.
            Decimal(customer * 3 - 5),
            Decimal(-2) if customer == 1 else Decimal(customer),
            "United Kingdom",
            as_of_date < FEATURE_DATES[-1],
            None if as_of_date == FEATURE_DATES[-1] else customer % 3 == 0,
        )
        for customer in range(FEATURE_CUSTOMERS)
        for as_of_date in FEATURE_DATES
    ]


def prediction_rows() -> list[tuple[object, ...]]:
    scored_at = datetime(2011, 12, 2, tzinfo=UTC)
    rows: list[tuple[object, ...]] = []
    for customer in range(PREDICTION_CUSTOMERS):
        probability = (customer + 0.5) / PREDICTION_CUSTOMERS
        band = "low" if probability < 0.3 else "medium" if probability < 0.7 else "high"
        rows.append(
            (
                str(13000 + customer),
                date(2011, 12, 1),
                probability,
                band,
                "run-1",
                scored_at,
                "order_count (-)",
                None,
                None,
            )
        )
    return rows


PREDICTION_COLUMNS = (
    "customer_id",
    "as_of_date",
    "churn_probability",
    "risk_band",
    "model_run_id",
    "scored_at",
    "top_driver_1",
    "top_driver_2",
    "top_driver_3",
)
FEATURE_COLUMNS = (
    "customer_id",
    "as_of_date",
    "order_count",
    "order_count_last_30_days",
    "days_since_last_order",
    "tenure_days",
    "net_revenue_amount",
    "revenue_amount_last_30_days",
    "country",
    "is_label_observed",
    "is_churned",
)


def create_predictions(conn: psycopg.Connection, table: str) -> None:
    conn.execute(PREDICTION_DDL.format(table=table))
    append_rows(conn, "ml", table, PREDICTION_COLUMNS, prediction_rows())


@dataclass
class Warehouse:
    """A fresh database holding good raw lines, features and predictions."""

    settings: ConnectionSettings
    docs_dir: Path

    def execute(self, *statements: str) -> None:
        with connect(self.settings) as conn:
            for statement in statements:
                conn.execute(statement)

    def query(self, statement: str) -> list[tuple[object, ...]]:
        with connect(self.settings) as conn:
            return conn.execute(statement).fetchall()

    def gate(
        self,
        step: str,
        *,
        tables: dict[str, str] | None = None,
        accept_row_count_change: bool = False,
    ) -> GateResult:
        return run_gate(
            self.settings,
            step,
            tables=tables,
            docs_dir=self.docs_dir,
            accept_row_count_change=accept_row_count_change,
        )


@pytest.fixture
def warehouse(fresh_database: ConnectionSettings, tmp_path: Path) -> Warehouse:
    with connect(fresh_database) as conn:
        for schema in ("raw", "analytics", "ml"):
            conn.execute(f"create schema {schema}")
        conn.execute(RAW_DDL)
        append_rows(conn, "raw", "online_retail_lines", RAW_COLUMNS, raw_rows())
        conn.execute(FEATURE_DDL)
        append_rows(
            conn, "analytics", "customer_feature_snapshots", FEATURE_COLUMNS, feature_rows()
        )
        create_predictions(conn, "customer_churn_predictions")
    return Warehouse(fresh_database, tmp_path / "target" / "data_docs")


def test_good_data_passes_and_every_expectation_is_recorded(warehouse: Warehouse) -> None:
    gate = warehouse.gate("check")

    assert gate.success
    assert not gate.warnings
    assert gate.data_docs_path == warehouse.docs_dir.resolve() / "index.html"
    assert gate.data_docs_path.is_file()
    runs = warehouse.query(
        "select validation_run_id, pipeline_step, success, blocking_failures, warnings, "
        "data_docs_path from quality.validation_runs"
    )
    assert runs == [(gate.validation_run_id, "check", True, 0, 0, str(gate.data_docs_path))]
    recorded = warehouse.query(
        "select table_name, expectation, column_name, success, severity, observed_value "
        "from quality.validation_results where validation_run_id = "
        f"'{gate.validation_run_id}'"
    )
    assert sorted(recorded, key=repr) == sorted(
        (
            o.table_name,
            o.expectation,
            o.column_name,
            o.success,
            o.severity.value,
            o.observed_value,
        )
        for o in gate.outcomes
    ), "one results row per expectation checked"
    observed = {(row[0], row[1], row[2]): row[5] for row in recorded}
    # Worked out from the fixtures: 100 lines + 1 duplicate; 10 customers x 3 dates; 20.
    assert observed[("raw.online_retail_lines", "expect_table_row_count_to_be_between", None)] == (
        "101"
    )
    assert (
        observed[
            ("raw.online_retail_lines", "expect_column_values_to_be_between", "line_copy_number")
        ]
        == "1 of 101 rows unexpected (0.99%)"
    )
    assert (
        observed[("raw.online_retail_lines", "expect_column_values_to_not_be_null", "customer_id")]
        == "10 of 101 rows unexpected (9.90%)"
    )
    assert (
        observed[
            ("analytics.customer_feature_snapshots", "expect_table_row_count_to_be_between", None)
        ]
        == "30"
    )
    assert (
        observed[("ml.customer_churn_predictions", "expect_table_row_count_to_be_between", None)]
        == "20"
    )
    tables = {row[0] for row in recorded}
    assert tables == {
        "raw.online_retail_lines",
        "analytics.customer_feature_snapshots",
        "ml.customer_churn_predictions",
    }
    severities = {row[4] for row in recorded}
    assert severities == {"blocking", "warning"}


@dataclass(frozen=True)
class Breakage:
    """A way to break good data, and the expectation that must catch it."""

    step: str
    table: str
    expectation: str
    column: str | None
    statements: tuple[str, ...]
    example: str | None = None


BREAKAGES = {
    "raw missing column": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_table_columns_to_match_set",
        None,
        ("alter table raw.online_retail_lines drop column country",),
    ),
    "raw quantity not a number": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_be_in_type_list",
        "quantity",
        ("alter table raw.online_retail_lines alter column quantity type text",),
    ),
    "raw invoice_date not a timestamp": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_be_in_type_list",
        "invoice_date",
        ("alter table raw.online_retail_lines alter column invoice_date type date",),
    ),
    "raw null invoice_no": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_not_be_null",
        "invoice_no",
        (
            "alter table raw.online_retail_lines alter column invoice_no drop not null",
            "update raw.online_retail_lines set invoice_no = null where source_line_number = 7",
        ),
        example="source_line_number=7",
    ),
    "raw customer id format": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_match_regex",
        "customer_id",
        ("update raw.online_retail_lines set customer_id = '1234.0' where source_line_number = 3",),
        example="1234.0",
    ),
    "raw invoice date before plausible range": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_be_between",
        "invoice_date",
        (
            "update raw.online_retail_lines set invoice_date = '1999-12-31' "
            "where source_line_number = 9",
        ),
        example="source_line_number=9",
    ),
    "raw invoice date in the future": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_be_between",
        "invoice_date",
        (
            "update raw.online_retail_lines set invoice_date = now() + interval '30 days' "
            "where source_line_number = 11",
        ),
        example="source_line_number=11",
    ),
    "raw empty": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_table_row_count_to_be_between",
        None,
        ("delete from raw.online_retail_lines",),
    ),
    "raw loaded twice": Breakage(
        "raw",
        "raw.online_retail_lines",
        "expect_column_values_to_be_between",
        "line_copy_number",
        (
            "insert into raw.online_retail_lines select source_line_number + 1000, "
            "invoice_no, stock_code, description, quantity, invoice_date, unit_price, "
            "customer_id, country, loaded_at from raw.online_retail_lines",
        ),
        example="line_copy_number=2",
    ),
    "features missing label": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_table_columns_to_match_set",
        None,
        ("alter table analytics.customer_feature_snapshots drop column is_churned",),
    ),
    "features duplicate key": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_compound_columns_to_be_unique",
        "customer_id, as_of_date",
        (
            "insert into analytics.customer_feature_snapshots "
            "select * from analytics.customer_feature_snapshots "
            "where customer_id = '12003' and as_of_date = '2011-04-01'",
        ),
        example="12003",
    ),
    "features null key": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_not_be_null",
        "as_of_date",
        (
            "update analytics.customer_feature_snapshots set as_of_date = null "
            "where customer_id = '12005' and as_of_date = '2011-03-01'",
        ),
    ),
    "features null count": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_not_be_null",
        "order_count",
        (
            "update analytics.customer_feature_snapshots set order_count = null "
            "where customer_id = '12002'",
        ),
        example="customer_id=12002",
    ),
    "features negative count": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_be_between",
        "order_count",
        (
            "update analytics.customer_feature_snapshots set order_count = -1 "
            "where customer_id = '12004' and as_of_date = '2011-05-01'",
        ),
        example="customer_id=12004, as_of_date=2011-05-01",
    ),
    "features negative recency": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_be_between",
        "days_since_last_order",
        (
            "update analytics.customer_feature_snapshots set days_since_last_order = -3 "
            "where customer_id = '12001' and as_of_date = '2011-03-01'",
        ),
        example="-3",
    ),
    "features negative windowed count": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_be_between",
        "order_count_last_30_days",
        (
            "update analytics.customer_feature_snapshots set order_count_last_30_days = -1 "
            "where customer_id = '12006' and as_of_date = '2011-03-01'",
        ),
        example="customer_id=12006, as_of_date=2011-03-01",
    ),
    "features negative tenure": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_be_between",
        "tenure_days",
        (
            "update analytics.customer_feature_snapshots set tenure_days = -30 "
            "where customer_id = '12008' and as_of_date = '2011-04-01'",
        ),
        example="customer_id=12008, as_of_date=2011-04-01",
    ),
    "features unknown label state": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_column_values_to_not_be_null",
        "is_label_observed",
        (
            "update analytics.customer_feature_snapshots set is_label_observed = null "
            "where customer_id = '12009'",
        ),
        example="customer_id=12009",
    ),
    "features empty": Breakage(
        "features",
        "analytics.customer_feature_snapshots",
        "expect_table_row_count_to_be_between",
        None,
        ("delete from analytics.customer_feature_snapshots",),
    ),
    "predictions missing column": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_table_columns_to_match_set",
        None,
        ("alter table ml.customer_churn_predictions drop column model_run_id",),
    ),
    "predictions probability above 1": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_values_to_be_between",
        "churn_probability",
        (
            "update ml.customer_churn_predictions set churn_probability = 1.5 "
            "where customer_id = '13007'",
        ),
        example="customer_id=13007, churn_probability=1.5",
    ),
    "predictions probability below 0": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_values_to_be_between",
        "churn_probability",
        (
            "update ml.customer_churn_predictions set churn_probability = -0.2 "
            "where customer_id = '13001'",
        ),
        example="customer_id=13001",
    ),
    "predictions missing run id": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_values_to_not_be_null",
        "model_run_id",
        (
            "alter table ml.customer_churn_predictions alter column model_run_id drop not null",
            "update ml.customer_churn_predictions set model_run_id = null "
            "where customer_id = '13002'",
        ),
        example="customer_id=13002",
    ),
    "predictions two rows for a customer": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_values_to_be_unique",
        "customer_id",
        (
            "alter table ml.customer_churn_predictions drop constraint "
            "customer_churn_predictions_pkey",
            "insert into ml.customer_churn_predictions select * "
            "from ml.customer_churn_predictions where customer_id = '13004'",
        ),
        example="13004",
    ),
    "predictions unknown risk band": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_values_to_be_in_set",
        "risk_band",
        (
            "update ml.customer_churn_predictions set risk_band = 'extreme' "
            "where customer_id = '13019'",
        ),
        example="extreme",
    ),
    "predictions collapsed to one value": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_column_stdev_to_be_between",
        "churn_probability",
        ("update ml.customer_churn_predictions set churn_probability = 0.42",),
    ),
    "predictions empty": Breakage(
        "predictions",
        "ml.customer_churn_predictions",
        "expect_table_row_count_to_be_between",
        None,
        ("delete from ml.customer_churn_predictions",),
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_each_blocking_expectation_stops_the_gate(warehouse: Warehouse, name: str) -> None:
    breakage = BREAKAGES[name]
    warehouse.execute(*breakage.statements)

    with pytest.raises(QualityGateError) as raised:
        warehouse.gate(breakage.step)

    message = str(raised.value)
    assert raised.value.step == breakage.step
    column = f" on {breakage.column}" if breakage.column else ""
    assert f"{breakage.table}: {breakage.expectation}{column} (" in message
    if breakage.example:
        assert breakage.example in message
    failed = warehouse.query(
        "select results.expectation, results.column_name, results.failing_examples "
        "from quality.validation_results as results "
        "inner join quality.validation_runs as runs using (validation_run_id) "
        "where not runs.success and not results.success and results.severity = 'blocking' "
        f"and results.table_name = '{breakage.table}'"
    )
    assert (breakage.expectation, breakage.column) in {(row[0], row[1]) for row in failed}
    if breakage.example:
        examples = " ".join(str(row[2]) for row in failed)
        assert breakage.example in examples


@pytest.mark.parametrize(
    ("step", "table", "statement"),
    [
        (
            "raw",
            "raw.online_retail_lines",
            "delete from raw.online_retail_lines where source_line_number > 40",
        ),
        (
            "raw",
            "raw.online_retail_lines",
            # Distinct new lines: the duplicate check passes, only the size is wrong.
            "insert into raw.online_retail_lines select source_line_number + 1000, "
            "invoice_no || '-b', stock_code, description, quantity, invoice_date, unit_price, "
            "customer_id, country, loaded_at from raw.online_retail_lines",
        ),
        (
            "features",
            "analytics.customer_feature_snapshots",
            "delete from analytics.customer_feature_snapshots where as_of_date > '2011-03-01'",
        ),
    ],
)
def test_row_count_outside_the_band_of_the_last_accepted_run_stops_the_gate(
    warehouse: Warehouse, step: str, table: str, statement: str
) -> None:
    warehouse.gate(step)
    warehouse.execute(statement)

    with pytest.raises(QualityGateError) as raised:
        warehouse.gate(step)

    assert f"{table}: expect_table_row_count_to_be_between (" in str(raised.value)
    assert "of the last accepted run" in str(raised.value)
    assert "accept_row_count_change" in str(raised.value)


def test_an_accepted_row_count_change_becomes_the_new_baseline(warehouse: Warehouse) -> None:
    warehouse.gate("features")
    warehouse.execute(
        "delete from analytics.customer_feature_snapshots where as_of_date > '2011-03-01'"
    )

    accepted = warehouse.gate("features", accept_row_count_change=True)
    again = warehouse.gate("features")

    assert accepted.success
    assert [w.expectation for w in accepted.warnings] == ["expect_table_row_count_to_be_between"]
    assert again.success
    assert not again.warnings
    described = [
        o.description
        for o in again.outcomes
        if o.expectation == "expect_table_row_count_to_be_between"
    ]
    assert described == [
        "the feature snapshot row count within 50% of the last accepted run (10 rows)"
    ]


def test_a_failed_run_is_not_a_baseline(warehouse: Warehouse) -> None:
    warehouse.gate("raw")
    warehouse.execute(
        "insert into raw.online_retail_lines select source_line_number + 1000, invoice_no, "
        "stock_code, description, quantity, invoice_date, unit_price, customer_id, country, "
        "loaded_at from raw.online_retail_lines"
    )
    with pytest.raises(QualityGateError):
        warehouse.gate("raw")
    warehouse.execute("delete from raw.online_retail_lines where source_line_number > 1000")

    assert warehouse.gate("raw").success


def test_a_warning_is_recorded_and_does_not_stop_the_gate(
    warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    warehouse.execute(
        "update ml.customer_churn_predictions set model_run_id = 'run-2' "
        "where customer_id = '13000'",
        "update raw.online_retail_lines set unit_price = -11062.06 where source_line_number = 2",
    )

    with caplog.at_level(logging.WARNING, logger="cohortcast.quality"):
        gate = warehouse.gate("check")

    assert gate.success
    assert sorted((w.table_name, w.expectation, w.column_name) for w in gate.warnings) == [
        (
            "ml.customer_churn_predictions",
            "expect_column_unique_value_count_to_be_between",
            "model_run_id",
        ),
        ("raw.online_retail_lines", "expect_column_values_to_be_between", "unit_price"),
    ]
    recorded = warehouse.query(
        "select table_name, column_name, observed_value from quality.validation_results "
        "where not success and severity = 'warning' order by table_name"
    )
    assert recorded == [
        ("ml.customer_churn_predictions", "model_run_id", "2"),
        ("raw.online_retail_lines", "unit_price", "1 of 101 rows unexpected (0.99%)"),
    ]
    runs = warehouse.query(
        "select success, blocking_failures, warnings from quality.validation_runs"
    )
    assert runs == [(True, 0, 2)]
    assert "model_run_id" in caplog.text
    assert "unit_price" in caplog.text


def test_predictions_are_checked_in_a_staging_table_before_publish(warehouse: Warehouse) -> None:
    with connect(warehouse.settings) as conn:
        create_predictions(conn, "customer_churn_predictions_staging")
        conn.execute("update ml.customer_churn_predictions_staging set churn_probability = 0.3")

    published = warehouse.query("select * from ml.customer_churn_predictions order by 1")

    with pytest.raises(QualityGateError) as raised:
        warehouse.gate(
            "predictions", tables={"churn_predictions": "ml.customer_churn_predictions_staging"}
        )

    assert "ml.customer_churn_predictions_staging: expect_column_stdev_to_be_between" in str(
        raised.value
    )
    checked = warehouse.query("select distinct table_name from quality.validation_results")
    assert checked == [("ml.customer_churn_predictions_staging",)]
    assert warehouse.query("select * from ml.customer_churn_predictions order by 1") == published
    assert warehouse.gate("predictions").success


def test_a_query_can_be_checked(warehouse: Warehouse) -> None:
    gate = warehouse.gate(
        "predictions",
        tables={
            "churn_predictions": "select * from ml.customer_churn_predictions "
            "where churn_probability < 0.5"
        },
    )

    assert gate.success
    counts = [
        o.observed_value
        for o in gate.outcomes
        if o.expectation == "expect_table_row_count_to_be_between"
    ]
    assert counts == ["10"]  # probabilities (k + 0.5) / 20 below 0.5: k = 0..9


def test_a_missing_table_is_named(warehouse: Warehouse) -> None:
    warehouse.execute("drop table analytics.customer_feature_snapshots")

    with pytest.raises(QualityGateError, match=r"analytics.customer_feature_snapshots does not"):
        warehouse.gate("features")


def test_a_password_reaches_the_server_but_not_the_docs(warehouse: Warehouse) -> None:
    # The test server trusts local connections, so any password is accepted; what matters is
    # that a password full of URL syntax does not break the connection or leak anywhere.
    password = "p@ss:w/rd%40?#${HOME}"
    settings = ConnectionSettings(
        host=warehouse.settings.host,
        port=warehouse.settings.port,
        user=warehouse.settings.user,
        dbname=warehouse.settings.dbname,
        password=password,
    )

    gate = run_gate(settings, "predictions", docs_dir=warehouse.docs_dir)

    assert gate.success
    for page in warehouse.docs_dir.rglob("*.html"):
        assert password not in page.read_text(encoding="utf-8")
