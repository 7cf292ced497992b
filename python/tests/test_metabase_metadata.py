"""Metadata push through dbt-metabase, against the double, from the real project's manifest."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from metabase_double import MetabaseDouble, running_double

from cohortcast.errors import MetabaseError
from cohortcast.metabase.client import MetabaseSettings
from cohortcast.metabase.metadata import DEFAULT_SCHEMAS, push_metadata

pytest.importorskip("dbtmetabase")

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "mb_test_key_0123456789"
DATABASE = "cohortcast"


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dbt.cli.main import dbtRunner

    root = tmp_path_factory.mktemp("project")
    for name in ("models", "macros"):
        shutil.copytree(REPO_ROOT / name, root / name)
    shutil.copy(REPO_ROOT / "dbt_project.yml", root / "dbt_project.yml")
    shutil.copy(REPO_ROOT / "profiles.example.yml", root / "profiles.yml")
    result = dbtRunner().invoke(
        ["--quiet", "parse", "--project-dir", str(root), "--profiles-dir", str(root)]
    )
    assert result.success, result.exception
    return root / "target" / "manifest.json"


def warehouse_tables(manifest_path: Path) -> list[tuple[str, str, list[str]]]:
    """Every model and source in the schemas Metabase reads, with its documented columns."""
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    tables = []
    for node in [*manifest["nodes"].values(), *manifest["sources"].values()]:
        if node["resource_type"] not in {"model", "source"}:
            continue
        if node["schema"] not in DEFAULT_SCHEMAS:
            continue
        name = node.get("alias") or node.get("identifier") or node["name"]
        tables.append((node["schema"], name, list(node["columns"])))
    return tables


@pytest.fixture
def double(manifest_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetabaseDouble]:
    import dbtmetabase._models

    # dbt-metabase sleeps five seconds between schema polls; the double is ready at once.
    monkeypatch.setattr(dbtmetabase._models, "_SYNC_PERIOD", 0)
    with running_double(database_name=DATABASE) as server:
        for schema, table, columns in warehouse_tables(manifest_path):
            server.add_warehouse_table(schema, table, [(column, "text") for column in columns])
        yield server
        assert server.violations == []


def field_named(double: MetabaseDouble, table: str, column: str) -> dict[str, Any]:
    [table_id] = [t.id for t in double.state.tables if t.name == table]
    [found] = [
        field
        for field in double.state.fields.values()
        if field["table_id"] == table_id and field["name"] == column
    ]
    return found


def test_push_sets_descriptions_and_semantic_types(
    double: MetabaseDouble, manifest_path: Path
) -> None:
    settings = MetabaseSettings(url=double.url, api_key=API_KEY, backoff_factor=0.01)

    result = push_metadata(settings, manifest_path, DATABASE, sync_timeout_seconds=5)

    assert result.schemas == DEFAULT_SCHEMAS
    # Expected values read straight from the YAML, not through dbt or dbt-metabase.
    declared = yaml.safe_load((REPO_ROOT / "models/ml/_ml__models.yml").read_text())
    [model] = [m for m in declared["models"] if m["name"] == "churn_risk_by_cohort"]
    columns = {column["name"]: column for column in model["columns"]}
    band_share = field_named(double, "churn_risk_by_cohort", "band_share")
    assert band_share["description"] == columns["band_share"]["description"]
    assert band_share["semantic_type"] == columns["band_share"]["meta"]["metabase.semantic_type"]
    [table] = [t for t in double.state.tables if t.name == "churn_risk_by_cohort"]
    assert double.state.table_updates[table.id]["description"] == model["description"]
    puts = [r for r in double.requests if r.method == "PUT"]
    assert puts
    assert all(r.headers.get("x-api-key") == API_KEY for r in puts)


def test_second_push_changes_nothing(double: MetabaseDouble, manifest_path: Path) -> None:
    settings = MetabaseSettings(url=double.url, api_key=API_KEY, backoff_factor=0.01)
    push_metadata(settings, manifest_path, DATABASE, sync_timeout_seconds=5)
    first = len([r for r in double.requests if r.method == "PUT"])

    push_metadata(settings, manifest_path, DATABASE, sync_timeout_seconds=5)

    assert len([r for r in double.requests if r.method == "PUT"]) == first


def test_unknown_database_is_our_error(double: MetabaseDouble, manifest_path: Path) -> None:
    settings = MetabaseSettings(url=double.url, api_key=API_KEY, backoff_factor=0.01)
    with pytest.raises(MetabaseError, match="Database not found: elsewhere"):
        push_metadata(settings, manifest_path, "elsewhere", sync_timeout_seconds=5)
