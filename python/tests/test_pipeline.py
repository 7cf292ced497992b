"""`cohortcast run` end to end on the bundled data, and a broken upstream load after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortcast import pipeline
from cohortcast.errors import QualityGateError
from cohortcast.warehouse import ConnectionSettings, connect

# data/online_retail.SOURCE.md: 4,372 customers; first purchases by month sum to 4,339, of
# which 41 fall in December 2011, after the last monthly snapshot (2011-12-01).
CUSTOMERS = 4_372
SCORED_AT_LAST_SNAPSHOT = 4_339 - 41


def _predictions(settings: ConnectionSettings) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(
            "select * from ml.customer_churn_predictions order by customer_id"
        ).fetchall()


def test_run_publishes_then_a_doubled_load_stops_the_next_run(
    fresh_database: ConnectionSettings, repo_root: Path, tmp_path: Path
) -> None:
    options = pipeline.RunOptions(
        project_dir=repo_root, load_demo=True, artifacts_dir=tmp_path / "artifacts"
    )
    report = pipeline.run(fresh_database, options)

    assert report.facts["customers"] == CUSTOMERS
    published = _predictions(fresh_database)
    assert len(published) == SCORED_AT_LAST_SNAPSHOT
    with connect(fresh_database) as conn:
        runs = conn.execute("select status, count(*) from ml.model_runs group by 1").fetchall()
        marts = conn.execute(
            "select sum(band_customer_count) from analytics.churn_risk_by_cohort"
            " where cohort_name = 'acquisition_month'"
        ).fetchone()
    assert runs == [("published", 1)]
    assert marts == (SCORED_AT_LAST_SNAPSHOT,)

    # `cohortcast score` alone publishes the same way: gate first, marts after.
    pipeline.score_only(fresh_database, options, None)
    with connect(fresh_database) as conn:
        gated = conn.execute(
            "select count(*) from quality.validation_runs where pipeline_step = 'predictions'"
        ).fetchone()
        mart_runs = conn.execute(
            "select count(distinct model_run_id) from analytics.churn_risk_by_cohort"
        ).fetchone()
    assert gated == (2,)
    assert mart_runs == (1,)
    published = _predictions(fresh_database)
    assert len(published) == SCORED_AT_LAST_SNAPSHOT

    # A broken upstream load: every raw line inserted a second time.
    with connect(fresh_database) as conn:
        conn.execute(
            "insert into raw.online_retail_lines (invoice_no, stock_code, description,"
            " quantity, invoice_date, unit_price, customer_id, country)"
            " select invoice_no, stock_code, description, quantity, invoice_date,"
            " unit_price, customer_id, country from raw.online_retail_lines"
        )
    again = pipeline.RunOptions(project_dir=repo_root, artifacts_dir=tmp_path / "artifacts")
    with pytest.raises(QualityGateError) as stopped:
        pipeline.run(fresh_database, again)
    assert stopped.value.step == "quality gate: raw"
    assert "raw.online_retail_lines" in str(stopped.value)
    assert _predictions(fresh_database) == published


def test_ml_settings_come_from_the_dbt_project_vars(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text(
        "name: x\nvars:\n  churn_window_days: 60\n"
        "  churn_risk_band_thresholds: {medium: 0.25, high: 0.5}\n"
        "  drift_psi_threshold: 0.1\n"
    )
    training, scoring = pipeline.ml_configs(tmp_path)
    assert training.label_window_days == 60
    assert (scoring.risk_bands.medium, scoring.risk_bands.high) == (0.25, 0.5)
    assert scoring.psi_threshold == 0.1


def test_bad_ml_vars_are_a_config_error(tmp_path: Path) -> None:
    from cohortcast.errors import ConfigError

    (tmp_path / "dbt_project.yml").write_text(
        "name: x\nvars:\n  churn_risk_band_thresholds: {medium: high}\n"
    )
    with pytest.raises(ConfigError, match="must be numbers"):
        pipeline.ml_configs(tmp_path)


def test_dbt_failures_keep_the_cause_not_the_header() -> None:
    from cohortcast.dbt_runner import _cause

    message = (
        "Compilation Error in model cohort_membership (models/cohorts/cohort_membership.sql)\n"
        "  cohort model 'early_bird' breaks the cohort contract: rule 'has every contract "
        "column': it has no column exited_at\n"
    )
    assert _cause(message) == (
        "cohort model 'early_bird' breaks the cohort contract: rule 'has every contract "
        "column': it has no column exited_at"
    )
    assert _cause("Got 3 results, configured to fail if != 0") == (
        "Got 3 results, configured to fail if != 0"
    )
