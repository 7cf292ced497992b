"""Which Postgres we talk to, and the few ways we write to it.

Explicit settings win: a `--dsn`, else the standard libpq variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE). With none of them set we use the embedded server (see
`cohortcast.embedded`). We never guess at a server the user did not name.

Writes that readers can see go through `replace_table_atomically`: the new rows are copied
into a temporary table first, then swapped in with a delete and insert in one transaction,
so a reader sees the previous complete table or the new complete one and views built on the
table keep working.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cohortcast import embedded
from cohortcast.errors import ConfigError, WarehouseError

logger = logging.getLogger(__name__)

PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
CONNECT_TIMEOUT_SECONDS = 10
RUN_LOCK_KEY = "cohortcast.run"


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to reach one database. `password` never reaches a log."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    source: str = "environment"
    embedded_server: embedded.EmbeddedServer | None = field(default=None, compare=False)

    def describe(self) -> str:
        """Where we are connected, safe to print."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "cohortcast",
        }
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def environment(self) -> dict[str, str]:
        """The PG* variables dbt's profile reads."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "PGPASSWORD": self.password or "",
        }
        return env

    def with_database(self, dbname: str) -> ConnectionSettings:
        return ConnectionSettings(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname,
            password=self.password,
            source=self.source,
            embedded_server=self.embedded_server,
        )


def explicit_settings_present(environ: dict[str, str] | None = None) -> bool:
    environ = dict(os.environ) if environ is None else environ
    return any(environ.get(name) for name in PG_VARIABLES)


def resolve_settings(
    dsn: str | None = None,
    *,
    workdir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> ConnectionSettings:
    """Decide which database to use: `dsn`, else PG* variables, else the embedded server."""
    environ = dict(os.environ) if environ is None else environ
    if dsn:
        try:
            parts = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                "--dsn is not a valid connection string; use the form "
                "postgresql://user@host:5432/dbname"
            ) from exc
        return _settings_from(parts, environ, source="--dsn")
    if explicit_settings_present(environ):
        parts = {
            "host": environ.get("PGHOST"),
            "port": environ.get("PGPORT"),
            "user": environ.get("PGUSER"),
            "password": environ.get("PGPASSWORD"),
            "dbname": environ.get("PGDATABASE"),
        }
        return _settings_from(parts, environ, source="PG* variables")
    server = embedded.ensure_running(embedded.state_root(workdir))
    return ConnectionSettings(
        host=embedded.HOST,
        port=server.port,
        user=embedded.SUPERUSER,
        dbname=embedded.DATABASE,
        source="embedded",
        embedded_server=server,
    )


def _settings_from(
    parts: dict[str, Any], environ: dict[str, str], *, source: str
) -> ConnectionSettings:
    user = parts.get("user") or environ.get("PGUSER") or getpass.getuser()
    host = parts.get("host") or environ.get("PGHOST") or "localhost"
    raw_port = parts.get("port") or environ.get("PGPORT") or "5432"
    try:
        port = int(raw_port)
    except ValueError as exc:
        raise ConfigError(f"port {raw_port!r} is not a number; fix PGPORT or --dsn") from exc
    return ConnectionSettings(
        host=host,
        port=port,
        user=user,
        dbname=parts.get("dbname") or environ.get("PGDATABASE") or user,
        password=parts.get("password") or environ.get("PGPASSWORD") or None,
        source=source,
    )


def connect(settings: ConnectionSettings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection, turning libpq's failures into a line that says what to fix."""
    try:
        return psycopg.connect(**settings.connect_kwargs(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise WarehouseError(_explain_connect_failure(settings, exc)) from None


def _explain_connect_failure(settings: ConnectionSettings, exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else type(exc).__name__
    lowered = str(exc).lower()
    fix = "the --dsn" if settings.source == "--dsn" else "PGHOST/PGPORT"
    where = f"{settings.host}:{settings.port}"
    if "does not exist" in lowered and "database" in lowered:
        return (
            f"database {settings.dbname!r} does not exist on {where}; create it "
            f"(createdb -h {settings.host} -p {settings.port} -U {settings.user} "
            f"{settings.dbname}) or name one that exists "
            + ("in the --dsn" if settings.source == "--dsn" else "in PGDATABASE")
        )
    if "password" in lowered or "authentication" in lowered:
        return f"the server at {where} refused user {settings.user!r}: check " + (
            "the user and password in the --dsn"
            if settings.source == "--dsn"
            else "PGUSER and PGPASSWORD"
        )
    if "timeout" in lowered or "connection refused" in lowered or "could not" in lowered:
        return (
            f"no Postgres answers at {where} (from {settings.source}): start the server or "
            f"fix {fix}; without --dsn and PG* variables cohortcast uses its embedded "
            f"server ({message})"
        )
    return f"cannot connect to {settings.describe()}: {message}"


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))


@contextmanager
def run_lock(settings: ConnectionSettings, name: str = RUN_LOCK_KEY) -> Iterator[None]:
    """Hold a Postgres advisory lock for the length of a run.

    A second run against the same database waits here, and says that it is waiting.
    """
    conn = connect(settings, autocommit=True)
    try:
        got = conn.execute("select pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()
        if not (got and got[0]):
            logger.warning(
                "another cohortcast run is working on %s; waiting for it to finish",
                settings.describe(),
            )
            started = time.monotonic()
            conn.execute("select pg_advisory_lock(hashtext(%s))", (name,))
            logger.info("lock acquired after %.1f s", time.monotonic() - started)
        yield
    finally:
        conn.close()


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """Column name to its Postgres type name, in table order; empty when the table is missing."""
    rows = conn.execute(
        """
        select attribute.attname, format_type(attribute.atttypid, attribute.atttypmod)
        from pg_attribute as attribute
        inner join pg_class as relation on relation.oid = attribute.attrelid
        inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
        where namespace.nspname = %s
            and relation.relname = %s
            and attribute.attnum > 0
            and not attribute.attisdropped
        order by attribute.attnum
        """,
        (schema, table),
    ).fetchall()
    return {name: type_name for name, type_name in rows}


def copy_rows(
    conn: psycopg.Connection,
    target: sql.Composable,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Binary COPY of `rows` into `target`; returns the number of rows written."""
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        target, sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    )
    count = 0
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def replace_table_atomically(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[str | tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    *,
    after_copy: sql.Composed | sql.SQL | None = None,
) -> int:
    """Replace the rows of `schema.table` with `rows`, all or nothing.

    `columns` are names, or (name, Postgres type) pairs; with types the table (and schema)
    is created when missing, otherwise it must exist (its DDL is the contract). Rows are
    copied into a temporary table first, so a bad row fails before the live table is
    touched; the swap is a delete and an insert in one transaction, which readers see as
    one change. `after_copy` runs inside the same transaction (e.g. to append the new rows
    to a history table). Returns the row count.
    """
    names = [column if isinstance(column, str) else column[0] for column in columns]
    target = sql.Identifier(schema, table)
    with conn.transaction():
        existing = table_columns(conn, schema, table)
        if not existing and all(isinstance(column, tuple) for column in columns):
            ensure_schema(conn, schema)
            typed = [column for column in columns if isinstance(column, tuple)]
            definitions = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_name))
                for name, type_name in typed
            )
            conn.execute(sql.SQL("create table if not exists {} ({})").format(target, definitions))
            existing = table_columns(conn, schema, table)
        if not existing:
            raise WarehouseError(f"{schema}.{table} does not exist; run `cohortcast build` first")
        missing = [name for name in names if name not in existing]
        if missing:
            raise WarehouseError(
                f"{schema}.{table} has no column(s) {', '.join(missing)}; rebuild it from "
                "its contract (dbt run-operation create_python_tables) or fix the writer"
            )
        staging = sql.Identifier(f"incoming_{table}")
        column_list = sql.SQL(", ").join(sql.Identifier(name) for name in names)
        conn.execute(
            sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(
                staging, target
            )
        )
        count = copy_rows(conn, staging, names, [existing[name] for name in names], rows)
        conn.execute(sql.SQL("delete from {}").format(target))
        conn.execute(
            sql.SQL("insert into {} ({}) select {} from {}").format(
                target, column_list, column_list, staging
            )
        )
        if after_copy is not None:
            conn.execute(after_copy)
    return count


def append_rows(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Append rows to an existing table with binary COPY, in the caller's transaction."""
    existing = table_columns(conn, schema, table)
    if not existing:
        raise WarehouseError(f"{schema}.{table} does not exist; run `cohortcast build` first")
    return copy_rows(
        conn, sql.Identifier(schema, table), columns, [existing[c] for c in columns], rows
    )


def read_frame(conn: psycopg.Connection, query: str, params: Sequence[Any] | None = None) -> Any:
    """Run a query and return a pandas DataFrame of its rows."""
    import pandas as pd

    with conn.cursor() as cursor:
        cursor.execute(query, params)
        names = [column.name for column in cursor.description or []]
        return pd.DataFrame(cursor.fetchall(), columns=names)
