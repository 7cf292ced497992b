"""Cohorts in: a saved Metabase question's rows become `raw.metabase_cohort_<name>`.

The rows come through the export endpoint (`POST /api/card/{id}/query/{format}`), which has
no row cap, unlike the query endpoint (2,000 rows). Values come unformatted. Every import
table has the same columns, so one generic dbt model can union them all into cohorts:

| column | type | meaning |
| --- | --- | --- |
| customer_id | text not null | the member; one row per member (duplicates collapsed) |
| cohort_key | text not null | the card's `cohort_key` column when it has one, else the name |
| entered_at | timestamptz not null | the card's `entered_at` column, else imported_at |
| source_card_id | integer not null | the Metabase card the rows came from |
| imported_at | timestamptz not null | when this import ran (the same for every row) |
| attributes | jsonb not null | the card's other columns, as exported |

A new import replaces the previous one in a single transaction.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any, cast

from psycopg.types.json import Jsonb

from cohortcast.errors import ConfigError, DataError
from cohortcast.metabase.client import MetabaseClient
from cohortcast.warehouse import ConnectionSettings, connect, replace_table_atomically

logger = logging.getLogger(__name__)

SCHEMA = "raw"
TABLE_PREFIX = "metabase_cohort_"
EXPORT_FORMATS = ("csv", "json")
COLUMNS: list[tuple[str, str]] = [
    ("customer_id", "text not null"),
    ("cohort_key", "text not null"),
    ("entered_at", "timestamptz not null"),
    ("source_card_id", "integer not null"),
    ("imported_at", "timestamptz not null"),
    ("attributes", "jsonb not null"),
]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_POSTGRES_IDENTIFIER_MAX = 63
_CUSTOMER_ID_NAMES = ("customerid", "customer", "customerno", "customernumber")
_WHOLE_NUMBER_TEXT = re.compile(r"^-?\d+\.0+$")


@dataclass(frozen=True)
class CohortImport:
    """What an import did, for the CLI and the run log."""

    table: str
    card_id: int
    rows_received: int
    rows_loaded: int
    duplicates_dropped: int
    blank_ids_dropped: int
    customer_column: str
    seconds: float

    def summary(self) -> str:
        return (
            f"imported card {self.card_id} into {self.table}: {self.rows_loaded} members "
            f"from {self.rows_received} rows ({self.duplicates_dropped} duplicate and "
            f"{self.blank_ids_dropped} blank customer ids dropped) in {self.seconds:.1f} s"
        )


def table_name(name: str) -> str:
    """`raw` table for cohort `name`, after checking the name is a plain identifier."""
    table = TABLE_PREFIX + name
    if not _NAME.match(name) or len(table) > _POSTGRES_IDENTIFIER_MAX:
        raise ConfigError(
            f"cohort name {name!r} must be lowercase letters, digits and underscores, start "
            f"with a letter, and be at most {_POSTGRES_IDENTIFIER_MAX - len(TABLE_PREFIX)} "
            "characters (e.g. high_value_2024)"
        )
    return table


def find_customer_column(columns: Sequence[str], requested: str | None = None) -> str:
    """The column holding the customer id: `customer_id`, `Customer ID`, `CustomerID`..."""
    if requested is not None:
        if requested in columns:
            return requested
        raise DataError(
            f"the card has no column {requested!r}; its columns are: {', '.join(columns)}"
        )
    by_key = {_key(column): column for column in columns}
    for candidate in _CUSTOMER_ID_NAMES:
        if candidate in by_key:
            return by_key[candidate]
    raise DataError(
        "the card has no customer id column (looked for customer_id, 'Customer ID', "
        f"CustomerID); its columns are: {', '.join(columns) or 'none'}. Add or rename one "
        "in the question, or pass the column to use"
    )


def import_cohort(
    client: MetabaseClient,
    settings: ConnectionSettings,
    card_id: int,
    name: str,
    *,
    export_format: str = "csv",
    customer_column: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> CohortImport:
    """Export card `card_id` and load its members into `raw.metabase_cohort_<name>`.

    `parameters` are the card's filter values, in Metabase's parameter format (a list of
    `{"type": ..., "target": ..., "value": ...}`), passed through to the export.
    """
    table = table_name(name)
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(EXPORT_FORMATS)}")
    started = time.monotonic()
    imported_at = now or datetime.now(UTC)
    header, records = _export(client, card_id, export_format, parameters)
    column = find_customer_column(header, customer_column)
    logger.info("card %s: customer ids from column %r of %s", card_id, column, header)
    counts = _Counts()
    rows = _rows(records, header, column, name, card_id, imported_at, counts)
    with connect(settings) as conn:
        loaded = replace_table_atomically(conn, SCHEMA, table, COLUMNS, rows)
    result = CohortImport(
        table=f"{SCHEMA}.{table}",
        card_id=card_id,
        rows_received=counts.received,
        rows_loaded=loaded,
        duplicates_dropped=counts.duplicates,
        blank_ids_dropped=counts.blank,
        customer_column=column,
        seconds=time.monotonic() - started,
    )
    logger.info("%s", result.summary())
    return result


@dataclass
class _Counts:
    received: int = 0
    duplicates: int = 0
    blank: int = 0


def _export(
    client: MetabaseClient,
    card_id: int,
    export_format: str,
    parameters: list[dict[str, Any]] | None,
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    response = client.export_card(card_id, export_format, parameters)
    if export_format == "json":
        try:
            payload = response.json()
        finally:
            response.close()
        if not isinstance(payload, list):
            raise DataError(f"card {card_id}: the JSON export is not a list of rows")
        header = list(payload[0]) if payload else []
        return header, iter(payload)
    response.raw.decode_content = True  # undo any gzip transfer encoding
    response.raw.auto_close = False  # let the text wrapper see the end of the stream
    reader = csv.reader(
        io.TextIOWrapper(cast(IO[bytes], response.raw), encoding="utf-8-sig", newline="")
    )
    header = next(reader, [])

    def records() -> Iterator[dict[str, Any]]:
        try:
            for values in reader:
                if values:
                    yield {
                        key: (value if value != "" else None)
                        for key, value in zip(header, values, strict=False)
                    }
        finally:
            response.close()

    return header, records()


def _rows(
    records: Iterable[dict[str, Any]],
    header: Sequence[str],
    column: str,
    name: str,
    card_id: int,
    imported_at: datetime,
    counts: _Counts,
) -> Iterator[tuple[Any, ...]]:
    by_key = {_key(item): item for item in header}
    key_column = by_key.get("cohortkey")
    entered_column = by_key.get("enteredat")
    special = {column, key_column, entered_column}
    seen: set[str] = set()
    for record in records:
        counts.received += 1
        customer_id = normalise_customer_id(record.get(column))
        if customer_id is None:
            counts.blank += 1
            continue
        if customer_id in seen:
            counts.duplicates += 1
            continue
        seen.add(customer_id)
        cohort_key = record.get(key_column) if key_column else None
        entered_at = _timestamp(record.get(entered_column)) if entered_column else None
        attributes = {key: value for key, value in record.items() if key not in special}
        yield (
            customer_id,
            str(cohort_key) if cohort_key not in (None, "") else name,
            entered_at or imported_at,
            card_id,
            imported_at,
            Jsonb(attributes, dumps=_dumps),
        )


def normalise_customer_id(value: Any) -> str | None:
    """Customer ids as text: 17850, 17850.0 and "17850.0" are all "17850"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float | Decimal):
        return str(int(value)) if value == int(value) else str(value)
    text = str(value).strip()
    if not text:
        return None
    if _WHOLE_NUMBER_TEXT.match(text):
        return text.split(".", 1)[0]
    return text


def _timestamp(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(f"entered_at value {value!r} is not an ISO timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _key(column: str) -> str:
    return re.sub(r"[^a-z0-9]", "", column.lower())


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
