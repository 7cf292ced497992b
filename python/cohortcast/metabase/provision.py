"""Questions out: dbt exposures with a `meta.metabase` block become Metabase questions.

An exposure declares, under `meta.metabase`: the `collection` (a top-level collection, by
name), an optional `dashboard` (by name; exposures naming the same dashboard share it), and
`questions`, each with `name`, `sql`, `display`, optional `description`,
`visualization_settings` and `width` (`half` or `full` of the dashboard). The SQL names
models as dbt does, `{{ ref('model') }}` and `{{ source('name', 'table') }}`, inside a
`{% raw %}` block, because dbt renders Jinja in YAML before `ref` exists there; this module
turns them into `schema.table` names from the manifest. Every relation the SQL names must
also be in the exposure's `depends_on`, so dbt's lineage shows what Metabase reads.

`sync` finds the database by name, asks Metabase to sync its schema and waits (with a
deadline) for the tables, then creates what is missing and updates what differs, comparing
before every write: a second sync with nothing changed writes nothing. Objects are found by
name inside the collection, so a sync cut off half-way converges on the next run without
duplicates. `plan=True` reads only and lists what would change. Question and dashboard URLs
are written to `target/metabase_urls.json`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortcast.errors import ConfigError, MetabaseError
from cohortcast.metabase.client import MetabaseClient

logger = logging.getLogger(__name__)

URLS_FILE = Path("target") / "metabase_urls.json"
MANIFEST_FILE = Path("target") / "manifest.json"
GRID_WIDTH = 24
CARD_HEIGHT = 8
DEFAULT_TABLE_WAIT_SECONDS = 120.0
DEFAULT_POLL_SECONDS = 2.0
_JINJA_CALL = re.compile(r"\{\{\s*(ref|source)\s*\(([^)]*)\)\s*\}\}")
_ARGUMENT = re.compile(r"""^\s*(['"])([^'"]+)\1\s*$""")


@dataclass(frozen=True)
class Question:
    """One card as declared in an exposure, with its SQL compiled."""

    exposure: str
    name: str
    sql: str
    display: str
    description: str | None
    visualization_settings: dict[str, Any]
    width: int
    relations: tuple[tuple[str, str], ...]  # (schema, table) the SQL reads


@dataclass(frozen=True)
class Dashboard:
    name: str
    description: str | None
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Declaration:
    """Everything the dbt project asks Metabase to hold."""

    collection: str
    questions: tuple[Question, ...]
    dashboards: tuple[Dashboard, ...]

    @property
    def relations(self) -> list[tuple[str, str]]:
        return sorted({relation for question in self.questions for relation in question.relations})


@dataclass(frozen=True)
class Change:
    action: str  # create, update
    kind: str  # collection, card, dashboard, dashboard cards
    name: str
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.kind} {self.name!r}{detail}"


@dataclass
class SyncResult:
    plan: bool
    changes: list[Change] = field(default_factory=list)
    urls: dict[str, Any] = field(default_factory=dict)
    urls_file: Path | None = None

    def summary(self) -> str:
        verb = "would change" if self.plan else "changed"
        if not self.changes:
            head = "Metabase is up to date: nothing to change"
        else:
            head = f"Metabase: {verb} {len(self.changes)} object(s):"
        lines = [head, *(f"  {change.describe()}" for change in self.changes)]
        if self.urls and not self.plan:
            lines.append(f"URLs in {self.urls_file}")
        return "\n".join(lines)


# Reading the declaration from the manifest ------------------------------------------------


def load_manifest(project_dir: Path) -> dict[str, Any]:
    path = project_dir / MANIFEST_FILE
    if not path.exists():
        raise ConfigError(f"{path} is missing; run `dbt parse` in {project_dir} first")
    with path.open(encoding="utf-8") as handle:
        manifest: dict[str, Any] = json.load(handle)
    return manifest


