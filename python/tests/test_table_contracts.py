"""Tables that Python can create itself must match the dbt macro that owns their contract.

The loader creates `raw.online_retail_lines` and the quality gate its results tables when
they are missing, so that each works before any dbt run; `create_python_tables()` is the
contract. This compares the two column by column.
"""

from __future__ import annotations

from cohortcast import demo
from cohortcast.quality.results import ensure_quality_tables
from cohortcast.warehouse import ConnectionSettings, connect, ensure_schema

COLUMNS = """
select table_schema, table_name, column_name, data_type, is_nullable, ordinal_position
from information_schema.columns
where (table_schema, table_name) in (
    ('raw', 'online_retail_lines'),
    ('quality', 'validation_runs'),
    ('quality', 'validation_results')
)
order by table_schema, table_name, ordinal_position
"""


def test_python_ddl_matches_the_dbt_macro(
    python_tables_template: ConnectionSettings, fresh_database: ConnectionSettings
) -> None:
    with connect(fresh_database) as conn:
        ensure_schema(conn, demo.SCHEMA)
        conn.execute(demo.CREATE_TABLE)
        ensure_quality_tables(conn)
        conn.commit()
        from_python = conn.execute(COLUMNS).fetchall()
    with connect(python_tables_template) as conn:
        from_macro = conn.execute(COLUMNS).fetchall()
    assert len(from_macro) == 10 + 7 + 9
    assert from_python == from_macro
