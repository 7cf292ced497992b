"""Point-in-time feature snapshots, as dbt builds them, ready for scikit-learn.

`analytics.customer_feature_snapshots` holds one row per customer per `as_of_date`. Features
are found by convention (docs/contracts.md), never listed here: every column except the keys,
the label, `is_label_observed`, timestamps and dates (`_at`, `_date`) and calendar
truncations (`_week`, `_month`, `_quarter`: a calendar position says when, not who, and
a later snapshot always brings values training never saw). Numeric columns are
numeric features; text and boolean columns are categorical. Adding a feature is adding a
column in dbt.

A snapshot at `as_of_date` t is labelled by events in [t, t + 90 days). Its label is only
known once that window has passed, so a model evaluated at cutoff c may only learn from
snapshots with t + 90 days <= c (`training_rows`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import pandas as pd
import psycopg

from cohortcast.errors import ModelError
from cohortcast.warehouse import read_frame, table_columns

logger = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = "analytics"
SNAPSHOT_TABLE = "customer_feature_snapshots"
MEMBERSHIP_TABLE = "cohort_membership"
CUSTOMER_ID = "customer_id"
AS_OF_DATE = "as_of_date"
LABEL = "is_churned"
NOT_FEATURES = frozenset({CUSTOMER_ID, AS_OF_DATE, LABEL, "is_label_observed"})
NOT_FEATURE_SUFFIXES = ("_at", "_date", "_week", "_month", "_quarter")
LABEL_WINDOW_DAYS = 90
MISSING_CATEGORY = "(missing)"

_NUMERIC_TYPE_PREFIXES = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "decimal",
    "real",
    "double precision",
)
_CATEGORICAL_TYPE_PREFIXES = ("text", "character", "boolean", "citext")


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns the models read, and how. Names are sorted, so column order never matters."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def to_dict(self) -> dict[str, list[str]]:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[str]]) -> FeatureSpec:
        return cls(numeric=tuple(data["numeric"]), categorical=tuple(data["categorical"]))

    def feature_hash(self) -> str:
        """sha256 of the feature names and kinds: equal hashes, same model inputs."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class Snapshots:
    """Prepared snapshot rows (one per customer per as-of date) and their feature spec."""

    frame: pd.DataFrame
    spec: FeatureSpec


def is_feature_column(name: str) -> bool:
    return name not in NOT_FEATURES and not name.endswith(NOT_FEATURE_SUFFIXES)


def spec_from_column_types(column_types: Mapping[str, str]) -> FeatureSpec:
    """Feature spec from Postgres type names (as `warehouse.table_columns` returns them)."""
    numeric: list[str] = []
    categorical: list[str] = []
    for name, type_name in column_types.items():
        if not is_feature_column(name):
            continue
        if type_name.startswith(_NUMERIC_TYPE_PREFIXES):
            numeric.append(name)
        elif type_name.startswith(_CATEGORICAL_TYPE_PREFIXES):
            categorical.append(name)
        else:
            logger.warning(
                "column %s has type %s, neither numeric nor text/boolean; not used as a feature",
                name,
                type_name,
            )
    return FeatureSpec(numeric=tuple(sorted(numeric)), categorical=tuple(sorted(categorical)))


def spec_from_frame(frame: pd.DataFrame) -> FeatureSpec:
    """Feature spec from pandas dtypes, for frames built in Python, not read from Postgres."""
    numeric: list[str] = []
    categorical: list[str] = []
    for name in frame.columns:
        if not is_feature_column(str(name)):
            continue
        dtype = frame[name].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            categorical.append(str(name))
        else:
            numeric.append(str(name))
    return FeatureSpec(numeric=tuple(sorted(numeric)), categorical=tuple(sorted(categorical)))


