"""The suites as declared: which columns get which rule, and the numbers the bands come to.

No database here; the gate's behaviour on real tables is in test_quality_gate.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.engine import make_url

from cohortcast.quality import runner, suites, thresholds
from cohortcast.quality.suites import Severity, SuiteInputs
from cohortcast.warehouse import ConnectionSettings

# The columns of analytics.customer_feature_snapshots as models/features declares them.
FEATURE_MODEL_COLUMNS = (
    "customer_id",
    "as_of_date",
    "first_ordered_at",
    "last_ordered_at",
    "order_count",
    "cancellation_count",
    "days_since_last_order",
    "tenure_days",
    "gross_revenue_amount",
    "cancelled_amount",
    "net_revenue_amount",
    "average_order_amount",
    "item_quantity",
    "order_count_last_30_days",
    "revenue_amount_last_30_days",
    "order_count_last_90_days",
    "revenue_amount_last_90_days",
    "is_label_observed",
    "is_churned",
)


def checked(checks: list[suites.Check], expectation: str) -> set[str]:
    return {
        c.expectation.column
        for c in checks
        if c.expectation.expectation_type == expectation and hasattr(c.expectation, "column")
    }


def test_feature_ranges_follow_the_column_names() -> None:
    checks = suites.feature_snapshot_checks(
        SuiteInputs(relation="analytics.customer_feature_snapshots", columns=FEATURE_MODEL_COLUMNS)
    )

    assert checked(checks, "expect_column_values_to_be_between") == {
        "order_count",
        "cancellation_count",
        "order_count_last_30_days",
        "order_count_last_90_days",
        "days_since_last_order",
        "tenure_days",
    }
    assert checked(checks, "expect_column_values_to_not_be_null") == {
        "customer_id",
        "as_of_date",
        "order_count",
        "cancellation_count",
        "order_count_last_30_days",
        "order_count_last_90_days",
        "is_label_observed",
    }


@pytest.mark.parametrize(
    ("baseline", "accept", "expected"),
    [
        (None, False, (1, None, Severity.BLOCKING)),
        (541_909, False, (270_954, 812_864, Severity.BLOCKING)),
        (10, True, (5, 15, Severity.WARNING)),
    ],
)
def test_row_count_band(
    baseline: int | None, accept: bool, expected: tuple[int, int | None, Severity]
) -> None:
    inputs = SuiteInputs(
        relation="raw.online_retail_lines",
        columns=(),
        baseline_row_count=baseline,
        accept_row_count_change=accept,
    )

    found = suites.row_count_check(inputs, thresholds.RAW_ROW_COUNT_BAND, "the raw load")

    assert (found.expectation.min_value, found.expectation.max_value, found.severity) == expected


def test_duplicate_threshold_separates_the_real_data_from_a_double_load() -> None:
    # Counts from data/online_retail.csv.gz: 541,909 lines, 5,268 repeat an earlier line.
    real_share = 5_268 / 541_909
    doubled_share = (541_909 + 5_268) / (2 * 541_909)

    assert real_share < thresholds.RAW_DUPLICATE_SHARE_MAX < doubled_share


def test_every_check_is_blocking_or_warning_with_a_description() -> None:
    inputs = SuiteInputs(relation="x.y", columns=FEATURE_MODEL_COLUMNS, now=datetime(2012, 1, 1))
    for suite in suites.SUITES.values():
        for found in suite.build(inputs):
            assert found.severity in (Severity.BLOCKING, Severity.WARNING)
            assert found.expectation.description
            assert found.expectation.meta == {"cohortcast_severity": found.severity.value}
            assert found.batch == suites.TABLE_BATCH or found.batch in suite.derived_batches


def test_the_gx_url_carries_no_password_and_survives_url_syntax() -> None:
    settings = ConnectionSettings(
        host="127.0.0.1", port=5433, user="ana@corp", dbname="warehouse/prod", password="p@:/%#"
    )

    url = runner._sqlalchemy_url(settings)
    args = runner._connect_args(settings)

    parsed = make_url(url)
    assert (parsed.username, parsed.host, parsed.port, parsed.database) == (
        "ana@corp",
        "127.0.0.1",
        5433,
        "warehouse/prod",
    )
    assert parsed.password is None
    assert args["password"] == "p@:/%#"
    assert "host" not in args


def test_a_socket_directory_host_travels_outside_the_url() -> None:
    settings = ConnectionSettings(
        host="/var/run/postgresql", port=5432, user="postgres", dbname="cohortcast"
    )

    assert (
        runner._sqlalchemy_url(settings)
        == "postgresql+psycopg2://postgres@localhost:5432/cohortcast"
    )
    assert runner._connect_args(settings)["host"] == "/var/run/postgresql"
    assert "password" not in runner._connect_args(settings)
