"""Bad input through the command line: one line that says what to fix, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortcast.cli import main
from cohortcast.warehouse import ConnectionSettings


def _dsn(settings: ConnectionSettings) -> str:
    return f"postgresql://{settings.user}@{settings.host}:{settings.port}/{settings.dbname}"


def test_missing_data_file(
    tmp_path: Path, fresh_database: ConnectionSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--dsn", _dsn(fresh_database), "load-demo", "--data-file", str(tmp_path / "x.csv.gz")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "cohortcast: error:" in err
    assert "is missing" in err
    assert "Traceback" not in err


def test_server_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--dsn", "postgresql://postgres:hunter2@127.0.0.1:1/nowhere", "load-demo"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no Postgres answers at 127.0.0.1:1" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


def test_database_that_does_not_exist(
    pg_settings: ConnectionSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = pg_settings.with_database("cohortcast_missing_db")
    code = main(["--dsn", _dsn(missing), "load-demo"])
    err = capsys.readouterr().err
    assert code == 1
    assert "database 'cohortcast_missing_db' does not exist" in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from cohortcast.errors import WarehouseError

    with pytest.raises(WarehouseError):
        main(["--debug", "--dsn", "postgresql://postgres@127.0.0.1:1/nowhere", "load-demo"])


def test_db_refuses_a_named_server(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--dsn", "postgresql://postgres@127.0.0.1:1/nope", "db", "status"])
    err = capsys.readouterr().err
    assert code == 1
    assert "manages the embedded server" in err


def test_an_explicit_data_file_that_is_missing(
    tmp_path: Path, fresh_database: ConnectionSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "elsewhere.csv.gz"
    code = main(["--dsn", _dsn(fresh_database), "load-demo", "--data-file", str(missing)])
    err = capsys.readouterr().err
    assert code == 1
    assert "check the --data-file path" in err
    assert "git checkout" not in err