def prepare(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Normalise types: float numerics (NaN for null), string categories, a nullable label.

    Booleans become "true"/"false" and nulls `(missing)`, so every categorical column is
    plain text and an encoder sees the same values at training and at scoring time.
    """
    missing = [name for name in (CUSTOMER_ID, AS_OF_DATE, *spec.names) if name not in frame]
    if missing:
        raise ModelError(
            f"the snapshot rows have no column(s) {', '.join(missing)}; rebuild "
            f"{SNAPSHOT_SCHEMA}.{SNAPSHOT_TABLE} with dbt or retrain the model"
        )
    prepared = frame.copy()
    prepared[CUSTOMER_ID] = prepared[CUSTOMER_ID].astype(str).astype(object)
    prepared[AS_OF_DATE] = pd.to_datetime(prepared[AS_OF_DATE])
    for name in spec.numeric:
        prepared[name] = prepared[name].astype("float64")
    for name in spec.categorical:
        prepared[name] = _as_category_text(prepared[name])
    if LABEL in prepared:
        prepared[LABEL] = prepared[LABEL].astype("boolean")
    return prepared


def _as_category_text(values: pd.Series) -> pd.Series:
    def to_text(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
            return MISSING_CATEGORY
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return values.astype(object).map(to_text).astype(object)


def feature_frame(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The model inputs, in the spec's order whatever the order of `frame`'s columns."""
    return frame.loc[:, list(spec.names)]


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose 90-day label window is fully observed (`is_churned` is not null)."""
    return frame.loc[frame[LABEL].notna()]


def label_values(frame: pd.DataFrame) -> pd.Series:
    """`is_churned` as 0/1 integers; only for labelled rows."""
    return frame[LABEL].astype(bool).astype(int)


def label_window_end(as_of: pd.Series, days: int) -> pd.Series:
    """First day after each row's label window: as_of_date + `days`."""
    return as_of + pd.Timedelta(days=days)


def training_rows(
    frame: pd.DataFrame, cutoff: pd.Timestamp | date, label_window_days: int = LABEL_WINDOW_DAYS
) -> pd.DataFrame:
    """Labelled rows a model for `cutoff` may learn from: label window over by the cutoff.

    A snapshot at t qualifies when t + label_window_days <= cutoff; a snapshot whose label
    window reaches past the cutoff would teach the model what happened after it.
    """
    cutoff = pd.Timestamp(cutoff)
    rows = labelled(frame)
    return rows.loc[label_window_end(rows[AS_OF_DATE], label_window_days) <= cutoff]


def check_no_label_leakage(
    train: pd.DataFrame, cutoff: pd.Timestamp | date, label_window_days: int = LABEL_WINDOW_DAYS
) -> None:
    """Refuse a training set with a snapshot whose label window is not over by `cutoff`."""
    cutoff = pd.Timestamp(cutoff)
    ends = label_window_end(train[AS_OF_DATE], label_window_days)
    leaking = sorted({ts.date().isoformat() for ts in train.loc[ends > cutoff, AS_OF_DATE]})
    if leaking:
        raise ModelError(
            f"training rows for cutoff {cutoff.date()} include snapshot(s) {', '.join(leaking)} "
            f"whose {label_window_days}-day label window ends after the cutoff; select them "
            "with ml.dataset.training_rows"
        )
    if train[LABEL].isna().any():
        raise ModelError(
            f"training rows for cutoff {cutoff.date()} include unlabelled snapshots; "
            "select them with ml.dataset.training_rows"
        )


def load_snapshots(
    conn: psycopg.Connection,
    *,
    schema: str = SNAPSHOT_SCHEMA,
    table: str = SNAPSHOT_TABLE,
) -> Snapshots:
    """Read every snapshot row, with features found from the table's column types."""
    column_types = table_columns(conn, schema, table)
    if not column_types:
        raise ModelError(f"{schema}.{table} does not exist; run `cohortcast build` (dbt) first")
    absent = [name for name in (CUSTOMER_ID, AS_OF_DATE, LABEL) if name not in column_types]
    if absent:
        raise ModelError(
            f"{schema}.{table} has no column(s) {', '.join(absent)}; it must follow the "
            "feature snapshot contract in docs/contracts.md"
        )
    spec = spec_from_column_types(column_types)
    if not spec.names:
        raise ModelError(f"{schema}.{table} has no feature columns; see docs/contracts.md")
    raw = read_frame(
        conn, f'select * from "{schema}"."{table}" order by "{AS_OF_DATE}", "{CUSTOMER_ID}"'
    )
    if raw.empty:
        raise ModelError(f"{schema}.{table} is empty; load data and run `cohortcast build` first")
    frame = prepare(raw, spec)
    logger.info(
        "read %d snapshot rows (%d labelled) for %d as-of dates %s..%s; %d numeric and "
        "%d categorical features",
        len(frame),
        int(frame[LABEL].notna().sum()),
        frame[AS_OF_DATE].nunique(),
        frame[AS_OF_DATE].min().date(),
        frame[AS_OF_DATE].max().date(),
        len(spec.numeric),
        len(spec.categorical),
    )
    return Snapshots(frame=frame, spec=spec)


def load_cohort_membership(
    conn: psycopg.Connection, *, schema: str = SNAPSHOT_SCHEMA, table: str = MEMBERSHIP_TABLE
) -> pd.DataFrame:
    """Cohort membership: customer_id, cohort_name, cohort_key, entered_at, exited_at (null
    when the table has no exits); empty when the table is missing."""
    columns = table_columns(conn, schema, table)
    wanted = [CUSTOMER_ID, "cohort_name", "cohort_key", "entered_at"]
    if not columns or any(name not in columns for name in wanted):
        logger.warning("%s.%s is missing; metrics by cohort are skipped", schema, table)
        return pd.DataFrame(columns=[*wanted, "exited_at"])
    exited = "exited_at" if "exited_at" in columns else "null::timestamptz as exited_at"
    frame = read_frame(
        conn,
        f"select customer_id, cohort_name, cohort_key, entered_at, {exited} "
        f'from "{schema}"."{table}"',
    )
    frame[CUSTOMER_ID] = frame[CUSTOMER_ID].astype(str).astype(object)
    frame["entered_at"] = pd.to_datetime(frame["entered_at"], utc=True)
    frame["exited_at"] = pd.to_datetime(frame["exited_at"], utc=True)
    return frame