def read_declaration(manifest: Mapping[str, Any]) -> Declaration:
    """The collection, questions and dashboards declared in exposures' `meta.metabase`."""
    collections: set[str] = set()
    questions: list[Question] = []
    dashboards: dict[str, list[str]] = {}
    descriptions: dict[str, str | None] = {}
    # Manifest order is the YAML order, which is the order on the dashboard.
    for exposure in manifest.get("exposures", {}).values():
        block = (exposure.get("config", {}).get("meta") or exposure.get("meta") or {}).get(
            "metabase"
        )
        if not block:
            continue
        where = f"exposure {exposure['name']} ({exposure.get('original_file_path')})"
        collection = block.get("collection")
        if not isinstance(collection, str) or not collection.strip():
            raise ConfigError(f"{where}: meta.metabase.collection must name a collection")
        collections.add(collection.strip())
        declared = block.get("questions") or []
        if not declared:
            raise ConfigError(f"{where}: meta.metabase.questions is empty")
        depends_on = set(exposure.get("depends_on", {}).get("nodes", []))
        names = [
            _question(manifest, where, exposure["name"], item, depends_on) for item in declared
        ]
        questions.extend(names)
        if block.get("dashboard"):
            dashboard = str(block["dashboard"])
            dashboards.setdefault(dashboard, []).extend(question.name for question in names)
            if block.get("dashboard_description") or dashboard not in descriptions:
                descriptions[dashboard] = block.get("dashboard_description") or None
    if len(collections) > 1:
        raise ConfigError(
            f"exposures name more than one Metabase collection ({', '.join(sorted(collections))}); "
            "use one collection for everything cohortcast provisions"
        )
    seen: set[str] = set()
    for question in questions:
        if question.name in seen:
            raise ConfigError(f"two Metabase questions are named {question.name!r}; rename one")
        seen.add(question.name)
    if not questions:
        raise ConfigError(
            "no exposure in the dbt project has a meta.metabase block; see docs/metabase.md"
        )
    return Declaration(
        collection=collections.pop(),
        questions=tuple(questions),
        dashboards=tuple(
            Dashboard(name, descriptions[name], tuple(cards)) for name, cards in dashboards.items()
        ),
    )


def _question(
    manifest: Mapping[str, Any],
    where: str,
    exposure: str,
    item: Mapping[str, Any],
    depends_on: set[str],
) -> Question:
    name = str(item.get("name") or "").strip()
    sql = str(item.get("sql") or "").strip()
    if not name or not sql:
        raise ConfigError(f"{where}: every question needs a name and sql")
    display = str(item.get("display") or "table")
    width = item.get("width", "half")
    if width not in ("half", "full"):
        raise ConfigError(f"{where}: question {name!r} width must be half or full")
    relations: list[tuple[str, str]] = []

    def compile_call(match: re.Match[str]) -> str:
        kind, raw_arguments = match.group(1), match.group(2)
        arguments = [_argument(where, part) for part in raw_arguments.split(",")]
        node = _resolve(manifest, where, kind, arguments)
        if node["unique_id"] not in depends_on:
            call = f"{kind}({', '.join(repr(argument) for argument in arguments)})"
            raise ConfigError(f"{where}: question {name!r} uses {call}; add it to depends_on")
        table = node.get("alias") or node.get("identifier") or node["name"]
        relations.append((node["schema"], table))
        return f"{_quote(node['schema'])}.{_quote(table)}"

    compiled = _JINJA_CALL.sub(compile_call, sql)
    if "{{" in compiled or "{%" in compiled:
        raise ConfigError(
            f"{where}: question {name!r} has Jinja other than ref() and source(); only those "
            "two are compiled"
        )
    settings = item.get("visualization_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: visualization_settings of {name!r} must be a mapping")
    return Question(
        exposure=exposure,
        name=name,
        sql=compiled,
        display=display,
        description=(str(item["description"]).strip() or None) if item.get("description") else None,
        visualization_settings=settings,
        width=GRID_WIDTH if width == "full" else GRID_WIDTH // 2,
        relations=tuple(dict.fromkeys(relations)),
    )


def _argument(where: str, text: str) -> str:
    match = _ARGUMENT.match(text)
    if not match:
        raise ConfigError(f"{where}: ref() and source() take quoted names, not {text.strip()!r}")
    return match.group(2)


