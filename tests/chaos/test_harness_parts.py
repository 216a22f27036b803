"""The chaos harness's own parts, fast and without processes: the BigCommerce store it serves (faults,
mutations), the oracle's reading of BigCommerce orders and merge by email, the forced first fault,
and how a kill's phase is told (from the daemon's log, the store and the fakes' activity)."""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime

import pytest
from requests.structures import CaseInsensitiveDict

from tests.chaos import oracle
from tests.chaos.harness import ChaosRun
from tests.chaos.servers import BIGCOMMERCE_STORE, BIGCOMMERCE_TOKEN, BigCommerceVendor, FaultPlan, mutate_bigcommerce

AS_OF = date(2026, 12, 1)


def bc_vendor(customers: int = 30, shopify_customers: int = 40) -> BigCommerceVendor:
    args = argparse.Namespace(customers=customers, seed=4, shopify_customers=shopify_customers, slow_codes=False)
    return BigCommerceVendor(args, "http://127.0.0.1:1")


def get(vendor: BigCommerceVendor, path: str):
    return vendor.dispatch("GET", vendor.url + path, CaseInsensitiveDict({"X-Auth-Token": BIGCOMMERCE_TOKEN}), b"")


# ---------------------------------------------------------------------------------------- BigCommerce store
def test_the_store_shares_a_quarter_of_its_customers_with_the_shopify_shop_by_email():
    vendor = bc_vendor(customers=200, shopify_customers=100)
    emails = {o["billing_address"]["email"] for o in vendor.fake.orders.values()}
    shared = {e for e in emails if e.strip().lower().startswith("c")}
    assert 25 <= len(shared) <= 75  # about a quarter of 200 customers
    assert all(e != e.strip().lower() and int(e.strip().lower()[1:].split("@")[0]) < 100 for e in shared)
    assert {o["currency_code"] for o in vendor.fake.orders.values()} == {"EUR"}


def test_quota_faults_answer_as_bigcommerce_does():
    vendor = bc_vendor()
    path = f"/stores/{BIGCOMMERCE_STORE}/v2/orders?sort=date_modified:asc&limit=5"
    assert vendor.activity("GET", path.split("?")[0], b"") == "pull"
    assert vendor.activity("GET", f"/stores/{BIGCOMMERCE_STORE}/v2/orders/50001", b"") == "fetch"
    vendor.apply("bigcommerce_quota_last")
    status, headers, body = get(vendor, path)[:3]
    assert status == 200 and headers["X-Rate-Limit-Requests-Left"] == "0" and len(json.loads(body)) == 5
    vendor.apply("bigcommerce_quota_spent")
    status, headers, _ = get(vendor, path)[:3]
    assert status == 429 and 0 < int(headers["X-Rate-Limit-Time-Reset-Ms"]) <= 1000
    assert "bigcommerce_quota_spent" in vendor.vendor_faults("GET", path.split("?")[0], b"")
    assert not any(f.startswith("429") for f in vendor.generic)  # its 429s carry the quota headers


@pytest.mark.slow
def test_mutations_change_the_order_bump_date_modified_and_name_the_scope():
    vendor = bc_vendor()
    fake = vendor.fake
    before = {oid: dict(o) for oid, o in fake.orders.items()}
    time.sleep(1.05)  # date_modified has whole seconds
    changed, kinds = mutate_bigcommerce(fake, random.Random(2), 60)
    assert sum(kinds.values()) == 60 and set(kinds) == {"create", "edit", "refund", "cancel", "archive"}
    scopes = {
        "create": "store/order/created",
        "edit": "store/order/updated",
        "refund": "store/order/refund/created",
        "cancel": "store/order/statusUpdated",
        "archive": "store/order/archived",
    }
    assert {c["scope"] for c in changed} == set(scopes.values())
    for item in changed:
        order = fake.orders[item["data"]["id"]]
        assert item["data"]["type"] == "order"
        old = before.get(order["id"])
        assert old is None or parsedate_to_datetime(order["date_modified"]) > parsedate_to_datetime(
            old["date_modified"]
        )
        assert Decimal(order["refunded_amount"]) <= Decimal(order["total_inc_tax"])
    archived = [c["data"]["id"] for c in changed if c["scope"] == scopes["archive"]]
    assert all(fake.orders[oid]["is_deleted"] for oid in archived)
    assert len(fake.orders) == len(before) + kinds["create"]
    # the store lists the changed orders after the older ones (date_modified:asc), archived ones left out
    listed = json.loads(
        get(vendor, f"/stores/{BIGCOMMERCE_STORE}/v2/orders?sort=date_modified:asc&limit=250&page=1")[2]
    )
    assert not any(o["is_deleted"] for o in listed)


