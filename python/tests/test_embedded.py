"""The embedded server: starts, is reused, stops, and keeps to its own directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from cohortcast import embedded


def _files_outside(root: Path) -> set[Path]:
    return {path for path in root.parent.iterdir() if path != root}


def test_start_reuse_stop(tmp_path: Path) -> None:
    root = tmp_path / "state"
    before = _files_outside(root)
    first = embedded.ensure_running(root)
    try:
        assert first.started_now
        again = embedded.ensure_running(root)
        assert (again.port, again.started_now) == (first.port, False)
        with psycopg.connect(
            host=embedded.HOST, port=first.port, user="postgres", dbname=embedded.DATABASE
        ) as conn:
            assert conn.execute("select current_database()").fetchone() == ("cohortcast",)
    finally:
        assert embedded.stop(root)
    assert not embedded.stop(root)
    assert _files_outside(root) == before
    restarted = embedded.ensure_running(root)
    try:
        assert restarted.started_now
    finally:
        embedded.stop(root)


def test_state_root_falls_back_to_a_per_user_directory(tmp_path: Path) -> None:
    (tmp_path / embedded.STATE_DIR_NAME).write_text("a file where the directory should be")
    root = embedded.state_root(tmp_path)
    assert root != tmp_path / embedded.STATE_DIR_NAME
    assert f"cohortcast-{os.getuid()}" in str(root)
    shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_works_for_an_ordinary_user() -> None:
    """Root starts it through a user namespace; an ordinary user starts it directly."""
    home = Path(tempfile.mkdtemp(prefix="cohortcast-user-"))
    shutil.chown(home, user="nobody")
    try:
        _start_and_stop_as_nobody(home)
    finally:
        shutil.rmtree(home)


AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]


def _start_and_stop_as_nobody(home: Path) -> None:
    probe = subprocess.run([*AS_NOBODY, "-c", "import cohortcast"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by the nobody user")
    code = (
        "from pathlib import Path; from cohortcast import embedded;"
        f"s = embedded.ensure_running(Path({str(home)!r}) / '.cohortcast');"
        "print(s.port); embedded.stop(s.root)"
    )
    result = subprocess.run(
        [*AS_NOBODY, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0
    owners = {path.stat().st_uid for path in (home / ".cohortcast").iterdir()}
    assert owners == {65534}
