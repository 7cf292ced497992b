"""Questions out: the shipped exposures provisioned into the double, idempotently."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from metabase_double import MetabaseDouble, running_double

from cohortcast.errors import ConfigError, MetabaseError
from cohortcast.metabase.client import MetabaseClient, MetabaseSettings
from cohortcast.metabase.commands import sync_command
from cohortcast.metabase.provision import (
    native_query,
    native_sql,
    read_declaration,
    sync,
)
from cohortcast.warehouse import ConnectionSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "mb_test_key_0123456789"
DATABASE = "cohortcast"
DASHBOARD = "Cohortcast: cohorts and churn"
# The five questions the issue asks for, as named in models/marts/_metabase__exposures.yml.
SHIPPED = {
    "Retention heatmap per cohort",
    "Churn risk by cohort",
    "Model performance over runs",
    "Calibration of the published model",
    "Data-quality results",
}
TABLES = [
    ("analytics", "cohort_retention"),
    ("analytics", "churn_risk_by_cohort"),
    ("analytics", "model_run_metrics"),
    ("analytics", "model_run_calibration"),
    ("analytics", "data_quality_results"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the dbt project, parsed by dbt, so the shipped YAML is what is tested."""
    from dbt.cli.main import dbtRunner

    root = tmp_path_factory.mktemp("project")
    for name in ("dbt_project.yml", "models", "macros"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy(source, root / name)
    shutil.copy(REPO_ROOT / "profiles.example.yml", root / "profiles.yml")
    result = dbtRunner().invoke(
        ["--quiet", "parse", "--project-dir", str(root), "--profiles-dir", str(root)]
    )
    assert result.success, result.exception
    return root


@pytest.fixture
def manifest(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((project / "target" / "manifest.json").read_text())
    return loaded


@pytest.fixture
def workdir(project: Path, tmp_path: Path) -> Path:
    """A project directory of its own per test, for the URL file."""
    (tmp_path / "target").mkdir()
    shutil.copy(project / "target" / "manifest.json", tmp_path / "target" / "manifest.json")
    return tmp_path


@pytest.fixture(params=["v0.57.3", "v0.50.5"])
def double(request: pytest.FixtureRequest) -> Iterator[MetabaseDouble]:
    with running_double(version=request.param, database_name=DATABASE) as server:
        for schema, table in TABLES:
            server.add_warehouse_table(schema, table, [("id", "text")])
        yield server
        assert server.violations == []


@pytest.fixture
def client(double: MetabaseDouble) -> Iterator[MetabaseClient]:
    settings = MetabaseSettings(url=double.url, api_key=API_KEY, backoff_factor=0.01)
    with MetabaseClient(settings) as metabase:
        yield metabase


def run_sync(client: MetabaseClient, workdir: Path, *, plan: bool = False) -> Any:
    return sync(client, workdir, DATABASE, plan=plan, poll_seconds=0.01, table_wait_seconds=2)


def test_shipped_exposures_declare_the_five_questions(manifest: dict[str, Any]) -> None:
    declaration = read_declaration(manifest)
    assert declaration.collection == "Cohortcast"
    assert {question.name for question in declaration.questions} == SHIPPED
    [dashboard] = declaration.dashboards
    assert dashboard.name == DASHBOARD
    assert set(dashboard.questions) == SHIPPED
    assert sorted(declaration.relations) == sorted(TABLES)
    # Only marts: the reader role Metabase connects as can read nothing else.
    assert {schema for schema, _ in declaration.relations} == {"analytics"}


def test_refs_and_sources_compile_to_relation_names(manifest: dict[str, Any]) -> None:
    questions = {question.name: question for question in read_declaration(manifest).questions}
    heatmap = questions["Retention heatmap per cohort"].sql
    assert "from analytics.cohort_retention" in heatmap
    calibration = questions["Calibration of the published model"].sql
    assert "from analytics.model_run_calibration" in calibration
    data_quality = questions["Data-quality results"].sql
    assert "from analytics.data_quality_results" in data_quality
    for question in questions.values():
        assert "{{" not in question.sql
        assert "{%" not in question.sql


def test_first_sync_creates_everything_once(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    result = run_sync(client, workdir)

    collections = list(double.state.collections.values())
    assert [collection["name"] for collection in collections] == ["Cohortcast"]
    collection_id = collections[0]["id"]
    cards = [card for card in double.state.cards.values()]
    assert sorted(card["name"] for card in cards) == sorted(SHIPPED)
    assert {card["collection_id"] for card in cards} == {collection_id}
    assert {card["_query"]["database"] for card in cards} == {double.DATABASE_ID}
    [dashboard] = double.state.dashboards.values()
    assert dashboard["name"] == DASHBOARD
    placed = {item["card_id"] for item in dashboard["_cards"]}
    assert placed == {card["id"] for card in cards}
    # 1 collection + 5 cards + 1 dashboard + its cards.
    assert [change.action for change in result.changes].count("create") == 7
    # Metabase was asked to sync its schema before anything was created.
    sync_at = next(i for i, r in enumerate(double.requests) if r.path.endswith("sync_schema"))
    first_write = double.requests.index(double.writes()[1])
    assert sync_at < first_write


def test_cards_use_the_query_format_of_the_server(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)

    creates = [r.body for r in double.requests if r.method == "POST" and r.path == "/api/card/"]
    assert len(creates) == 5
    for body in creates:
        if double.version == "v0.57.3":
            assert body["dataset_query"]["lib/type"] == "mbql/query"
            assert body["dataset_query"]["stages"][0]["lib/type"] == "mbql.stage/native"
        else:
            assert body["dataset_query"]["type"] == "native"
        assert body["type"] == "question"


def test_dashboard_layout_fills_the_grid(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)

    [dashboard] = double.state.dashboards.values()
    names = {card_id: card["name"] for card_id, card in double.state.cards.items()}
    layout = sorted(
        (item["row"], item["col"], item["size_x"], names[item["card_id"]])
        for item in dashboard["_cards"]
    )
    # YAML order: heatmap (full), churn (full), performance (half), calibration (half),
    # quality (full); 24 columns, 8 rows per card.
    assert layout == [
        (0, 0, 24, "Retention heatmap per cohort"),
        (8, 0, 24, "Churn risk by cohort"),
        (16, 0, 12, "Model performance over runs"),
        (16, 12, 12, "Calibration of the published model"),
        (24, 0, 24, "Data-quality results"),
    ]


def test_second_sync_writes_nothing(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)
    writes_before = len(double.writes())
    urls_file = workdir / "target" / "metabase_urls.json"
    written_at = urls_file.stat().st_mtime_ns

    again = run_sync(client, workdir)

    assert again.changes == []
    assert len(double.writes()) == writes_before
    assert urls_file.stat().st_mtime_ns == written_at
    assert "nothing to change" in again.summary()


def test_urls_are_written_back(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)

    urls = json.loads((workdir / "target" / "metabase_urls.json").read_text())["exposures"]
    [dashboard_id] = double.state.dashboards
    heatmap = double.cards_named("Retention heatmap per cohort")[0]["id"]
    assert urls["retention_heatmap"] == {
        "dashboard": f"{double.url}/dashboard/{dashboard_id}",
        "questions": {"Retention heatmap per cohort": f"{double.url}/question/{heatmap}"},
    }
    assert set(urls) == {
        "retention_heatmap",
        "churn_risk_by_cohort_chart",
        "model_performance_over_runs",
        "model_calibration_chart",
        "data_quality_results",
    }


def test_plan_changes_nothing_and_lists_the_changes(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    result = run_sync(client, workdir, plan=True)

    assert double.writes() == []
    assert not any(r.path.endswith("sync_schema") for r in double.requests)
    assert not (workdir / "target" / "metabase_urls.json").exists()
    described = [change.describe() for change in result.changes]
    assert "create collection 'Cohortcast'" in described
    assert "create card 'Churn risk by cohort'" in described
    assert f"create dashboard {DASHBOARD!r}" in described
    assert len(result.changes) == 1 + 5 + 2
    assert result.summary().startswith("Metabase: would change 8 object(s):")


def test_edited_card_is_updated_and_planned_first(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path, manifest: dict[str, Any]
) -> None:
    run_sync(client, workdir)
    [card] = double.cards_named("Churn risk by cohort")
    card["display"] = "table"
    card["_query"] = {**card["_query"], "sql": "select 1"}
    card["visualization_settings"] = {}
    writes_before = len(double.writes())

    planned = run_sync(client, workdir, plan=True)
    assert [change.describe() for change in planned.changes] == [
        "update card 'Churn risk by cohort' (display, visualization_settings, dataset_query)"
    ]
    assert len(double.writes()) == writes_before

    run_sync(client, workdir)
    [put] = double.writes()[writes_before:]
    assert put.method == "PUT"
    assert put.path == f"/api/card/{card['id']}"
    assert set(put.body) == {"display", "visualization_settings", "dataset_query"}
    assert card["display"] == "bar"
    wanted = {q.name: q for q in read_declaration(manifest).questions}["Churn risk by cohort"]
    assert card["_query"]["sql"] == wanted.sql


def test_sync_cut_off_half_way_converges_without_duplicates(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    double.fail_writes_after(3)  # the collection and two cards, then the server fails
    with pytest.raises(MetabaseError, match="500"):
        run_sync(client, workdir)
    assert len(double.state.cards) == 2
    double.fail_writes_after(None)

    run_sync(client, workdir)
    again = run_sync(client, workdir)

    assert len(double.state.collections) == 1
    assert sorted(card["name"] for card in double.state.cards.values()) == sorted(SHIPPED)
    assert len(double.state.dashboards) == 1
    [dashboard] = double.state.dashboards.values()
    assert len(dashboard["_cards"]) == 5
    assert again.changes == []


def test_sync_waits_for_tables_after_schema_sync(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    double.sync_polls_needed = 3
    run_sync(client, workdir)
    polls = [
        r.path.rstrip("/") for r in double.requests if "/api/table" in r.path or "sync" in r.path
    ]
    # One look, the sync request, then three polls until the tables appear.
    assert (
        polls
        == ["/api/table", f"/api/database/{double.DATABASE_ID}/sync_schema"] + ["/api/table"] * 3
    )


def test_missing_table_fails_after_the_deadline(client: MetabaseClient, workdir: Path) -> None:
    with running_double(database_name=DATABASE) as lonely:
        lonely.add_warehouse_table("analytics", "cohort_retention", [("id", "text")])
        settings = MetabaseSettings(url=lonely.url, api_key=API_KEY)
        with MetabaseClient(settings) as other, pytest.raises(MetabaseError) as caught:
            sync(other, workdir, DATABASE, poll_seconds=0.05, table_wait_seconds=0.3)
    assert "analytics.churn_risk_by_cohort" in str(caught.value)
    assert "after 0.3 s" in str(caught.value)
    assert lonely.state.cards == {}


def test_unknown_database_lists_the_known_ones(client: MetabaseClient, workdir: Path) -> None:
    with pytest.raises(MetabaseError, match=r"no database named 'nope' \(it has: cohortcast\)"):
        sync(client, workdir, "nope")


def test_missing_manifest_says_to_parse(client: MetabaseClient, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dbt parse"):
        sync(client, tmp_path, DATABASE)


def exposure(sql: str, depends_on: list[str]) -> dict[str, Any]:
    return {
        "exposures": {
            "exposure.p.e": {
                "name": "e",
                "original_file_path": "models/x.yml",
                "depends_on": {"nodes": depends_on},
                "config": {
                    "meta": {
                        "metabase": {
                            "collection": "C",
                            "questions": [{"name": "Q", "sql": sql, "display": "table"}],
                        }
                    }
                },
            }
        },
        "nodes": {
            "model.p.orders": {
                "unique_id": "model.p.orders",
                "resource_type": "model",
                "name": "orders",
                "schema": "analytics",
                "alias": "Orders",
            }
        },
        "sources": {},
    }


def test_ref_must_be_in_depends_on() -> None:
    with pytest.raises(ConfigError, match=r"uses ref\('orders'\); add it to depends_on"):
        read_declaration(exposure("select * from {{ ref('orders') }}", []))


def test_odd_identifiers_are_quoted() -> None:
    declaration = read_declaration(
        exposure('select * from {{ ref( "orders" ) }}', ["model.p.orders"])
    )
    assert declaration.questions[0].sql == 'select * from analytics."Orders"'


def test_other_jinja_is_refused() -> None:
    with pytest.raises(ConfigError, match="Jinja other than"):
        read_declaration(exposure("select {{ var('x') }}", []))


def test_native_queries_round_trip_in_both_formats() -> None:
    for mbql5 in (True, False):
        query = native_query(7, "select 1", mbql5=mbql5)
        assert native_sql(query) == "select 1"
        assert query["database"] == 7
    assert native_sql({"lib/type": "mbql/query", "stages": [{"source-table": 3}]}) is None
    assert native_sql({"type": "query", "query": {"source-table": 3}}) is None


def test_sync_command_reads_its_settings_from_the_environment(
    double: MetabaseDouble, workdir: Path
) -> None:
    environ = {
        "METABASE_URL": double.url,
        "METABASE_API_KEY": API_KEY,
        "METABASE_DATABASE": DATABASE,
    }
    first = sync_command(workdir, environ=environ)
    planned = sync_command(workdir, plan=True, environ=environ)
    second = sync_command(workdir, environ=environ)

    assert first.summary().startswith("Metabase: changed 8 object(s):")
    assert "  create card 'Data-quality results'" in first.summary().splitlines()
    assert planned.summary() == "Metabase is up to date: nothing to change"
    assert second.summary().splitlines() == [
        "Metabase is up to date: nothing to change",
        f"URLs in {workdir / 'target' / 'metabase_urls.json'}",
    ]
    assert len(double.cards_named("Data-quality results")) == 1


def test_sync_command_needs_the_database_name(workdir: Path) -> None:
    environ = {"METABASE_URL": "http://127.0.0.1:9", "METABASE_API_KEY": API_KEY}
    with pytest.raises(ConfigError, match="METABASE_DATABASE"):
        sync_command(workdir, environ=environ)


def test_shipped_questions_run_on_the_built_warehouse(
    project: Path,
    manifest: dict[str, Any],
    fresh_database: ConnectionSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each question's compiled SQL runs on what dbt builds, and picks the right rows."""
    from dbt.cli.main import dbtRunner

    for name, value in fresh_database.environment().items():
        monkeypatch.setenv(name, value)

    def dbt_run(*selection: str) -> None:
        built = dbtRunner().invoke(
            [
                "--quiet",
                "run",
                "--project-dir",
                str(project),
                "--profiles-dir",
                str(project),
                "--select",
                *selection,
            ]
        )
        assert built.success, built.exception

    dbt_run("+cohort_retention", "+churn_risk_by_cohort", "data_quality_results")
    questions = {q.name: q.sql for q in read_declaration(manifest).questions}
    with psycopg.connect(**fresh_database.connect_kwargs()) as conn:
        conn.execute(
            """
            insert into ml.model_runs
                (run_id, model_name, status, trained_at, holdout_as_of_date, roc_auc)
            values ('old', 'candidate', 'published', '2026-01-01', '2011-09-01', 0.7),
                ('new', 'rfm_logistic', 'published', '2026-02-01', '2011-09-01', 0.8),
                ('later_candidate', 'candidate', 'candidate', '2026-03-01', '2011-09-01', 0.9);
            insert into ml.model_evaluations
                (run_id, cutoff_date, model, cohort_slice, metric, value, row_count)
            values ('old', '2011-09-01', 'candidate', 'all', 'roc_auc', 0.7, 100),
                ('new', '2011-08-01', 'rfm_logistic', 'all', 'roc_auc', 0.6, 100),
                ('new', '2011-09-01', 'rfm_logistic', 'all', 'roc_auc', 0.8, 100),
                ('new', '2011-09-01', 'candidate', 'all', 'roc_auc', 0.75, 100),
                ('new', '2011-09-01', 'rfm_logistic', 'rfm_segment=champions', 'roc_auc', 0.5, 60),
                ('later_candidate', '2011-09-01', 'candidate', 'all', 'roc_auc', 0.9, 100);
            insert into ml.model_calibration (run_id, model, decile, mean_predicted, observed_rate)
            values ('old', 'candidate', 1, 0.1, 0.2),
                ('new', 'candidate', 1, 0.15, 0.1),
                ('new', 'candidate', 2, 0.25, 0.3),
                ('later_candidate', 'candidate', 1, 0.5, 0.5);
            insert into quality.validation_runs
                (validation_run_id, pipeline_step, started_at, success)
            values ('v0', 'raw', '2026-01-01 09:00+00', false),
                ('v1', 'features', '2026-01-01 10:00+00', false),
                ('v2', 'features', '2026-01-02 10:00+00', true),
                ('v3', 'check', '2026-01-03 10:00+00', true);
            insert into quality.validation_results
                (validation_run_id, table_name, expectation, column_name, success, severity,
                    checked_at)
            values
                ('v0', 'raw.online_retail_lines', 'expect_table_row_count_to_be_between',
                    null, false, 'blocking', '2026-01-01 09:01+00'),
                ('v1', 'analytics.customer_feature_snapshots',
                    'expect_column_values_to_not_be_null', 'customer_id', false, 'blocking',
                    '2026-01-01 10:01+00'),
                ('v2', 'analytics.customer_feature_snapshots',
                    'expect_column_values_to_not_be_null', 'customer_id', true, 'blocking',
                    '2026-01-02 10:01+00'),
                ('v2', 'analytics.customer_feature_snapshots',
                    'expect_column_values_to_not_be_null', 'as_of_date', true, 'blocking',
                    '2026-01-02 10:01+00'),
                ('v2', 'analytics.customer_feature_snapshots',
                    'expect_column_values_to_be_between', 'days_since_last_order', false,
                    'warning', '2026-01-02 10:01+00'),
                ('v3', 'raw.online_retail_lines', 'expect_table_row_count_to_be_between',
                    null, true, 'blocking', '2026-01-03 10:01+00');
            """
        )
    # The model marts read what Python wrote; in a run, step 9 rebuilds them.
    # The quality mart is a view: it shows the rows above without a rebuild.
    dbt_run("source:ml+")
    with psycopg.connect(**fresh_database.connect_kwargs()) as conn:
        conn.execute("set role metabase_reader")  # as Metabase reads
        for sql in questions.values():
            conn.execute(sql)  # every shipped question runs
        calibration = conn.execute(questions["Calibration of the published model"]).fetchall()
        quality = conn.execute(questions["Data-quality results"]).fetchall()
        runs = conn.execute(questions["Model performance over runs"]).fetchall()
    # The newest published run is 'new': its two deciles, not the later candidate's.
    assert [(row[1], row[2], row[3]) for row in calibration] == [(1, 0.15, 0.1), (2, 0.25, 0.3)]
    # The latest validation of each table (features: v2, raw: v3), failures first, then
    # by severity, table, expectation and column; the older failures (v0, v1) are gone.
    assert [(row[1], row[2], row[3], row[5], row[8]) for row in quality] == [
        (
            "analytics.customer_feature_snapshots",
            "expect_column_values_to_be_between",
            "days_since_last_order",
            False,
            "features",
        ),
        (
            "analytics.customer_feature_snapshots",
            "expect_column_values_to_not_be_null",
            "as_of_date",
            True,
            "features",
        ),
        (
            "analytics.customer_feature_snapshots",
            "expect_column_values_to_not_be_null",
            "customer_id",
            True,
            "features",
        ),
        ("raw.online_retail_lines", "expect_table_row_count_to_be_between", None, True, "check"),
    ]
    assert [row[1] for row in runs] == ["old", "new", "later_candidate"]
    # Each run's chosen model at its holdout cutoff, not another model or cutoff.
    assert [row[3] for row in runs] == [0.7, 0.8, 0.9]


def test_settings_the_server_adds_do_not_cause_updates(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)
    [card] = double.cards_named("Churn risk by cohort")
    card["visualization_settings"] = {**card["visualization_settings"], "graph.show_goal": False}
    writes_before = len(double.writes())

    assert run_sync(client, workdir).changes == []
    assert len(double.writes()) == writes_before


def test_hand_added_text_card_is_removed_and_sync_converges(
    double: MetabaseDouble, client: MetabaseClient, workdir: Path
) -> None:
    run_sync(client, workdir)
    [dashboard] = double.state.dashboards.values()
    text = {"id": 999, "card_id": None, "row": 40, "col": 0, "size_x": 24, "size_y": 2}
    dashboard["_cards"].append(text)

    changed = run_sync(client, workdir)

    assert [change.describe() for change in changed.changes] == [
        f"update dashboard cards {DASHBOARD!r}"
    ]
    assert all(item["card_id"] is not None for item in dashboard["_cards"])
    assert len(dashboard["_cards"]) == 5
    assert run_sync(client, workdir).changes == []
