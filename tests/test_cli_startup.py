"""What a command loads at start-up: the command modules import heavy libraries inside the commands
that use them (rfm_sync/cli/__init__.py), so help, check-config and status stay light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.configs import config_toml
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # each test starts a Python process

HEAVY = ("pandas", "numpy", "pyarrow", "duckdb", "plotly", "sqlalchemy", "alembic", "apscheduler", "prometheus_client")

PROBE = """
import json, runpy, sys
sys.argv = ["rfm-sync", *sys.argv[1:]]
try:
    runpy.run_module("rfm_sync.cli", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy} or m.startswith("rfm_sync."))))
"""

CONFIG = config_toml("sqlite:///s.sqlite")


def loaded(*args: str, cwd=None) -> set[str]:
    """The heavy libraries (top-level names) and rfm_sync modules in the process after ``rfm-sync ARGS``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = json.loads(done.stdout.splitlines()[-1])
    return {m.split(".")[0] if not m.startswith("rfm_sync.") else m for m in modules}


@pytest.mark.parametrize(
    "args", [["--help"], ["score", "--help"], ["webhooks", "list", "--help"], ["daemon", "--help"]]
)
def test_help_loads_no_heavy_library(args):
    assert loaded(*args) & set(HEAVY) == set()


def test_check_config_does_not_open_the_store_or_load_the_daemon(tmp_path, write_config):
    write_config(CONFIG)
    modules = loaded("check-config", "-c", str(tmp_path / "config.toml"), cwd=tmp_path)
    assert "rfm_sync.store" not in modules and "rfm_sync.daemon.runner" not in modules
    assert modules & {"plotly", "alembic", "apscheduler", "prometheus_client"} == set()


def test_status_loads_neither_plotly_nor_the_daemon(tmp_path, write_config):
    write_config(CONFIG)
    modules = loaded("status", "-c", str(tmp_path / "config.toml"), cwd=tmp_path)
    assert "rfm_sync.store" in modules  # it does read the store
    assert "rfm_sync.daemon.runner" not in modules and "rfm_sync.pipeline" not in modules
    assert modules & {"plotly", "apscheduler", "prometheus_client"} == set()


def test_status_on_a_store_at_head_does_not_load_alembic(tmp_path, write_config):
    write_config(CONFIG)
    loaded("status", "-c", str(tmp_path / "config.toml"), cwd=tmp_path)  # creates and migrates the store
    modules = loaded("status", "-c", str(tmp_path / "config.toml"), cwd=tmp_path)
    assert "alembic" not in modules and "pandas" not in modules and "duckdb" not in modules
