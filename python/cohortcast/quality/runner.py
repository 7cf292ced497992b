"""Run the quality gate: validate tables with Great Expectations, record, and stop on failure.

`run_gate(settings, step)` checks the tables of one pipeline step, writes one row to
`quality.validation_runs` and one per expectation to `quality.validation_results`, builds GX
Data Docs, and raises `QualityGateError` when a blocking expectation failed. Warnings are
logged and recorded and the run goes on.

GX runs in an ephemeral context (nothing is written to a `gx/` project directory) against a
Postgres data source built from the same `ConnectionSettings` as everything else. The
SQLAlchemy URL is assembled field by field with `URL.create`, over TCP, and the password
travels in `connect_args` instead of the URL, so it never reaches a GX config, a log line or
the Data Docs, and no character in it needs escaping.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cohortcast.errors import QualityGateError
from cohortcast.quality import results, suites, thresholds
from cohortcast.quality.suites import TABLE_BATCH, Check, Severity, SuiteDefinition, SuiteInputs
from cohortcast.warehouse import ConnectionSettings, connect, table_columns

logger = logging.getLogger(__name__)

#: Which suites each pipeline step runs. `check` is `cohortcast check`: everything.
STEP_SUITES: Mapping[str, tuple[str, ...]] = {
    "raw": ("raw_lines",),
    "features": ("feature_snapshots",),
    "predictions": ("churn_predictions",),
    "check": ("raw_lines", "feature_snapshots", "churn_predictions"),
}
DEFAULT_DOCS_DIR = Path("target") / "data_docs"
DATA_DOCS_SITE = "cohortcast"
MESSAGE_FAILURE_LIMIT = 5


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation as checked: what was expected of which table, and what was found."""

    table_name: str
    expectation: str
    column_name: str | None
    description: str
    severity: Severity
    success: bool
    observed_value: str | None
    failing_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateResult:
    """Everything one gate run found, as recorded in the quality tables."""

    validation_run_id: str
    step: str
    started_at: datetime
    outcomes: tuple[ExpectationOutcome, ...]
    data_docs_path: Path
    duration_seconds: float
    tables: Mapping[str, str] = field(default_factory=dict)

    @property
    def blocking_failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success and o.severity is Severity.BLOCKING)

    @property
    def warnings(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success and o.severity is Severity.WARNING)

    @property
    def success(self) -> bool:
        return not self.blocking_failures


@dataclass(frozen=True)
class _Target:
    """One suite about to run: where its rows come from and the checks built for them."""

    suite: SuiteDefinition
    table_name: str
    source_sql: str
    schema: str | None
    table: str | None
    query: str | None
    columns: tuple[str, ...]
    checks: tuple[Check, ...]


