"""Load the bundled UCI Online Retail data into `raw.online_retail_lines` with COPY.

The file is streamed from gzip straight into Postgres' CSV parser, which handles the
quoting (descriptions hold commas and doubled quotes). A load replaces the table's rows in
one transaction and records the file's sha256, so loading the same file again is a no-op
and loading a new one never leaves a half-loaded table.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cohortcast.errors import DataError
from cohortcast.warehouse import ensure_schema, table_columns

logger = logging.getLogger(__name__)

DEFAULT_DATA_FILE = Path("data") / "online_retail.csv.gz"
SCHEMA = "raw"
TABLE = "online_retail_lines"
EXPECTED_HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
# Raw column for each CSV column, in file order.
RAW_COLUMNS = [
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "unit_price",
    "customer_id",
    "country",
]
CREATE_TABLE = f"""
create table if not exists {SCHEMA}.{TABLE} (
    source_line_number bigint generated always as identity,
    invoice_no text not null,
    stock_code text not null,
    description text,
    quantity integer not null,
    invoice_date timestamp not null,
    unit_price numeric not null,
    customer_id text,
    country text not null,
    loaded_at timestamptz not null default now()
)
"""
CREATE_LOADS = f"""
create table if not exists {SCHEMA}.cohortcast_loads (
    table_name text not null,
    file_sha256 text not null,
    row_count bigint not null,
    loaded_at timestamptz not null default now()
)
"""
COPY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LoadResult:
    row_count: int
    skipped: bool
    seconds: float


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(COPY_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    if not path.exists():
        if (
            path.name == DEFAULT_DATA_FILE.name
            and path.parent.name == DEFAULT_DATA_FILE.parent.name
        ):
            advice = "restore it from the repository (git checkout -- data/)"
        else:
            advice = "check the --data-file path"
        raise DataError(f"data file {path} is missing; {advice}")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            header_line = handle.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(
            f"data file {path} is not a readable gzip-compressed UTF-8 CSV ({exc}); "
            "restore it from the repository"
        ) from None
    header = [name.strip() for name in header_line.rstrip("\r\n").split(",")]
    if header != EXPECTED_HEADER:
        missing = [name for name in EXPECTED_HEADER if name not in header]
        unexpected = [name for name in header if name not in EXPECTED_HEADER]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if unexpected:
            detail.append(f"unexpected {', '.join(unexpected)}")
        if not detail:
            detail.append("columns out of order")
        raise DataError(
            f"data file {path} has the wrong header ({'; '.join(detail)}); expected "
            f"{','.join(EXPECTED_HEADER)}"
        )


def check_raw_table(conn: psycopg.Connection) -> None:
    """Fail with a clear line when the raw table lacks a column the models read."""
    existing = table_columns(conn, SCHEMA, TABLE)
    if not existing:
        raise DataError(
            f"{SCHEMA}.{TABLE} does not exist; load it with `cohortcast load-demo` or run "
            "`cohortcast run --demo`"
        )
    missing = [name for name in ["source_line_number", *RAW_COLUMNS] if name not in existing]
    if missing:
        raise DataError(
            f"{SCHEMA}.{TABLE} is missing column(s) {', '.join(missing)}; reload it with "
            "`cohortcast load-demo --replace` or fix the upstream load"
        )


def load_online_retail(
    conn: psycopg.Connection, path: Path = DEFAULT_DATA_FILE, *, replace: bool = False
) -> LoadResult:
    """Load the file into raw.online_retail_lines unless that exact file is already there."""
    started = time.monotonic()
    _check_file(path)
    sha256 = file_sha256(path)
    with conn.transaction():
        ensure_schema(conn, SCHEMA)
        conn.execute(CREATE_LOADS)
        if table_columns(conn, SCHEMA, TABLE) and not replace:
            check_raw_table(conn)
        conn.execute(CREATE_TABLE)
        previous = conn.execute(
            f"select row_count from {SCHEMA}.cohortcast_loads"
            " where table_name = %s and file_sha256 = %s"
            " order by loaded_at desc limit 1",
            (TABLE, sha256),
        ).fetchone()
        current = conn.execute(f"select count(*) from {SCHEMA}.{TABLE}").fetchone()
        if not replace and previous and current and previous[0] == current[0]:
            logger.info(
                "%s.%s already holds %s (%s rows); not loading again",
                SCHEMA,
                TABLE,
                path.name,
                f"{current[0]:,}",
            )
            return LoadResult(int(current[0]), True, time.monotonic() - started)
    with conn.transaction():
        if replace:
            conn.execute(f"drop table if exists {SCHEMA}.{TABLE} cascade")
            conn.execute(CREATE_TABLE)
        conn.execute(f"truncate {SCHEMA}.{TABLE} restart identity")
        copy_sql = (
            f"copy {SCHEMA}.{TABLE} ({', '.join(RAW_COLUMNS)}) "
            "from stdin (format csv, header true, encoding 'UTF8')"
        )
        try:
            with (
                conn.cursor() as cursor,
                cursor.copy(copy_sql) as copy,
                gzip.open(path, "rb") as handle,
            ):
                for chunk in iter(lambda: handle.read(COPY_CHUNK_BYTES), b""):
                    copy.write(chunk)
        except psycopg.errors.DataError as exc:
            raise DataError(_explain_copy_error(path, exc)) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"data file {path} is truncated or corrupt ({exc})") from None
        row_count = conn.execute(f"select count(*) from {SCHEMA}.{TABLE}").fetchone()
        count = int(row_count[0]) if row_count else 0
        conn.execute(
            f"insert into {SCHEMA}.cohortcast_loads (table_name, file_sha256, row_count)"
            " values (%s, %s, %s)",
            (TABLE, sha256, count),
        )
    seconds = time.monotonic() - started
    logger.info("loaded %s rows into %s.%s in %.1f s", f"{count:,}", SCHEMA, TABLE, seconds)
    return LoadResult(count, False, seconds)


def _explain_copy_error(path: Path, exc: psycopg.Error) -> str:
    diag = exc.diag
    where = diag.context or ""
    first = (diag.message_primary or str(exc)).strip()
    return f"data file {path} has a malformed line: {first} ({where.strip()}); fix or restore it"
