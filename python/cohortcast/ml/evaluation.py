"""Rolling-forward backtest: is the candidate better than the baselines, out of time?

For each cutoff c (the latest labelled as-of dates), every model is fitted on the snapshots
whose label window is over by c (t + 90 days <= c) and scored on the snapshot at c. Metrics
are computed per cutoff and pooled over all cutoffs, for everyone (`all`) and for each
cohort (`cohort_name=cohort_key`) with enough members at that cutoff. A metric that is not
defined on a slice (AUC with one class, lift with no churners) is left out, not zero.

Definitions (checked by hand in python/tests/test_ml_evaluation.py):

- `ece`: ten equal-width probability bins [0, 0.1), ..., [0.9, 1]; the row-weighted mean of
  |mean predicted - observed churn rate| over non-empty bins.
- `top_decile_lift`: churn rate among the ceil(n / 10) rows with the highest predicted
  probability (ties keep row order) divided by the churn rate of all n rows.
- calibration table: rows ranked by predicted probability into ten equal-count deciles,
  decile 10 the riskiest; pooled over every cutoff's held-out rows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import (
    AS_OF_DATE,
    CUSTOMER_ID,
    FeatureSpec,
    check_no_label_leakage,
    label_values,
    labelled,
    training_rows,
)
from cohortcast.ml.training import (
    CANDIDATE,
    MODEL_NAMES,
    TrainingConfig,
    fit_all,
    predict_churn,
)
from cohortcast.warehouse import append_rows

logger = logging.getLogger(__name__)

METRICS = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "top_decile_lift")
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "ece"})
SELECTION_METRICS = ("log_loss", "brier", "pr_auc", "roc_auc")
ALL_SLICE = "all"
EVALUATION_COLUMNS = (
    "run_id",
    "cutoff_date",
    "model",
    "cohort_slice",
    "metric",
    "value",
    "row_count",
)
CALIBRATION_COLUMNS = (
    "run_id",
    "model",
    "decile",
    "row_count",
    "mean_predicted",
    "observed_rate",
)
_PROBABILITY_FLOOR = 1e-15


def expected_calibration_error(labels: Any, probabilities: Any, bins: int = 10) -> float:
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for bin_number in np.unique(index):
        in_bin = index == bin_number
        total += in_bin.sum() / len(p) * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(total)


def top_decile_lift(labels: Any, probabilities: Any) -> float | None:
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    overall = y.mean() if len(y) else 0.0
    if overall == 0:
        return None
    top = math.ceil(len(y) / 10)
    order = np.argsort(-p, kind="stable")[:top]
    return float(y[order].mean() / overall)


def compute_metrics(labels: Any, probabilities: Any) -> dict[str, float]:
    """Every metric that is defined for these rows."""
    y = np.asarray(labels, dtype=int)
    p = np.clip(np.asarray(probabilities, dtype=float), _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    if len(y) == 0:
        return {}
    metrics = {
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }
    if len(np.unique(y)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y, p))
        metrics["pr_auc"] = float(average_precision_score(y, p))
    lift = top_decile_lift(y, p)
    if lift is not None:
        metrics["top_decile_lift"] = lift
    return {name: metrics[name] for name in METRICS if name in metrics}


def calibration_table(labels: Any, probabilities: Any, deciles: int = 10) -> pd.DataFrame:
    """Equal-count deciles of predicted probability, decile 10 the riskiest."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    rank = np.empty(len(p), dtype=int)
    rank[np.argsort(p, kind="stable")] = np.arange(len(p))
    decile = rank * deciles // max(len(p), 1) + 1
    frame = pd.DataFrame({"decile": decile, "label": y, "probability": p})
    grouped = frame.groupby("decile").agg(
        row_count=("label", "size"),
        mean_predicted=("probability", "mean"),
        observed_rate=("label", "mean"),
    )
    return grouped.reset_index()


@dataclass
class BacktestResult:
    """Held-out predictions and metrics of every model at every cutoff."""

    cutoffs: list[pd.Timestamp]
    training_dates: dict[pd.Timestamp, list[pd.Timestamp]]
    predictions: pd.DataFrame
    evaluations: pd.DataFrame
    skipped: dict[pd.Timestamp, str] = field(default_factory=dict)

    def mean_metrics(self) -> dict[str, dict[str, float]]:
        """Per model, each metric's mean over cutoffs on the whole population."""
        rows = self.evaluations
        per_cutoff = rows.loc[rows["cutoff_date"].notna() & (rows["cohort_slice"] == ALL_SLICE)]
        means = per_cutoff.groupby(["model", "metric"], as_index=False)["value"].mean()
        result: dict[str, dict[str, float]] = {}
        for model, metric, value in zip(
            means["model"].tolist(), means["metric"].tolist(), means["value"].tolist(), strict=True
        ):
            result.setdefault(str(model), {})[str(metric)] = float(value)
        return result

    def calibration(self) -> pd.DataFrame:
        """Calibration by decile per model, over every cutoff's held-out rows."""
        tables = []
        for model, rows in self.predictions.groupby("model", sort=False):
            table = calibration_table(rows["label"], rows["probability"])
            table.insert(0, "model", model)
            tables.append(table)
        return pd.concat(tables, ignore_index=True)


