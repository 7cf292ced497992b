"""What the CLI calls for `cohortcast metabase ...`; each returns an object with `summary()`.

    cohortcast metabase import-cohort --card ID --name NAME [--format csv|json] [--column C]
                                      [--parameters JSON]
    cohortcast metabase sync [--plan] [--database NAME] [--metadata]

Metabase settings come from METABASE_URL and METABASE_API_KEY (or METABASE_USERNAME and
METABASE_PASSWORD); the database's name in Metabase from --database or METABASE_DATABASE.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cohortcast.errors import ConfigError
from cohortcast.metabase.client import MetabaseClient, MetabaseSettings, missing_settings
from cohortcast.metabase.cohorts import CohortImport, import_cohort
from cohortcast.metabase.metadata import MetadataPush, push_metadata
from cohortcast.metabase.provision import MANIFEST_FILE, SyncResult, sync
from cohortcast.warehouse import ConnectionSettings

logger = logging.getLogger(__name__)

DATABASE_VARIABLE = "METABASE_DATABASE"


@dataclass
class SyncSummary:
    sync: SyncResult
    metadata: MetadataPush | None = None

    def summary(self) -> str:
        lines = [self.sync.summary()]
        if self.metadata is not None:
            lines.append(self.metadata.summary())
        return "\n".join(lines)


def import_cohort_command(
    card_id: int,
    name: str,
    warehouse: ConnectionSettings,
    *,
    export_format: str = "csv",
    customer_column: str | None = None,
    parameters_json: str | None = None,
    metabase: MetabaseSettings | None = None,
) -> CohortImport:
    """`cohortcast metabase import-cohort --card ID --name NAME`.

    `parameters_json` is the card's filter values as a JSON list (`--parameters`).
    """
    parameters = _parameters(parameters_json)
    settings = metabase or MetabaseSettings.from_environment()
    with MetabaseClient(settings) as client:
        return import_cohort(
            client,
            warehouse,
            card_id,
            name,
            export_format=export_format,
            customer_column=customer_column,
            parameters=parameters,
        )


def _parameters(text: str | None) -> list[dict[str, Any]] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--parameters is not valid JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(
            '--parameters must be a JSON list of objects, e.g. [{"type": "category", '
            '"target": ["variable", ["template-tag", "plan"]], "value": "gold"}]'
        )
    return value


def check_sync_settings(
    database_name: str | None, env: Mapping[str, str], *, metabase_given: bool = False
) -> str:
    """Every setting `sync` lacks, in one error; else the database's name in Metabase."""
    database = database_name or env.get(DATABASE_VARIABLE)
    missing = [] if metabase_given else missing_settings(env)
    if not database:
        missing.append(f"{DATABASE_VARIABLE} or --database (the warehouse's name in Metabase)")
    if missing or not database:
        raise ConfigError(f"Metabase is not configured: set {'; '.join(missing)}")
    return database


def sync_command(
    project_dir: Path,
    *,
    plan: bool = False,
    database_name: str | None = None,
    with_metadata: bool = False,
    warehouse: ConnectionSettings | None = None,
    metabase: MetabaseSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> SyncSummary:
    """`cohortcast metabase sync [--plan] [--metadata]`.

    With `warehouse` given, `dbt parse` runs first so the manifest matches the YAML;
    without, target/manifest.json must be there already.
    """
    env = os.environ if environ is None else environ
    database = check_sync_settings(database_name, env, metabase_given=metabase is not None)
    settings = metabase or MetabaseSettings.from_environment(env)
    if warehouse is not None:
        from cohortcast import dbt_runner

        dbt_runner.invoke(warehouse, project_dir, "parse")
    with MetabaseClient(settings) as client:
        result = SyncSummary(sync(client, project_dir, database, plan=plan))
    if with_metadata and not plan:
        result.metadata = push_metadata(settings, project_dir / MANIFEST_FILE, database)
    elif with_metadata:
        logger.info("plan only: not pushing metadata")
    return result