def run_gate(
    settings: ConnectionSettings,
    step: str,
    *,
    tables: Mapping[str, str] | None = None,
    docs_dir: Path = DEFAULT_DOCS_DIR,
    accept_row_count_change: bool = False,
    raise_on_failure: bool = True,
) -> GateResult:
    """Validate the tables of pipeline `step`, record the results, and stop on a blocking failure.

    `step` is one of `STEP_SUITES` (`raw`, `features`, `predictions`, `check`). `tables` maps a
    suite name to the relation it should check instead of its default (`schema.table`), or to
    a `select` query: the pipeline checks new predictions in a staging table with
    `tables={"churn_predictions": "ml.<staging table>"}` before they replace the published
    ones. `accept_row_count_change` turns the row-count band into a warning for this run, so
    that an expected jump in size (a backfill) is accepted and becomes the new baseline.

    Returns the `GateResult` (its `data_docs_path` is the Data Docs index page) and raises
    `QualityGateError` naming each failed blocking expectation, its table and a few failing
    values, after the results have been recorded.
    """
    if step not in STEP_SUITES:
        raise QualityGateError(
            f"unknown quality gate step {step!r}; use one of {', '.join(STEP_SUITES)}",
            step="quality",
        )
    overrides = dict(tables or {})
    unknown = sorted(set(overrides) - set(suites.SUITES))
    if unknown:
        raise QualityGateError(
            f"no quality suite named {', '.join(unknown)}; suites are {', '.join(suites.SUITES)}",
            step=step,
        )
    started = time.monotonic()
    started_at = datetime.now(UTC)
    validation_run_id = f"{started_at:%Y%m%dT%H%M%SZ}-{step}-{uuid.uuid4().hex[:8]}"

    with connect(settings) as conn:
        results.ensure_quality_tables(conn)
        targets = [
            _prepare_target(
                conn,
                suites.SUITES[name],
                overrides.get(name, suites.SUITES[name].default_relation),
                accept_row_count_change=accept_row_count_change,
                now=started_at,
                step=step,
            )
            for name in STEP_SUITES[step]
        ]
        conn.commit()

    docs_dir = docs_dir.resolve()
    outcomes, index_page = _validate(settings, targets, validation_run_id, docs_dir)
    gate = GateResult(
        validation_run_id=validation_run_id,
        step=step,
        started_at=started_at,
        outcomes=tuple(outcomes),
        data_docs_path=index_page,
        duration_seconds=time.monotonic() - started,
        tables={target.suite.name: target.table_name for target in targets},
    )

    with connect(settings) as conn:
        results.record_run(conn, _run_record(gate), _result_records(gate, datetime.now(UTC)))

    for warning in gate.warnings:
        logger.warning("quality warning on %s: %s", warning.table_name, _describe(warning))
    logger.info(
        "quality gate %s (%s): %d expectations, %d blocking failures, %d warnings in %.1f s; "
        "Data Docs: %s",
        step,
        ", ".join(gate.tables.values()),
        len(gate.outcomes),
        len(gate.blocking_failures),
        len(gate.warnings),
        gate.duration_seconds,
        gate.data_docs_path,
    )
    if raise_on_failure and not gate.success:
        raise QualityGateError(failure_message(gate), step=step)
    return gate


def failure_message(gate: GateResult) -> str:
    """One paragraph naming each failed blocking expectation, its table and failing values."""
    failures = gate.blocking_failures
    lines = [
        f"quality gate '{gate.step}' stopped the run: {len(failures)} blocking "
        f"expectation(s) failed"
    ]
    lines += [f"  {f.table_name}: {_describe(f)}" for f in failures[:MESSAGE_FAILURE_LIMIT]]
    if len(failures) > MESSAGE_FAILURE_LIMIT:
        lines.append(f"  ... and {len(failures) - MESSAGE_FAILURE_LIMIT} more")
    if any(
        f.expectation == results.ROW_COUNT_EXPECTATION and "last accepted run" in f.description
        for f in failures
    ):
        lines.append(
            "If the new row count is expected (a backfill, a new source), accept it once with "
            "accept_row_count_change (cohortcast check --accept-row-count-change)."
        )
    lines.append(
        f"Fix the data upstream and run again. Details: quality.validation_results where "
        f"validation_run_id = '{gate.validation_run_id}'; Data Docs: {gate.data_docs_path}"
    )
    return "\n".join(lines)


def _describe(outcome: ExpectationOutcome) -> str:
    column = f" on {outcome.column_name}" if outcome.column_name else ""
    text = (
        f"{outcome.expectation}{column} ({outcome.description}): observed {outcome.observed_value}"
    )
    if outcome.failing_examples:
        text += "; e.g. " + "; ".join(outcome.failing_examples)
    return text


def _split_relation(relation: str) -> tuple[str, str]:
    schema, dot, table = relation.partition(".")
    if not dot or not schema or not table:
        raise QualityGateError(
            f"{relation!r} is not a schema-qualified table name; pass it as schema.table",
            step="quality",
        )
    return schema, table


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_query(relation: str) -> bool:
    return relation.lstrip().split(None, 1)[0].lower() in {"select", "with"}


