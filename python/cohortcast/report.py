"""The short summary printed at the end of `cohortcast run`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from cohortcast.pipeline import RunReport

TABLES = (
    ("cohort membership", "analytics.cohort_membership"),
    ("cohort retention", "analytics.cohort_retention"),
    ("features", "analytics.customer_feature_snapshots"),
    ("predictions", "ml.customer_churn_predictions"),
    ("risk by cohort", "analytics.churn_risk_by_cohort"),
    ("model runs", "ml.model_runs"),
)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}"


def print_summary(console: Console, report: RunReport) -> None:
    facts = report.facts
    total = sum(seconds for _, seconds, _ in report.steps)
    console.print()
    console.print(f"[bold]cohortcast run complete[/bold] in {total:.0f} s")
    console.print(
        f"  customers: {_number(facts.get('customers'))}   cohorts: "
        f"{_number(facts.get('cohorts'))} groups in "
        f"{_number(facts.get('cohort_definitions'))} definitions"
    )
    model_lines = facts.get("model_lines")
    if model_lines:
        table = Table(title="backtest (mean over cutoffs)", title_justify="left", box=None)
        for heading in ("model", "ROC AUC", "PR AUC", "Brier"):
            table.add_column(heading, justify="left" if heading == "model" else "right")
        for name, roc_auc, pr_auc, brier in model_lines:
            table.add_row(name, _number(roc_auc), _number(pr_auc), _number(brier))
        console.print(table)
    if "holdout_roc_auc" in facts:
        console.print(
            f"  model: {facts.get('published_model', 'candidate')} "
            f"(run {facts.get('run_id')}), ROC AUC {_number(facts['holdout_roc_auc'])} "
            f"on the held-out snapshot; base rate {_number(facts.get('base_rate'))}"
        )
    if "predictions" in facts:
        console.print(
            f"  predictions: {_number(facts['predictions'])} customers scored at "
            f"{facts.get('scored_as_of_date')}"
        )
    for warning in facts.get("warnings", []):
        console.print(f"  [yellow]warning:[/yellow] {warning}")
    settings = report.settings
    console.print(f"  tables in {settings.describe()}:")
    for label, relation in TABLES:
        console.print(f"    {label:<18} {relation}")
    if settings.embedded_server is not None:
        console.print(f"  query them: {settings.embedded_server.psql_command()}")
