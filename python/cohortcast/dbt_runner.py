"""Run dbt in-process (dbtRunner) against the resolved warehouse.

dbt reads the connection from the PG* variables through `profiles.example.yml`, copied
unchanged into a profiles directory of ours, so the profile a user copies for plain
`dbt build` and the one cohortcast uses are the same file.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cohortcast.errors import ConfigError, DbtError
from cohortcast.warehouse import ConnectionSettings

logger = logging.getLogger(__name__)

PROFILE_TEMPLATE = "profiles.example.yml"
# Everything Python writes is declared as sources `ml` and `quality`; their dependants are
# built after publishing, everything else before.
PYTHON_SOURCES = ("source:ml+", "source:quality+")
MAX_FAILURES_SHOWN = 5


@dataclass
class DbtOutcome:
    """What a dbt invocation did, in the terms a person running the pipeline needs."""

    command: str
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)
    invocation_id: str | None = None

    def counts(self) -> str:
        """Nodes by outcome, e.g. `72 pass, 17 success`."""
        shown = ", ".join(f"{count} {status}" for status, count in sorted(self.statuses.items()))
        return shown or "nothing to do"

    def describe(self) -> str:
        return f"dbt {self.command}: {self.counts()} in {self.seconds:.1f} s"


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding dbt_project.yml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dbt_project.yml").exists():
            return candidate
    raise ConfigError(
        f"no dbt_project.yml in {here} or above; run cohortcast from the project "
        "directory or pass --project-dir"
    )


def project_vars(project_dir: Path) -> dict[str, Any]:
    """The `vars` of dbt_project.yml, so Python reads the same settings as the models."""
    import yaml

    with open(project_dir / "dbt_project.yml", encoding="utf-8") as handle:
        project = yaml.safe_load(handle) or {}
    found = project.get("vars") or {}
    if not isinstance(found, dict):
        raise ConfigError("dbt_project.yml: `vars` must be a mapping")
    return found


def profiles_dir(project_dir: Path) -> Path:
    """A profiles directory holding the project's example profile as profiles.yml."""
    template = project_dir / PROFILE_TEMPLATE
    if not template.exists():
        raise ConfigError(f"{template} is missing; restore it from the repository")
    target = project_dir / ".cohortcast" / "profiles"
    target.mkdir(parents=True, exist_ok=True)
    destination = target / "profiles.yml"
    if not destination.exists() or destination.read_bytes() != template.read_bytes():
        shutil.copyfile(template, destination)
    return target


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def invoke(
    settings: ConnectionSettings,
    project_dir: Path,
    command: str,
    arguments: Sequence[str] = (),
    *,
    quiet: bool = True,
) -> DbtOutcome:
    """Run one dbt command; raise DbtError naming the failed nodes when it fails."""
    from dbt.cli.main import dbtRunner

    args = [
        command,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(profiles_dir(project_dir)),
        *arguments,
    ]
    global_flags = ["--quiet"] if quiet else []
    global_flags += ["--no-use-colors", "--log-path", str(project_dir / "logs")]
    started = time.monotonic()
    env = settings.environment()
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env["DO_NOT_TRACK"] = "1"
    with _environment(env):
        result = dbtRunner().invoke([*global_flags, *args])
    outcome = DbtOutcome(command=" ".join([command, *arguments]), seconds=0.0)
    outcome.seconds = time.monotonic() - started
    failures: list[str] = []
    results = getattr(result.result, "results", None) or []
    for node_result in results:
        status = str(getattr(node_result.status, "value", node_result.status))
        outcome.statuses[status] += 1
        if status in {"error", "fail", "runtime error"}:
            node = node_result.node
            message = (node_result.message or "").strip().splitlines()
            failures.append(
                f"{node.resource_type} {node.name}: {message[0] if message else status}"
            )
    metadata = getattr(result.result, "metadata", None)
    outcome.invocation_id = getattr(metadata, "invocation_id", None)
    if not result.success:
        if failures:
            shown = "; ".join(failures[:MAX_FAILURES_SHOWN])
            more = len(failures) - MAX_FAILURES_SHOWN
            suffix = f" (and {more} more)" if more > 0 else ""
            raise DbtError(
                f"dbt {command} failed: {shown}{suffix}; details in "
                f"{project_dir / 'logs' / 'dbt.log'}"
            )
        cause = result.exception or "see the dbt output above"
        raise DbtError(f"dbt {command} failed: {cause}")
    logger.debug("%s", outcome.describe())
    return outcome


def _cause(message: str | None) -> str:
    """The line of a dbt node message that says what is wrong.

    dbt opens with a header (`Database Error in model x (models/x.sql)`) and puts the
    cause on the next lines; we keep the cause, which is what a person can act on.
    """
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if len(lines) > 1 and " Error in " in lines[0]:
        return lines[1]
    return lines[0] if lines else ""


def build_upstream(settings: ConnectionSettings, project_dir: Path) -> DbtOutcome:
    """Staging, cohorts and features: everything the model needs, with its tests."""
    return invoke(settings, project_dir, "build", ["--exclude", *PYTHON_SOURCES])


def build_downstream(settings: ConnectionSettings, project_dir: Path) -> DbtOutcome:
    """The marts built on the tables Python writes."""
    return invoke(settings, project_dir, "build", ["--select", *PYTHON_SOURCES])


def create_python_tables(settings: ConnectionSettings, project_dir: Path) -> DbtOutcome:
    """Create the ml and quality tables from their contract if they are missing."""
    return invoke(settings, project_dir, "run-operation", ["create_python_tables"])
