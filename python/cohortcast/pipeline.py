"""`cohortcast run`: the whole loop, one named step at a time.

A failure at any step raises an error that names the step; nothing before publishing
touches the published predictions, and publishing is one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortcast import dbt_runner, demo, ml
from cohortcast.errors import CohortcastError, ConfigError
from cohortcast.warehouse import ConnectionSettings, connect, run_lock

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    project_dir: Path
    load_demo: bool = False
    data_file: Path | None = None
    artifacts_dir: Path | None = None
    accept_row_count_change: bool = False
    metabase_sync: bool = False

    @property
    def artifacts(self) -> Path:
        return self.artifacts_dir or self.project_dir / ".cohortcast" / "artifacts"

    @property
    def data_docs(self) -> Path:
        return self.project_dir / "target" / "data_docs"


@dataclass
class RunReport:
    """What the summary at the end of a run shows."""

    settings: ConnectionSettings
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


@contextmanager
def step(report: RunReport, name: str) -> Iterator[dict[str, str]]:
    """Time a step, log its outcome, and name it in any error it raises."""
    logger.info("▶ %s", name)
    started = time.monotonic()
    detail: dict[str, str] = {}
    try:
        yield detail
    except CohortcastError as exc:
        exc.step = name
        raise
    seconds = time.monotonic() - started
    note = detail.get("note", "")
    report.steps.append((name, seconds, note))
    logger.info("✔ %s%s (%.1f s)", name, f": {note}" if note else "", seconds)


def run(settings: ConnectionSettings, options: RunOptions) -> RunReport:
    report = RunReport(settings=settings)
    project_dir = options.project_dir
    with run_lock(settings):
        if options.load_demo:
            with step(report, "load demo data") as detail, connect(settings) as conn:
                loaded = demo.load_online_retail(
                    conn, options.data_file or project_dir / demo.DEFAULT_DATA_FILE
                )
                detail["note"] = (
                    f"{loaded.row_count:,} rows already loaded"
                    if loaded.skipped
                    else f"{loaded.row_count:,} rows loaded"
                )
        with step(report, "check raw data"), connect(settings) as conn:
            demo.check_raw_table(conn)
        _quality_gate(report, settings, options, "raw")
        with step(report, "dbt build: staging, cohorts, features") as detail:
            outcome = dbt_runner.build_upstream(settings, project_dir)
            detail["note"] = outcome.counts()
            report.facts["dbt_invocation_id"] = outcome.invocation_id
        with step(report, "create the tables Python writes"):
            dbt_runner.create_python_tables(settings, project_dir)
        _quality_gate(report, settings, options, "features")
        training, scoring = ml_configs(project_dir)
        with step(report, "train and backtest") as detail, connect(settings) as conn:
            trained = ml.train(
                conn,
                options.artifacts,
                dbt_invocation_id=report.facts.get("dbt_invocation_id"),
                config=training,
            )
            detail["note"] = (
                f"run {trained.run_id}, {trained.training_row_count:,} rows from "
                f"{trained.snapshot_count} snapshots; publishing {trained.published_model}"
            )
            report.facts["train"] = trained
        publish(report, settings, options, run_id=trained.run_id, scoring=scoring)
        if options.metabase_sync:
            with step(report, "metabase sync") as detail:
                from cohortcast.metabase.commands import sync_command

                # dbt build just wrote target/manifest.json; no parse needed.
                synced = sync_command(project_dir)
                detail["note"] = synced.summary().splitlines()[0]
        with connect(settings) as conn:
            report.facts.update(_warehouse_facts(conn))
    return report


def publish(
    report: RunReport,
    settings: ConnectionSettings,
    options: RunOptions,
    *,
    run_id: str | None,
    scoring: ml.ScoringConfig,
) -> None:
    """Score, gate the new predictions, publish them, and rebuild the marts on them.

    `cohortcast run` and `cohortcast score` both publish this way, so neither can put
    unchecked predictions in front of Metabase or leave its marts behind.
    """
    with step(report, "score and publish predictions") as detail, connect(settings) as conn:
        scored = ml.score(
            conn,
            run_id=run_id,
            config=scoring,
            before_publish=lambda staged: _quality_gate(
                report, settings, options, "predictions", staged
            ),
        )
        detail["note"] = f"{scored.scored_row_count:,} customers at {scored.scored_as_of_date}"
        report.facts["score"] = scored
        for feature in scored.drifted_features:
            report.facts.setdefault("warnings", []).append(
                f"feature {feature} drifted since training (PSI over threshold)"
            )
    with step(report, "dbt build: marts on predictions") as detail:
        outcome = dbt_runner.build_downstream(settings, options.project_dir)
        detail["note"] = outcome.counts()


def score_only(settings: ConnectionSettings, options: RunOptions, run_id: str | None) -> RunReport:
    """`cohortcast score`: publish with a recorded model run (default: the latest)."""
    report = RunReport(settings=settings)
    with run_lock(settings):
        with step(report, "create the tables Python writes"):
            dbt_runner.create_python_tables(settings, options.project_dir)
        _, scoring = ml_configs(options.project_dir)
        publish(report, settings, options, run_id=run_id, scoring=scoring)
    return report


def ml_configs(project_dir: Path) -> tuple[ml.TrainingConfig, ml.ScoringConfig]:
    """Training and scoring settings from the dbt project's vars, so both sides agree."""
    project = dbt_runner.project_vars(project_dir)
    training = ml.TrainingConfig(label_window_days=int(project.get("churn_window_days", 90)))
    bands = project.get("churn_risk_band_thresholds") or {}
    defaults = ml.RiskBands()
    try:
        scoring = ml.ScoringConfig(
            risk_bands=ml.RiskBands(
                medium=float(bands.get("medium", defaults.medium)),
                high=float(bands.get("high", defaults.high)),
            ),
            psi_threshold=float(project.get("drift_psi_threshold", 0.2)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            "dbt_project.yml: churn_risk_band_thresholds and drift_psi_threshold must be "
            f"numbers ({exc})"
        ) from None
    return training, scoring


def _quality_gate(
    report: RunReport,
    settings: ConnectionSettings,
    options: RunOptions,
    suite_step: str,
    predictions_relation: str | None = None,
) -> None:
    """Run one step's Great Expectations suites; a blocking failure stops the run."""
    from cohortcast import quality

    tables = {"churn_predictions": predictions_relation} if predictions_relation else None
    with step(report, f"quality gate: {suite_step}") as detail:
        gate = quality.run_gate(
            settings,
            suite_step,
            tables=tables,
            docs_dir=options.data_docs,
            accept_row_count_change=options.accept_row_count_change,
        )
        warnings = len(gate.warnings)
        detail["note"] = "passed" + (f" with {warnings} warning(s)" if warnings else "")
        report.facts["data_docs"] = gate.data_docs_path
        for outcome in gate.warnings:
            report.facts.setdefault("warnings", []).append(
                f"{outcome.table_name}: {outcome.expectation} (observed {outcome.observed_value})"
            )


def _warehouse_facts(conn: Any) -> dict[str, Any]:
    row = conn.execute(
        """
        select
            (select count(*) from analytics.customers),
            (select count(distinct (cohort_name, cohort_key)) from analytics.cohort_membership),
            (select count(distinct cohort_name) from analytics.cohort_membership)
        """
    ).fetchone()
    return {"customers": row[0], "cohorts": row[1], "cohort_definitions": row[2]}