def _prepare_target(
    conn: psycopg.Connection,
    suite: SuiteDefinition,
    relation: str,
    *,
    accept_row_count_change: bool,
    now: datetime,
    step: str,
) -> _Target:
    """Find the relation's columns and its accepted baseline, and build the suite's checks."""
    if _is_query(relation):
        query = relation.strip().rstrip(";")
        with conn.cursor() as cursor:
            cursor.execute(f"select * from ({query}) as checked_rows limit 0")
            columns = tuple(column.name for column in cursor.description or [])
        table_name = f"{suite.default_relation} (query)"
        schema, table, source_sql = None, None, f"({query}) as checked_rows"
    else:
        schema, table = _split_relation(relation)
        columns = tuple(table_columns(conn, schema, table))
        if not columns:
            raise QualityGateError(
                f"{relation} does not exist, so the {suite.name} suite cannot check it; "
                "build it first with `cohortcast run --demo` (or `cohortcast load-demo` "
                "for the raw data alone) and check again",
                step=step,
            )
        table_name, query, source_sql = relation, None, f"{_quote(schema)}.{_quote(table)}"
    inputs = SuiteInputs(
        relation=table_name,
        columns=columns,
        baseline_row_count=results.previous_accepted_row_count(conn, table_name),
        accept_row_count_change=accept_row_count_change,
        now=now,
    )
    return _Target(
        suite=suite,
        table_name=table_name,
        source_sql=source_sql,
        schema=schema,
        table=table,
        query=query,
        columns=columns,
        checks=tuple(suite.build(inputs)),
    )


def _validate(
    settings: ConnectionSettings,
    targets: Sequence[_Target],
    validation_run_id: str,
    docs_dir: Path,
) -> tuple[list[ExpectationOutcome], Path]:
    """Run every target's checks through GX and build the Data Docs."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = _ephemeral_context(docs_dir)
    # Tables are read in place. A derived query is materialised once as a temporary table
    # (GX's create_temp_table), instead of being recomputed by every metric that reads it.
    datasources = {
        materialise: context.data_sources.add_postgres(
            name="derived" if materialise else "warehouse",
            connection_string=_sqlalchemy_url(settings),
            create_temp_table=materialise,
            kwargs={"connect_args": _connect_args(settings)},
        )
        for materialise in (False, True)
    }
    run_id = RunIdentifier(run_name=validation_run_id, run_time=datetime.now(UTC))
    outcomes: list[ExpectationOutcome] = []
    try:
        for target in targets:
            batches = sorted({c.batch for c in target.checks}, key=lambda b: b != TABLE_BATCH)
            for batch in batches:
                checks = [c for c in target.checks if c.batch == batch]
                started = time.monotonic()
                try:
                    result = _run_batch(context, datasources, target, batch, checks, run_id)
                except Exception as exc:
                    # A batch GX cannot even read (a derived query over a column that is
                    # missing, a broken query) fails each of its checks, recorded as such.
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    logger.warning("could not check %s (%s): %s", target.table_name, batch, reason)
                    outcomes += [_error_outcome(target.table_name, c, reason) for c in checks]
                else:
                    outcomes += [
                        _outcome(target.table_name, expectation_result)
                        for expectation_result in result.results
                    ]
                logger.info(
                    "checked %s (%s, %d expectation%s) in %.1f s",
                    target.table_name,
                    batch,
                    len(checks),
                    "" if len(checks) == 1 else "s",
                    time.monotonic() - started,
                )
        context.build_data_docs(site_names=[DATA_DOCS_SITE])
    finally:
        for datasource in datasources.values():
            datasource.get_engine().dispose()
    return outcomes, docs_dir / "index.html"


def _run_batch(
    context: Any,
    datasources: Mapping[bool, Any],
    target: _Target,
    batch: str,
    checks: Sequence[Check],
    run_id: Any,
) -> Any:
    """Validate one batch of a target with its checks; returns GX's suite validation result."""
    import great_expectations as gx

    name = f"{target.suite.name}.{batch}"
    batch_definition = _batch_definition(datasources[batch != TABLE_BATCH], target, batch)
    suite = context.suites.add(
        gx.ExpectationSuite(name=name, expectations=[c.expectation for c in checks])
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    columns = _batch_columns(target, batch)
    index_columns = [c for c in target.suite.index_columns.get(batch, ()) if c in columns]
    return definition.run(
        run_id=run_id,
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": thresholds.FAILING_EXAMPLE_COUNT,
            "unexpected_index_column_names": index_columns,
        },
    )


