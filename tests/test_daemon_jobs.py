"""The daemon's jobs in-process (no listener, no signals): lock gating, recalibration, webhook events."""
from __future__ import annotations

import logging
import tomllib
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from rfm_sync.config import parse_config
from rfm_sync.daemon import Daemon
from rfm_sync.store import calibrations
from rfm_sync.store import webhook_queries
from rfm_sync.store.lock import StoreLock
from tests.conftest import REPO
from tests.daemon_fakes import shopify_order

CONFIG = """
[store]
url = "sqlite:///s.sqlite"
[daemon]
http_enabled = false
[webhooks]
enabled = true
[[sources]]
type = "tests.daemon_fakes:FakeWebhookSource"
name = "shop"
path = "orders.csv"
[[destinations]]
type = "file"
name = "sink"
path = "profiles.jsonl"
"""


@pytest.fixture(autouse=True)
def restore_logging():
    """The daemon installs its own log handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def make(tmp_path, write_config, write_csv, monkeypatch, customers=40):
    monkeypatch.setenv("RFM_SYNC_SECRET_TEST_HOOK", "k")
    rows = ["customer_id,placed_at,amount"] + [f"c{i},2026-0{1 + i % 6}-0{1 + i % 9},{10 + i}" for i in range(customers)]
    write_csv("\n".join(rows) + "\n")
    daemon = Daemon(write_config(CONFIG), holder="test:1")
    daemon.start()
    daemon.scheduler.pause()  # the tests run the jobs by hand
    return daemon


def test_jobs_do_nothing_without_the_lock(tmp_path, write_config, write_csv, monkeypatch):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        StoreLock(daemon.store, "other:2").acquire()
        daemon._hold_lock()
        assert not daemon.has_lock and daemon.health.standby.startswith("lock held by other:2 since")
        daemon._jobs().incremental()
        assert daemon.store.recent_runs(1) == []
        assert daemon.scheduler.get_jobs() == []
    finally:
        daemon.shutdown()


def test_recalibrate_job_freezes_new_cut_points(tmp_path, write_config, write_csv, monkeypatch):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch, customers=120)  # >= min_calibration_customers
    try:
        daemon._hold_lock()
        assert daemon.has_lock and {j.id for j in daemon.scheduler.get_jobs()} >= {"incremental", "webhooks"}
        daemon._jobs().incremental()
        with daemon.store.engine.connect() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(calibrations)).scalar()
        daemon._jobs().recalibrate()
        with daemon.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(calibrations)).scalar() == before + 1
        assert daemon.health.check()[0]
    finally:
        daemon.shutdown()


def test_recalibrate_job_does_not_freeze_cut_points_over_too_few_customers(tmp_path, write_config, write_csv,
                                                                            monkeypatch, capsys):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)  # 40 customers, fewer than 100
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        daemon._jobs().recalibrate()
        with daemon.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(calibrations)).scalar() == 0
        logged = capsys.readouterr().err
        assert "cut points not frozen" in logged and "cut points recalibrated" not in logged
        assert daemon.health.check()[0]  # not a failure: every run computes its own until the shop has more
    finally:
        daemon.shutdown()


def test_unparseable_webhook_events_are_set_aside_and_the_rest_processed(tmp_path, write_config, write_csv,
                                                                          monkeypatch):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        good = shopify_order(77, 5, "x@example.com", datetime.now(timezone.utc).isoformat(), "80.00")
        webhook_queries.record(daemon.store, "shop", "e1", "orders/create", {}, b"{not json")
        webhook_queries.record(daemon.store, "shop", "e2", "orders/create", {}, good)
        webhook_queries.record(daemon.store, "gone", "e3", "orders/create", {}, good)
        daemon._jobs().webhooks()
        assert webhook_queries.counts(daemon.store) == {"done": 1, "failed": 2}
        assert daemon.store.recent_runs(1)[0]["stats"]["pulled"] == {"webhooks": 1}
    finally:
        daemon.shutdown()


def test_example_config_documents_every_daemon_key():
    text = (REPO / "config.example.toml").read_text()
    data = tomllib.loads(text)
    config = parse_config(data)
    lines = text.splitlines()
    for section in ("schedule", "daemon", "webhooks", "logging"):
        model = type(getattr(config, section))
        assert set(data[section]) == set(model.model_fields), section
        start = lines.index(f"[{section}]")
        for key in data[section]:
            at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{key} = "))
            while at > start and "=" in lines[at - 1] and not lines[at - 1].startswith("#"):
                at -= 1  # keys grouped under one comment
            assert lines[at - 1].startswith("#"), f"{section}.{key} has no comment"


def test_a_reload_waits_for_the_running_cycle(tmp_path, write_config, write_csv, monkeypatch):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        path = tmp_path / "config.toml"
        path.write_text(path.read_text().replace("[webhooks]\nenabled = true", "[webhooks]\nenabled = false"))
        old_pipeline = daemon.pipeline
        daemon.cycle_lock.acquire()  # a cycle is running
        assert daemon.reload("test") is False and daemon._deferred == "test"
        assert daemon.pipeline is old_pipeline and daemon.routes.webhooks_enabled
        daemon.cycle_lock.release()
        assert daemon.reload(daemon._deferred) is True
        assert daemon._deferred is None and daemon.pipeline is not old_pipeline
        assert not daemon.routes.webhooks_enabled and not daemon.config.webhooks.enabled
    finally:
        daemon.shutdown()