# ---------------------------------------------------------------------------------------- the oracle
def bc_order(oid, status, total, refunded="0", deleted=False, customer=5_000_001, email="bc1@chaos.example", days=10):
    placed = datetime(2026, 12, 1, 12, tzinfo=UTC) - timedelta(days=days)
    return {
        "id": oid,
        "customer_id": customer,
        "email": email,
        "status_id": status,
        "total_inc_tax": total,
        "refunded_amount": refunded,
        "is_deleted": deleted,
        "date_created": placed.strftime("%a, %d %b %Y %H:%M:%S +0000"),
    }


def test_the_oracle_reads_bigcommerce_orders_by_the_documented_rules():
    orders = oracle.bigcommerce_orders(
        [
            bc_order(1, 10, "100.0000"),  # a purchase
            bc_order(2, 14, "80.0000", refunded="30.0000"),  # partially refunded: counts net
            bc_order(3, 5, "70.0000"),  # cancelled
            bc_order(4, 12, "70.0000"),  # manual verification: not counted by default
            bc_order(5, 11, "70.0000", deleted=True),  # archived
            bc_order(6, 4, "50.0000", refunded="50.0000", customer=0, email=" Guest@Chaos.Example"),  # refunded guest
        ]
    )
    counted = [(o["total"], o["cancelled"]) for o in orders]
    assert counted == [
        ("100.0000", False),
        ("50.0000", False),
        ("70.0000", True),
        ("70.0000", True),
        ("70.0000", True),
        ("0.0000", True),
    ]
    state = oracle.expected_state(orders, AS_OF)
    assert state["bigcommerce:5000001"].group is not None
    assert state["email:guest@chaos.example"].group is None  # a customer, with nothing that counts


def test_merge_by_email_makes_one_customer_of_two_shops():
    shopify = [
        {
            "id": 1,
            "customer_id": 700_001,
            "email": "c1@chaos.example",
            "total": "20.00",
            "test": False,
            "cancelled": False,
            "financial_status": "PAID",
            "created_at": datetime(2025, 10, 1, tzinfo=UTC).isoformat(),
        },
        {
            "id": 2,
            "customer_id": 700_002,
            "email": "c2@chaos.example",
            "total": "900.00",
            "test": False,
            "cancelled": False,
            "financial_status": "PAID",
            "created_at": datetime(2026, 11, 20, tzinfo=UTC).isoformat(),
        },
    ]
    bigcommerce = oracle.bigcommerce_orders(
        [
            bc_order(9, 10, "500.0000", email=" C1@Chaos.Example", days=3),
            bc_order(8, 10, "10.0000", customer=5_000_009, email="bc9@chaos.example", days=400),
        ]
    )
    merged = oracle.expected_state(shopify + bigcommerce, AS_OF, merge_by_email=True)
    assert set(merged) == {"email:c1@chaos.example", "email:c2@chaos.example", "email:bc9@chaos.example"}
    one = merged["email:c1@chaos.example"]
    assert one.r == 3 and one.f == 3  # recent through BigCommerce, two orders over both shops
    apart = oracle.expected_state(shopify + bigcommerce, AS_OF)
    assert len(apart) == 4 and apart["700001"].r == 1


# ---------------------------------------------------------------------------------------- the fault plan
def test_a_forced_fault_goes_to_the_first_request_it_fits_whatever_the_rate():
    plan = FaultPlan(seed=1, rate=0.001, forced=("shopify_bulk_failed",))
    assert plan.choose([]) is None  # an orders page: does not fit
    assert plan.choose(["shopify_bulk_failed"]) == "shopify_bulk_failed"  # the first BulkRun
    assert plan.choose(["shopify_bulk_failed"]) is None  # once
    assert plan.injected["shopify_bulk_failed"] == 1
    off = FaultPlan(seed=1, rate=0.0, forced=("shopify_bulk_failed",))
    assert off.choose(["shopify_bulk_failed"]) is None  # faults off (the final clean cycles): none at all


