"""`make bench`: speed and memory of our write paths against a plain baseline, same run.

Each line prints the ratio baseline / ours, measured now on this machine, so the numbers
mean the same on a laptop and in CI. Targets (checked here, not in timed tests):

- loading the demo file with streamed COPY is at least 3x faster than pandas + INSERT;
- its peak Python memory is at most a tenth of reading the file with pandas;
- publishing predictions with binary COPY is at least 3x faster than executemany INSERT.
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from cohortcast import demo
from cohortcast.warehouse import (
    ConnectionSettings,
    connect,
    replace_table_atomically,
    resolve_settings,
)

REPO = Path(__file__).resolve().parents[2]
PREDICTION_ROWS = 200_000
TARGETS = {"load speed": 3.0, "load memory": 10.0, "publish speed": 3.0}


def measure(action: Callable[[], Any]) -> tuple[float, float]:
    """Seconds and peak traced Python memory (MiB) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def baseline_load(conn: psycopg.Connection, path: Path) -> None:
    frame = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
        keep_default_na=False,
        na_values={"Description": [""], "CustomerID": [""]},
    )
    rows = [
        tuple(None if pd.isna(value) else value for value in record)
        for record in frame.astype(object).itertuples(index=False)
    ]
    with conn.transaction():
        conn.execute("create table if not exists bench_raw (like raw.online_retail_lines)")
        conn.execute("truncate bench_raw")
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into bench_raw (invoice_no, stock_code, description, quantity,"
                " invoice_date, unit_price, customer_id, country, source_line_number, loaded_at)"
                " values (%s, %s, %s, %s, %s, %s, %s::text, %s, 0, now())",
                rows,
            )


def prediction_rows() -> list[tuple[str, float]]:
    generator = random.Random(7)
    return [(f"{index:07d}", generator.random()) for index in range(PREDICTION_ROWS)]


def baseline_publish(conn: psycopg.Connection, rows: list[tuple[str, float]]) -> None:
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("delete from bench_scores")
        cursor.executemany("insert into bench_scores values (%s, %s)", rows)


def main() -> int:
    admin = resolve_settings(workdir=REPO)
    name = f"cc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**admin.connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    settings: ConnectionSettings = admin.with_database(name)
    path = REPO / demo.DEFAULT_DATA_FILE
    results: dict[str, float] = {}
    try:
        with connect(settings) as conn:
            ours_s, ours_mb = measure(lambda: demo.load_online_retail(conn, path, replace=True))
            base_s, base_mb = measure(lambda: baseline_load(conn, path))
            print(
                f"load {path.name}: COPY {ours_s:.1f} s / {ours_mb:.0f} MiB; "
                f"pandas+INSERT {base_s:.1f} s / {base_mb:.0f} MiB"
            )
            results["load speed"] = base_s / ours_s
            results["load memory"] = base_mb / max(ours_mb, 0.01)

            rows = prediction_rows()
            conn.execute(
                "create table bench_scores (customer_id text primary key,"
                " churn_probability double precision not null)"
            )
            conn.commit()
            columns = ["customer_id", "churn_probability"]
            ours_s, _ = measure(
                lambda: replace_table_atomically(conn, "public", "bench_scores", columns, rows)
            )
            base_s, _ = measure(lambda: baseline_publish(conn, rows))
            print(
                f"publish {PREDICTION_ROWS:,} rows: binary COPY {ours_s:.2f} s; "
                f"executemany {base_s:.2f} s"
            )
            results["publish speed"] = base_s / ours_s
    finally:
        with psycopg.connect(**admin.connect_kwargs(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
    failed = 0
    for label, ratio in results.items():
        target = TARGETS[label]
        verdict = "ok" if ratio >= target else "BELOW TARGET"
        failed += ratio < target
        print(f"{label:<14} {ratio:6.1f}x baseline (target >= {target:.0f}x) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
