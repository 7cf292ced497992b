"""Training, scoring and publishing against a real Postgres, on the tables the dbt macro makes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from ml_data import make_snapshots
from threadpoolctl import threadpool_limits

from cohortcast.errors import ModelError
from cohortcast.ml import train, train_and_publish
from cohortcast.ml.scoring import publish_predictions
from cohortcast.warehouse import ConnectionSettings, connect

SNAPSHOT_DDL = """
create schema if not exists analytics;
create table analytics.customer_feature_snapshots (
    is_churned boolean,
    country text,
    as_of_date date not null,
    order_count bigint,
    customer_id text not null,
    last_ordered_at timestamptz,
    net_revenue_amount numeric(12, 2),
    is_vip boolean,
    days_since_last_order integer,
    is_label_observed boolean not null
);
create table analytics.cohort_membership (
    customer_id text not null,
    cohort_name text not null,
    cohort_key text not null,
    entered_at timestamptz not null
);
"""

CUSTOMERS = 40


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def snapshot_rows(*, perfect_recency: bool) -> list[tuple[Any, ...]]:
    """The shared hand-made snapshots, in SNAPSHOT_DDL's insert order."""
    frame = make_snapshots(CUSTOMERS, perfect_recency=perfect_recency)
    return [
        (
            row.is_churned,
            row.country,
            row.as_of_date,
            row.order_count,
            row.customer_id,
            row.last_ordered_at.tz_localize("UTC").to_pydatetime(),
            row.net_revenue_amount,
            row.is_vip,
            row.days_since_last_order,
            row.is_label_observed,
        )
        for row in frame.itertuples(index=False)
    ]


@pytest.fixture
def conn(python_tables_database: ConnectionSettings) -> Iterator[psycopg.Connection]:
    """The ml tables as the dbt macro makes them, and hand-made snapshot tables."""
    connection = connect(python_tables_database)
    with connection.transaction():
        connection.execute(SNAPSHOT_DDL)
    try:
        yield connection
    finally:
        connection.close()


def load_snapshots(conn: psycopg.Connection, *, perfect_recency: bool = False) -> None:
    with conn.transaction():
        conn.execute("delete from analytics.customer_feature_snapshots")
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into analytics.customer_feature_snapshots (is_churned, country, "
                "as_of_date, order_count, customer_id, last_ordered_at, net_revenue_amount, "
                "is_vip, days_since_last_order, is_label_observed) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                snapshot_rows(perfect_recency=perfect_recency),
            )
            cursor.executemany(
                "insert into analytics.cohort_membership values (%s, %s, %s, %s)",
                [
                    (f"C{n:03d}", "acquisition_month", "2010-12", datetime(2010, 12, 5, tzinfo=UTC))
                    for n in range(CUSTOMERS)
                ],
            )


