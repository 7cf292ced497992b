"""A local stand-in for Metabase's REST API, for tests.

It runs on 127.0.0.1 on a free port, in a thread. Every request is validated against the
vendored slice of Metabase's OpenAPI spec (method, path, parameters, body schema); a request
the spec rejects gets a 400 and is recorded in `violations`, which the fixture checks after
each test. Answers are built from the responses dbt-metabase recorded from a real Metabase
(contracts/metabase/recorded/), with our values put in. It keeps state, so cards,
dashboards and collections created or updated through it are there on the next request.

Three things are adjusted in memory, never in the vendored file, because the published spec
is stricter than the server in ways that would make every client fail (see
contracts/metabase/README.md): `info.version` is added (openapi-core requires it), `servers`
points at the double, and query parameters typed `oneOf [array, null]` are read as arrays
(openapi-core cannot deserialise the repeated `models=card&models=dashboard` form otherwise).
Paths are matched with or without the trailing slash, as Metabase does.

Faults to inject: `expire_sessions()`, `fail_next()` (a burst of one status),
`delay_next()` (slower than a timeout), `fail_query_next()` (202 with an error body),
`fail_writes_after()` (a crash half-way through provisioning).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from .spec_slice import REPO_ROOT, load_slice

RECORDED = REPO_ROOT / "contracts" / "metabase" / "recorded" / "dbt-metabase"
QUERY_ROW_LIMIT = 2000
NOW = "2026-01-06T12:00:00.000000Z"


def recorded(mbql: str, relative: str) -> Any:
    """One recorded response, e.g. recorded("mbql5", "card/30")."""
    with (RECORDED / mbql / "api" / f"{relative}.json").open(encoding="utf-8") as handle:
        return json.load(handle)


def _validator() -> tuple[OpenAPI, set[str]]:
    spec = load_slice()
    spec["info"] = {**spec["info"], "version": "unstated"}
    spec["servers"] = [{"url": "/"}]
    for item in spec["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                choices = schema.get("oneOf") or schema.get("anyOf") or []
                arrays = [choice for choice in choices if choice.get("type") == "array"]
                if parameter["in"] == "query" and arrays:
                    parameter["schema"] = arrays[0]
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None)), set(spec["paths"])


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: MultiDict[str, str]
    body: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class SavedResult:
    """What a saved question returns: (name, display name, Metabase base type) and rows."""

    columns: list[tuple[str, str, str]]
    rows: list[list[Any]]


@dataclass
class _Fault:
    kind: str
    count: int
    status: int = 0
    seconds: float = 0.0
    path: re.Pattern[str] | None = None
    method: str | None = None
    message: str = ""

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return self.path is None or bool(self.path.search(path))


@dataclass
class WarehouseTable:
    schema: str
    name: str
    columns: list[tuple[str, str]]  # (name, database type)
    id: int = 0
    visible: bool = False


@dataclass
class _State:
    collections: dict[int, dict[str, Any]] = field(default_factory=dict)
    cards: dict[int, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, SavedResult] = field(default_factory=dict)
    tables: list[WarehouseTable] = field(default_factory=list)
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    table_updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 100


class MetabaseDouble:
    """The fake server's state, faults and request log. Start it with `running_double`."""

    DATABASE_ID = 2

    def __init__(
        self,
        *,
        version: str = "v0.57.3",
        api_key: str = "mb_test_key_0123456789",
        users: dict[str, str] | None = None,
        database_name: str = "cohortcast",
        sync_polls_needed: int = 1,
    ) -> None:
        self.version = version
        self.api_key = api_key
        self.users = users if users is not None else {"ada@example.com": "correct horse"}
        self.database_name = database_name
        self.sync_polls_needed = sync_polls_needed
        self.url = ""
        self.sessions: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.state = _State()
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._sync_requested = False
        self._polls_since_sync = 0
        self._writes_left: int | None = None
        self._openapi, self._spec_paths = _validator()
        self._routes = Map(
            [
                Rule("/api/session/", methods=["POST"], endpoint="login"),
                Rule("/api/session/properties", methods=["GET"], endpoint="properties"),
                Rule("/api/user/current", methods=["GET"], endpoint="current_user"),
                Rule("/api/database/", methods=["GET"], endpoint="databases"),
                Rule("/api/database/<int:id>/sync_schema", methods=["POST"], endpoint="sync"),
                Rule("/api/database/<int:id>/metadata", methods=["GET"], endpoint="metadata"),
                Rule("/api/table/", methods=["GET"], endpoint="tables"),
                Rule("/api/table/<int:id>", methods=["PUT"], endpoint="update_table"),
                Rule("/api/table/<int:id>/fields/order", methods=["PUT"], endpoint="field_order"),
                Rule("/api/field/<int:id>", methods=["PUT"], endpoint="update_field"),
                Rule("/api/collection/", methods=["GET"], endpoint="collections"),
                Rule("/api/collection/", methods=["POST"], endpoint="create_collection"),
                Rule("/api/collection/root/items", methods=["GET"], endpoint="root_items"),
                Rule("/api/collection/<int:id>/items", methods=["GET"], endpoint="items"),
                Rule("/api/card/", methods=["POST"], endpoint="create_card"),
                Rule("/api/card/<int:id>", methods=["GET"], endpoint="get_card"),
                Rule("/api/card/<int:id>", methods=["PUT"], endpoint="update_card"),
                Rule("/api/card/<int:id>/query", methods=["POST"], endpoint="query_card"),
                Rule("/api/card/<int:id>/query/<fmt>", methods=["POST"], endpoint="export"),
                Rule("/api/dashboard/", methods=["POST"], endpoint="create_dashboard"),
                Rule("/api/dashboard/<int:id>", methods=["GET"], endpoint="get_dashboard"),
                Rule("/api/dashboard/<int:id>", methods=["PUT"], endpoint="update_dashboard"),
            ],
            strict_slashes=False,
        )

    # Set-up helpers for tests --------------------------------------------------------------

    @property
    def mbql(self) -> str:
        return "mbql5" if self._release() >= 57 else "mbql4"

    def add_saved_question(
        self, name: str, columns: list[tuple[str, str, str]], rows: list[list[Any]]
    ) -> int:
        """A saved question whose export returns `rows`; returns its card id."""
        with self._lock:
            card_id = self._new_id()
            sql = "select " + ", ".join(column for column, _, _ in columns) + " from somewhere"
            self.state.cards[card_id] = self._card(
                card_id,
                {"name": name, "display": "table", "visualization_settings": {}},
                {"database": self.DATABASE_ID, "sql": sql, "legacy": False},
            )
            self.state.results[card_id] = SavedResult(columns, rows)
            return card_id

    def add_warehouse_table(self, schema: str, name: str, columns: list[tuple[str, str]]) -> None:
        """A table in the warehouse; Metabase sees it only after a schema sync."""
        with self._lock:
            self.state.tables.append(WarehouseTable(schema, name, columns, id=self._new_id()))

    def cards_named(self, name: str) -> list[dict[str, Any]]:
        return [card for card in self.state.cards.values() if card["name"] == name]

    def writes(self) -> list[RecordedRequest]:
        """Requests that changed state (or tried to)."""
        return [
            request
            for request in self.requests
            if request.method in {"POST", "PUT", "DELETE"}
            and not request.path.startswith("/api/session")
            and "/query" not in request.path
        ]

    # Faults --------------------------------------------------------------------------------

    def expire_sessions(self) -> None:
        """Forget every session: the next request with one gets 401 once."""
        with self._lock:
            self.sessions.clear()

    def fail_next(
        self, status: int, count: int = 1, *, path: str | None = None, method: str | None = None
    ) -> None:
        self._add_fault(_Fault("status", count, status=status, method=method, path=_rx(path)))

    def delay_next(self, seconds: float, count: int = 1, *, path: str | None = None) -> None:
        self._add_fault(_Fault("delay", count, seconds=seconds, path=_rx(path)))

    def fail_query_next(self, message: str, *, path: str | None = None) -> None:
        """The next query/export answers 202 with a failed-query body."""
        self._add_fault(_Fault("query", 1, message=message, path=_rx(path or r"/query")))

    def fail_writes_after(self, count: int | None) -> None:
        """After `count` more successful writes, every write fails with 500."""
        with self._lock:
            self._writes_left = count

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.matches(method, path):
                    fault.count -= 1
                    return fault
        return None

    # WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._respond(request)
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        body: Any = None
        if request.data:
            try:
                body = json.loads(request.data)
            except ValueError:
                body = request.get_data(as_text=True)
        record = RecordedRequest(
            request.method,
            request.path,
            MultiDict(request.args),
            body,
            {key.lower(): value for key, value in request.headers.items()},
        )
        with self._lock:
            self.requests.append(record)
        response = self._handle(request, body)
        record.status = response.status_code
        return response

    def _handle(self, request: Request, body: Any) -> Response:
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            return _json({"message": f"injected {fault.status}"}, fault.status)
        problem = self._validate(request)
        if problem:
            with self._lock:
                self.violations.append(f"{request.method} {request.path}: {problem}")
            return _json({"errors": {"request": problem}}, 400)
        if not self._authorised(request):
            return Response("Unauthenticated", status=401, content_type="text/plain")
        if fault is not None and fault.kind == "query":
            return _json(
                {"status": "failed", "error": fault.message, "error_type": "invalid-query"}, 202
            )
        adapter = self._routes.bind("127.0.0.1", path_info=_canonical(request.path))
        try:
            endpoint, values = adapter.match(method=request.method)
        except HTTPException as exc:
            return _json({"message": exc.description}, exc.code or 404)
        if self._is_write(request) and not self._take_write():
            return _json({"message": "injected failure after earlier writes"}, 500)
        try:
            with self._lock:
                handler = getattr(self, f"_on_{endpoint}")
                result = handler(request, body, **values)
        except NotFound as exc:
            return _json({"message": exc.description}, 404)
        if isinstance(result, Response):
            return result
        return _json(result)

    def _validate(self, request: Request) -> str | None:
        path = _canonical(request.path)
        if path not in self._spec_paths and path.rstrip("/") + "/" in self._spec_paths:
            path = path.rstrip("/") + "/"
        environ = dict(request.environ)
        environ["PATH_INFO"] = path
        data = request.get_data()
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        try:
            self._openapi.validate_request(WerkzeugOpenAPIRequest(Request(environ)))
        except Exception as exc:  # openapi-core raises many types; all mean "rejected"
            cause = exc.__cause__ or exc
            detail = getattr(cause, "schema_errors", None)
            return f"{exc}" + (f" ({[str(error.message) for error in detail]})" if detail else "")
        return None

    def _authorised(self, request: Request) -> bool:
        path = _canonical(request.path)
        if path in {"/api/session/", "/api/session/properties"}:
            return True
        if request.headers.get("x-api-key") == self.api_key:
            return True
        return request.headers.get("X-Metabase-Session", "") in self.sessions

    def _is_write(self, request: Request) -> bool:
        return request.method in {"POST", "PUT"} and bool(
            re.match(r"^/api/(card|dashboard|collection)/?(\d+)?/?$", request.path)
        )

    def _take_write(self) -> bool:
        with self._lock:
            if self._writes_left is None:
                return True
            if self._writes_left <= 0:
                return False
            self._writes_left -= 1
            return True

    def _release(self) -> int:
        match = re.match(r"v?\d+\.(\d+)", self.version)
        return int(match.group(1)) if match else 999

    def _new_id(self) -> int:
        self.state.next_id += 1
        return self.state.next_id

    # Handlers ------------------------------------------------------------------------------

    def _on_login(self, request: Request, body: Any) -> Any:
        if self.users.get(body.get("username")) != body.get("password"):
            return _json({"errors": {"password": "did not match stored password"}}, 401)
        token = str(uuid.uuid4())
        self.sessions.add(token)
        return {"id": token}

    def _on_properties(self, request: Request, body: Any) -> Any:
        return {
            "version": {"date": "2026-01-05", "tag": self.version, "hash": "48f6978"},
            "site-name": "cohortcast double",
            "site-url": self.url,
            "has-user-setup": True,
        }

    def _on_current_user(self, request: Request, body: Any) -> Any:
        return {
            "id": 1,
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": None,
            "common_name": "Ada",
            "is_superuser": True,
        }

    def _database(self) -> dict[str, Any]:
        database: dict[str, Any] = copy.deepcopy(recorded(self.mbql, "database")[0])
        database.update(id=self.DATABASE_ID, name=self.database_name)
        return database

    def _on_databases(self, request: Request, body: Any) -> Any:
        databases = [self._database()]
        # Real Metabase wraps this list; the recordings hold it unwrapped.
        return {"data": databases, "total": len(databases)}

    def _check_database(self, database_id: int) -> None:
        if database_id != self.DATABASE_ID:
            raise NotFound("Not found.")

    def _on_sync(self, request: Request, body: Any, id: int) -> Any:
        self._check_database(id)
        self._sync_requested = True
        self._polls_since_sync = 0
        return {"status": "ok"}

    def _visible_tables(self) -> list[WarehouseTable]:
        if self._sync_requested:
            self._polls_since_sync += 1
            if self._polls_since_sync >= self.sync_polls_needed:
                for table in self.state.tables:
                    table.visible = True
                self._sync_requested = False
        return [table for table in self.state.tables if table.visible]

    def _table_json(self, table: WarehouseTable) -> dict[str, Any]:
        template = recorded(self.mbql, "database/2/metadata")["tables"][0]
        result: dict[str, Any] = {
            key: copy.deepcopy(value)
            for key, value in template.items()
            if key not in {"fields", "segments", "metrics"}
        }
        result.update(
            id=table.id,
            db_id=self.DATABASE_ID,
            schema=table.schema,
            name=table.name,
            display_name=table.name.replace("_", " ").title(),
            description=None,
            entity_type="entity/GenericTable",
            estimated_row_count=None,
        )
        result.update(self.state.table_updates.get(table.id, {}))
        return result

    def _fields_json(self, table: WarehouseTable) -> list[dict[str, Any]]:
        template = recorded(self.mbql, "database/2/metadata")["tables"][0]["fields"][0]
        fields = []
        for position, (name, database_type) in enumerate(table.columns):
            field_id = table.id * 100 + position
            if field_id not in self.state.fields:
                item = copy.deepcopy(template)
                item.update(
                    id=field_id,
                    table_id=table.id,
                    name=name,
                    display_name=name.replace("_", " ").title(),
                    database_type=database_type,
                    position=position,
                    database_position=position,
                    description=None,
                    semantic_type=None,
                    fk_target_field_id=None,
                    target=None,
                )
                self.state.fields[field_id] = item
            fields.append(self.state.fields[field_id])
        return fields

    def _on_metadata(self, request: Request, body: Any, id: int) -> Any:
        self._check_database(id)
        metadata: dict[str, Any] = copy.deepcopy(recorded(self.mbql, "database/2/metadata"))
        metadata.update(id=self.DATABASE_ID, name=self.database_name)
        metadata["tables"] = [
            {**self._table_json(table), "fields": self._fields_json(table), "segments": []}
            for table in self._visible_tables()
        ]
        return metadata

    def _on_tables(self, request: Request, body: Any) -> Any:
        database = recorded(self.mbql, "table")[0]["db"]
        return [
            {**self._table_json(table), "db": {**database, "id": self.DATABASE_ID}}
            for table in self._visible_tables()
        ]

    def _table(self, table_id: int) -> WarehouseTable:
        for table in self.state.tables:
            if table.id == table_id and table.visible:
                return table
        raise NotFound("Not found.")

    def _on_update_table(self, request: Request, body: Any, id: int) -> Any:
        table = self._table(id)
        self.state.table_updates.setdefault(id, {}).update(body)
        return self._table_json(table)

    def _on_field_order(self, request: Request, body: Any, id: int) -> Any:
        self._table(id)
        return {"success": True}

    def _on_update_field(self, request: Request, body: Any, id: int) -> Any:
        if id not in self.state.fields:
            raise NotFound("Not found.")
        self.state.fields[id].update(body)
        return self.state.fields[id]

    # Collections

    def _collection_ref(self, collection_id: int | None) -> dict[str, Any]:
        if collection_id is None:
            root: dict[str, Any] = recorded(self.mbql, "card/30")["collection"]
            return copy.deepcopy(root)
        collection = self.state.collections[collection_id]
        return {key: collection[key] for key in ("id", "name", "authority_level", "is_personal")}

    def _on_collections(self, request: Request, body: Any) -> Any:
        recorded_list = recorded(self.mbql, "collection")
        archived = request.args.get("archived") == "true"
        mine = [c for c in self.state.collections.values() if c["archived"] == archived]
        return [copy.deepcopy(recorded_list[0]), copy.deepcopy(recorded_list[1]), *mine]

    def _on_create_collection(self, request: Request, body: Any) -> Any:
        collection: dict[str, Any] = copy.deepcopy(recorded(self.mbql, "collection")[2])
        collection_id = self._new_id()
        parent = body.get("parent_id")
        if parent is not None and parent not in self.state.collections:
            raise NotFound("Not found.")
        collection.update(
            id=collection_id,
            name=body["name"],
            description=body.get("description"),
            slug=re.sub(r"[^a-z0-9]+", "_", body["name"].lower()),
            entity_id=uuid.uuid4().hex[:21],
            location="/"
            if parent is None
            else f"{self.state.collections[parent]['location']}{parent}/",
            created_at=NOW,
        )
        self.state.collections[collection_id] = collection
        return collection

    def _items(self, request: Request, collection_id: int | None) -> Any:
        template = recorded(self.mbql, "collection/3/items")[0]
        wanted = set(request.args.getlist("models")) or {"card", "dashboard", "collection"}
        items: list[dict[str, Any]] = []
        for kind, objects in (("card", self.state.cards), ("dashboard", self.state.dashboards)):
            if kind not in wanted:
                continue
            for item in objects.values():
                if item["collection_id"] != collection_id or item["archived"]:
                    continue
                entry = copy.deepcopy(template)
                entry.update(
                    id=item["id"],
                    name=item["name"],
                    description=item.get("description"),
                    collection_id=collection_id,
                    display=item.get("display"),
                    entity_id=item["entity_id"],
                    model=kind,
                )
                items.append(entry)
        if "collection" in wanted:
            for collection in self.state.collections.values():
                parent = collection["location"].rstrip("/").rpartition("/")[2]
                if parent == str(collection_id or "") and not collection["archived"]:
                    entry = copy.deepcopy(template)
                    entry.update(id=collection["id"], name=collection["name"], model="collection")
                    items.append(entry)
        models = sorted({item["model"] for item in items})
        return {"data": items, "total": len(items), "models": models, "limit": None, "offset": None}

    def _on_root_items(self, request: Request, body: Any) -> Any:
        return self._items(request, None)

    def _on_items(self, request: Request, body: Any, id: int) -> Any:
        if id not in self.state.collections:
            raise NotFound("Not found.")
        return self._items(request, id)

    # Cards

    def _query_json(self, query: dict[str, Any]) -> dict[str, Any]:
        if self._release() >= 57:
            result: dict[str, Any] = {
                "lib/type": "mbql/query",
                "stages": [{"lib/type": "mbql.stage/native", "native": query["sql"]}],
                "database": query["database"],
            }
            if query["legacy"]:
                result["lib.convert/converted?"] = True
            return result
        return {
            "database": query["database"],
            "type": "native",
            "native": {"template-tags": {}, "query": query["sql"]},
        }

    @staticmethod
    def _parse_query(dataset_query: dict[str, Any]) -> dict[str, Any] | None:
        if dataset_query.get("lib/type") == "mbql/query":
            stages = dataset_query.get("stages") or [{}]
            sql = stages[0].get("native")
            legacy = False
        elif dataset_query.get("type") == "native":
            sql = (dataset_query.get("native") or {}).get("query")
            legacy = True
        else:
            return None
        if not isinstance(sql, str) or not sql.strip():
            return None
        return {"database": dataset_query.get("database"), "sql": sql, "legacy": legacy}

    def _card(self, card_id: int, body: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
        card: dict[str, Any] = copy.deepcopy(recorded(self.mbql, "card/30"))
        collection_id = body.get("collection_id")
        card.update(
            id=card_id,
            name=body["name"],
            description=body.get("description"),
            display=body["display"],
            visualization_settings=body["visualization_settings"],
            collection_id=collection_id,
            collection=self._collection_ref(collection_id),
            database_id=query["database"],
            type=body.get("type") or "question",
            entity_id=uuid.uuid4().hex[:21],
            created_at=NOW,
            updated_at=NOW,
            result_metadata=None,
            archived=False,
            query_type="native",
            table_id=None,
            view_count=0,
        )
        card["_query"] = query
        return card

    def _public_card(self, card: dict[str, Any]) -> dict[str, Any]:
        public = {key: copy.deepcopy(value) for key, value in card.items() if key != "_query"}
        public["dataset_query"] = self._query_json(card["_query"])
        return public

    def _on_create_card(self, request: Request, body: Any) -> Any:
        query = self._parse_query(body["dataset_query"])
        if query is None:
            return _json({"message": "Only native SQL questions are supported here."}, 400)
        if query["database"] != self.DATABASE_ID:
            return _json({"message": "Database does not exist."}, 400)
        if body.get("collection_id") not in (None, *self.state.collections):
            raise NotFound("Not found.")
        card_id = self._new_id()
        self.state.cards[card_id] = self._card(card_id, body, query)
        return self._public_card(self.state.cards[card_id])

    def _get_card(self, card_id: int) -> dict[str, Any]:
        if card_id not in self.state.cards:
            raise NotFound("Not found.")
        return self.state.cards[card_id]

    def _on_get_card(self, request: Request, body: Any, id: int) -> Any:
        return self._public_card(self._get_card(id))

    def _on_update_card(self, request: Request, body: Any, id: int) -> Any:
        card = self._get_card(id)
        for key, value in body.items():
            if key == "dataset_query":
                query = self._parse_query(value)
                if query is None:
                    return _json({"message": "Only native SQL questions are supported."}, 400)
                card["_query"] = query
            elif key == "collection_id":
                card["collection_id"] = value
                card["collection"] = self._collection_ref(value)
            else:
                card[key] = value
        card["updated_at"] = NOW
        return self._public_card(card)

    def _result(self, card_id: int) -> SavedResult:
        self._get_card(card_id)
        return self.state.results.get(card_id, SavedResult([], []))

    def _on_query_card(self, request: Request, body: Any, id: int) -> Any:
        result = self._result(id)
        rows = result.rows[:QUERY_ROW_LIMIT]
        cols = [
            {"name": name, "display_name": display, "base_type": base}
            for name, display, base in result.columns
        ]
        payload = {
            "data": {"rows": rows, "cols": cols},
            "row_count": len(rows),
            "status": "completed",
        }
        return _json(payload, 202)

    def _on_export(self, request: Request, body: Any, id: int, fmt: str) -> Any:
        result = self._result(id)
        if self._release() >= 53:
            options = body if isinstance(body, dict) else dict(request.form)
        else:
            options = dict(request.args)
        format_rows = options.get("format_rows", True) not in (False, "false")
        titles = [display for _, display, _ in result.columns]
        rows = [
            [
                _format(value, base) if format_rows else value
                for value, (_, _, base) in zip(row, result.columns, strict=True)
            ]
            for row in result.rows
        ]
        if fmt == "json":
            return _json([dict(zip(titles, row, strict=True)) for row in rows])
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(titles)
            writer.writerows(["" if value is None else value for value in row] for row in rows)
            return Response(buffer.getvalue(), content_type="text/csv")
        return _json({"message": f"export format {fmt} is not supported by the double"}, 400)

    # Dashboards

    def _dashboard_json(self, dashboard: dict[str, Any]) -> dict[str, Any]:
        public = {key: copy.deepcopy(value) for key, value in dashboard.items() if key != "_cards"}
        template = recorded(self.mbql, "dashboard/2")["dashcards"][0]
        dashcards = []
        for item in dashboard["_cards"]:
            dashcard = copy.deepcopy(template)
            card = self.state.cards.get(item["card_id"])
            dashcard.update(
                id=item["id"],
                card_id=item["card_id"],
                dashboard_id=dashboard["id"],
                row=item["row"],
                col=item["col"],
                size_x=item["size_x"],
                size_y=item["size_y"],
                series=[],
                parameter_mappings=[],
                visualization_settings={},
                card=self._public_card(card) if card else None,
            )
            dashcards.append(dashcard)
        public["dashcards"] = dashcards
        return public

    def _on_create_dashboard(self, request: Request, body: Any) -> Any:
        dashboard: dict[str, Any] = {
            key: copy.deepcopy(value)
            for key, value in recorded(self.mbql, "dashboard/2").items()
            if key != "dashcards"
        }
        dashboard_id = self._new_id()
        collection_id = body.get("collection_id")
        if collection_id not in (None, *self.state.collections):
            raise NotFound("Not found.")
        dashboard.update(
            id=dashboard_id,
            name=body["name"],
            description=body.get("description"),
            collection_id=collection_id,
            collection=self._collection_ref(collection_id),
            entity_id=uuid.uuid4().hex[:21],
            created_at=NOW,
            updated_at=NOW,
            view_count=0,
            archived=False,
        )
        dashboard["_cards"] = []
        self.state.dashboards[dashboard_id] = dashboard
        return self._dashboard_json(dashboard)

    def _get_dashboard(self, dashboard_id: int) -> dict[str, Any]:
        if dashboard_id not in self.state.dashboards:
            raise NotFound("Not found.")
        return self.state.dashboards[dashboard_id]

    def _on_get_dashboard(self, request: Request, body: Any, id: int) -> Any:
        return self._dashboard_json(self._get_dashboard(id))

    def _on_update_dashboard(self, request: Request, body: Any, id: int) -> Any:
        dashboard = self._get_dashboard(id)
        for key, value in body.items():
            if key == "dashcards":
                existing = {item["id"] for item in dashboard["_cards"]}
                cards = []
                for item in value:
                    if item["id"] >= 0 and item["id"] not in existing:
                        return _json({"message": f"dashcard {item['id']} not found"}, 400)
                    if item.get("card_id") not in self.state.cards:
                        return _json({"message": "card_id must be an existing card"}, 400)
                    new_id = item["id"] if item["id"] >= 0 else self._new_id()
                    cards.append({**item, "id": new_id})
                dashboard["_cards"] = cards
            elif key == "collection_id":
                dashboard["collection_id"] = value
                dashboard["collection"] = self._collection_ref(value)
            else:
                dashboard[key] = value
        dashboard["updated_at"] = NOW
        return self._dashboard_json(dashboard)


def _format(value: Any, base_type: str) -> Any:
    """What `format_rows` true does to a value: numbers get thousands separators."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float) and base_type in {"type/Integer", "type/BigInteger"}:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return value


def _rx(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


def _canonical(path: str) -> str:
    return path if path.endswith("/") or path.count("/") > 2 else path + "/"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


@contextmanager
def running_double(**options: Any) -> Iterator[MetabaseDouble]:
    """Serve a fresh double on 127.0.0.1 in a thread for the length of the block."""
    double = MetabaseDouble(**options)
    server = make_server("127.0.0.1", 0, double, threaded=True)
    double.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="metabase-double", daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
