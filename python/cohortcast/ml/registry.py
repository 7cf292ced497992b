"""Model runs in ml.model_runs, and the fitted model of each run on disk.

A run's artifact is `<artifacts_dir>/<run_id>/model.skops` (skops: no arbitrary pickle code
on load) with `metadata.json` beside it. The library versions it was saved under are kept in
both places; loading under other versions is refused with a message naming them, because a
scikit-learn model is only guaranteed to behave the same under the versions that fitted it.

Status: a run is recorded as `candidate`; publishing its predictions makes it `published`
and the previously published run `retired`, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import scipy
import sklearn
import skops
import skops.io
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import FeatureSpec

logger = logging.getLogger(__name__)

ARTIFACT_FILE = "model.skops"
METADATA_FILE = "metadata.json"
TARGET = "is_churned"
STATUSES = ("candidate", "published", "retired")
# Types a model file may contain beyond skops' defaults: our own estimators, and
# scikit-learn's and numpy's internals. Anything else is refused before loading.
TRUSTED_MODULE_PREFIXES = ("cohortcast.ml.", "sklearn.", "numpy.")


def library_versions() -> dict[str, str]:
    """Versions that must match between saving and loading a model."""
    return {
        "python": ".".join(platform.python_version_tuple()[:2]),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
    }


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time of the run plus a random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class ModelBundle:
    """What scoring needs: the fitted estimator, its inputs, and the drivers' reference row."""

    model_name: str
    model: Any
    spec: FeatureSpec
    driver_reference: dict[str, Any]


@dataclass(frozen=True)
class SavedArtifact:
    path: Path
    sha256: str
    library_versions: dict[str, str]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(bundle: ModelBundle, artifacts_dir: Path, run_id: str) -> SavedArtifact:
    """Write `<artifacts_dir>/<run_id>/model.skops` and `metadata.json`."""
    directory = Path(artifacts_dir) / run_id
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ARTIFACT_FILE
    skops.io.dump(
        {
            "model_name": bundle.model_name,
            "model": bundle.model,
            "numeric": list(bundle.spec.numeric),
            "categorical": list(bundle.spec.categorical),
            "driver_reference": dict(bundle.driver_reference),
        },
        path,
    )
    versions = library_versions()
    sha256 = file_sha256(path)
    metadata = {
        "run_id": run_id,
        "model_name": bundle.model_name,
        "artifact_sha256": sha256,
        "library_versions": versions,
        "features": bundle.spec.to_dict(),
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("saved model %s to %s (sha256 %s)", bundle.model_name, path, sha256[:12])
    return SavedArtifact(path=path.resolve(), sha256=sha256, library_versions=versions)


def check_library_versions(recorded: dict[str, str], where: str) -> None:
    current = library_versions()
    differences = [
        f"{name} {recorded.get(name, 'unknown')} (now {current[name]})"
        for name in current
        if recorded.get(name) != current[name]
    ]
    if differences:
        raise ModelError(
            f"the model in {where} was saved under other library versions: "
            f"{', '.join(differences)}; retrain it with `cohortcast train` under the "
            "current versions, or install the versions it was saved with"
        )


def load_artifact(
    path: Path,
    *,
    expected_sha256: str | None = None,
    recorded_versions: dict[str, str] | None = None,
) -> ModelBundle:
    """Load a saved model after checking versions, checksum and the types it contains."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} is missing; run `cohortcast train` to make a new one")
    if recorded_versions is None:
        metadata_path = path.parent / METADATA_FILE
        if not metadata_path.is_file():
            raise ModelError(
                f"{metadata_path} is missing, so the versions {path} was saved under are "
                "unknown; retrain with `cohortcast train`"
            )
        recorded_versions = json.loads(metadata_path.read_text())["library_versions"]
    check_library_versions(recorded_versions, str(path))
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ModelError(
            f"{path} does not match the sha256 recorded for its run; the file was changed "
            "after training. Retrain with `cohortcast train`"
        )
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [name for name in untrusted if not name.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise ModelError(f"{path} contains types cohortcast does not load: {', '.join(refused)}")
    content = skops.io.load(path, trusted=untrusted)
    return ModelBundle(
        model_name=content["model_name"],
        model=content["model"],
        spec=FeatureSpec(
            numeric=tuple(content["numeric"]), categorical=tuple(content["categorical"])
        ),
        driver_reference=dict(content["driver_reference"]),
    )


@dataclass
class RunRecord:
    """One row of ml.model_runs."""

    run_id: str
    model_name: str
    trained_at: datetime
    training_window_start: date
    training_window_end: date
    holdout_as_of_date: date | None
    snapshot_count: int
    training_row_count: int
    feature_list: list[str]
    feature_hash: str
    parameters: dict[str, Any]
    library_versions: dict[str, str]
    artifact_path: str
    artifact_sha256: str
    roc_auc: float | None
    pr_auc: float | None
    brier_score: float | None
    log_loss: float | None
    base_rate: float | None
    metrics: dict[str, Any]
    dbt_invocation_id: str | None = None
    target: str = TARGET
    status: str = "candidate"


_JSON_FIELDS = frozenset({"feature_list", "parameters", "library_versions", "metrics"})


def _run_columns() -> list[str]:
    return [f.name for f in fields(RunRecord)]


def record_run(conn: psycopg.Connection, record: RunRecord) -> None:
    """Insert the run into ml.model_runs (in the caller's transaction)."""
    if record.status not in STATUSES:
        raise ModelError(f"run status {record.status!r} is not one of {', '.join(STATUSES)}")
    columns = _run_columns()
    values = [
        Jsonb(getattr(record, name)) if name in _JSON_FIELDS else getattr(record, name)
        for name in columns
    ]
    conn.execute(
        sql.SQL("insert into {} ({}) values ({})").format(
            sql.Identifier("ml", "model_runs"),
            sql.SQL(", ").join(sql.Identifier(name) for name in columns),
            sql.SQL(", ").join(sql.Placeholder() for _ in columns),
        ),
        values,
    )


def fetch_run(conn: psycopg.Connection, run_id: str | None = None) -> RunRecord:
    """The named run, or the most recently trained one."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in _run_columns())
    table = sql.Identifier("ml", "model_runs")
    with conn.cursor(row_factory=dict_row) as cursor:
        if run_id is None:
            cursor.execute(
                sql.SQL("select {} from {} order by trained_at desc, run_id desc limit 1").format(
                    columns, table
                )
            )
        else:
            cursor.execute(
                sql.SQL("select {} from {} where run_id = %s").format(columns, table), (run_id,)
            )
        row = cursor.fetchone()
    if row is None:
        raise ModelError(
            f"no model run {run_id!r} in ml.model_runs"
            if run_id
            else "ml.model_runs has no run yet; run `cohortcast train` first"
        )
    return RunRecord(**row)


def mark_published(conn: psycopg.Connection, run_id: str) -> None:
    """`run_id` becomes published; the run published before it is retired (caller's
    transaction)."""
    table = sql.Identifier("ml", "model_runs")
    conn.execute(
        sql.SQL(
            "update {} set status = 'retired' where status = 'published' and run_id <> %s"
        ).format(table),
        (run_id,),
    )
    conn.execute(
        sql.SQL("update {} set status = 'published' where run_id = %s").format(table), (run_id,)
    )
