"""Push dbt's model and column descriptions and semantic types to Metabase.

A thin wrapper around the dbt-metabase library (`DbtMetabase.export_models`), which already
does this well: it reads the manifest, asks Metabase to sync its schema, waits for the
tables and updates only the tables and fields whose metadata differs. We give it our
settings and our retry policy, limit it to the schemas Metabase reads, and turn its errors
into ours. Column meta such as `metabase.semantic_type: type/Category` in the dbt YAML is
what sets a field's semantic type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from cohortcast.errors import ConfigError, MetabaseError
from cohortcast.metabase.client import IDEMPOTENT_METHODS, MetabaseSettings, retry_policy

logger = logging.getLogger(__name__)

# The schemas Metabase reads (see DESIGN.md); staging views and raw tables stay undocumented
# there on purpose.
DEFAULT_SCHEMAS = ("analytics", "ml", "quality")
DEFAULT_SYNC_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class MetadataPush:
    database: str
    schemas: tuple[str, ...]
    seconds: float

    def summary(self) -> str:
        return (
            f"pushed dbt descriptions and semantic types for schemas "
            f"{', '.join(self.schemas)} to Metabase database {self.database!r} "
            f"in {self.seconds:.1f} s"
        )


def push_metadata(
    settings: MetabaseSettings,
    manifest_path: Path,
    database_name: str,
    *,
    schemas: Sequence[str] = DEFAULT_SCHEMAS,
    sync_timeout_seconds: int = DEFAULT_SYNC_TIMEOUT_SECONDS,
) -> MetadataPush:
    """Export the manifest's models and sources in `schemas` to Metabase's data model."""
    try:
        from dbtmetabase import DbtMetabase, Filter
        from dbtmetabase.errors import ArgumentError, MetabaseStateError
    except ImportError as exc:
        raise ConfigError(
            "the dbt-metabase package is not installed; install it with "
            "`pip install dbt-metabase` (it is a cohortcast dependency)"
        ) from exc
    if not manifest_path.exists():
        raise ConfigError(f"{manifest_path} is missing; run `dbt parse` first")
    started = time.monotonic()
    adapter = HTTPAdapter(max_retries=retry_policy(settings, IDEMPOTENT_METHODS))
    try:
        exporter = DbtMetabase(
            manifest_path=manifest_path,
            metabase_url=settings.base_url,
            metabase_api_key=settings.api_key,
            metabase_username=None if settings.api_key else settings.username,
            metabase_password=None if settings.api_key else settings.password,
            http_timeout=int(settings.timeout_seconds),
            http_adapter=adapter,
        )
        exporter.export_models(
            metabase_database=database_name,
            schema_filter=Filter(include=list(schemas)),
            sync_timeout=sync_timeout_seconds,
        )
    except MetabaseStateError as exc:
        raise MetabaseError(
            f"dbt-metabase could not push metadata to database {database_name!r}: {exc}; "
            "check that `dbt build` has run and that Metabase can see the tables"
        ) from exc
    except ArgumentError as exc:
        raise ConfigError(f"dbt-metabase rejected the settings: {exc}") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        url = str(exc.response.url) if exc.response is not None else settings.base_url
        path = url.removeprefix(settings.base_url).split("?", 1)[0]
        raise MetabaseError(
            f"Metabase {path} failed with HTTP {status} while pushing metadata; see the log "
            "for Metabase's message"
        ) from exc
    except requests.RequestException as exc:
        raise MetabaseError(
            f"Metabase could not be reached at {settings.base_url} while pushing metadata "
            f"({type(exc).__name__})"
        ) from exc
    result = MetadataPush(database_name, tuple(schemas), time.monotonic() - started)
    logger.info("%s", result.summary())
    return result
