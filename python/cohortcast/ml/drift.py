"""Population stability (PSI) of each feature: training rows against the scored snapshot.

PSI = sum over buckets of (current share - reference share) * ln(current / reference), with
shares floored at 0.0001 so an empty bucket does not make it infinite. Buckets:

- numeric: right-closed bins between the reference deciles (duplicate edges merged), plus
  one bucket for nulls;
- categorical: each reference category, plus `(other)` for categories the reference never had.

Common reading: below 0.1 stable, 0.1 to 0.2 moderate, above 0.2 a shift worth a look (the
default threshold, a parameter).
"""

from __future__ import annotations

import logging
import math
from datetime import date

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cohortcast.ml.dataset import FeatureSpec
from cohortcast.warehouse import append_rows

logger = logging.getLogger(__name__)

DEFAULT_PSI_THRESHOLD = 0.2
SHARE_FLOOR = 1e-4
NUMERIC_BINS = 10
OTHER_CATEGORY = "(other)"
DRIFT_COLUMNS = (
    "run_id",
    "feature",
    "psi",
    "is_drifted",
    "reference_as_of_date",
    "scored_as_of_date",
)


def _psi_from_counts(reference: np.ndarray, current: np.ndarray) -> float:
    expected = np.maximum(reference / reference.sum(), SHARE_FLOOR)
    actual = np.maximum(current / current.sum(), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_psi(reference: pd.Series, current: pd.Series, bins: int = NUMERIC_BINS) -> float:
    ref = reference.to_numpy(dtype=float)
    cur = current.to_numpy(dtype=float)
    present = ref[~np.isnan(ref)]
    if len(ref) == 0 or len(cur) == 0:
        return math.nan
    deciles = np.arange(1, bins) / bins
    edges: np.ndarray = np.unique(np.quantile(present, deciles)) if len(present) else np.array([])

    def counts(values: np.ndarray) -> np.ndarray:
        known = values[~np.isnan(values)]
        binned = np.bincount(np.searchsorted(edges, known, side="left"), minlength=len(edges) + 1)
        return np.append(binned, np.isnan(values).sum()).astype(float)

    return _psi_from_counts(counts(ref), counts(cur))


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    if len(reference) == 0 or len(current) == 0:
        return math.nan
    categories = sorted(set(reference.astype(str)))
    ref = reference.astype(str).value_counts().reindex(categories, fill_value=0)
    cur_values = current.astype(str).where(current.astype(str).isin(categories), OTHER_CATEGORY)
    cur = cur_values.value_counts().reindex([*categories, OTHER_CATEGORY], fill_value=0)
    ref_counts = np.append(ref.to_numpy(dtype=float), 0.0)
    return _psi_from_counts(ref_counts, cur.to_numpy(dtype=float))


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: FeatureSpec,
    threshold: float = DEFAULT_PSI_THRESHOLD,
) -> pd.DataFrame:
    """One row per feature: `feature`, `psi`, `is_drifted` (psi > threshold)."""
    rows = []
    for name in spec.names:
        if name in spec.numeric:
            psi = numeric_psi(reference[name], current[name])
        else:
            psi = categorical_psi(reference[name], current[name])
        rows.append({"feature": name, "psi": psi, "is_drifted": bool(psi > threshold)})
    drift = pd.DataFrame(rows, columns=["feature", "psi", "is_drifted"])
    drifted = drift.loc[drift["is_drifted"]]
    for feature, psi in zip(drifted["feature"].tolist(), drifted["psi"].tolist(), strict=True):
        logger.warning(
            "feature %s drifted: PSI %.3f > %.2f between training and scored rows",
            feature,
            psi,
            threshold,
        )
    return drift


def write_drift(
    conn: psycopg.Connection,
    run_id: str,
    drift: pd.DataFrame,
    reference_as_of_date: date,
    scored_as_of_date: date,
) -> int:
    """Replace the run's rows in ml.feature_drift (in the caller's transaction)."""
    conn.execute(
        sql.SQL("delete from {} where run_id = %s").format(sql.Identifier("ml", "feature_drift")),
        (run_id,),
    )
    rows = (
        (
            run_id,
            str(feature),
            None if math.isnan(psi) else float(psi),
            bool(is_drifted),
            reference_as_of_date,
            scored_as_of_date,
        )
        for feature, psi, is_drifted in zip(
            drift["feature"].tolist(),
            drift["psi"].tolist(),
            drift["is_drifted"].tolist(),
            strict=True,
        )
    )
    return append_rows(conn, "ml", "feature_drift", DRIFT_COLUMNS, rows)
