"""SQLFluff (Postgres dialect, dbt templater) over the models and tests, blocking.

It runs here rather than beside ruff because the dbt templater opens a database
connection while it compiles; the tests' server provides one (no tables are needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cohortcast import dbt_runner
from cohortcast.warehouse import ConnectionSettings


def test_sqlfluff_lint_passes(pg_settings: ConnectionSettings, repo_root: Path) -> None:
    env = {
        **os.environ,
        **pg_settings.environment(),
        "DBT_PROFILES_DIR": str(dbt_runner.profiles_dir(repo_root)),
    }
    sqlfluff = Path(sys.executable).with_name("sqlfluff")
    result = subprocess.run(
        [str(sqlfluff), "lint", "--processes", "2", "--disable-progress-bar", "models", "tests"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
