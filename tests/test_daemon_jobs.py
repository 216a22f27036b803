"""The daemon's jobs in-process (no listener, no signals): lock gating, recalibration, webhook events."""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from connectors.base import RetryableError
from rfm_sync.config import parse_config
from rfm_sync.daemon.runner import Daemon
from rfm_sync.store import webhooks as webhook_store
from rfm_sync.store.lock import StoreLock
from rfm_sync.store.runs import recent_runs
from rfm_sync.store.schema import calibrations, orders, webhook_events
from tests.configs import config_toml, csv_source, table
from tests.conftest import REPO
from tests.daemon_fakes import shopify_order

CONFIG = config_toml(
    "sqlite:///s.sqlite",
    table("[daemon]", http_enabled=False),
    table("[webhooks]", enabled=True, max_attempts=3),
    sources=[csv_source(type="tests.daemon_fakes:FakeWebhookSource")],
)


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
    rows = ["customer_id,placed_at,amount"] + [
        f"c{i},2026-0{1 + i % 6}-0{1 + i % 9},{10 + i}" for i in range(customers)
    ]
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
        assert recent_runs(daemon.store, 1) == []
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


def test_recalibrate_job_does_not_freeze_cut_points_over_too_few_customers(
    tmp_path, write_config, write_csv, monkeypatch, capsys
):
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


def test_unparseable_webhook_events_are_set_aside_and_the_rest_processed(
    tmp_path, write_config, write_csv, monkeypatch
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        good = shopify_order(77, 5, "x@example.com", datetime.now(UTC).isoformat(), "80.00")
        webhook_store.record(daemon.store, "shop", "e1", "orders/create", {}, b"{not json")
        webhook_store.record(daemon.store, "shop", "e2", "orders/create", {}, good)
        webhook_store.record(daemon.store, "gone", "e3", "orders/create", {}, good)
        daemon._jobs().webhooks()
        assert webhook_store.counts(daemon.store) == {"done": 1, "failed": 2}
        assert recent_runs(daemon.store, 1)[0]["stats"]["pulled"] == {"webhooks": 1}
    finally:
        daemon.shutdown()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event_rows(store) -> dict[str, dict]:
    """Each stored event by its event id."""
    c = webhook_events.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.event_id, c.status, c.attempts, c.error, c.next_attempt_at, c.body))
        return {r.event_id: r._asdict() for r in rows}


def stored_order_ids(store) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(orders.c.order_id)).scalars())


def make_due(store) -> None:
    """Let the clock pass every retry delay."""
    with store.begin() as conn:
        conn.execute(webhook_events.update().values(next_attempt_at=None))


