"""The Shopify source against a fake shop on 127.0.0.1: complete, polite, resumable, and safe with secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses

from connectors.base import ConnectorContext, FatalError, Order, PullContext, RecordError, RetryableError
from connectors.http import RetryPolicy
from connectors.shopify.queries import API_VERSION
from connectors.shopify.source import ShopifySettings, ShopifySource, load_cursor
from rfm_sync.config import parse_config
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.fakes.shopify_fake import FakeClock, FakeOrder, ShopifyFake
from tests.store_helpers import stored

TOKEN = "shpat_test_token"
HOOK_KEY = "whsec-test-key"
SECRETS = {"shop-token": TOKEN, "shop-hooks": HOOK_KEY}


def context() -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda n: Secret(n, SECRETS[n]))


def source(url: str, clock: FakeClock, name: str = "shop-a", attempts: int = 8, **settings) -> ShopifySource:
    s = ShopifySettings(
        name=name,
        shop=name,
        token_secret="shop-token",
        base_url=url,
        webhook_secret="shop-hooks",
        bulk_poll_seconds=2,
        **settings,
    )
    return ShopifySource(
        s, context(), sleep=clock.sleep, clock=clock.monotonic, policy=RetryPolicy(attempts=attempts, max_elapsed_s=120)
    )


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake(clock):
    shop = ShopifyFake(clock=clock)
    yield shop
    shop.close()


def pull_into_store(tmp_path, src, clock, store=None):
    config = parse_config({"identity": {"merge_by": "customer_id"}})
    store = store or Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    report = CycleReport(run_id=0, as_of=date(2026, 11, 1))
    Pipeline(config, store, sources=[src], destinations=[], clock=clock.now).pull(None, report)
    return store, report


# ---------------------------------------------------------------------------------------- done-when
@pytest.mark.slow  # scale
@pytest.mark.parametrize("backfill,count", [("bulk", 20_000), ("paged", 6_000)])
def test_twenty_thousand_orders_changed_and_refunded_during_the_pull_end_up_exact(tmp_path, clock, backfill, count):
    # a Plus-sized shop: pages of 250 fit its query cost limit, so the test needs fewer round trips
    shop = ShopifyFake(
        clock=clock,
        mutate_per_page=7,
        mutation_budget=150,
        bulk_polls=40,
        max_query_cost=2000,
        bucket_max=10_000,
        restore_rate=500,
    )
    try:
        shop.add_orders(count)
        src = source(shop.url, clock, backfill=backfill, page_size=250)
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        assert shop.mutations == 150  # refunds, cancellations, edits and new orders happened mid-pull
        assert stored(store, "shop-a") == shop.expected()
        assert shop.throttled == 0
        if backfill == "bulk":
            assert len(shop.bulk_ops) == 1 and shop.downloads_with_token == 0
    finally:
        shop.close()


@pytest.mark.slow  # scale
def test_the_client_never_exceeds_the_cost_bucket_and_finishes(tmp_path, clock):
    shop = ShopifyFake(clock=clock, bucket_max=1000, restore_rate=50)
    try:
        shop.add_orders(3000)
        src = source(shop.url, clock, backfill="paged")
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        assert shop.throttled == 0  # never asked for more than the bucket held
        assert src.bucket.waited > 0  # ... because it waited for refills instead
        assert stored(store, "shop-a") == shop.expected()
    finally:
        shop.close()


@pytest.mark.slow  # chaos
def test_a_fake_failing_thirty_percent_of_requests_still_yields_the_complete_set(tmp_path, clock):
    shop = ShopifyFake(clock=clock, fail_rate=0.3, seed=11)
    try:
        shop.add_orders(2500)
        src = source(shop.url, clock, backfill="paged", attempts=15)
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        assert 0.15 < shop.failures / len(shop.requests) < 0.45 and src.client.retries >= shop.failures
        assert stored(store, "shop-a") == shop.expected()
        sizes = shop.page_sizes  # halved after a 5xx, grown back after successful pages
        first_small = next(i for i, size in enumerate(sizes) if size < 100)
        assert sizes[first_small] == 50 and 100 in sizes[first_small:]
    finally:
        shop.close()


@pytest.mark.parametrize("as_429", [False, True])
def test_throttled_in_a_200_body_and_http_429_are_handled_alike(fake, clock, as_429):
    fake.throttle_with_429 = as_429
    fake.add_orders(300)
    src = source(fake.url, clock, backfill="paged")
    src.check_access()  # learns the bucket ...
    fake.available = 0  # ... which another client then drains
    records = [r for page in src.pull(PullContext(cursor=None, started_at=clock.now())) for r in page.records]
    assert fake.throttled == 1
    assert {r.order_id for r in records} == set(fake.expected())
    assert src.client.retries == 1 and clock.slept[-1] >= 0 and sum(clock.slept) >= 500 / 50 - 0.1


# ---------------------------------------------------------------------------------------- cursor
def test_cursor_is_utc_with_offset_capped_at_cycle_start_and_reread_with_overlap(fake, clock):
    fake.add_orders(50)
    started = clock.now()
    late = fake.orders[1010]
    late.updated_at = started + timedelta(hours=2)  # changed after the cycle began
    fake.changed()
    src = source(fake.url, clock, backfill="paged", overlap_minutes=30)
    pages = list(src.pull(PullContext(cursor=None, started_at=started)))
    since, bulk = load_cursor(pages[-1].cursor)
    assert bulk is None and since == started  # capped, even though an order is newer
    assert json.loads(pages[-1].cursor)["since"].endswith("+00:00")
    fake.queries.clear()
    again = list(src.pull(PullContext(cursor=pages[-1].cursor, started_at=started + timedelta(hours=3))))
    assert fake.queries == [f"updated_at:>='{(started - timedelta(minutes=30)).isoformat()}'"]
    assert [r.order_id for p in again for r in p.records] == ["1010"]  # closed start re-reads it


@responses.activate
def test_duplicates_within_a_pull_are_dropped_and_a_repeated_cursor_is_an_error(clock):
    url = f"https://shop-x.test/admin/api/{API_VERSION}/graphql.json"

    def node(oid, updated):
        return {
            "id": f"gid://shopify/Order/{oid}",
            "createdAt": "2026-01-01T00:00:00Z",
            "processedAt": "2026-01-01T00:00:00Z",
            "updatedAt": updated,
            "cancelledAt": None,
            "test": False,
            "email": "a@example.com",
            "displayFinancialStatus": "PAID",
            "currencyCode": "EUR",
            "currentTotalPriceSet": {"shopMoney": {"amount": "1.00", "currencyCode": "EUR"}},
            "customer": None,
        }

    def page(nodes, cursor):
        return {"data": {"orders": {"pageInfo": {"hasNextPage": True, "endCursor": cursor}, "nodes": nodes}}}

    responses.post(url, json={"data": {"currentAppInstallation": {"accessScopes": [{"handle": "read_all_orders"}]}}})
    responses.post(url, json=page([node(1, "2026-01-02T00:00:00Z")], "c1"))
    responses.post(url, json=page([node(1, "2026-01-02T00:00:00Z"), node(2, "2026-01-03T00:00:00Z")], "c2"))
    responses.post(url, json=page([], "c1"))
    src = source("https://shop-x.test", clock, backfill="paged")
    seen = []
    with pytest.raises(FatalError, match="refusing to loop"):
        for p in src.pull(PullContext(cursor=None, started_at=datetime(2026, 6, 1, tzinfo=UTC))):
            seen.extend(r.order_id for r in p.records)
    assert seen == ["1", "2"]


# ---------------------------------------------------------------------------------------- backfill
def test_bulk_backfill_resumes_the_running_operation_after_a_restart(tmp_path, clock, fake):
    fake.add_orders(500)
    fake.reset_download_once = True  # and the download drops half-way once
    first = source(fake.url, clock)
    pages = first.pull(PullContext(cursor=None, started_at=clock.now()))
    started = next(pages)  # the bulk operation id, committed before anything else
    pages.close()  # the process dies here
    since, bulk = load_cursor(started.cursor)
    assert since is None and bulk == "gid://shopify/BulkOperation/1"
    second = source(fake.url, clock)
    records = [r for p in second.pull(PullContext(cursor=started.cursor, started_at=clock.now())) for r in p.records]
    assert len(fake.bulk_ops) == 1  # resumed, not started again
    assert {r.order_id for r in records} == set(fake.expected())
    assert fake.downloads_with_token == 0  # the token never leaves for the storage host


def test_a_failed_bulk_operation_is_forgotten_so_the_next_pull_starts_afresh(fake, clock):
    fake.add_orders(5)
    src = source(fake.url, clock)
    pages = src.pull(PullContext(cursor=None, started_at=clock.now()))
    first = next(pages)
    assert load_cursor(first.cursor) == (None, "gid://shopify/BulkOperation/1")
    fake.bulk_ops["gid://shopify/BulkOperation/1"]["status"] = "FAILED"
    cursors = []
    with pytest.raises(RetryableError, match="FAILED"):
        for page in pages:
            cursors.append(page.cursor)
    assert load_cursor(cursors[-1]) == (None, None)  # committed: the next pull starts a new export


@pytest.mark.parametrize("code", ["LIMIT_REACHED", "OPERATION_IN_PROGRESS"])
def test_a_taken_bulk_slot_is_waited_for_and_then_the_export_runs(tmp_path, clock, fake, code):
    fake.add_orders(300)
    fake.bulk_blocked_until, fake.bulk_block_code = 45.0, code  # another export of this app, for 45 s
    src = source(fake.url, clock)
    store, report = pull_into_store(tmp_path, src, clock)
    assert report.errors == {}
    assert fake.bulk_refusals >= 2 and len(fake.bulk_ops) == 1
    assert stored(store, "shop-a") == fake.expected()
    waits = src.bulk.busy_waits  # backed off (doubling), not hammering the mutation
    assert sum(waits) >= 45 and waits == sorted(waits) and waits[1] == 2 * waits[0]


@pytest.mark.parametrize("code", ["LIMIT_REACHED", "OPERATION_IN_PROGRESS"])
def test_a_bulk_slot_still_taken_after_the_bound_is_retryable_and_the_next_pull_starts_it(clock, fake, code):
    fake.add_orders(20)
    fake.bulk_blocked_until, fake.bulk_block_code = 10 * 3600.0, code
    src = source(fake.url, clock)
    with pytest.raises(RetryableError, match=code) as info:
        list(src.pull(PullContext(cursor=None, started_at=clock.now())))
    assert not isinstance(info.value, FatalError) and fake.bulk_ops == {}
    assert sum(src.bulk.busy_waits) <= src.bulk.busy_wait_s  # bounded
    clock.advance(10 * 3600.0)  # the other export finished; the next cycle asks again (cursor unchanged: None)
    records = [r for p in src.pull(PullContext(cursor=None, started_at=clock.now())) for r in p.records]
    assert {r.order_id for r in records} == set(fake.expected()) and len(fake.bulk_ops) == 1


# ---------------------------------------------------------------------------------------- access and errors
def test_missing_read_all_orders_is_detected_and_reported(fake, clock):
    fake.scopes = ["read_orders", "read_customers"]
    fake.add_orders(3)
    with pytest.raises(FatalError, match="read_all_orders.*60 days"):
        list(source(fake.url, clock).pull(PullContext(cursor=None, started_at=clock.now())))
    tolerant = source(fake.url, clock, name="shop-b", backfill="paged", allow_partial_history=True)
    records = [r for p in tolerant.pull(PullContext(cursor=None, started_at=clock.now())) for r in p.records]
    assert len(records) == 3 and "read_all_orders" in tolerant.warnings[0]


def test_doctor_check_reports_the_missing_scope_with_its_fix(fake, clock):
    fake.scopes = ["read_orders", "read_customers"]
    tolerant = source(fake.url, clock, name="shop-c", backfill="paged", allow_partial_history=True)
    [(problem, fix)] = tolerant.check()
    assert "60 days" in problem and "read_all_orders" in fix
    with pytest.raises(FatalError, match="read_all_orders"):
        source(fake.url, clock, name="shop-d").check()
    fake.scopes = ["read_orders", "read_all_orders"]
    assert source(fake.url, clock, name="shop-e").check() == []


@responses.activate
@pytest.mark.parametrize(
    "reply,match",
    [
        ({"status": 401, "body": "bad"}, "HTTP 401.*read_orders"),
        ({"status": 403, "body": "no"}, "HTTP 403.*read_all_orders"),
        (
            {"json": {"errors": [{"message": "access denied", "extensions": {"code": "ACCESS_DENIED"}}]}},
            "denied.*read_customers",
        ),
        (
            {
                "json": {
                    "errors": [
                        {"message": "Field 'x' doesn't exist on type 'Order'", "extensions": {"code": "undefinedField"}}
                    ],
                    "data": None,
                }
            },
            "undefinedField",
        ),
    ],
)
def test_errors_are_fatal_with_a_clear_message_and_never_the_token(clock, reply, match):
    responses.post(f"https://shop-x.test/admin/api/{API_VERSION}/graphql.json", **reply)
    src = source("https://shop-x.test", clock)
    with pytest.raises(FatalError, match=match) as info:
        list(src.pull(PullContext(cursor=None, started_at=clock.now())))
    assert TOKEN not in str(info.value) and TOKEN not in repr(src) and TOKEN not in repr(src.client)
    assert len(responses.calls) == 1  # not retried
    assert responses.calls[0].request.headers["X-Shopify-Access-Token"] == TOKEN


@responses.activate
def test_graphql_internal_errors_in_a_200_are_retried(clock):
    url = f"https://shop-x.test/admin/api/{API_VERSION}/graphql.json"
    responses.post(
        url, json={"errors": [{"message": "Internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}
    )
    responses.post(url, json={"data": {"currentAppInstallation": {"accessScopes": [{"handle": "read_all_orders"}]}}})
    src = source("https://shop-x.test", clock)
    src.check_access()
    assert src.client.retries == 1


# ---------------------------------------------------------------------------------------- webhooks
def sign(body: bytes, key: str = HOOK_KEY) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def test_webhook_signatures_are_verified(fake, clock):
    src = source(fake.url, clock)
    body = b'{"id": 1}'
    assert src.verify_webhook({"X-Shopify-Hmac-Sha256": sign(body)}, body)
    assert src.verify_webhook({"x-shopify-hmac-sha256": sign(body)}, body)  # header names are case-insensitive
    assert not src.verify_webhook({"X-Shopify-Hmac-Sha256": sign(body, "other-key")}, body)
    assert not src.verify_webhook({"X-Shopify-Hmac-Sha256": sign(body)}, body + b" ")
    assert not src.verify_webhook({}, body)


def test_order_webhooks_become_orders_and_refunds_fetch_the_order(fake, clock, shared_dir):
    raw = (shared_dir / "fixtures/shopify/order.json").read_bytes()
    src = source(fake.url, clock)
    [order] = src.orders_from_webhook("orders/updated", {"X-Shopify-Hmac-Sha256": sign(raw)}, raw)
    assert isinstance(order, Order)
    assert (order.order_id, order.customer_id, order.email) == ("450789469", "207119551", "bob.norman@hostmail.com")
    assert order.amount == Decimal("409.94") and order.currency == "USD"
    assert order.placed_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)

    refund = json.loads((shared_dir / "fixtures/shopify/refund.json").read_text())
    assert refund["refund"]["order_id"] == 450789469
    fake.orders[450789469] = FakeOrder(
        id=450789469,
        customer_id=207119551,
        email="bob.norman@hostmail.com",
        created_at=datetime(2008, 1, 10, 16, tzinfo=UTC),
        updated_at=datetime(2016, 6, 20, 17, 35, 6, tzinfo=UTC),
        total=Decimal("209.94"),
        financial_status="PARTIALLY_REFUNDED",
    )
    [fetched] = src.orders_from_webhook("refunds/create", {}, json.dumps(refund).encode())
    assert fetched.order_id == order.order_id and fetched.amount == Decimal("209.94")
    assert fetched.status == "partially_refunded"
    assert src.orders_from_webhook("products/update", {}, b"{}") == []


def rest_order(total: str = "25.00", **extra) -> bytes:
    order = {
        "id": 4501,
        "created_at": "2026-01-01T10:00:00+00:00",
        "updated_at": "2026-01-01T10:00:00+00:00",
        "total_price": total,
        "currency": "EUR",
        "email": "a@example.com",
        "customer": {"id": 9},
        **extra,
    }
    return json.dumps(order).encode()


@pytest.mark.parametrize(
    "body,says",
    [
        (b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deep"),
        (rest_order("X").replace(b'"X"', b"1e400"), "amount is not a number"),  # a JSON number: json reads inf
        (rest_order("1e400"), "amount out of range"),
        (rest_order("100000000000000"), "amount out of range"),  # 10^14: more than the store's 14 digits
        (rest_order("NaN"), "amount is not a number"),
        (rest_order(email=None, customer=None), "guest order without an email"),
        (rest_order(created_at="yesterday"), "order 4501"),
        (rest_order(customer="9"), "order 4501"),
    ],
)
def test_an_unreadable_order_webhook_is_a_record_error_with_its_reason(fake, clock, body, says):
    src = source(fake.url, clock)
    with pytest.raises(RecordError) as err:
        src.orders_from_webhook("orders/create", {}, body)
    assert says in str(err.value) and "a@example.com" not in str(err.value)
    [ok] = src.orders_from_webhook("orders/create", {}, rest_order("99999999999999.9999"))  # the largest amount
    assert ok.amount == Decimal("99999999999999.9999")


def test_a_pulled_order_with_an_amount_out_of_range_is_quarantined_not_the_cycle(tmp_path, fake, clock):
    fake.add_orders(30)
    fake.orders[1003].total = Decimal("1e400")
    fake.changed()
    store, report = pull_into_store(tmp_path, source(fake.url, clock, backfill="paged"), clock)
    assert [q["location"] for q in report.quarantined] == ["order 1003"]
    assert "amount out of range" in report.quarantined[0]["reason"]
    assert len(stored(store, "shop-a")) == 29
