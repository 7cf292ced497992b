"""Cut the operations the client uses out of Metabase's OpenAPI spec, unmodified.

The full `api.json` (1.3 MB, AGPL, metabase/metabase) stays in /work/shared; the repository
vendors only the slice produced here. Run as a script to regenerate it:

    python python/tests/metabase_double/spec_slice.py /work/shared/contracts/metabase/api.json

Every path item and component schema in the slice is byte-for-byte the same JSON value as in
the full spec; only the selection is ours. `test_metabase_contract.py` checks that when the
full spec is present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
SLICE_PATH = REPO_ROOT / "contracts" / "metabase" / "api.slice.json"
FULL_SPEC_PATH = Path("/work/shared/contracts/metabase/api.json")

# (method, spec path) of every operation the client, dbt-metabase or the tests call.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("post", "/api/session/"),
    ("get", "/api/session/properties"),
    ("get", "/api/user/current"),
    ("get", "/api/database/"),
    ("post", "/api/database/{id}/sync_schema"),
    ("get", "/api/database/{id}/metadata"),
    ("get", "/api/table/"),
    ("put", "/api/table/{id}"),
    ("put", "/api/table/{id}/fields/order"),
    ("put", "/api/field/{id}"),
    ("get", "/api/collection/"),
    ("post", "/api/collection/"),
    ("get", "/api/collection/{id}/items"),
    ("get", "/api/collection/root/items"),
    ("post", "/api/card/"),
    ("get", "/api/card/{id}"),
    ("put", "/api/card/{id}"),
    ("post", "/api/card/{card-id}/query"),
    ("post", "/api/card/{card-id}/query/{export-format}"),
    ("post", "/api/dashboard/"),
    ("get", "/api/dashboard/{id}"),
    ("put", "/api/dashboard/{id}"),
)

_REF_PREFIX = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            found.add(ref[len(_REF_PREFIX) :].replace("~1", "/").replace("~0", "~"))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def extract_slice(full: dict[str, Any]) -> dict[str, Any]:
    """The sub-spec holding OPERATIONS and every component schema they reach."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        paths.setdefault(path, {})[method] = full["paths"][path][method]
    all_schemas = full["components"]["schemas"]
    schemas: dict[str, Any] = {}
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in schemas:
            continue
        schemas[name] = all_schemas[name]
        pending |= _refs(schemas[name]) - set(schemas)
    return {
        "openapi": full["openapi"],
        "info": full["info"],
        "servers": full["servers"],
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {"schemas": {name: schemas[name] for name in sorted(schemas)}},
    }


def load_slice() -> dict[str, Any]:
    with SLICE_PATH.open(encoding="utf-8") as handle:
        spec: dict[str, Any] = json.load(handle)
    return spec


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else FULL_SPEC_PATH
    with source.open(encoding="utf-8") as handle:
        full = json.load(handle)
    sliced = extract_slice(full)
    SLICE_PATH.write_text(json.dumps(sliced, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(
        f"wrote {SLICE_PATH}: {len(sliced['paths'])} paths, "
        f"{len(sliced['components']['schemas'])} schemas"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