DEEP = b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    "poison,reason",
    [
        (DEEP, "RecursionError"),
        (shopify_order(66, 6, "p@example.com", "2026-01-01T10:00:00+00:00", "1e400"), "amount"),
        (shopify_order(67, 6, "p@example.com", "2026-01-01T10:00:00+00:00", "1e20"), "amount"),
    ],
)
def test_a_poison_webhook_is_failed_with_its_reason_and_the_valid_ones_behind_it_proceed(
    tmp_path, write_config, write_csv, monkeypatch, poison, reason
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        webhook_store.record(daemon.store, "shop", "poison", "orders/create", {}, poison)
        webhook_store.record(
            daemon.store, "shop", "good", "orders/create", {}, shopify_order(77, 5, "x@example.com", now_iso(), "80.00")
        )
        daemon._jobs().webhooks()
        rows = event_rows(daemon.store)
        assert rows["good"]["status"] == "done" and rows["good"]["body"] is None
        assert rows["poison"]["status"] == "failed" and reason in rows["poison"]["error"]
        assert rows["poison"]["body"] == poison  # kept for `rfm-sync webhooks retry`
        assert "77" in stored_order_ids(daemon.store) and not {"66", "67"} & stored_order_ids(daemon.store)
        daemon._jobs().webhooks()  # nothing left to do: the poison is not tried again and again
        assert event_rows(daemon.store) == rows
    finally:
        daemon.shutdown()


def test_a_retryable_error_keeps_the_event_pending_then_fails_it_after_max_attempts(
    tmp_path, write_config, write_csv, monkeypatch
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        source = daemon.routes.sources["shop"]
        parse = source.orders_from_webhook

        def flaky(topic, headers, body):
            if b'"id": 88' in body:
                raise RetryableError("HTTP 503 from the shop", connector="shop", status=503)
            return parse(topic, headers, body)

        monkeypatch.setattr(source, "orders_from_webhook", flaky)
        webhook_store.record(
            daemon.store,
            "shop",
            "later",
            "orders/create",
            {},
            shopify_order(88, 8, "y@example.com", now_iso(), "20.00"),
        )
        webhook_store.record(
            daemon.store, "shop", "good", "orders/create", {}, shopify_order(77, 5, "x@example.com", now_iso(), "80.00")
        )
        daemon._jobs().webhooks()
        rows = event_rows(daemon.store)
        assert rows["good"]["status"] == "done"
        later = rows["later"]
        assert (later["status"], later["attempts"]) == ("pending", 1) and "503" in later["error"]
        assert later["next_attempt_at"] > datetime.now(UTC)
        daemon._jobs().webhooks()  # not due yet: not tried
        assert event_rows(daemon.store)["later"]["attempts"] == 1
        make_due(daemon.store)
        daemon._jobs().webhooks()
        assert event_rows(daemon.store)["later"]["attempts"] == 2
        make_due(daemon.store)
        daemon._jobs().webhooks()  # the third try of max_attempts = 3
        later = event_rows(daemon.store)["later"]
        assert (later["status"], later["attempts"]) == ("failed", 3) and "RetryableError" in later["error"]
    finally:
        daemon.shutdown()


def test_a_failed_rescore_keeps_the_events_and_a_batch_is_retried_event_by_event(
    tmp_path, write_config, write_csv, monkeypatch
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        daemon._jobs().incremental()
        rescore = daemon.pipeline.rescore_orders
        broken = {"all": True}

        def fragile(batch, *args, **kwargs):
            if broken["all"] or any(o.order_id == "99" for o in batch):
                raise RuntimeError("database is locked")
            return rescore(batch, *args, **kwargs)

        monkeypatch.setattr(daemon.pipeline, "rescore_orders", fragile)
        webhook_store.record(
            daemon.store, "shop", "bad", "orders/create", {}, shopify_order(99, 9, "z@example.com", now_iso(), "30.00")
        )
        webhook_store.record(
            daemon.store, "shop", "good", "orders/create", {}, shopify_order(77, 5, "x@example.com", now_iso(), "80.00")
        )
        daemon._jobs().webhooks()
        rows = event_rows(daemon.store)
        assert {k: (r["status"], r["attempts"]) for k, r in rows.items()} == {
            "bad": ("pending", 1),
            "good": ("pending", 1),
        }
        assert "rescore failed: RuntimeError: database is locked" in rows["good"]["error"]
        broken["all"] = False  # the store is back; order 99 still breaks any rescore it is part of
        make_due(daemon.store)
        daemon._jobs().webhooks()
        rows = event_rows(daemon.store)
        assert (rows["good"]["status"], rows["bad"]["status"], rows["bad"]["attempts"]) == ("done", "pending", 2)
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


@pytest.mark.slow  # concurrency
def test_a_scheduled_cycle_waits_for_a_webhook_rescore_instead_of_being_skipped(
    tmp_path, write_config, write_csv, monkeypatch
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    try:
        daemon._hold_lock()
        assert daemon._enter("webhooks")  # a webhook rescore is running
        cycle = threading.Thread(target=daemon._jobs().full)
        cycle.start()
        deadline = time.monotonic() + 5
        while not daemon.cycle_waiting.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert daemon.cycle_waiting.is_set() and recent_runs(daemon.store, 1) == []
        assert not daemon._enter("webhooks")  # the next webhook job gives way to the waiting cycle
        daemon._leave()
        cycle.join(10)
        assert not cycle.is_alive() and [r["status"] for r in recent_runs(daemon.store, 5)] == ["ok"]
        # a scheduled job behind another scheduled job is still skipped (the next run catches up)
        assert daemon._enter("incremental")
        assert not daemon._enter("full")
        daemon._leave()
    finally:
        daemon.shutdown()


def test_an_event_that_arrives_while_a_job_runs_wakes_the_webhook_job_when_it_ends(
    tmp_path, write_config, write_csv, monkeypatch
):
    daemon = make(tmp_path, write_config, write_csv, monkeypatch)
    woken = []
    monkeypatch.setattr(daemon, "_wake_webhooks", lambda: woken.append(daemon.running_job))
    try:
        daemon._hold_lock()
        assert daemon._enter("incremental")
        daemon._webhook_arrived()
        assert woken == [] and daemon.webhooks_due.is_set()  # not asked of the scheduler while busy
        daemon._leave()
        assert woken == [None]  # woken once the mutex is free
        assert daemon._enter("webhooks") and not daemon.webhooks_due.is_set()
        daemon._leave()
        assert woken == [None]
        daemon._webhook_arrived()
        assert woken == [None, None]  # idle: woken at once
    finally:
        daemon.shutdown()


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