def test_generic_faults_are_the_vendors_own():
    plan = FaultPlan(seed=3, rate=1.0)
    chosen = {plan.choose([], ["500", "slow"]) for _ in range(50)}
    assert chosen == {"500", "slow"}


# ---------------------------------------------------------------------------------------- phases
def log_line(msg: str, ts: datetime, **extra) -> str:
    return json.dumps({"ts": ts.isoformat(timespec="milliseconds"), "level": "INFO", "msg": msg, **extra})


def make_run(tmp_path, pending_received: datetime | None, running_run: int | None, activity: dict) -> ChaosRun:
    """A run (nothing started) whose store holds one finished run, maybe a due webhook event and a run
    still 'running'; ``activity``: what the shop fakes would answer to ``/__chaos/activity``."""
    folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    run = ChaosRun(folder, seed=1, scale="smoke")
    with closing(sqlite3.connect(folder / "state.sqlite")) as db:
        db.execute(
            "CREATE TABLE webhook_events (id INTEGER PRIMARY KEY, status TEXT, received_at TEXT, next_attempt_at TEXT)"
        )
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
        db.execute("INSERT INTO runs VALUES (1, 'ok')")
        if pending_received is not None:
            db.execute(
                "INSERT INTO webhook_events VALUES (1, 'pending', ?, NULL)",
                (pending_received.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "),),
            )
        if running_run is not None:
            db.execute("INSERT INTO runs VALUES (?, 'running')", (running_run,))
        db.commit()
    run.control = lambda kind, name, payload=None: activity.get(kind, {"last_pull_at": 0.0, "last_fetch_at": 0.0})
    return run


def test_a_daemon_between_cycles_is_in_webhooks_when_events_are_due_or_a_rescore_runs(tmp_path):
    now = datetime.now(UTC)
    log = tmp_path / "daemon.log"
    log.write_text(
        "\n".join(
            [
                log_line("store lock acquired; running cycles", now - timedelta(seconds=9)),
                log_line("cycle step done", now - timedelta(seconds=8), step="pull", run=1),
                log_line("cycle step done", now - timedelta(seconds=7), step="score+diff", run=1),
                log_line("cycle step done", now - timedelta(seconds=6), step="push", run=1),
                log_line("cycle done", now - timedelta(seconds=5), run=1, status="ok", seconds=3),
            ]
        )
    )
    killed = now.timestamp()
    assert make_run(tmp_path, None, None, {}).phase(log, killed) == "idle"
    assert make_run(tmp_path, now - timedelta(seconds=1), None, {}).phase(log, killed) == "webhooks"
    assert make_run(tmp_path, now + timedelta(seconds=1), None, {}).phase(log, killed) == "idle"  # after the kill
    assert make_run(tmp_path, None, 2, {}).phase(log, killed) == "webhooks"  # a rescore's run
    fetched = {"bigcommerce": {"last_pull_at": 0.0, "last_fetch_at": killed - 1}}
    assert make_run(tmp_path, None, None, fetched).phase(log, killed) == "webhooks"
    pulled = {"shopify": {"last_pull_at": killed - 1, "last_fetch_at": 0.0}}
    assert make_run(tmp_path, now - timedelta(seconds=1), 2, pulled).phase(log, killed) == "pull"  # next cycle
    before = {"shopify": {"last_pull_at": killed - 6, "last_fetch_at": 0.0}}  # the cycle's own pull
    assert make_run(tmp_path, None, None, before).phase(log, killed) == "idle"
    assert make_run(tmp_path, now - timedelta(seconds=1), None, {}).phase(log) == "idle"  # no kill time: the log


def test_a_first_cycle_skipped_for_the_webhooks_job_is_a_kill_in_webhooks(tmp_path):
    now = datetime.now(UTC)
    log = tmp_path / "daemon.log"
    log.write_text(
        "\n".join(
            [
                log_line("store lock acquired; running cycles", now - timedelta(seconds=3)),
                log_line("job skipped: another cycle is running", now - timedelta(seconds=3), job="incremental"),
            ]
        )
    )
    run = make_run(tmp_path, None, None, {})
    assert run.phase(log, now.timestamp()) == "webhooks"
    log.write_text(log.read_text() + "\n" + log_line("webhook events processed", now - timedelta(seconds=2)))
    assert run.phase(log, now.timestamp()) == "idle"
