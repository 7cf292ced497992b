"""Loading the bundled data: counts from the file itself, idempotence, and bad input."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from cohortcast import demo
from cohortcast.errors import DataError
from cohortcast.warehouse import ConnectionSettings, connect

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def _rows_in_file(path: Path) -> int:
    """Counted with Python's csv module, independently of Postgres' parser."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def _write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def test_loads_every_line_once(repo_root: Path, fresh_database: ConnectionSettings) -> None:
    path = repo_root / demo.DEFAULT_DATA_FILE
    expected = _rows_in_file(path)
    assert expected == 541_909  # the count stated in data/online_retail.SOURCE.md
    with connect(fresh_database) as conn:
        first = demo.load_online_retail(conn, path)
        second = demo.load_online_retail(conn, path)
        count = conn.execute("select count(*) from raw.online_retail_lines").fetchone()
        pound = conn.execute(
            "select count(*) from raw.online_retail_lines where description like '%£%'"
        ).fetchone()
        numbers = conn.execute(
            "select min(source_line_number), max(source_line_number) from raw.online_retail_lines"
        ).fetchone()
    assert (first.row_count, first.skipped) == (expected, False)
    assert (second.row_count, second.skipped) == (expected, True)
    assert count == (expected,)
    assert pound == (32,)  # SOURCE.md: the pound sign survives a UTF-8 load in 32 rows
    assert numbers == (1, expected)


def test_a_different_file_replaces_the_rows(
    tmp_path: Path, fresh_database: ConnectionSettings
) -> None:
    one = _write_gz(
        tmp_path / "one.csv.gz",
        HEADER + "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,UK\n",
    )
    two = _write_gz(
        tmp_path / "two.csv.gz",
        HEADER
        + '536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01 08:28:00,1.85,17850,UK\n'
        + "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527,UK\n",
    )
    with connect(fresh_database) as conn:
        demo.load_online_retail(conn, one)
        demo.load_online_retail(conn, two)
        rows = conn.execute(
            "select invoice_no, description from raw.online_retail_lines order by 1"
        ).fetchall()
    assert rows == [("536366", "HAND WARMER, UNION JACK"), ("C536379", "Discount")]


def test_missing_file(tmp_path: Path, fresh_database: ConnectionSettings) -> None:
    with connect(fresh_database) as conn, pytest.raises(DataError, match="is missing"):
        demo.load_online_retail(conn, tmp_path / "nope.csv.gz")


def test_not_gzip(tmp_path: Path, fresh_database: ConnectionSettings) -> None:
    path = tmp_path / "plain.csv.gz"
    path.write_text(HEADER)
    with connect(fresh_database) as conn, pytest.raises(DataError, match="not a readable gzip"):
        demo.load_online_retail(conn, path)


def test_wrong_header_names_the_columns(tmp_path: Path, fresh_database: ConnectionSettings) -> None:
    path = _write_gz(tmp_path / "bad.csv.gz", HEADER.replace("CustomerID", "Customer"))
    with connect(fresh_database) as conn, pytest.raises(DataError, match="missing CustomerID"):
        demo.load_online_retail(conn, path)


def test_malformed_line_keeps_the_previous_load(
    tmp_path: Path, fresh_database: ConnectionSettings
) -> None:
    good = _write_gz(
        tmp_path / "good.csv.gz",
        HEADER + "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,UK\n",
    )
    bad = _write_gz(
        tmp_path / "bad.csv.gz",
        HEADER
        + "536366,22633,WARMER,6,2010-12-01 08:28:00,1.85,17850,UK\n"
        + "536367,22634,WARMER,six,2010-12-01 08:28:00,1.85,17850,UK\n",
    )
    with connect(fresh_database) as conn:
        demo.load_online_retail(conn, good)
        with pytest.raises(DataError, match=r"malformed line.*line 3"):
            demo.load_online_retail(conn, bad)
        rows = conn.execute("select invoice_no from raw.online_retail_lines").fetchall()
    assert rows == [("536365",)]


def test_raw_table_with_missing_columns(fresh_database: ConnectionSettings) -> None:
    with connect(fresh_database) as conn:
        conn.execute("create schema raw")
        conn.execute("create table raw.online_retail_lines (invoice_no text, quantity int)")
        with pytest.raises(DataError, match=r"missing column.*stock_code"):
            demo.check_raw_table(conn)
