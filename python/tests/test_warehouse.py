"""Connection resolution, atomic replacement and the run lock, on a real Postgres."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from cohortcast.errors import ConfigError, WarehouseError
from cohortcast.warehouse import (
    ConnectionSettings,
    connect,
    replace_table_atomically,
    resolve_settings,
    run_lock,
)

PREDICTION_COLUMNS = [
    ("customer_id", "text primary key"),
    ("probability", "double precision not null"),
]


def test_dsn_wins_over_environment() -> None:
    settings = resolve_settings(
        "postgresql://analyst:s3cret@db.example:6543/warehouse",
        environ={"PGHOST": "elsewhere", "PGDATABASE": "other"},
    )
    assert (settings.host, settings.port, settings.user, settings.dbname) == (
        "db.example",
        6543,
        "analyst",
        "warehouse",
    )
    assert settings.password == "s3cret"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in settings.describe()


def test_pg_variables_fill_libpq_defaults() -> None:
    settings = resolve_settings(environ={"PGHOST": "127.0.0.1", "PGUSER": "reporter"})
    assert (settings.host, settings.port, settings.user, settings.dbname) == (
        "127.0.0.1",
        5432,
        "reporter",
        "reporter",
    )
    assert settings.source == "PG* variables"


def test_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PGPORT"):
        resolve_settings(environ={"PGHOST": "127.0.0.1", "PGPORT": "five"})


def test_missing_database_says_how_to_create_it(pg_settings: ConnectionSettings) -> None:
    missing = pg_settings.with_database("cohortcast_no_such_db")
    with pytest.raises(WarehouseError, match=r"does not exist.*createdb"):
        connect(missing)


def test_silent_server_says_what_to_fix() -> None:
    settings = ConnectionSettings(host="127.0.0.1", port=1, user="postgres", dbname="x")
    with pytest.raises(WarehouseError, match=r"no Postgres answers at 127\.0\.0\.1:1"):
        connect(settings)


def _current(settings: ConnectionSettings) -> list[tuple[str, float]]:
    with connect(settings) as conn:
        return conn.execute("select * from public.scores order by customer_id").fetchall()


def test_replace_is_all_or_nothing(fresh_database: ConnectionSettings) -> None:
    with connect(fresh_database) as conn:
        replace_table_atomically(
            conn, "public", "scores", PREDICTION_COLUMNS, [("a", 0.1), ("b", 0.2)]
        )
    with connect(fresh_database) as conn, pytest.raises(psycopg.errors.NotNullViolation):
        replace_table_atomically(
            conn, "public", "scores", PREDICTION_COLUMNS, [("c", 0.3), ("d", None)]
        )
    assert _current(fresh_database) == [("a", 0.1), ("b", 0.2)]


def test_reader_sees_old_table_until_commit(fresh_database: ConnectionSettings) -> None:
    with connect(fresh_database) as conn:
        replace_table_atomically(conn, "public", "scores", PREDICTION_COLUMNS, [("a", 0.1)])
    writer = connect(fresh_database)
    try:
        with writer.transaction():
            replace_table_atomically(
                writer, "public", "scores", PREDICTION_COLUMNS, [("x", 0.9), ("y", 0.8)]
            )
            # Uncommitted: a second connection still sees the previous complete table.
            assert _current(fresh_database) == [("a", 0.1)]
        assert _current(fresh_database) == [("x", 0.9), ("y", 0.8)]
    finally:
        writer.close()


def test_second_run_waits_for_the_first(
    fresh_database: ConnectionSettings, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []
    released = threading.Event()

    def second() -> None:
        with run_lock(fresh_database):
            order.append("second")

    with caplog.at_level(logging.INFO, logger="cohortcast.warehouse"), run_lock(fresh_database):
        order.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while "waiting" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "another cohortcast run is working" in caplog.text
        assert order == ["first"]
        released.set()
    thread.join(timeout=10)
    assert order == ["first", "second"]