def _resolve(
    manifest: Mapping[str, Any], where: str, kind: str, arguments: list[str]
) -> Mapping[str, Any]:
    if kind == "ref" and len(arguments) == 1:
        for node in manifest.get("nodes", {}).values():
            if (
                node.get("resource_type") in {"model", "seed", "snapshot"}
                and node["name"] == (arguments[0])
            ):
                resolved: Mapping[str, Any] = node
                return resolved
        raise ConfigError(f"{where}: ref({arguments[0]!r}) names no model in the project")
    if kind == "source" and len(arguments) == 2:
        for node in manifest.get("sources", {}).values():
            if node["source_name"] == arguments[0] and node["name"] == arguments[1]:
                found: Mapping[str, Any] = node
                return found
        raise ConfigError(f"{where}: source{tuple(arguments)!r} is not declared in the project")
    raise ConfigError(f"{where}: use ref('model') or source('source', 'table')")


def _quote(identifier: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_]*", identifier):
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


# Native queries in both card formats -----------------------------------------------------


def native_query(database_id: int, sql: str, *, mbql5: bool) -> dict[str, Any]:
    """A native `dataset_query` in the format the server stores (MBQL 5 since 0.57)."""
    if mbql5:
        return {
            "lib/type": "mbql/query",
            "database": database_id,
            "stages": [{"lib/type": "mbql.stage/native", "native": sql}],
        }
    return {
        "database": database_id,
        "type": "native",
        "native": {"query": sql, "template-tags": {}},
    }


def native_sql(dataset_query: Mapping[str, Any]) -> str | None:
    """The SQL of a native query in either format; None for GUI-built queries."""
    if dataset_query.get("lib/type") == "mbql/query":
        stages = dataset_query.get("stages") or []
        if len(stages) == 1 and stages[0].get("lib/type") == "mbql.stage/native":
            return str(stages[0].get("native"))
        return None
    if dataset_query.get("type") == "native":
        return str((dataset_query.get("native") or {}).get("query"))
    return None


# Talking to Metabase ---------------------------------------------------------------------


def find_database(client: MetabaseClient, name: str) -> int:
    databases = client.get("/api/database/")
    for database in databases:
        if str(database.get("name", "")).lower() == name.lower():
            return int(database["id"])
    known = ", ".join(sorted(str(database.get("name")) for database in databases)) or "none"
    raise MetabaseError(
        f"Metabase has no database named {name!r} (it has: {known}); set METABASE_DATABASE "
        "to the name the warehouse has in Metabase's admin settings"
    )


