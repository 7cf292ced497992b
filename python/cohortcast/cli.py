"""The `cohortcast` command: a thin layer over the modules that do the work.

Errors of ours become one line and a non-zero exit; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from cohortcast import __version__, dbt_runner, demo, embedded
from cohortcast.errors import CohortcastError, ConfigError
from cohortcast.warehouse import (
    ConnectionSettings,
    connect,
    explicit_settings_present,
    resolve_settings,
)

logger = logging.getLogger("cohortcast")
# Logs are read in CI output and piped to files too: do not wrap them at 80 columns there.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
error_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

QUIET_LOGGERS = (
    "great_expectations",
    "dbt",
    "urllib3",
    "sqlalchemy",
    "skops",
    "py.warnings",
)


def _configure_logging(debug: bool) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(
            console=error_console,
            show_path=False,
            show_level=debug,
            markup=False,
            rich_tracebacks=debug,
            log_time_format="%H:%M:%S",
        )
        line_format = "%(message)s"
    else:
        # Piped to a file or CI: plain lines, never wrapped, so commands copy-paste whole.
        handler = logging.StreamHandler(sys.stderr)
        line_format = "%(asctime)s %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=line_format,
        datefmt="%H:%M:%S",
        handlers=[handler],
    )
    logging.captureWarnings(True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if debug else logging.ERROR)


def _project_dir(args: argparse.Namespace) -> Path:
    if args.project_dir:
        return Path(args.project_dir).resolve()
    return dbt_runner.find_project_dir()


def _settings(args: argparse.Namespace) -> ConnectionSettings:
    settings = resolve_settings(args.dsn, workdir=Path.cwd())
    if settings.embedded_server is not None:
        server = settings.embedded_server
        verb = "started" if server.started_now else "reusing"
        logger.info(
            "embedded Postgres (%s) in %s; connect with: %s",
            verb,
            server.root,
            server.psql_command(),
        )
    else:
        logger.info("warehouse: %s (from %s)", settings.describe(), settings.source)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from cohortcast import pipeline, report

    project_dir = _project_dir(args)
    settings = _settings(args)
    options = pipeline.RunOptions(
        project_dir=project_dir,
        load_demo=args.demo,
        data_file=Path(args.data_file) if args.data_file else None,
        accept_row_count_change=args.accept_row_count_change,
        metabase_sync=args.metabase_sync,
    )
    result = pipeline.run(settings, options)
    report.print_summary(console, result)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    project_dir = _project_dir(args)
    settings = _settings(args)
    connect(settings).close()  # a wrong server fails now, not after loading GX

    from cohortcast import quality

    gate = quality.run_gate(
        settings,
        args.step,
        docs_dir=project_dir / "target" / "data_docs",
        accept_row_count_change=args.accept_row_count_change,
    )
    console.print(
        f"quality gate {args.step}: passed with {len(gate.warnings)} warning(s); "
        f"Data Docs: {gate.data_docs_path}"
    )
    return 0


def cmd_load_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = Path(args.data_file) if args.data_file else _project_dir(args) / demo.DEFAULT_DATA_FILE
    with connect(settings) as conn:
        loaded = demo.load_online_retail(conn, path, replace=args.replace)
    state = "already loaded" if loaded.skipped else "loaded"
    console.print(f"{loaded.row_count:,} rows {state} in raw.{demo.TABLE}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    settings = _settings(args)
    outcome = dbt_runner.invoke(settings, _project_dir(args), "build", args.dbt_args)
    console.print(outcome.describe())
    return 0


def _artifacts_dir(project_dir: Path) -> Path:
    return project_dir / ".cohortcast" / "artifacts"


def cmd_train(args: argparse.Namespace) -> int:
    from cohortcast import ml, pipeline

    project_dir = _project_dir(args)
    settings = _settings(args)
    dbt_runner.create_python_tables(settings, project_dir)
    training, _ = pipeline.ml_configs(project_dir)
    with connect(settings) as conn:
        trained = ml.train(conn, _artifacts_dir(project_dir), config=training)
    console.print(
        f"trained run {trained.run_id}: {trained.published_model} chosen "
        f"({trained.selection_reason}); artifact {trained.artifact_path}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from cohortcast import pipeline

    project_dir = _project_dir(args)
    report = pipeline.score_only(
        _settings(args), pipeline.RunOptions(project_dir=project_dir), args.run_id
    )
    scored = report.facts["score"]
    console.print(
        f"published {scored.scored_row_count:,} predictions at {scored.scored_as_of_date} "
        f"from run {scored.run_id} ({scored.model_name}); marts on them rebuilt"
    )
    return 0


def cmd_metabase_import(args: argparse.Namespace) -> int:
    from cohortcast.metabase.client import MetabaseSettings
    from cohortcast.metabase.commands import import_cohort_command

    MetabaseSettings.from_environment()  # says what is missing before touching any database

    imported = import_cohort_command(
        args.card,
        args.name,
        _settings(args),
        export_format=args.format,
        customer_column=args.column,
        parameters_json=args.parameters,
    )
    console.print(imported.summary())
    return 0


def cmd_metabase_sync(args: argparse.Namespace) -> int:
    from cohortcast.metabase.commands import check_sync_settings, sync_command

    check_sync_settings(args.database, os.environ)  # before touching any database

    result = sync_command(
        _project_dir(args),
        plan=args.plan,
        database_name=args.database,
        with_metadata=args.metadata,
        warehouse=_settings(args),
    )
    console.print(result.summary())
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    if args.dsn or explicit_settings_present():
        raise ConfigError(
            "`cohortcast db` manages the embedded server, which is used only when neither "
            "--dsn nor any PG* variable is set; unset them (or drop --dsn) to use it"
        )
    root = embedded.state_root(Path.cwd())
    if args.db_command == "stop":
        stopped = embedded.stop(root)
        console.print("embedded Postgres stopped" if stopped else "embedded Postgres not running")
        return 0
    server = embedded.ensure_running(root)
    if args.db_command == "env":
        # For `eval "$(cohortcast db env)"`: point psql, plain dbt and friends at it.
        print(
            f"export PGHOST={embedded.HOST} PGPORT={server.port} "
            f"PGUSER={embedded.SUPERUSER} PGDATABASE={embedded.DATABASE}"
        )
        return 0
    console.print(f"embedded Postgres in {server.root} on port {server.port}")
    console.print(f"connect with: {server.psql_command()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohortcast",
        description="Churn predictions next to your dbt cohorts, on Postgres.",
    )
    parser.add_argument("--version", action="version", version=f"cohortcast {__version__}")
    _add_common_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the whole pipeline: build, check, train, publish")
    run.add_argument("--demo", action="store_true", help="load the bundled demo data first")
    run.add_argument("--data-file", help="demo data file (default data/online_retail.csv.gz)")
    run.add_argument(
        "--accept-row-count-change",
        action="store_true",
        help="accept a row count outside the band of the last accepted run (a backfill)",
    )
    run.add_argument(
        "--metabase-sync",
        action="store_true",
        help="end with `cohortcast metabase sync` (needs METABASE_URL and credentials)",
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="run the data-quality gate alone")
    check.add_argument(
        "step",
        nargs="?",
        default="check",
        choices=["check", "raw", "features", "predictions"],
        help="which suites: raw, features, predictions, or all three (check, the default)",
    )
    check.add_argument(
        "--accept-row-count-change",
        action="store_true",
        help="accept a row count outside the band of the last accepted run (a backfill)",
    )
    check.set_defaults(handler=cmd_check)

    load = commands.add_parser("load-demo", help="load the bundled data into raw.*")
    load.add_argument("--data-file", help="data file (default data/online_retail.csv.gz)")
    load.add_argument("--replace", action="store_true", help="drop and reload the raw table")
    load.set_defaults(handler=cmd_load_demo)

    build = commands.add_parser("build", help="dbt build against the resolved warehouse")
    build.add_argument("dbt_args", nargs=argparse.REMAINDER, help="extra dbt arguments")
    build.set_defaults(handler=cmd_build)

    train = commands.add_parser("train", help="backtest, choose and save a model (no publish)")
    train.set_defaults(handler=cmd_train)

    score = commands.add_parser("score", help="score the latest snapshot and publish")
    score.add_argument("--run-id", help="model run to score with (default: the latest)")
    score.set_defaults(handler=cmd_score)

    metabase = commands.add_parser(
        "metabase",
        help="Metabase: import a saved question as a cohort, or sync the shipped questions",
        description="Settings: METABASE_URL, and METABASE_API_KEY or "
        "METABASE_USERNAME/METABASE_PASSWORD.",
    )
    metabase_commands = metabase.add_subparsers(dest="metabase_command", required=True)
    importer = metabase_commands.add_parser(
        "import-cohort", help="export a saved question's rows into raw.metabase_cohort_<name>"
    )
    importer.add_argument("--card", type=int, required=True, help="the saved question's id")
    importer.add_argument("--name", required=True, help="cohort name (letters, digits, _)")
    importer.add_argument("--format", choices=["csv", "json"], default="csv")
    importer.add_argument("--column", help="the customer id column (default: found by name)")
    importer.add_argument("--parameters", help="the card's filter values, as a JSON list")
    importer.set_defaults(handler=cmd_metabase_import)
    syncer = metabase_commands.add_parser(
        "sync", help="create or update the questions and dashboard declared as dbt exposures"
    )
    syncer.add_argument("--plan", action="store_true", help="list the changes, change nothing")
    syncer.add_argument("--database", help="the warehouse's name in Metabase (METABASE_DATABASE)")
    syncer.add_argument(
        "--metadata", action="store_true", help="also push descriptions with dbt-metabase"
    )
    syncer.set_defaults(handler=cmd_metabase_sync)

    db = commands.add_parser(
        "db",
        help="the embedded Postgres: status (starts it), stop, or env (PG* exports for it)",
    )
    db.add_argument("db_command", choices=["status", "stop", "env"])
    db.set_defaults(handler=cmd_db)
    # The common options work after the command too: `cohortcast check --dsn ...`.
    subparsers = [*commands.choices.values(), *metabase_commands.choices.values()]
    for subparser in subparsers:
        if subparser is not metabase:
            _add_common_options(subparser, defaults=False)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--dsn, --project-dir and --debug; on a command, they only override when given."""
    unset = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--dsn",
        help="Postgres connection string; default: the PG* variables, else the embedded server",
        **unset,  # type: ignore[arg-type]
    )
    parser.add_argument(
        "--project-dir",
        help="dbt project directory (default: found from the current directory)",
        **unset,  # type: ignore[arg-type]
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="verbose logs and tracebacks",
        **unset,  # type: ignore[arg-type]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CohortcastError as exc:
        if args.debug:
            raise
        where = f"[{exc.step}] " if exc.step else ""
        error_console.print(f"cohortcast: error: {where}{exc}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        error_console.print("cohortcast: interrupted", markup=False)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        error_console.print(
            f"cohortcast: unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
