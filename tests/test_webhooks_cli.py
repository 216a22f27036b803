"""`rfm-sync webhooks list|retry|drop` on a store holding events in every state."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rfm_sync.cli import main
from rfm_sync.config import load_config
from rfm_sync.store import Store, utcnow
from rfm_sync.store import webhooks as webhook_store
from rfm_sync.store.schema import webhook_events
from tests.configs import config_toml

CONFIG = config_toml("sqlite:///s.sqlite", destinations=())
SECRET_BODY = b'{"id": 5, "email": "private@example.com"}'


@pytest.fixture
def setup(write_config):
    path = write_config(CONFIG)
    config = load_config(path)
    store = Store.open(config.store.url, config.base_dir)
    ids = {}
    for name in ("done", "failed", "failed2", "pending"):
        assert webhook_store.record(
            store, "shop", f"ev-{name}", "orders/create", {"x-shopify-shop-domain": "s.myshopify.com"}, SECRET_BODY
        )
        ids[name] = max(e.id for e in webhook_store.pending(store))
    webhook_store.finish(
        store,
        [ids["done"]],
        {
            ids["failed"]: "RecursionError: maximum recursion depth exceeded",
            ids["failed2"]: "RecordError: shop: order 5: no total price",
        },
    )
    yield str(path), store, ids
    store.close()


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, ["webhooks", *args])  # rich: one line per event


def row(store, event):
    c = webhook_events.c
    with store.engine.connect() as conn:
        return conn.execute(sa.select(c.status, c.attempts, c.error, c.body).where(c.id == event)).one()._asdict()


def test_list_shows_status_attempts_and_error_but_no_body_or_email(setup):
    path, store, ids = setup
    result = run("list", "-c", path)
    assert result.exit_code == 0, result.output
    assert "RecursionError" in result.output and "no total price" in result.output
    assert "private@example.com" not in result.output and "myshopify" not in result.output
    assert "1 pending, 1 done, 2 failed, 0 dropped" in result.output
    failed_only = run("list", "-c", path, "--status", "failed", "--limit", "1")
    assert failed_only.exit_code == 0 and "RecordError" in failed_only.output  # newest first
    assert "RecursionError" not in failed_only.output
    assert "no dropped webhook events" in run("list", "-c", path, "--status", "dropped").output
    assert run("list", "-c", path, "--status", "stuck").exit_code == 2


def test_retry_puts_failed_events_back_to_pending_with_no_attempts(setup):
    path, store, ids = setup
    webhook_store.postpone(store, {ids["pending"]: "RetryableError: HTTP 503"}, max_attempts=1)  # failed, 1 try
    result = run("retry", "-c", path, str(ids["failed"]), str(ids["pending"]))
    assert result.exit_code == 0, result.output
    assert "2 event(s) retried" in result.output
    for event in (ids["failed"], ids["pending"]):
        assert row(store, event) == {"status": "pending", "attempts": 0, "error": None, "body": SECRET_BODY}
    assert {e.id for e in webhook_store.pending(store)} == {ids["failed"], ids["pending"]}


def test_retry_and_drop_say_which_events_they_left_alone_and_exit_1(setup):
    path, store, ids = setup
    result = run("retry", "-c", path, str(ids["done"]), "999")
    assert result.exit_code == 1
    assert f"{ids['done']}: is done, not failed" in result.output and "999: no such event" in result.output
    assert row(store, ids["done"])["status"] == "done"
    result = run("drop", "-c", path, str(ids["done"]))
    assert result.exit_code == 1 and "is done, not pending or failed" in result.output
    webhook_store.drop(store, [ids["failed"]])
    result = run("retry", "-c", path, str(ids["failed"]))
    assert result.exit_code == 1 and "is dropped, not failed" in result.output


def test_drop_all_failed_keeps_the_rows_for_replay_detection_and_forgets_the_bodies(setup):
    path, store, ids = setup
    result = run("drop", "-c", path, "--all-failed")
    assert result.exit_code == 0, result.output
    assert "2 event(s) dropped" in result.output
    for event in (ids["failed"], ids["failed2"]):
        assert row(store, event)["status"] == "dropped" and row(store, event)["body"] is None
    assert row(store, ids["pending"])["status"] == "pending"
    assert not webhook_store.record(store, "shop", "ev-failed", "orders/create", {}, SECRET_BODY)  # a replay
    assert run("retry", "-c", path, "--all-failed").output.strip().endswith("0 event(s) retried")


def test_prune_forgets_done_and_dropped_events_but_keeps_failed_ones(setup):
    path, store, ids = setup
    webhook_store.drop(store, [ids["failed2"]])
    assert webhook_store.prune(store, utcnow() + timedelta(seconds=1)) == 2
    assert webhook_store.counts(store) == {"failed": 1, "pending": 1}


@pytest.mark.parametrize("args", [["retry"], ["drop"], ["retry", "--all-failed", "1"]])
def test_ids_or_all_failed_is_required(setup, args):
    path, _, _ = setup
    result = run(args[0], "-c", path, *args[1:])
    assert result.exit_code == 2 and "--all-failed" in result.output


def test_the_status_choices_are_the_stores():
    """`--status` offers the store's statuses, copied so that `--help` need not load the store."""
    from rfm_sync.cli import webhooks as webhooks_cli

    assert webhooks_cli.STATUSES == webhook_store.STATUSES
