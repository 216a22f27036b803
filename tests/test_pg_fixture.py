"""The PostgreSQL test server: missing binaries skip the PostgreSQL tests (never an error)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.pg import find_pg_bin, start_server


def test_an_explicit_folder_without_the_binaries_finds_none(tmp_path, monkeypatch):
    monkeypatch.setenv("RFM_SYNC_PG_BIN", str(tmp_path))
    assert find_pg_bin() is None
    server, reason, stop = start_server()
    assert server is None and stop is None
    assert "PostgreSQL binaries not found" in reason and str(tmp_path) in reason


@pytest.mark.slow  # runs pytest in a subprocess
def test_without_a_server_the_postgresql_variants_skip_and_the_sqlite_ones_run(tmp_path):
    env_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_lock.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RFM_SYNC_PG_BIN": str(tmp_path)},
    )
    assert env_run.returncode == 0, env_run.stdout + env_run.stderr
    assert env_run.stdout.startswith(".s"), env_run.stdout  # sqlite passed, postgresql skipped
    assert "PostgreSQL tests skipped: PostgreSQL binaries not found" in env_run.stdout