def wait_for_tables(
    client: MetabaseClient,
    database_id: int,
    relations: Iterable[tuple[str, str]],
    *,
    deadline_seconds: float,
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until Metabase knows every relation, asking it to sync its schema if it does not.

    When every table is already known nothing is sent, so a sync with nothing new writes
    nothing at all.
    """
    wanted = {(schema.lower(), table.lower()) for schema, table in relations}
    started = time.monotonic()
    requested = False
    while True:
        missing = sorted(wanted - _known_tables(client, database_id))
        if not missing:
            logger.info(
                "Metabase knows all %d tables (%.1f s)", len(wanted), time.monotonic() - started
            )
            return
        if not requested:
            logger.info("asking Metabase to sync its schema: it lacks %d table(s)", len(missing))
            client.post(f"/api/database/{database_id}/sync_schema")
            requested = True
            continue
        if time.monotonic() - started >= deadline_seconds:
            names = ", ".join(f"{schema}.{table}" for schema, table in missing)
            raise MetabaseError(
                f"Metabase still does not see {names} after {deadline_seconds:g} s of schema "
                "sync; check that `dbt build` created them and that Metabase's database user "
                "can read them"
            )
        logger.debug("waiting for Metabase to see %d table(s)", len(missing))
        sleep(poll_seconds)


def _known_tables(client: MetabaseClient, database_id: int) -> set[tuple[str, str]]:
    return {
        (str(table.get("schema", "")).lower(), str(table.get("name", "")).lower())
        for table in client.get("/api/table/")
        if table.get("db_id") == database_id
    }


def find_collection(client: MetabaseClient, name: str) -> int | None:
    for collection in client.get("/api/collection/"):
        if (
            collection.get("name") == name
            and collection.get("location") == "/"
            and not collection.get("archived")
            and not collection.get("personal_owner_id")
        ):
            return int(collection["id"])
    return None


def collection_items(client: MetabaseClient, collection_id: int) -> dict[tuple[str, str], int]:
    """(model, name) -> id of the cards and dashboards in a collection; lowest id wins."""
    # Since 0.53 a card can live inside a dashboard ("dashboard question") and is listed
    # only with show_dashboard_questions; older servers ignore the flag.
    items = client.get(
        f"/api/collection/{collection_id}/items",
        {"models": ["card", "dashboard"], "show_dashboard_questions": True},
    )
    found: dict[tuple[str, str], int] = {}
    for item in sorted(items, key=lambda entry: int(entry["id"])):
        key = (str(item["model"]), str(item["name"]))
        if key in found:
            logger.warning(
                "collection %s has two %ss named %r; using id %s",
                collection_id,
                key[0],
                key[1],
                found[key],
            )
            continue
        found[key] = int(item["id"])
    return found


def _card_body(
    question: Question, database_id: int, collection_id: int | None, mbql5: bool
) -> dict[str, Any]:
    return {
        "name": question.name,
        "type": "question",
        "display": question.display,
        "description": question.description,
        "visualization_settings": question.visualization_settings,
        "collection_id": collection_id,
        "dataset_query": native_query(database_id, question.sql, mbql5=mbql5),
    }


def card_differences(
    existing: Mapping[str, Any], question: Question, database_id: int, collection_id: int
) -> dict[str, Any]:
    """The fields to PUT so that `existing` matches `question`; empty when it does."""
    changes: dict[str, Any] = {}
    if (existing.get("description") or None) != question.description:
        changes["description"] = question.description
    if existing.get("display") != question.display:
        changes["display"] = question.display
    # Only the declared keys are compared: a server may add its own defaults on save, and
    # those must not make every sync an update.
    current_settings = existing.get("visualization_settings") or {}
    if any(
        current_settings.get(key) != value for key, value in question.visualization_settings.items()
    ):
        changes["visualization_settings"] = question.visualization_settings
    if existing.get("collection_id") != collection_id:
        changes["collection_id"] = collection_id
    if existing.get("type") not in (None, "question"):
        changes["type"] = "question"
    query = existing.get("dataset_query") or {}
    sql = native_sql(query)
    if (sql or "").strip() != question.sql.strip() or query.get("database") != database_id:
        changes["dataset_query"] = None  # filled in by the caller, in the server's format
    return changes


def _layout(
    dashboard: Dashboard, card_ids: Mapping[str, int], widths: Mapping[str, int]
) -> list[dict[str, int]]:
    """Cards left to right, top to bottom, on Metabase's 24-column grid."""
    layout: list[dict[str, int]] = []
    row = col = 0
    for name in dashboard.questions:
        width = widths[name]
        if col + width > GRID_WIDTH:
            row, col = row + CARD_HEIGHT, 0
        layout.append(
            {
                "card_id": card_ids[name],
                "row": row,
                "col": col,
                "size_x": width,
                "size_y": CARD_HEIGHT,
            }
        )
        col += width
    return layout


def _placement(dashcard: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    # Text and heading dashcards have no card; they count as placements of card 0.
    return (
        int(dashcard.get("card_id") or 0),
        int(dashcard["row"]),
        int(dashcard["col"]),
        int(dashcard["size_x"]),
        int(dashcard["size_y"]),
    )


def sync(
    client: MetabaseClient,
    project_dir: Path,
    database_name: str,
    *,
    plan: bool = False,
    table_wait_seconds: float = DEFAULT_TABLE_WAIT_SECONDS,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    manifest: Mapping[str, Any] | None = None,
) -> SyncResult:
    """Make Metabase hold the questions and dashboards the dbt exposures declare."""
    declaration = read_declaration(manifest or load_manifest(project_dir))
    result = SyncResult(plan=plan)
    mbql5 = client.version.returns_mbql5
    database_id = find_database(client, database_name)
    if plan:
        logger.info("plan only: not asking Metabase to sync its schema")
    else:
        wait_for_tables(
            client,
            database_id,
            declaration.relations,
            deadline_seconds=table_wait_seconds,
            poll_seconds=poll_seconds,
        )

    collection_id = find_collection(client, declaration.collection)
    if collection_id is None:
        result.changes.append(Change("create", "collection", declaration.collection))
        if not plan:
            created = client.post("/api/collection/", {"name": declaration.collection})
            collection_id = int(created["id"])
    existing = collection_items(client, collection_id) if collection_id is not None else {}

    card_ids: dict[str, int] = {}
    for question in declaration.questions:
        card_id = existing.get(("card", question.name))
        if card_id is None:
            result.changes.append(Change("create", "card", question.name))
            if not plan:
                assert collection_id is not None
                body = _card_body(question, database_id, collection_id, mbql5)
                card_id = int(client.post("/api/card/", body)["id"])
        else:
            card = client.get(f"/api/card/{card_id}")
            assert collection_id is not None
            changes = card_differences(card, question, database_id, collection_id)
            if changes:
                if "dataset_query" in changes:
                    changes["dataset_query"] = native_query(database_id, question.sql, mbql5=mbql5)
                result.changes.append(Change("update", "card", question.name, tuple(changes)))
                if not plan:
                    client.put(f"/api/card/{card_id}", changes)
        if card_id is not None:
            card_ids[question.name] = card_id
            result.urls.setdefault(question.exposure, {}).setdefault("questions", {})[
                question.name
            ] = client.card_url(card_id)

    widths = {question.name: question.width for question in declaration.questions}
    for dashboard in declaration.dashboards:
        _sync_dashboard(client, dashboard, collection_id, existing, card_ids, widths, result)

    if not plan:
        result.urls_file = _write_urls(project_dir, result.urls)
    return result


def _sync_dashboard(
    client: MetabaseClient,
    dashboard: Dashboard,
    collection_id: int | None,
    existing: Mapping[tuple[str, str], int],
    card_ids: Mapping[str, int],
    widths: Mapping[str, int],
    result: SyncResult,
) -> None:
    dashboard_id = existing.get(("dashboard", dashboard.name))
    current: dict[str, Any] = {"dashcards": [], "description": dashboard.description}
    if dashboard_id is None:
        result.changes.append(Change("create", "dashboard", dashboard.name))
        if result.plan:
            if dashboard.questions:
                result.changes.append(Change("update", "dashboard cards", dashboard.name))
            return
        body = {
            "name": dashboard.name,
            "collection_id": collection_id,
            "description": dashboard.description,
        }
        dashboard_id = int(client.post("/api/dashboard/", body)["id"])
    else:
        current = client.get(f"/api/dashboard/{dashboard_id}")
    if result.plan and any(name not in card_ids for name in dashboard.questions):
        result.changes.append(Change("update", "dashboard cards", dashboard.name))
        return
    desired = _layout(dashboard, card_ids, widths)
    dashcards = current.get("dashcards") or []
    have = sorted(_placement(dashcard) for dashcard in dashcards)
    if have != sorted(_placement(item) for item in desired):
        # Keep the ids of dashcards that stay, so their per-card settings survive.
        reusable = {
            int(dashcard["card_id"]): int(dashcard["id"])
            for dashcard in dashcards
            if dashcard.get("card_id")
        }
        new_id = -1
        body_cards = []
        for item in desired:
            dashcard_id = reusable.pop(item["card_id"], None)
            if dashcard_id is None:
                dashcard_id, new_id = new_id, new_id - 1
            body_cards.append({"id": dashcard_id, **item})
        result.changes.append(Change("update", "dashboard cards", dashboard.name))
        if not result.plan:
            client.put(f"/api/dashboard/{dashboard_id}", {"dashcards": body_cards})
    if (current.get("description") or None) != dashboard.description:
        result.changes.append(Change("update", "dashboard", dashboard.name, ("description",)))
        if not result.plan:
            client.put(f"/api/dashboard/{dashboard_id}", {"description": dashboard.description})
    for question in dashboard.questions:
        exposure_urls = [
            urls for urls in result.urls.values() if question in urls.get("questions", {})
        ]
        for urls in exposure_urls:
            urls["dashboard"] = client.dashboard_url(dashboard_id)


def _write_urls(project_dir: Path, urls: Mapping[str, Any]) -> Path:
    """Write the URL map, only when it changed."""
    path = project_dir / URLS_FILE
    text = json.dumps({"exposures": urls}, indent=2, sort_keys=True) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        logger.info("wrote Metabase URLs to %s", path)
    return path
