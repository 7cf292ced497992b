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
    trained = facts.get("train")
    if trained is not None:
        table = Table(
            title=f"backtest over {len(trained.cutoffs)} cutoffs "
            f"({trained.cutoffs[0]} .. {trained.cutoffs[-1]}), mean per cutoff",
            title_justify="left",
            box=None,
            padding=(0, 2),
        )
        for heading in ("model", "ROC AUC", "PR AUC", "Brier", "log loss"):
            table.add_column(heading, justify="left" if heading == "model" else "right")
        for name, metrics in trained.backtest_means.items():
            marker = " (published)" if name == trained.published_model else ""
            table.add_row(
                f"{name}{marker}",
                *(_number(metrics.get(key)) for key in ("roc_auc", "pr_auc", "brier", "log_loss")),
            )
        console.print(table)
        candidate = trained.backtest_means.get("candidate", {})
        console.print(
            f"  model run {trained.run_id}: candidate ROC AUC {_number(candidate.get('roc_auc'))}"
            f" against a base rate of {_number(trained.base_rate)}"
        )
        console.print(f"  published {trained.published_model}: {trained.selection_reason}")
    scored = facts.get("score")
    if scored is not None:
        bands = ", ".join(f"{band} {count:,}" for band, count in scored.risk_band_counts.items())
        console.print(
            f"  predictions: {scored.scored_row_count:,} customers scored at "
            f"{scored.scored_as_of_date} ({bands})"
        )
    for warning in facts.get("warnings", []):
        console.print(f"  [yellow]warning:[/yellow] {warning}")
    if facts.get("data_docs"):
        console.print(f"  data quality report: {facts['data_docs']}")
    settings = report.settings
    console.print(f"  tables in {settings.describe()}:")
    for label, relation in TABLES:
        console.print(f"    {label:<18} {relation}")
    if settings.embedded_server is not None:
        console.print(f"  query them: {settings.embedded_server.psql_command()}")
    else:
        console.print(
            f"  query them: psql -h {settings.host} -p {settings.port} -U {settings.user} "
            f"{settings.dbname}"
        )
