"""Score the latest snapshot, explain each score, and publish the predictions atomically.

Risk bands are fixed probability thresholds (the published model is calibrated, so 0.7
means about seven in ten such customers churn): `high` from 0.7, `medium` from 0.4, `low`
below. Both thresholds are parameters.

Drivers: for each row and feature, the contribution is the row's churn probability minus
the probability with that one feature set to its training reference (median for numbers,
most frequent value for categories). The three largest contributions by size are the
drivers, written `feature (+)` when the row's own value raises the risk above the reference
and `feature (-)` when it lowers it. Features with no effect on the row are not listed, so a
simple baseline may have fewer than three drivers (the rest are null). Cost: one batched
prediction over rows x features.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import AS_OF_DATE, CUSTOMER_ID, FeatureSpec, feature_frame
from cohortcast.ml.registry import ModelBundle
from cohortcast.ml.training import predict_churn
from cohortcast.warehouse import replace_table_atomically

logger = logging.getLogger(__name__)

PREDICTIONS_TABLE = "customer_churn_predictions"
HISTORY_TABLE = "customer_churn_prediction_history"
DRIVER_COUNT = 3
DRIVER_COLUMNS = tuple(f"top_driver_{n}" for n in range(1, DRIVER_COUNT + 1))
PREDICTION_COLUMNS = (
    CUSTOMER_ID,
    AS_OF_DATE,
    "churn_probability",
    "risk_band",
    "model_run_id",
    "scored_at",
    *DRIVER_COLUMNS,
)
_NO_EFFECT = 1e-9


@dataclass(frozen=True)
class RiskBands:
    """`high` from `high`, `medium` from `medium`, else `low` (probabilities)."""

    medium: float = 0.4
    high: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 < self.medium < self.high <= 1.0:
            raise ModelError(
                f"risk band thresholds must satisfy 0 < medium < high <= 1; got "
                f"medium={self.medium}, high={self.high}"
            )

    def assign(self, probabilities: Any) -> np.ndarray:
        p = np.asarray(probabilities, dtype=float)
        return np.where(p >= self.high, "high", np.where(p >= self.medium, "medium", "low"))


def driver_reference(train: pd.DataFrame, spec: FeatureSpec) -> dict[str, Any]:
    """Training median of each numeric feature and most frequent value of each category."""
    reference: dict[str, Any] = {}
    for name in spec.numeric:
        values = train[name].dropna()
        reference[name] = float(values.median()) if len(values) else math.nan
    for name in spec.categorical:
        counts = train[name].value_counts()
        top: list[str] = [str(value) for value in counts.index[counts == counts.max()]]
        reference[name] = min(top) if top else ""
    return reference


def top_drivers(
    model: Any,
    frame: pd.DataFrame,
    spec: FeatureSpec,
    reference: dict[str, Any],
    count: int = DRIVER_COUNT,
) -> list[list[str | None]]:
    """Per row, the `count` features that move its probability most from the reference."""
    features = feature_frame(frame, spec).reset_index(drop=True)
    if features.empty:
        return []
    base = predict_churn(model, features, spec)
    names = list(spec.names)
    swapped = pd.concat(
        [features.assign(**{name: reference[name]}) for name in names], ignore_index=True
    )
    perturbed = predict_churn(model, swapped, spec).reshape(len(names), len(features)).T
    contributions = base[:, None] - perturbed
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :count]
    drivers: list[list[str | None]] = []
    for row, columns in enumerate(order):
        labels: list[str | None] = []
        for column in columns:
            value = contributions[row, column]
            if abs(value) > _NO_EFFECT:
                labels.append(f"{names[column]} ({'+' if value > 0 else '-'})")
        drivers.append(labels + [None] * (count - len(labels)))
    return drivers


def score_rows(bundle: ModelBundle, rows: pd.DataFrame, bands: RiskBands) -> pd.DataFrame:
    """Probability, band and drivers for each row of one snapshot."""
    probabilities = predict_churn(bundle.model, rows, bundle.spec)
    drivers = top_drivers(bundle.model, rows, bundle.spec, bundle.driver_reference)
    scored = pd.DataFrame(
        {
            CUSTOMER_ID: rows[CUSTOMER_ID].to_numpy(),
            AS_OF_DATE: pd.to_datetime(rows[AS_OF_DATE]).dt.date.to_numpy(),
            "churn_probability": probabilities,
            "risk_band": bands.assign(probabilities),
        }
    )
    driver_frame = pd.DataFrame(drivers, columns=list(DRIVER_COLUMNS), dtype=object)
    return pd.concat([scored, driver_frame], axis=1)


def _check_probabilities(probabilities: pd.Series) -> None:
    values = probabilities.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise ModelError(
            f"{int(bad.sum())} churn probabilities are missing or outside [0, 1]; nothing was "
            "published. Retrain the model (`cohortcast train`) and check the feature snapshot"
        )


def prediction_rows(
    predictions: pd.DataFrame, run_id: str, scored_at: datetime
) -> list[tuple[Any, ...]]:
    """Rows in PREDICTION_COLUMNS order, as plain Python values for COPY."""
    columns = [
        predictions[name].tolist()
        for name in (CUSTOMER_ID, AS_OF_DATE, "churn_probability", "risk_band", *DRIVER_COLUMNS)
    ]
    rows: list[tuple[Any, ...]] = []
    for customer_id, as_of, probability, band, *drivers in zip(*columns, strict=True):
        rows.append(
            (
                str(customer_id),
                as_of if isinstance(as_of, date) else pd.Timestamp(as_of).date(),
                float(probability),
                str(band),
                run_id,
                scored_at,
                *(None if driver is None else str(driver) for driver in drivers),
            )
        )
    return rows


STAGING_TABLE = "customer_churn_predictions_staging"


def stage_predictions(
    conn: psycopg.Connection, predictions: pd.DataFrame, run_id: str, scored_at: datetime
) -> str:
    """Write new predictions, committed, to a staging table beside the published one.

    The quality gate reads through its own connections, so it needs committed rows; the
    staging table copies the published table's columns but not its constraints, so that
    the gate, not a constraint, reports bad rows. Returns the relation name.
    """
    staging = sql.Identifier("ml", STAGING_TABLE)
    with conn.transaction():
        conn.execute(
            sql.SQL("create table if not exists {} (like {} including defaults)").format(
                staging, sql.Identifier("ml", PREDICTIONS_TABLE)
            )
        )
        replace_table_atomically(
            conn,
            "ml",
            STAGING_TABLE,
            PREDICTION_COLUMNS,
            prediction_rows(predictions, run_id, scored_at),
        )
    return f"ml.{STAGING_TABLE}"


def publish_predictions(
    conn: psycopg.Connection, predictions: pd.DataFrame, run_id: str, scored_at: datetime
) -> int:
    """Replace ml.customer_churn_predictions and add the same rows to the history, atomically.

    Readers see the previous complete table or the new one. The run's earlier history rows
    (a re-scoring of the same run) are replaced. Any failure rolls everything back.
    """
    _check_probabilities(predictions["churn_probability"])
    history = sql.Identifier("ml", HISTORY_TABLE)
    current = sql.Identifier("ml", PREDICTIONS_TABLE)
    column_list = sql.SQL(", ").join(sql.Identifier(name) for name in PREDICTION_COLUMNS)
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("delete from {} where model_run_id = %s").format(history), (run_id,)
            )
            count = replace_table_atomically(
                conn,
                "ml",
                PREDICTIONS_TABLE,
                PREDICTION_COLUMNS,
                prediction_rows(predictions, run_id, scored_at),
                after_copy=sql.SQL("insert into {} ({}) select {} from {}").format(
                    history, column_list, column_list, current
                ),
            )
    except psycopg.Error as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"publishing predictions of run {run_id} failed and was rolled back; the previous "
            f"predictions are unchanged ({cause})"
        ) from exc
    return count
