"""A throwaway PostgreSQL server for the tests, and a store URL for either database.

``pg_server`` (session-scoped) runs ``initdb`` into a fresh temporary folder, starts the server
with ``pg_ctl start -w`` listening on 127.0.0.1 only (no Unix socket), on a port that was free a
moment before, with ``trust`` authentication and a session time zone of UTC+14, and stops it (``pg_ctl stop -m fast``, by its own
data folder) and deletes the folder at the end. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` user (``runuser``), which owns the folder.

The binaries are found through ``RFM_SYNC_PG_BIN`` (a folder), then ``initdb`` on ``PATH``, then
Debian's ``/usr/lib/postgresql/<version>/bin``. Without them, without a driver (psycopg), or when
the server does not start, every test that needs it *skips*, saying why — never errors.

``store_url`` is parametrised over ``sqlite`` and ``postgresql`` (as APScheduler tests its job
stores): a new, empty database for each test — a file in ``tmp_path``, or a ``CREATE DATABASE``
with a unique name, dropped after the test.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_ENV = "RFM_SYNC_PG_BIN"


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None. When ``RFM_SYNC_PG_BIN`` is
    set, only that folder counts (``RFM_SYNC_PG_BIN=none`` skips the PostgreSQL tests)."""
    if os.environ.get(PG_ENV):
        candidates = [Path(os.environ[PG_ENV])]
    else:
        candidates = _default_candidates()
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _default_candidates() -> list[Path]:
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return candidates + debian


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    port: int
    user: str
    _names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _admin(self):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True, connect_timeout=10
        )

    def create_database(self) -> str:
        name = f"rfm_test_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:  # FORCE: a test that left a connection open must not stop the drop
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def start_server() -> tuple[PgServer | None, str, object]:
    """(server, "", stop) or (None, reason, None)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install '.[postgres]')", None
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return (
            None,
            (
                f"PostgreSQL binaries not found (install Debian's `postgresql` package, or set {PG_ENV} "
                f"to the folder holding initdb; it is {os.environ.get(PG_ENV)!r})"
            ),
            None,
        )
    run_as = None
    if os.geteuid() == 0:  # postgres refuses root
        if shutil.which("runuser") is None:
            return None, "running as root and `runuser` is missing: PostgreSQL refuses to run as root", None
        run_as = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="rfm-sync-pg-"))
    data = folder / "data"
    data.mkdir()
    if run_as:
        try:
            shutil.chown(folder, run_as)
            shutil.chown(data, run_as)
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return None, f"cannot hand the data folder to user {run_as!r}: {exc}", None
    port = free_port()
    user = "postgres"
    log = folder / "server.log"

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            _as_server_user(argv, run_as), capture_output=True, text=True, timeout=timeout, cwd=folder
        )

    def stop() -> None:
        try:
            run([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"], timeout=60)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    try:
        init = run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
        )
        if init.returncode:
            shutil.rmtree(folder, ignore_errors=True)
            return None, f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}", None
        # fsync off: a test server's data need not survive a power cut, and it makes DDL fast. A
        # session time zone far from UTC (+14): a time that depends on the server's zone shows up
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c fsync=off "
            f"-c timezone=Pacific/Kiritimati"
        )
        started = run(
            [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "60", "-l", str(log), "-o", options],
            timeout=90,
        )
        if started.returncode:
            tail = log.read_text(errors="replace")[-300:] if log.exists() else started.stderr
            stop()
            return None, f"PostgreSQL did not start: {tail.strip()}", None
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"cannot run PostgreSQL: {exc}", None
    return PgServer(port=port, user=user), "", stop


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server; the test skips when there is none."""
    server, reason, stop = start_server()
    if server is None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    try:
        yield server
    finally:
        stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request, tmp_path) -> str:
    """A store URL on a new, empty database: SQLite file, or a fresh PostgreSQL database (``slow``: a
    server per session, a database per test; ``-m "not slow"`` runs the SQLite variant only)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
