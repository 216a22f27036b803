"""The BigCommerce source against a fake store whose payloads follow the published OpenAPI spec."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
import yaml
from openapi_schema_validator import OAS30Validator

from connectors.base import ConnectorContext, FatalError, Order, PullContext, Quarantined, RecordError
from connectors.bigcommerce.parse import order_from_json
from connectors.bigcommerce.source import BigCommerceSettings, BigCommerceSource, load_cursor
from connectors.http import RetryPolicy
from rfm_sync.config import parse_config
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.fakes.bigcommerce_fake import BigCommerceFake
from tests.fakes.shopify_fake import FakeClock
from tests.store_helpers import stored

TOKEN = "bc-test-token"
SECRETS = {"bc-token": TOKEN, "bc-hooks": "bc-hook-secret"}
SPEC = "specs/bigcommerce/orders.v2.oas2.yml"


# ---------------------------------------------------------------------------------------- the spec
@pytest.fixture(scope="module")
def spec():
    path = Path(__file__).resolve().parent.parent.parent / "shared" / SPEC
    if not path.is_file():
        pytest.skip(f"{path} is absent: the BigCommerce OpenAPI spec is needed to build fixture payloads")
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolve(spec: dict, node, depth: int = 0):
    """The schema with every local ``$ref`` inlined (the order schemas are not recursive)."""
    if depth > 40:
        raise AssertionError("schema too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            target = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(spec, target, depth + 1)
        return {k: resolve(spec, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(spec, v, depth + 1) for v in node]
    return node


@pytest.fixture(scope="module")
def order_schema(spec):
    return OAS30Validator(resolve(spec, spec["components"]["schemas"]["order_Resp"]))


@pytest.fixture(scope="module")
def template(spec):
    examples = spec["components"]["responses"]["orderCollection_Resp"]["content"]["application/json"]["examples"]
    return examples["response"]["value"][0]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake(clock, template, order_schema):
    store = BigCommerceFake(clock=clock, template=template)
    yield store
    for order in list(store.orders.values())[:50]:  # every payload the fake served follows the spec
        order_schema.validate(order)
    store.close()


def context() -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda n: Secret(n, SECRETS[n]))


def source(url: str, clock: FakeClock, name: str = "bc", attempts: int = 8, **settings) -> BigCommerceSource:
    s = BigCommerceSettings(
        name=name, store_hash="abc123", token_secret="bc-token", base_url=url, webhook_secret="bc-hooks", **settings
    )
    return BigCommerceSource(
        s, context(), sleep=clock.sleep, clock=clock.monotonic, policy=RetryPolicy(attempts=attempts, max_elapsed_s=120)
    )


def pull_into_store(tmp_path, src, clock):
    config = parse_config({})
    store = Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    report = CycleReport(run_id=0, as_of=date(2026, 11, 1))
    Pipeline(config, store, sources=[src], destinations=[], clock=clock.now).pull(None, report)
    return store, report


def records(src, cursor=None, started=None):
    started = started or datetime(2026, 11, 1, tzinfo=UTC)
    return [r for p in src.pull(PullContext(cursor=cursor, started_at=started)) for r in p.records]


# ---------------------------------------------------------------------------------------- parsing
def test_the_spec_example_parses_into_an_order(template, order_schema):
    order_schema.validate(template)
    order = order_from_json("bc", template)
    assert isinstance(order, Order)
    assert (order.order_id, order.customer_id, order.email) == ("100", "20", "janedoe@example.com")
    assert order.placed_at == datetime(2018, 1, 10, 21, 5, 30, tzinfo=UTC)
    assert order.updated_at == datetime(2018, 12, 5, 20, 16, 55, tzinfo=UTC)
    assert order.amount == Decimal("361.95") and order.currency == "USD" and not order.is_cancelled


@pytest.mark.parametrize(
    "status_id,counts",
    [
        (2, True),
        (3, True),
        (8, True),
        (9, True),
        (10, True),
        (11, True),
        (14, True),
        (0, False),
        (1, False),
        (4, False),
        (5, False),
        (6, False),
        (7, False),
        (12, False),
        (13, False),
    ],
)
def test_which_statuses_count_as_purchases(template, status_id, counts):
    order = order_from_json("bc", {**template, "status_id": status_id, "refunded_amount": "61.9500"})
    assert order.is_cancelled is not counts
    assert order.amount == Decimal("300.00")  # net of refunded_amount


def test_statuses_12_and_13_are_configurable(template, clock):
    src = source("http://127.0.0.1:9", clock, count_manual_verification=True, count_disputed=True)
    for status_id in (12, 13):
        assert not order_from_json("bc", {**template, "status_id": status_id}, src.extra_purchase).is_cancelled


def test_guests_deleted_and_unreadable_orders(template):
    guest = order_from_json(
        "bc",
        {
            **template,
            "customer_id": 0,
            "billing_address": {**template["billing_address"], "email": " Jane@Example.COM "},
        },
    )
    assert guest.customer_id == "email:jane@example.com"
    assert order_from_json("bc", {**template, "is_deleted": True}).is_deleted
    nobody = order_from_json("bc", {**template, "customer_id": 0, "billing_address": {}})
    assert isinstance(nobody, Quarantined) and "billing email" in nobody.reason
    assert isinstance(order_from_json("bc", {**template, "date_created": "yesterday"}), Quarantined)


# ---------------------------------------------------------------------------------------- done-when
@pytest.mark.slow  # scale
def test_twenty_thousand_orders_changed_and_refunded_during_the_pull_end_up_exact(
    tmp_path, clock, template, order_schema
):
    shop = BigCommerceFake(clock=clock, template=template, mutate_per_page=3, mutation_budget=150, quota=30)
    try:
        shop.add_orders(20_000)
        src = source(shop.url, clock)
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        assert shop.mutations == 150
        assert stored(store, "bc") == shop.expected()
        assert shop.over_quota == 0  # waited for the quota window instead of hitting 429s
        assert src.quota.slept  # ... which it had to (20,000 orders need more than one window)
        for order in list(shop.orders.values())[-200:]:
            order_schema.validate(order)
    finally:
        shop.close()


@pytest.mark.slow  # chaos
def test_a_fake_failing_thirty_percent_of_requests_still_yields_the_complete_set(tmp_path, clock, template):
    shop = BigCommerceFake(
        clock=clock, template=template, fail_rate=0.3, mutate_per_page=2, mutation_budget=40, empty_reply="[]", seed=3
    )
    try:
        shop.add_orders(2500)
        src = source(shop.url, clock, attempts=15, page_size=100)
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        assert 0.15 < shop.failures / shop.calls < 0.45 and src.client.retries >= shop.failures
        assert stored(store, "bc") == shop.expected()
        limits = [int(r["limit"]) for r in shop.requests]  # halved after a 5xx, grown back after successes
        first_small = next(i for i, limit in enumerate(limits) if limit < 100)
        assert limits[first_small] == 50 and 100 in limits[first_small:]
    finally:
        shop.close()


# ---------------------------------------------------------------------------------------- paging and cursor
@pytest.mark.parametrize("empty_reply", ["204", "[]", ""])
def test_paging_ends_on_204_empty_list_or_empty_body(fake, clock, empty_reply):
    fake.empty_reply = empty_reply
    fake.add_orders(600)
    got = records(source(fake.url, clock))
    assert {r.order_id for r in got} == set(fake.expected())
    assert len(got) == len({r.order_id for r in got})  # duplicates dropped


def test_requests_are_anchored_sorted_and_closed_at_the_start(fake, clock):
    fake.add_orders(600)
    src = source(fake.url, clock, overlap_minutes=20)
    pages = list(src.pull(PullContext(cursor=None, started_at=clock.now())))
    first = fake.requests[0]
    assert first == {"sort": "date_modified:asc", "page": "1", "limit": "250"}
    assert fake.requests[1]["min_date_modified"].endswith("+0000") and fake.requests[1]["page"] == "1"
    since = load_cursor(pages[-1].cursor)
    assert since == max(o.updated_at for p in pages for o in p.records)
    assert json.loads(pages[-1].cursor)["since"].endswith("+00:00")
    fake.requests.clear()
    list(src.pull(PullContext(cursor=pages[-1].cursor, started_at=clock.now())))
    expected = (since - timedelta(minutes=20)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    assert fake.requests[0]["min_date_modified"] == expected


def test_cursor_never_passes_the_cycle_start(fake, clock):
    fake.add_orders(20)
    started = clock.now() - timedelta(days=40)  # the newest order changed after this cycle began
    pages = list(source(fake.url, clock).pull(PullContext(cursor=None, started_at=started)))
    assert load_cursor(pages[-1].cursor) == started


def test_ties_across_a_whole_page_use_the_page_number(fake, clock):
    moment = clock.now() - timedelta(days=1)
    fake.add_orders(30)
    for order in fake.orders.values():
        order["date_modified"] = fake.orders[100]["date_modified"]
        fake._dates[order["id"]] = moment.replace(microsecond=0)
    fake._cache = None
    src = source(fake.url, clock, page_size=10)
    got = records(src)
    assert sorted(int(r.order_id) for r in got) == sorted(fake.orders)
    assert [r.get("page") for r in fake.requests][:4] == ["1", "1", "2", "3"]


@responses.activate
def test_a_server_repeating_pages_is_an_error_not_a_loop(template, clock):
    url = "https://bc.test/stores/abc123/v2/orders"
    responses.get(url, json=[template])  # ignores page and min_date_modified: always the same order
    with pytest.raises(FatalError, match="refusing to loop"):
        records(source("https://bc.test", clock))
    assert len(responses.calls) <= 4


# ---------------------------------------------------------------------------------------- archived orders
@pytest.mark.parametrize("listing", ["hidden", "filter", "ignored"])
def test_an_order_archived_after_it_was_pulled_leaves_rfm(tmp_path, fake, clock, listing):
    fake.archived_listing = listing  # BigCommerce does not document which: all three must work
    fake.add_orders(60)
    src = source(fake.url, clock, page_size=25)
    store, report = pull_into_store(tmp_path, src, clock)
    assert report.errors == {} and stored(store, "bc") == fake.expected()
    victim = next(oid for oid, (_, counts) in stored(store, "bc").items() if counts)
    clock.advance(3600)
    fake.archive(int(victim))
    clock.advance(60)
    report = CycleReport(run_id=1, as_of=date(2026, 11, 1))
    Pipeline(parse_config({}), store, sources=[src], destinations=[], clock=clock.now).pull(None, report)
    assert report.errors == {}
    assert stored(store, "bc")[victim] == (fake.expected()[victim][0], False)  # kept, no longer qualifying
    assert stored(store, "bc") == fake.expected()


def test_the_archived_pass_reads_is_deleted_true_from_its_own_cursor(fake, clock):
    fake.add_orders(40)  # order 100 is archived (every 211th), long before the stored cursor
    assert fake.orders[100]["is_deleted"]
    started = clock.now()
    old = json.dumps({"since": (started - timedelta(days=1)).isoformat()})  # a cursor from before the fix
    pages = list(source(fake.url, clock).pull(PullContext(cursor=old, started_at=started)))
    archived = [r for p in pages for r in p.records if r.is_deleted]
    assert [r.order_id for r in archived] == ["100"]  # read once, from the beginning
    asked = [r for r in fake.requests if r.get("is_deleted") == "true"]
    assert asked and "min_date_modified" not in asked[0]
    state = json.loads(pages[-1].cursor)
    assert state["archived_since"] == state["since"]  # a complete pass: the next one starts from here
    fake.requests.clear()
    list(source(fake.url, clock).pull(PullContext(cursor=pages[-1].cursor, started_at=clock.now())))
    asked = [r for r in fake.requests if r.get("is_deleted") == "true"]
    expected = (load_cursor(pages[-1].cursor) - timedelta(minutes=15)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    assert asked[0]["min_date_modified"] == expected


def test_a_server_ignoring_is_deleted_costs_one_request_once(fake, clock):
    fake.archived_listing = "ignored"
    fake.add_orders(300)
    src = source(fake.url, clock)
    first = list(src.pull(PullContext(cursor=None, started_at=clock.now())))
    assert sum(1 for r in fake.requests if r.get("is_deleted")) == 1 and src.list_includes_archived
    assert sum(r.is_deleted for p in first for r in p.records) == sum(o["is_deleted"] for o in fake.orders.values())
    fake.requests.clear()
    list(src.pull(PullContext(cursor=first[-1].cursor, started_at=clock.now())))
    assert not any(r.get("is_deleted") for r in fake.requests)


# ---------------------------------------------------------------------------------------- limits and errors
@responses.activate
def test_429_sleeps_the_reset_time_and_a_bare_429_backs_off_harder(template, clock):
    url = "https://bc.test/stores/abc123/v2/orders"
    responses.get(url, status=429, headers={"X-Rate-Limit-Requests-Left": "0", "X-Rate-Limit-Time-Reset-Ms": "7500"})
    responses.get(url, status=429)
    responses.get(url, json=[template], headers={"X-Rate-Limit-Requests-Left": "3"})
    responses.get(url, status=204)
    src = source("https://bc.test", clock)
    got = records(src)
    assert [r.order_id for r in got] == ["100"]
    assert src.quota.slept[:2] == [7.5, 5.0]  # the reset time, then a harder back-off without headers
    assert sum(clock.slept) >= 12.5


@responses.activate
@pytest.mark.parametrize(
    "status,match",
    [(401, "HTTP 401.*store_v2_orders_read_only"), (403, "HTTP 403.*Orders read-only"), (400, "HTTP 400")],
)
def test_4xx_are_fatal_with_a_clear_message_and_never_the_token(clock, status, match):
    responses.get("https://bc.test/stores/abc123/v2/orders", status=status, body='{"email": "jane@example.com"}')
    src = source("https://bc.test", clock)
    with pytest.raises(FatalError, match=match) as info:
        records(src)
    assert TOKEN not in str(info.value) and "jane" not in str(info.value) and TOKEN not in repr(src)
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["X-Auth-Token"] == TOKEN


# ---------------------------------------------------------------------------------------- webhooks
def test_webhooks_are_verified_by_shared_secret_and_fetch_the_order(fake, clock):
    fake.add_orders(3)
    src = source(fake.url, clock)
    body = json.dumps(
        {
            "scope": "store/order/updated",
            "store_id": "1",
            "data": {"type": "order", "id": 101},
            "hash": "x",
            "created_at": 1700000000,
            "producer": "stores/abc123",
        }
    ).encode()
    assert src.verify_webhook({"x-rfm-sync-secret": "bc-hook-secret"}, body)
    assert not src.verify_webhook({"X-Rfm-Sync-Secret": "wrong"}, body)
    assert not src.verify_webhook({}, body)
    [order] = src.orders_from_webhook("store/order/updated", {}, body)
    assert order.order_id == "101" and order.source == "bc"
    gone = body.replace(b'"id": 101', b'"id": 999999')
    assert src.orders_from_webhook("store/order/updated", {}, gone) == []
    assert src.orders_from_webhook("store/product/updated", {}, body) == []


@pytest.mark.parametrize(
    "body,says",
    [
        (b'{"scope": "store/order/updated", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deep"),
        (b'{"scope": "store/order/updated", "data": [101]}', "data is not an object"),
        (b'{"scope": "store/order/updated", "data": {"type": "order", "id": [101]}}', "order id"),
        (b'{"scope": "store/order/updated", "data": {"type": "order", "id": "../101"}}', "order id"),
    ],
)
def test_an_unreadable_order_webhook_is_a_record_error_with_its_reason(fake, clock, body, says):
    with pytest.raises(RecordError) as err:
        source(fake.url, clock).orders_from_webhook("store/order/updated", {}, body)
    assert says in str(err.value)


def test_a_webhook_order_the_store_cannot_hold_is_a_record_error(fake, clock):
    fake.add_orders(3)
    fake.orders[101]["total_inc_tax"] = "1e400"
    body = json.dumps({"scope": "store/order/updated", "data": {"type": "order", "id": 101}}).encode()
    with pytest.raises(RecordError) as err:
        source(fake.url, clock).orders_from_webhook("store/order/updated", {}, body)
    assert "order 101" in str(err.value) and "total_inc_tax: amount out of range" in str(err.value)
    fake.orders[101]["total_inc_tax"] = "15.50"  # the spec's payloads are checked at teardown