def _ephemeral_context(docs_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            DATA_DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _sqlalchemy_url(settings: ConnectionSettings) -> str:
    """The URL without the password (it goes in `connect_args`): safe in any GX config.

    A host that is a unix-socket directory (`PGHOST=/var/run/postgresql`) cannot be written
    as a URL host that GX's Postgres URL validation accepts, so the URL names `localhost` and
    the real host travels in `connect_args`, which libpq prefers over the URL.
    """
    from sqlalchemy.engine import URL

    url = URL.create(
        "postgresql+psycopg2",
        username=settings.user,
        host="localhost" if _is_socket_directory(settings.host) else settings.host,
        port=settings.port,
        database=settings.dbname,
    )
    return url.render_as_string(hide_password=False)


def _connect_args(settings: ConnectionSettings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": settings.connect_kwargs()["connect_timeout"],
        "application_name": "cohortcast-quality",
    }
    if _is_socket_directory(settings.host):
        args["host"] = settings.host
    if settings.password:
        args["password"] = settings.password
    return args


def _is_socket_directory(host: str) -> bool:
    return host.startswith("/")


def _batch_definition(datasource: Any, target: _Target, batch: str) -> Any:
    asset_name = f"{target.suite.name}.{batch}"
    if batch == TABLE_BATCH and target.query is None:
        asset = datasource.add_table_asset(
            name=asset_name, table_name=target.table, schema_name=target.schema
        )
    elif batch == TABLE_BATCH:
        asset = datasource.add_query_asset(name=asset_name, query=target.query)
    else:
        derive = target.suite.derived_batches[batch]
        asset = datasource.add_query_asset(name=asset_name, query=derive(target.source_sql))
    return asset.add_batch_definition_whole_table(name="whole")


def _batch_columns(target: _Target, batch: str) -> tuple[str, ...]:
    if batch == TABLE_BATCH:
        return target.columns
    return tuple(target.suite.index_columns.get(batch, ()))


def _outcome(table_name: str, result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ", ".join(kwargs["column_list"])
    meta = config.meta or {}
    severity = Severity(meta.get("cohortcast_severity", Severity.BLOCKING.value))
    return ExpectationOutcome(
        table_name=table_name,
        expectation=config.type,
        column_name=column,
        description=config.description or "",
        severity=severity,
        success=bool(result.success),
        observed_value=_observed(result),
        failing_examples=() if result.success else _examples(result),
    )


def _error_outcome(table_name: str, check: Check, reason: str) -> ExpectationOutcome:
    expectation = check.expectation
    column = getattr(expectation, "column", None)
    if column is None and getattr(expectation, "column_list", None):
        column = ", ".join(expectation.column_list)
    return ExpectationOutcome(
        table_name=table_name,
        expectation=expectation.expectation_type,
        column_name=column,
        description=expectation.description or "",
        severity=check.severity,
        success=False,
        observed_value=f"error: {reason}",
    )


def _observed(result: Any) -> str | None:
    exception = result.exception_info or {}
    if exception.get("raised_exception"):
        return "error: " + str(exception.get("exception_message", "")).strip()
    found = result.result or {}
    if "observed_value" in found:
        value = found["observed_value"]
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return None if value is None else str(value)
    if "unexpected_count" in found:
        count = found.get("element_count") or 0
        unexpected = found.get("unexpected_count") or 0
        percent = found.get("unexpected_percent") or 0.0
        return f"{unexpected} of {count} rows unexpected ({percent:.2f}%)"
    return None


def _examples(result: Any) -> tuple[str, ...]:
    found = result.result or {}
    rows = found.get("partial_unexpected_index_list") or found.get("partial_unexpected_list") or []
    return tuple(_example(row) for row in rows[: thresholds.FAILING_EXAMPLE_COUNT])


def _example(row: Any) -> str:
    if isinstance(row, Mapping):
        return ", ".join(f"{key}={value}" for key, value in row.items())
    return repr(row)


def _run_record(gate: GateResult) -> results.RunRecord:
    return results.RunRecord(
        validation_run_id=gate.validation_run_id,
        pipeline_step=gate.step,
        started_at=gate.started_at,
        success=gate.success,
        blocking_failures=len(gate.blocking_failures),
        warnings=len(gate.warnings),
        data_docs_path=str(gate.data_docs_path),
    )


def _result_records(gate: GateResult, checked_at: datetime) -> list[results.ResultRecord]:
    return [
        results.ResultRecord(
            validation_run_id=gate.validation_run_id,
            table_name=o.table_name,
            expectation=o.expectation,
            column_name=o.column_name,
            success=o.success,
            severity=o.severity.value,
            observed_value=o.observed_value,
            failing_examples="; ".join(o.failing_examples) or None,
            checked_at=checked_at,
        )
        for o in gate.outcomes
    ]
