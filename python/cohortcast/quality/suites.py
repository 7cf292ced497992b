"""The expectation suites, as code: what each checked table must look like.

A suite is built fresh for every run from `SuiteInputs` (the relation being checked, its
columns, the row count of the last accepted run), because some bounds depend on them: the
row-count band, the feature columns the snapshot happens to have, today's date.

Every expectation is wrapped in a `Check` that declares it blocking (the pipeline stops) or
warning (logged and recorded, the pipeline goes on). Most checks run on the relation itself;
a few run on a derived query over it (`Check.batch`), such as the per-line copy number that
the duplicate check needs. All of them are computed by Postgres, not in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import great_expectations as gx
from great_expectations.expectations.metadata_types import FailureSeverity

from cohortcast import demo
from cohortcast.quality import thresholds

TABLE_BATCH = "table"

# The raw table's contract belongs to the loader; the suite checks the same columns.
RAW_SOURCE_COLUMNS = tuple(demo.RAW_COLUMNS)
RAW_COLUMN_TYPES: Mapping[str, Sequence[str]] = {
    "source_line_number": ("BIGINT", "INTEGER"),
    "invoice_no": ("TEXT", "VARCHAR", "CHARACTER VARYING"),
    "stock_code": ("TEXT", "VARCHAR", "CHARACTER VARYING"),
    "description": ("TEXT", "VARCHAR", "CHARACTER VARYING"),
    "quantity": ("INTEGER", "BIGINT", "SMALLINT"),
    "invoice_date": ("TIMESTAMP WITHOUT TIME ZONE",),
    "unit_price": ("NUMERIC", "DOUBLE PRECISION", "REAL"),
    "customer_id": ("TEXT", "VARCHAR", "CHARACTER VARYING"),
    "country": ("TEXT", "VARCHAR", "CHARACTER VARYING"),
    "loaded_at": ("TIMESTAMP WITH TIME ZONE",),
}
RAW_REQUIRED_VALUES = (
    "source_line_number",
    "invoice_no",
    "stock_code",
    "quantity",
    "invoice_date",
    "unit_price",
    "country",
    "loaded_at",
)

FEATURE_KEY_COLUMNS = ("customer_id", "as_of_date")
FEATURE_REQUIRED_COLUMNS = (*FEATURE_KEY_COLUMNS, "is_churned")
#: Feature columns that count something (`order_count`, `order_count_last_30_days`).
COUNT_COLUMN = re.compile(r"(^|_)count(_|$)")
#: Feature columns that measure days back from as_of_date (`days_since_last_order`,
#: `tenure_days`); a negative value means an event from after the snapshot leaked in.
DAY_SPAN_COLUMN = re.compile(r"^days_since_|(^|_)tenure_days$")

PREDICTION_COLUMNS = (
    "customer_id",
    "as_of_date",
    "churn_probability",
    "risk_band",
    "model_run_id",
    "scored_at",
)
PREDICTION_REQUIRED_VALUES = PREDICTION_COLUMNS
RISK_BANDS = ("low", "medium", "high")


class Severity(StrEnum):
    """What a failed expectation does to the run."""

    BLOCKING = "blocking"
    WARNING = "warning"

    @property
    def gx_severity(self) -> FailureSeverity:
        if self is Severity.BLOCKING:
            return FailureSeverity.CRITICAL
        return FailureSeverity.WARNING


@dataclass(frozen=True)
class Check:
    """One expectation, how much its failure matters, and which batch it reads."""

    expectation: Any
    severity: Severity
    batch: str = TABLE_BATCH


@dataclass(frozen=True)
class SuiteInputs:
    """What a suite needs to know about the relation it is about to check."""

    relation: str
    columns: Sequence[str]
    baseline_row_count: int | None = None
    accept_row_count_change: bool = False
    now: datetime = field(default_factory=datetime.now)


@dataclass(frozen=True)
class SuiteDefinition:
    """A named suite: the relation it checks by default and how to build its checks.

    `derived_batches` maps a batch name to a function that turns the checked source (a
    quoted relation or a parenthesised query) into the SQL of a derived query. `index_columns`
    identify a failing row in the examples (a line number, a customer id).
    """

    name: str
    default_relation: str
    build: Callable[[SuiteInputs], list[Check]]
    index_columns: Mapping[str, Sequence[str]]
    derived_batches: Mapping[str, Callable[[str], str]] = field(default_factory=dict)


def _described(expectation: Any, description: str, severity: Severity) -> Any:
    expectation.description = description
    expectation.severity = severity.gx_severity
    expectation.meta = {"cohortcast_severity": severity.value}
    return expectation


def check(
    expectation: Any, severity: Severity, description: str, batch: str = TABLE_BATCH
) -> Check:
    """Declare one expectation with its severity and a sentence a reader understands."""
    return Check(_described(expectation, description, severity), severity, batch)


def row_count_check(inputs: SuiteInputs, band: float, what: str) -> Check:
    """Not empty; and, once a run has been accepted, within `band` of that run's row count."""
    baseline = inputs.baseline_row_count
    if baseline is None:
        return check(
            gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
            Severity.BLOCKING,
            f"{what} is not empty (no accepted run yet to compare the row count with)",
        )
    low = math.floor(baseline * (1 - band))
    high = math.ceil(baseline * (1 + band))
    severity = Severity.WARNING if inputs.accept_row_count_change else Severity.BLOCKING
    return check(
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=max(low, 1), max_value=high),
        severity,
        f"{what} row count within {band:.0%} of the last accepted run ({baseline} rows)",
    )


