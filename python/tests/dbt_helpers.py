"""Running a copy of the dbt project with the dbt CLI, as a user would, in tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cohortcast.warehouse import ConnectionSettings

PROJECT_PATHS = ("dbt_project.yml", "profiles.example.yml", "models", "macros", "tests")
DBT_TIMEOUT_SECONDS = 600


def dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("the dbt executable is not installed")
    return found


def copy_project(repo_root: Path, destination: Path) -> Path:
    """A copy of the dbt project, with a profiles dir holding profiles.example.yml."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_PATHS:
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copyfile(source, destination / name)
    profiles = destination / "profiles"
    profiles.mkdir()
    shutil.copyfile(repo_root / "profiles.example.yml", profiles / "profiles.yml")
    return destination


def run_dbt(
    project_dir: Path, settings: ConnectionSettings, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """Run the dbt CLI as a user would, against `settings`; never raises on failure."""
    env = {**os.environ, **settings.environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return subprocess.run(
        [
            dbt_executable(),
            "--no-use-colors",
            *arguments,
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir / "profiles"),
        ],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=DBT_TIMEOUT_SECONDS,
        check=False,
    )


def fetch(settings: ConnectionSettings, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        return conn.execute(query).fetchall()
