"""`cohortcast train` and `cohortcast score`: the two ML steps of the pipeline, end to end.

`train` backtests the candidate and the baselines, picks the model to publish, refits it on
every snapshot whose label window is over by the latest snapshot, saves it and records the
run (ml.model_runs, ml.model_evaluations, ml.model_calibration) in one transaction.
`score` loads a recorded run's model, scores the latest snapshot and publishes predictions,
history, drift and the run's status in one transaction.

Both take an open connection. Writes commit when the connection had no transaction open on
entry; inside a caller's transaction they join it and the caller commits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import psycopg
from psycopg.pq import TransactionStatus
from threadpoolctl import threadpool_limits

from cohortcast.errors import ModelError
from cohortcast.ml import drift as drift_module
from cohortcast.ml.dataset import (
    AS_OF_DATE,
    LABEL,
    Snapshots,
    check_no_label_leakage,
    label_values,
    labelled,
    load_cohort_membership,
    load_snapshots,
    training_rows,
)
from cohortcast.ml.evaluation import (
    ALL_SLICE,
    backtest,
    choose_published_model,
    write_calibration,
    write_evaluations,
)
from cohortcast.ml.registry import (
    ModelBundle,
    RunRecord,
    fetch_run,
    load_artifact,
    mark_published,
    new_run_id,
    record_run,
    save_artifact,
)
from cohortcast.ml.scoring import (
    RiskBands,
    driver_reference,
    publish_predictions,
    score_rows,
    stage_predictions,
)
from cohortcast.ml.training import (
    TrainingConfig,
    fit_model,
    rfm_features,
)

logger = logging.getLogger(__name__)

SUMMARY_METRICS = ("roc_auc", "pr_auc", "brier", "log_loss")


@dataclass(frozen=True)
class ScoringConfig:
    risk_bands: RiskBands = field(default_factory=RiskBands)
    psi_threshold: float = drift_module.DEFAULT_PSI_THRESHOLD
    threads: int = 1


@dataclass
class TrainResult:
    run_id: str
    published_model: str
    selection_reason: str
    base_rate: float
    backtest_means: dict[str, dict[str, float]]
    cutoffs: list[date]
    holdout_as_of_date: date
    training_window: tuple[date, date]
    training_row_count: int
    snapshot_count: int
    artifact_path: Path
    duration_seconds: float


@dataclass
class ScoreResult:
    run_id: str
    model_name: str
    scored_as_of_date: date
    scored_row_count: int
    risk_band_counts: dict[str, int]
    drifted_features: list[str]
    duration_seconds: float


@dataclass
class RunSummary:
    """What the pipeline summary prints about the model."""

    train: TrainResult
    score: ScoreResult

    def lines(self) -> list[str]:
        t, s = self.train, self.score
        lines = [
            f"model run {t.run_id}: published {t.published_model} ({t.selection_reason})",
            f"backtest over {len(t.cutoffs)} cutoffs "
            f"({t.cutoffs[0]}..{t.cutoffs[-1]}), base rate {t.base_rate:.3f}:",
        ]
        for model, metrics in t.backtest_means.items():
            shown = ", ".join(
                f"{name} {metrics[name]:.3f}" for name in SUMMARY_METRICS if name in metrics
            )
            lines.append(f"  {model}: {shown}")
        lines.append(
            f"trained on {t.training_row_count} rows from {t.snapshot_count} snapshots "
            f"({t.training_window[0]}..{t.training_window[1]}); scored {s.scored_row_count} "
            f"customers at {s.scored_as_of_date} "
            + ", ".join(f"{band} {count}" for band, count in s.risk_band_counts.items())
        )
        if s.drifted_features:
            lines.append(f"drifted features (PSI): {', '.join(s.drifted_features)}")
        return lines


def _finish_reads(conn: psycopg.Connection, was_idle: bool) -> None:
    """End the read-only transaction we opened, so our writes commit on their own."""
    if was_idle and conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.commit()


def _is_idle(conn: psycopg.Connection) -> bool:
    return conn.info.transaction_status == TransactionStatus.IDLE


def train(
    conn: psycopg.Connection,
    artifacts_dir: Path,
    *,
    run_id: str | None = None,
    dbt_invocation_id: str | None = None,
    config: TrainingConfig | None = None,
) -> TrainResult:
    """Backtest, choose, refit, save and record one training run."""
    config = config or TrainingConfig()
    with threadpool_limits(limits=config.threads):
        return _train(conn, artifacts_dir, run_id, dbt_invocation_id, config)


def _train(
    conn: psycopg.Connection,
    artifacts_dir: Path,
    run_id: str | None,
    dbt_invocation_id: str | None,
    config: TrainingConfig,
) -> TrainResult:
    started = time.monotonic()
    was_idle = _is_idle(conn)
    snapshots = load_snapshots(conn)
    membership = load_cohort_membership(conn)
    _finish_reads(conn, was_idle)
    frame, spec = snapshots.frame, snapshots.spec
    if labelled(frame).empty:
        raise ModelError(
            "no snapshot has a fully observed 90-day label window yet; load a longer history"
        )
    rfm = rfm_features(spec, config)
    result = backtest(frame, spec, config, membership)
    means = result.mean_metrics()
    selection = choose_published_model(means, config.selection_metric)
    logger.info("model choice: %s", selection.reason)

    final_cutoff = pd.Timestamp(frame[AS_OF_DATE].max())
    final_train = training_rows(frame, final_cutoff, config.label_window_days)
    check_no_label_leakage(final_train, final_cutoff, config.label_window_days)
    fit_started = time.monotonic()
    model = fit_model(selection.model, final_train, spec, config)
    window = (
        final_train[AS_OF_DATE].min().date(),
        final_train[AS_OF_DATE].max().date(),
    )
    logger.info(
        "fitted %s on %d rows from %d snapshots (%s..%s) in %.1f s",
        selection.model,
        len(final_train),
        final_train[AS_OF_DATE].nunique(),
        window[0],
        window[1],
        time.monotonic() - fit_started,
    )
    run_id = run_id or new_run_id()
    saved = save_artifact(
        ModelBundle(
            model_name=selection.model,
            model=model,
            spec=spec,
            driver_reference=driver_reference(final_train, spec),
        ),
        artifacts_dir,
        run_id,
    )
    holdout = result.cutoffs[-1]
    evaluations = result.evaluations
    at_holdout = evaluations.loc[
        (evaluations["cutoff_date"] == holdout.date())
        & (evaluations["cohort_slice"] == ALL_SLICE)
        & (evaluations["model"] == selection.model)
    ]
    holdout_metrics = dict(zip(at_holdout["metric"], at_holdout["value"], strict=True))
    base_rate = float(label_values(final_train).mean())
    record = RunRecord(
        run_id=run_id,
        model_name=selection.model,
        trained_at=datetime.now(UTC),
        training_window_start=window[0],
        training_window_end=window[1],
        holdout_as_of_date=holdout.date(),
        snapshot_count=int(final_train[AS_OF_DATE].nunique()),
        training_row_count=len(final_train),
        feature_list=list(spec.names),
        feature_hash=spec.feature_hash(),
        parameters={
            **config.to_dict(),
            "features": spec.to_dict(),
            "rfm_features": list(rfm),
            "candidate": "HistGradientBoostingClassifier"
            + (
                ""
                if config.calibration == "none"
                else f" + {config.calibration} calibration on the latest training snapshot"
            ),
        },
        library_versions=saved.library_versions,
        artifact_path=str(saved.path),
        artifact_sha256=saved.sha256,
        roc_auc=holdout_metrics.get("roc_auc"),
        pr_auc=holdout_metrics.get("pr_auc"),
        brier_score=holdout_metrics.get("brier"),
        log_loss=holdout_metrics.get("log_loss"),
        base_rate=base_rate,
        metrics={
            "holdout": holdout_metrics,
            "backtest_mean": means,
            "cutoffs": [cutoff.date().isoformat() for cutoff in result.cutoffs],
            "skipped_cutoffs": {
                cutoff.date().isoformat(): why for cutoff, why in result.skipped.items()
            },
            "selection": {
                "model": selection.model,
                "metric": config.selection_metric,
                "reason": selection.reason,
            },
        },
        dbt_invocation_id=dbt_invocation_id,
    )
    with conn.transaction():
        record_run(conn, record)
        evaluation_count = write_evaluations(conn, run_id, evaluations)
        write_calibration(conn, run_id, result.calibration())
    duration = time.monotonic() - started
    logger.info(
        "recorded run %s (%s, %d evaluation rows) in %.1f s",
        run_id,
        selection.model,
        evaluation_count,
        duration,
    )
    return TrainResult(
        run_id=run_id,
        published_model=selection.model,
        selection_reason=selection.reason,
        base_rate=base_rate,
        backtest_means=means,
        cutoffs=[cutoff.date() for cutoff in result.cutoffs],
        holdout_as_of_date=holdout.date(),
        training_window=window,
        training_row_count=len(final_train),
        snapshot_count=record.snapshot_count,
        artifact_path=saved.path,
        duration_seconds=duration,
    )


def _check_features(snapshots: Snapshots, bundle: ModelBundle) -> None:
    missing = [name for name in bundle.spec.numeric if name not in snapshots.spec.numeric]
    missing += [name for name in bundle.spec.categorical if name not in snapshots.spec.categorical]
    if missing:
        raise ModelError(
            f"the model was trained on feature(s) {', '.join(missing)} that the snapshot table "
            "no longer has with the same type; retrain with `cohortcast train`"
        )


def score(
    conn: psycopg.Connection,
    *,
    run_id: str | None = None,
    config: ScoringConfig | None = None,
    before_publish: Callable[[str], None] | None = None,
) -> ScoreResult:
    """Score the latest snapshot with a recorded run (default: the latest) and publish.

    With `before_publish`, the new predictions are first committed to a staging table and
    the callable is given its name (the quality gate checks it there); when it raises,
    nothing published changes.
    """
    config = config or ScoringConfig()
    with threadpool_limits(limits=config.threads):
        return _score(conn, run_id, config, before_publish)


def _score(
    conn: psycopg.Connection,
    run_id: str | None,
    config: ScoringConfig,
    before_publish: Callable[[str], None] | None,
) -> ScoreResult:
    started = time.monotonic()
    was_idle = _is_idle(conn)
    run = fetch_run(conn, run_id)
    bundle = load_artifact(
        Path(run.artifact_path),
        expected_sha256=run.artifact_sha256,
        recorded_versions=run.library_versions,
    )
    snapshots = load_snapshots(conn)
    _finish_reads(conn, was_idle)
    _check_features(snapshots, bundle)
    frame = snapshots.frame
    latest = pd.Timestamp(frame[AS_OF_DATE].max())
    current = frame.loc[frame[AS_OF_DATE] == latest]
    predictions = score_rows(bundle, current, config.risk_bands)
    in_window = frame[AS_OF_DATE].between(
        pd.Timestamp(run.training_window_start), pd.Timestamp(run.training_window_end)
    )
    reference = frame.loc[in_window & frame[LABEL].notna()]
    drift = drift_module.feature_drift(reference, current, bundle.spec, config.psi_threshold)
    scored_at = datetime.now(UTC)
    if before_publish is not None:
        before_publish(stage_predictions(conn, predictions, run.run_id, scored_at))
    with conn.transaction():
        count = publish_predictions(conn, predictions, run.run_id, scored_at)
        drift_module.write_drift(conn, run.run_id, drift, run.training_window_end, latest.date())
        mark_published(conn, run.run_id)
    bands = predictions["risk_band"].value_counts()
    band_counts = {band: int(bands.get(band, 0)) for band in ("high", "medium", "low")}
    drifted = [str(name) for name in drift.loc[drift["is_drifted"], "feature"]]
    duration = time.monotonic() - started
    logger.info(
        "published %d predictions for %s from run %s (%s): %s; in %.1f s",
        count,
        latest.date(),
        run.run_id,
        run.model_name,
        ", ".join(f"{band} {n}" for band, n in band_counts.items()),
        duration,
    )
    return ScoreResult(
        run_id=run.run_id,
        model_name=run.model_name,
        scored_as_of_date=latest.date(),
        scored_row_count=count,
        risk_band_counts=band_counts,
        drifted_features=drifted,
        duration_seconds=duration,
    )


def train_and_publish(
    conn: psycopg.Connection,
    artifacts_dir: Path,
    *,
    run_id: str | None = None,
    dbt_invocation_id: str | None = None,
    training: TrainingConfig | None = None,
    scoring: ScoringConfig | None = None,
    before_publish: Callable[[str], None] | None = None,
) -> RunSummary:
    """`train` then `score` with the run just trained."""
    trained = train(
        conn,
        artifacts_dir,
        run_id=run_id,
        dbt_invocation_id=dbt_invocation_id,
        config=training,
    )
    scored = score(conn, run_id=trained.run_id, config=scoring, before_publish=before_publish)
    return RunSummary(train=trained, score=scored)
