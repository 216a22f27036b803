"""A cycle killed at any instant, then restarted, leaves the sink with exactly the store's state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from connectors.file.destination import read_state
from rfm_sync.sample import write_sample
from rfm_sync.store import Store
from rfm_sync.store.runs import recent_runs
from rfm_sync.store.schema import customer_state, outbox
from tests.configs import config_toml, file_sink, table

pytestmark = pytest.mark.slow  # crash: `rfm-sync run` killed mid-push, then restarted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TODAY = date(2026, 6, 30)


def config_text(url: str, mode: str, batch: int) -> str:
    sink = file_sink(type="tests.crash_sink:CrashingFileSink", batch_size=100, crash_mode=mode, crash_on_batch=batch)
    return config_toml(url, table("[properties]", include_metrics=True), destinations=[sink])


def run_once(folder, url, as_of, mode="after_write", batch=0):
    """One ``rfm-sync run`` in a subprocess, its store at ``url`` (the ``store_url`` fixture)."""
    (folder / "config.toml").write_text(config_text(url=url, mode=mode, batch=batch))
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rfm_sync.cli",
            "run",
            "--once",
            "-c",
            str(folder / "config.toml"),
            "--as-of",
            as_of.isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def store_state(url):
    store = Store.open(url)
    with store.engine.connect() as conn:
        state = {
            k: json.loads(p)
            for k, p in conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.properties))
        }
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status.in_(("pending", "sending")))
        ).scalar()
    store.close()
    return state, pending


@pytest.mark.parametrize("mode,batch", [("before_write", 1), ("after_write", 3), ("torn_write", 2)])
def test_killed_push_then_restart_ends_exactly_right(tmp_path, store_url, mode, batch):
    write_sample(tmp_path / "orders.csv", end=TODAY, customers=400, seed=11)
    first = run_once(tmp_path, store_url, TODAY - timedelta(days=60), mode, batch)
    assert first.returncode == 137, first.stderr
    state, pending = store_state(store_url)
    assert state and pending > 0  # the diff was committed with its outbox; the push was cut short
    second = run_once(tmp_path, store_url, TODAY - timedelta(days=60))
    assert second.returncode == 0, second.stderr
    state, pending = store_state(store_url)
    assert pending == 0
    assert read_state(tmp_path / "profiles.jsonl") == state
    # a later cycle with changes still converges, and each profile line is complete JSON
    third = run_once(tmp_path, store_url, TODAY, "after_write", 1)
    assert third.returncode == 137
    assert run_once(tmp_path, store_url, TODAY).returncode == 0
    state, pending = store_state(store_url)
    assert pending == 0 and read_state(tmp_path / "profiles.jsonl") == state


def test_crash_inside_diff_transaction_leaves_old_state(tmp_path, store_url, monkeypatch):
    from rfm_sync.config import load_config
    from rfm_sync.pipeline import Pipeline
    from rfm_sync.store import outbox as outbox_store

    write_sample(tmp_path / "orders.csv", end=TODAY, customers=200, seed=5)
    (tmp_path / "config.toml").write_text(config_text(url=store_url, mode="after_write", batch=0))
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)

    def boom(conn, rows):
        raise RuntimeError("power cut")

    monkeypatch.setattr(outbox_store, "enqueue", boom)
    with pytest.raises(RuntimeError):
        Pipeline(config, store).run_cycle(TODAY)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(customer_state)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0
    assert recent_runs(store, 1)[0]["status"] == "failed"
    monkeypatch.undo()
    report = Pipeline(config, store).run_cycle(TODAY)
    assert report.changed == report.scored > 0
    assert read_state(tmp_path / "profiles.jsonl") == store_state(store_url)[0]