def fetch(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    rows = conn.execute(query).fetchall()
    conn.commit()
    return rows


def test_train_and_publish_records_everything(conn: psycopg.Connection, tmp_path: Path) -> None:
    load_snapshots(conn)
    summary = train_and_publish(conn, tmp_path, dbt_invocation_id="dbt-123")
    run_id = summary.train.run_id

    run = fetch(
        conn,
        "select status, model_name, training_window_start, training_window_end, "
        "holdout_as_of_date, snapshot_count, training_row_count, feature_list, "
        "dbt_invocation_id, artifact_path, library_versions ? 'scikit-learn', roc_auc "
        "from ml.model_runs",
    )
    assert len(run) == 1
    status, model_name, start, end, holdout, snapshots, rows, features, dbt_id, path, _, auc = run[
        0
    ]
    assert status == "published"
    assert model_name == summary.train.published_model
    # every labelled snapshot's window is over by the scored 2011-12-01 (2011-09-01 + 90 days
    # is 2011-11-30): nine snapshots of 40 customers
    assert (str(start), str(end), str(holdout)) == ("2011-01-01", "2011-09-01", "2011-09-01")
    assert (snapshots, rows) == (9, 9 * CUSTOMERS)
    assert features == [
        "days_since_last_order",
        "net_revenue_amount",
        "order_count",
        "country",
        "is_vip",
    ]
    assert dbt_id == "dbt-123"
    assert path == str((tmp_path / run_id / "model.skops").resolve())
    assert 0.0 <= auc <= 1.0

    predictions = fetch(
        conn,
        "select count(*), min(as_of_date)::text, max(as_of_date)::text, "
        "count(distinct model_run_id), bool_and(risk_band in ('low', 'medium', 'high')) "
        "from ml.customer_churn_predictions",
    )
    assert predictions == [(CUSTOMERS, "2011-12-01", "2011-12-01", 1, True)]
    assert fetch(conn, "select count(*) from ml.customer_churn_prediction_history") == [
        (CUSTOMERS,)
    ]

    evaluations = fetch(
        conn,
        "select count(distinct cutoff_date), count(distinct model), count(distinct metric), "
        "count(distinct cohort_slice) from ml.model_evaluations",
    )
    assert evaluations == [(4, 4, 6, 2)]
    deciles = fetch(conn, "select model, count(*) from ml.model_calibration group by model")
    assert dict(deciles) == {
        "candidate": 10,
        "base_rate": 10,
        "recency_rule": 10,
        "rfm_logistic": 10,
    }
    drift = fetch(conn, "select feature, (psi > 0.2) = is_drifted from ml.feature_drift")
    assert len(drift) == 5
    assert all(consistent for _, consistent in drift)
    assert summary.score.scored_row_count == CUSTOMERS
    assert any("base rate" in line for line in summary.lines())

    second = train_and_publish(conn, tmp_path)
    statuses = dict(fetch(conn, "select run_id, status from ml.model_runs"))
    assert statuses == {run_id: "retired", second.train.run_id: "published"}
    assert fetch(conn, "select distinct model_run_id from ml.customer_churn_predictions") == [
        (second.train.run_id,)
    ]
    assert fetch(conn, "select count(*) from ml.customer_churn_prediction_history") == [
        (2 * CUSTOMERS,)
    ]


def test_a_baseline_that_wins_the_backtest_is_published(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    load_snapshots(conn, perfect_recency=True)
    summary = train_and_publish(conn, tmp_path)
    assert summary.train.published_model == "recency_rule"
    assert "beats the candidate" in summary.train.selection_reason
    assert fetch(conn, "select model_name, status from ml.model_runs") == [
        ("recency_rule", "published")
    ]
    drivers = fetch(
        conn,
        "select distinct top_driver_1 from ml.customer_churn_predictions "
        "where top_driver_1 is not null",
    )
    assert {driver for (driver,) in drivers} <= {
        "days_since_last_order (+)",
        "days_since_last_order (-)",
    }


def test_a_failed_publish_leaves_the_previous_predictions(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    load_snapshots(conn)
    train_and_publish(conn, tmp_path)
    everything = "select * from {} order by customer_id, model_run_id"
    before = fetch(conn, everything.format("ml.customer_churn_predictions"))
    history_before = fetch(conn, everything.format("ml.customer_churn_prediction_history"))
    good = pd.DataFrame(
        {
            "customer_id": ["00001", "00002"],
            "as_of_date": [datetime(2011, 12, 1).date()] * 2,
            "churn_probability": [0.2, 0.9],
            "risk_band": ["low", "high"],
            "top_driver_1": [None, None],
            "top_driver_2": [None, None],
            "top_driver_3": [None, None],
        }
    )
    scored_at = datetime.now(UTC)

    # the same customer twice: the rows copy fine, the swap into the keyed table fails
    duplicated = pd.concat([good, good.iloc[[0]]], ignore_index=True)
    with pytest.raises(ModelError, match="rolled back"):
        publish_predictions(conn, duplicated, "bad-run", scored_at)
    # a value the table's constraint refuses
    unknown_band = good.assign(risk_band=["low", "extreme"])
    with pytest.raises(ModelError, match="rolled back"):
        publish_predictions(conn, unknown_band, "bad-run", scored_at)
    # a missing probability never reaches the database
    with pytest.raises(ModelError, match="outside"):
        publish_predictions(conn, good.assign(churn_probability=[0.5, np.nan]), "bad", scored_at)

    assert fetch(conn, everything.format("ml.customer_churn_predictions")) == before
    assert fetch(conn, everything.format("ml.customer_churn_prediction_history")) == history_before


def test_training_on_one_class_is_a_clear_error(conn: psycopg.Connection, tmp_path: Path) -> None:
    load_snapshots(conn)
    with conn.transaction():
        conn.execute(
            "update analytics.customer_feature_snapshots set is_churned = false "
            "where is_churned is not null"
        )
    with pytest.raises(ModelError, match="stayed"):
        train(conn, tmp_path)
    assert fetch(conn, "select count(*) from ml.model_runs") == [(0,)]
