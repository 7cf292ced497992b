"""The vendored Metabase contract material, and the double's answers, match their sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from metabase_double import MetabaseDouble, recorded, running_double
from metabase_double.spec_slice import FULL_SPEC_PATH, OPERATIONS, extract_slice, load_slice

SHARED_RECORDED = FULL_SPEC_PATH.parent / "recorded" / "dbt-metabase"
VENDORED = Path(__file__).resolve().parents[2] / "contracts" / "metabase"
HEADERS = {"x-api-key": "mb_test_key_0123456789"}


def test_slice_holds_every_operation_the_client_uses() -> None:
    spec = load_slice()
    for method, path in OPERATIONS:
        assert method in spec["paths"][path], (method, path)


@pytest.mark.skipif(not FULL_SPEC_PATH.exists(), reason="the full spec is in /work/shared only")
def test_slice_is_an_unmodified_part_of_the_full_spec() -> None:
    full = json.loads(FULL_SPEC_PATH.read_text(encoding="utf-8"))
    assert load_slice() == extract_slice(full)
    for path, item in load_slice()["paths"].items():
        for method, operation in item.items():
            assert operation == full["paths"][path][method]


@pytest.mark.skipif(not SHARED_RECORDED.exists(), reason="the recordings are in /work/shared")
def test_vendored_recordings_are_byte_identical() -> None:
    vendored = sorted((VENDORED / "recorded" / "dbt-metabase").rglob("*.json"))
    assert len(vendored) == 14
    for path in vendored:
        relative = path.relative_to(VENDORED / "recorded" / "dbt-metabase")
        assert path.read_bytes() == (SHARED_RECORDED / relative).read_bytes(), relative


@pytest.fixture
def double() -> Iterator[MetabaseDouble]:
    with running_double() as server:
        yield server


def _keys(payload: dict[str, Any]) -> set[str]:
    return set(payload)


@pytest.mark.parametrize("version", ["v0.50.5", "v0.57.3"])
def test_double_answers_in_the_recorded_shapes(version: str) -> None:
    with running_double(version=version) as double:
        mbql = double.mbql
        session = requests.Session()
        session.headers.update(HEADERS)
        created = session.post(
            f"{double.url}/api/collection/", json={"name": "Cohorts"}, timeout=5
        ).json()
        card = session.post(
            f"{double.url}/api/card/",
            json={
                "name": "Members",
                "display": "table",
                "visualization_settings": {},
                "collection_id": created["id"],
                "dataset_query": {
                    "database": 2,
                    "type": "native",
                    "native": {"query": "select 1", "template-tags": {}},
                },
            },
            timeout=5,
        ).json()
        fetched = session.get(f"{double.url}/api/card/{card['id']}", timeout=5).json()
        dashboard = session.post(
            f"{double.url}/api/dashboard/", json={"name": "D"}, timeout=5
        ).json()
        items = session.get(f"{double.url}/api/collection/{created['id']}/items", timeout=5).json()
        databases = session.get(f"{double.url}/api/database", timeout=5).json()
        assert double.violations == []

    assert _keys(created) == _keys(recorded(mbql, "collection")[2])
    assert _keys(fetched) == _keys(recorded(mbql, "card/30"))
    assert _keys(dashboard) == _keys(recorded(mbql, "dashboard/2"))
    assert _keys(items["data"][0]) == _keys(recorded(mbql, "collection/3/items")[0])
    assert _keys(databases["data"][0]) == _keys(recorded(mbql, "database")[0])
    if version == "v0.57.3":
        assert fetched["dataset_query"]["stages"][0]["native"] == "select 1"
        assert fetched["dataset_query"]["lib/type"] == "mbql/query"
    else:
        assert fetched["dataset_query"]["native"]["query"] == "select 1"


def test_double_rejects_what_the_spec_rejects(double: MetabaseDouble) -> None:
    response = requests.post(
        f"{double.url}/api/card/",
        json={"name": "", "display": "table", "dataset_query": {}},
        headers=HEADERS,
        timeout=5,
    )
    assert response.status_code == 400
    assert len(double.violations) == 1
    assert "visualization_settings" in double.violations[0]
    bad_format = requests.post(
        f"{double.url}/api/card/1/query/pdf",
        json={"format_rows": False, "pivot_results": False},
        headers=HEADERS,
        timeout=5,
    )
    assert bad_format.status_code == 400
    assert len(double.violations) == 2