def raw_line_copies_query(source: str) -> str:
    """Each raw line with its copy number among lines equal on every source column.

    Copy 1 is the first line (by position in the file), copies 2 and up repeat it; nulls
    count as equal, as they do in `group by`.
    """
    partition = ", ".join(RAW_SOURCE_COLUMNS)
    return (
        "select source_line_number, "
        f"row_number() over (partition by {partition} order by source_line_number) "
        f"as line_copy_number from {source}"
    )


def raw_lines_checks(inputs: SuiteInputs) -> list[Check]:
    """Raw lines as loaded: shape, types, formats, plausible dates, size and duplicates."""
    expect = gx.expectations
    checks = [
        check(
            expect.ExpectTableColumnsToMatchSet(
                column_set=list(RAW_COLUMN_TYPES), exact_match=False
            ),
            Severity.BLOCKING,
            "every contract column is present",
        ),
        row_count_check(inputs, thresholds.RAW_ROW_COUNT_BAND, "the raw load"),
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToBeInTypeList(column=column, type_list=list(types)),
            Severity.BLOCKING,
            f"{column} has a type its values parse as ({', '.join(types)})",
        )
        for column, types in RAW_COLUMN_TYPES.items()
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToNotBeNull(column=column),
            Severity.BLOCKING,
            f"every line has a {column}",
        )
        for column in RAW_REQUIRED_VALUES
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToMatchRegex(
                column="customer_id", regex=thresholds.RAW_CUSTOMER_ID_PATTERN
            ),
            Severity.BLOCKING,
            "customer ids are five digits (null for unknown customers)",
        ),
        check(
            expect.ExpectColumnValuesToNotBeNull(
                column="customer_id", mostly=thresholds.RAW_CUSTOMER_ID_PRESENT_MIN_SHARE
            ),
            Severity.WARNING,
            f"at least {thresholds.RAW_CUSTOMER_ID_PRESENT_MIN_SHARE:.0%} of lines name a customer",
        ),
        check(
            expect.ExpectColumnValuesToBeBetween(
                column="invoice_date",
                min_value=thresholds.RAW_INVOICE_DATE_MIN,
                max_value=inputs.now.replace(tzinfo=None)
                + thresholds.RAW_INVOICE_DATE_FUTURE_SLACK,
            ),
            Severity.BLOCKING,
            f"invoice dates fall between {thresholds.RAW_INVOICE_DATE_MIN:%Y-%m-%d} and now",
        ),
        check(
            expect.ExpectColumnValuesToBeBetween(
                column="unit_price",
                min_value=0,
                mostly=1 - thresholds.RAW_NEGATIVE_PRICE_MAX_SHARE,
            ),
            Severity.WARNING,
            f"at most {thresholds.RAW_NEGATIVE_PRICE_MAX_SHARE:.1%} of lines have a negative "
            "unit price",
        ),
        check(
            expect.ExpectColumnValuesToBeBetween(
                column="line_copy_number",
                max_value=1,
                mostly=1 - thresholds.RAW_DUPLICATE_SHARE_MAX,
            ),
            Severity.BLOCKING,
            f"at most {thresholds.RAW_DUPLICATE_SHARE_MAX:.0%} of lines repeat an earlier line "
            "on every source column (a load that ran twice repeats half of them)",
            batch="line_copies",
        ),
    ]
    return checks


