"""Shared fixtures: a real Postgres for every test that needs one.

With any PG* variable set the tests use that server (the database named by PGDATABASE is
only used to connect; each test database is created and dropped here). With none set they
start their own embedded server in a temporary directory, as `make demo` does, and stop it
at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cohortcast import embedded
from cohortcast.warehouse import ConnectionSettings, explicit_settings_present, resolve_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectionSettings]:
    """Settings for a maintenance connection to the test server."""
    if explicit_settings_present():
        yield resolve_settings()
        return
    root = tmp_path_factory.mktemp("embedded-pg")
    server = embedded.ensure_running(root)
    try:
        yield ConnectionSettings(
            host=embedded.HOST,
            port=server.port,
            user=embedded.SUPERUSER,
            dbname="postgres",
            source="embedded",
            embedded_server=server,
        )
    finally:
        embedded.stop(root)


def create_database(settings: ConnectionSettings, prefix: str = "cc_test") -> ConnectionSettings:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return settings.with_database(name)


def drop_database(settings: ConnectionSettings, name: str) -> None:
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture
def fresh_database(pg_settings: ConnectionSettings) -> Iterator[ConnectionSettings]:
    """An empty database of its own for one test, dropped afterwards."""
    settings = create_database(pg_settings)
    try:
        yield settings
    finally:
        drop_database(pg_settings, settings.dbname)


@pytest.fixture(scope="session")
def python_tables_template(
    pg_settings: ConnectionSettings, repo_root: Path
) -> Iterator[ConnectionSettings]:
    """A database holding only what `create_python_tables` makes: the contract's tables."""
    from cohortcast import dbt_runner

    settings = create_database(pg_settings, "cc_template")
    try:
        dbt_runner.create_python_tables(settings, repo_root)
        yield settings
    finally:
        drop_database(pg_settings, settings.dbname)


@pytest.fixture
def python_tables_database(
    pg_settings: ConnectionSettings, python_tables_template: ConnectionSettings
) -> Iterator[ConnectionSettings]:
    """A fresh database with the ml, quality and raw tables made by the dbt macro itself."""
    name = f"cc_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**pg_settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(python_tables_template.dbname)
            )
        )
    try:
        yield pg_settings.with_database(name)
    finally:
        drop_database(pg_settings, name)


@pytest.fixture(scope="session")
def demo_warehouse(
    pg_settings: ConnectionSettings, repo_root: Path
) -> Iterator[ConnectionSettings]:
    """A database with the bundled data loaded and everything up to the features built.

    Shared by the whole session: tests must not change what is in it. Tests that change
    data make their own database.
    """
    from cohortcast import dbt_runner, demo
    from cohortcast.warehouse import connect

    settings = create_database(pg_settings, "cc_demo")
    try:
        with connect(settings) as conn:
            demo.load_online_retail(conn, repo_root / demo.DEFAULT_DATA_FILE)
        dbt_runner.build_upstream(settings, repo_root)
        yield settings
    finally:
        drop_database(pg_settings, settings.dbname)