def backtest_cutoffs(frame: pd.DataFrame, config: TrainingConfig) -> list[pd.Timestamp]:
    """The latest labelled as-of dates with at least two snapshots to learn from.

    Two, because the candidate learns on the earlier ones and calibrates on the latest.
    """
    dates = sorted(pd.Timestamp(value) for value in labelled(frame)[AS_OF_DATE].unique())
    window = pd.Timedelta(days=config.label_window_days)
    eligible = [cutoff for cutoff in dates if sum(d + window <= cutoff for d in dates) >= 2]
    return eligible[-config.backtest_cutoffs :] if config.backtest_cutoffs > 0 else []


def slice_masks(predictions: pd.DataFrame, membership: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row masks over `predictions`: `all`, and `cohort_name=cohort_key` for every cohort a
    row's customer belonged to at the row's cutoff (entered before it, not exited by it)."""
    masks = {ALL_SLICE: np.ones(len(predictions), dtype=bool)}
    if membership.empty:
        return masks
    keys = pd.DataFrame(
        {
            CUSTOMER_ID: predictions[CUSTOMER_ID].to_numpy(),
            "cutoff_date": pd.to_datetime(predictions["cutoff_date"]).to_numpy(),
            "row": np.arange(len(predictions)),
        }
    )
    joined = keys.merge(membership, on=CUSTOMER_ID, how="inner")
    cutoff_at = joined["cutoff_date"].dt.tz_localize("UTC")
    member = joined["entered_at"] < cutoff_at
    if "exited_at" in joined:
        member &= joined["exited_at"].isna() | (joined["exited_at"] >= cutoff_at)
    for (name, key), group in joined.loc[member].groupby(["cohort_name", "cohort_key"], sort=True):
        mask = np.zeros(len(predictions), dtype=bool)
        mask[group["row"].to_numpy()] = True
        masks[f"{name}={key}"] = mask
    return masks


def _evaluation_rows(
    predictions: pd.DataFrame,
    cutoff: pd.Timestamp | None,
    membership: pd.DataFrame,
    min_slice_rows: int,
) -> list[dict[str, Any]]:
    """Metric rows per model and slice; `cutoff` None marks rows pooled over all cutoffs."""
    rows: list[dict[str, Any]] = []
    masks = slice_masks(predictions, membership)
    for model in predictions["model"].unique():
        is_model = (predictions["model"] == model).to_numpy()
        for slice_name, mask in masks.items():
            selected = mask & is_model
            if slice_name != ALL_SLICE and selected.sum() < min_slice_rows:
                continue
            subset = predictions.loc[selected]
            for metric, value in compute_metrics(subset["label"], subset["probability"]).items():
                rows.append(
                    {
                        "cutoff_date": None if cutoff is None else cutoff.date(),
                        "model": str(model),
                        "cohort_slice": slice_name,
                        "metric": metric,
                        "value": value,
                        "row_count": int(selected.sum()),
                    }
                )
    return rows


def backtest(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
    membership: pd.DataFrame | None = None,
) -> BacktestResult:
    """Fit every model at every cutoff and score the cutoff's snapshot.

    A cutoff where some model cannot be fitted (e.g. one class only) is skipped for all
    models, with a warning, so every model is judged on the same cutoffs.
    """
    membership = membership if membership is not None else pd.DataFrame()
    cutoffs = backtest_cutoffs(frame, config)
    if not cutoffs:
        raise ModelError(
            "no backtest cutoff: need labelled snapshots at least "
            f"{config.label_window_days} days after two earlier labelled snapshots; load a "
            "longer history"
        )
    predictions: list[pd.DataFrame] = []
    evaluations: list[dict[str, Any]] = []
    training_dates: dict[pd.Timestamp, list[pd.Timestamp]] = {}
    skipped: dict[pd.Timestamp, str] = {}
    for cutoff in cutoffs:
        started = time.monotonic()
        train = training_rows(frame, cutoff, config.label_window_days)
        check_no_label_leakage(train, cutoff, config.label_window_days)
        every_labelled = labelled(frame)
        test = every_labelled.loc[every_labelled[AS_OF_DATE] == cutoff]
        try:
            models = fit_all(train, spec, config)
        except ModelError as exc:
            logger.warning("backtest cutoff %s skipped: %s", cutoff.date(), exc)
            skipped[cutoff] = str(exc)
            continue
        training_dates[cutoff] = sorted(pd.Timestamp(d) for d in train[AS_OF_DATE].unique())
        labels = label_values(test).to_numpy()
        scored: pd.DataFrame = pd.concat(
            [
                pd.DataFrame(
                    {
                        "cutoff_date": cutoff,
                        CUSTOMER_ID: test[CUSTOMER_ID].to_numpy(),
                        "model": name,
                        "label": labels,
                        "probability": predict_churn(model, test, spec),
                    }
                )
                for name, model in models.items()
            ],
            ignore_index=True,
        )
        predictions.append(scored)
        evaluations.extend(_evaluation_rows(scored, cutoff, membership, config.min_slice_rows))
        logger.info(
            "backtest cutoff %s: trained on %d rows from %d snapshots (%s..%s), evaluated on "
            "%d rows (churn rate %.3f) in %.1f s",
            cutoff.date(),
            len(train),
            len(training_dates[cutoff]),
            training_dates[cutoff][0].date(),
            training_dates[cutoff][-1].date(),
            len(test),
            float(labels.mean()) if len(labels) else float("nan"),
            time.monotonic() - started,
        )
    if not predictions:
        reasons = "; ".join(f"{c.date()}: {why}" for c, why in skipped.items())
        raise ModelError(f"no backtest cutoff could be evaluated ({reasons})")
    pooled = pd.concat(predictions, ignore_index=True)
    evaluations.extend(_evaluation_rows(pooled, None, membership, config.min_slice_rows))
    evaluated = [cutoff for cutoff in cutoffs if cutoff not in skipped]
    return BacktestResult(
        cutoffs=evaluated,
        training_dates=training_dates,
        predictions=pooled,
        evaluations=pd.DataFrame(
            evaluations, columns=[c for c in EVALUATION_COLUMNS if c != "run_id"]
        ),
        skipped=skipped,
    )


@dataclass(frozen=True)
class Selection:
    model: str
    reason: str


def choose_published_model(
    mean_metrics: dict[str, dict[str, float]], metric: str = "log_loss"
) -> Selection:
    """The candidate, unless a baseline's backtest mean of `metric` is strictly better."""
    if metric not in SELECTION_METRICS:
        raise ModelError(
            f"selection metric {metric!r} is not one of {', '.join(SELECTION_METRICS)}"
        )
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def score(model: str) -> float:
        value = mean_metrics.get(model, {}).get(metric)
        return math.inf if value is None or math.isnan(value) else sign * value

    best = min(MODEL_NAMES, key=lambda name: (score(name), name != CANDIDATE))
    candidate_value = mean_metrics.get(CANDIDATE, {}).get(metric)
    if best == CANDIDATE or score(best) >= score(CANDIDATE):
        return Selection(
            CANDIDATE,
            f"candidate has the best mean {metric} over the backtest ({candidate_value:.4f})"
            if candidate_value is not None
            else f"no model has a mean {metric}; keeping the candidate",
        )
    return Selection(
        best,
        f"baseline {best} beats the candidate on mean {metric} over the backtest "
        f"({mean_metrics[best][metric]:.4f} vs {candidate_value}); publishing {best}",
    )


def _records(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return list(zip(*(frame[column].tolist() for column in columns), strict=True))


def write_evaluations(conn: psycopg.Connection, run_id: str, evaluations: pd.DataFrame) -> int:
    """Replace the run's rows in ml.model_evaluations (in the caller's transaction)."""
    conn.execute(
        sql.SQL("delete from {} where run_id = %s").format(
            sql.Identifier("ml", "model_evaluations")
        ),
        (run_id,),
    )
    rows = (
        (run_id, cutoff_date, model, cohort_slice, metric, float(value), int(row_count))
        for cutoff_date, model, cohort_slice, metric, value, row_count in _records(
            evaluations, EVALUATION_COLUMNS[1:]
        )
    )
    return append_rows(conn, "ml", "model_evaluations", EVALUATION_COLUMNS, rows)


def write_calibration(conn: psycopg.Connection, run_id: str, calibration: pd.DataFrame) -> int:
    """Replace the run's rows in ml.model_calibration (in the caller's transaction)."""
    conn.execute(
        sql.SQL("delete from {} where run_id = %s").format(
            sql.Identifier("ml", "model_calibration")
        ),
        (run_id,),
    )
    rows = (
        (run_id, model, int(decile), int(row_count), float(mean_predicted), float(observed_rate))
        for model, decile, row_count, mean_predicted, observed_rate in _records(
            calibration, CALIBRATION_COLUMNS[1:]
        )
    )
    return append_rows(conn, "ml", "model_calibration", CALIBRATION_COLUMNS, rows)