def feature_snapshot_checks(inputs: SuiteInputs) -> list[Check]:
    """The snapshot about to be trained on and scored: keys, nulls, ranges, size."""
    expect = gx.expectations
    checks = [
        check(
            expect.ExpectTableColumnsToMatchSet(
                column_set=list(FEATURE_REQUIRED_COLUMNS), exact_match=False
            ),
            Severity.BLOCKING,
            "the key and label columns are present",
        ),
        row_count_check(inputs, thresholds.FEATURE_ROW_COUNT_BAND, "the feature snapshot"),
        check(
            expect.ExpectCompoundColumnsToBeUnique(column_list=list(FEATURE_KEY_COLUMNS)),
            Severity.BLOCKING,
            "one row per customer_id and as_of_date",
        ),
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToNotBeNull(column=column),
            Severity.BLOCKING,
            f"every row has a {column}",
        )
        for column in FEATURE_KEY_COLUMNS
    ]
    for column in inputs.columns:
        if COUNT_COLUMN.search(column):
            checks += [
                check(
                    expect.ExpectColumnValuesToNotBeNull(column=column),
                    Severity.BLOCKING,
                    f"{column} is never null (a count with nothing to count is 0)",
                ),
                check(
                    expect.ExpectColumnValuesToBeBetween(column=column, min_value=0),
                    Severity.BLOCKING,
                    f"{column} is not negative",
                ),
            ]
        elif DAY_SPAN_COLUMN.search(column):
            checks.append(
                check(
                    expect.ExpectColumnValuesToBeBetween(column=column, min_value=0),
                    Severity.BLOCKING,
                    f"{column} is not negative (features use only events before as_of_date)",
                )
            )
    if "is_label_observed" in inputs.columns:
        checks.append(
            check(
                expect.ExpectColumnValuesToNotBeNull(column="is_label_observed"),
                Severity.BLOCKING,
                "every row says whether its label is observed",
            )
        )
    return checks


def prediction_checks(inputs: SuiteInputs) -> list[Check]:
    """Predictions about to be published: one valid probability per customer, not collapsed."""
    expect = gx.expectations
    checks = [
        check(
            expect.ExpectTableColumnsToMatchSet(
                column_set=list(PREDICTION_COLUMNS), exact_match=False
            ),
            Severity.BLOCKING,
            "every contract column is present",
        ),
        check(
            expect.ExpectTableRowCountToBeBetween(min_value=1),
            Severity.BLOCKING,
            "there is at least one prediction",
        ),
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToNotBeNull(column=column),
            Severity.BLOCKING,
            f"every prediction has a {column}",
        )
        for column in PREDICTION_REQUIRED_VALUES
    ]
    checks += [
        check(
            expect.ExpectColumnValuesToBeBetween(
                column="churn_probability", min_value=0, max_value=1
            ),
            Severity.BLOCKING,
            "churn_probability is a probability, in [0, 1]",
        ),
        check(
            expect.ExpectColumnValuesToBeUnique(column="customer_id"),
            Severity.BLOCKING,
            "one prediction per customer",
        ),
        check(
            expect.ExpectColumnValuesToBeInSet(column="risk_band", value_set=list(RISK_BANDS)),
            Severity.BLOCKING,
            f"risk_band is one of {', '.join(RISK_BANDS)}",
        ),
        check(
            expect.ExpectColumnStdevToBeBetween(
                column="churn_probability", min_value=thresholds.PREDICTION_STDEV_MIN
            ),
            Severity.BLOCKING,
            "churn probabilities have not collapsed to one value "
            f"(standard deviation at least {thresholds.PREDICTION_STDEV_MIN})",
        ),
        check(
            expect.ExpectColumnUniqueValueCountToBeBetween(
                column="model_run_id", min_value=1, max_value=1
            ),
            Severity.WARNING,
            "every prediction comes from the same model run",
        ),
        check(
            expect.ExpectColumnUniqueValueCountToBeBetween(
                column="as_of_date", min_value=1, max_value=1
            ),
            Severity.WARNING,
            "every prediction is for the same as_of_date",
        ),
    ]
    return checks


RAW_LINES = SuiteDefinition(
    name="raw_lines",
    default_relation="raw.online_retail_lines",
    build=raw_lines_checks,
    index_columns={TABLE_BATCH: ("source_line_number",), "line_copies": ("source_line_number",)},
    derived_batches={"line_copies": raw_line_copies_query},
)
FEATURE_SNAPSHOTS = SuiteDefinition(
    name="feature_snapshots",
    default_relation="analytics.customer_feature_snapshots",
    build=feature_snapshot_checks,
    index_columns={TABLE_BATCH: FEATURE_KEY_COLUMNS},
)
CHURN_PREDICTIONS = SuiteDefinition(
    name="churn_predictions",
    default_relation="ml.customer_churn_predictions",
    build=prediction_checks,
    index_columns={TABLE_BATCH: ("customer_id",)},
)

SUITES: Mapping[str, SuiteDefinition] = {
    suite.name: suite for suite in (RAW_LINES, FEATURE_SNAPSHOTS, CHURN_PREDICTIONS)
}
