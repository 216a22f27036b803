"""Hostile API answers: valid HTTP, the wrong JSON. Shopify, BigCommerce, Klaviyo and Meta answer
with nulls, wrong types, missing fields, lists where objects belong and very large pages; every
case ends as a quarantined record with its reason, or as a connector error that says what came
back (retryable or fatal, as the caller should act) — never an ``AttributeError``/``KeyError``
out of a parser, never a record silently dropped, never a made-up id.

Each answer is served by ``responses`` (no network) after the calls that lead to it.
"""

from __future__ import annotations

import copy
import json

import pytest
import responses

from connectors.base import ConnectorError, FatalError, Order, PullContext, Quarantined, RetryableError
from tests import test_bigcommerce as bc
from tests import test_klaviyo as kl
from tests import test_meta_audiences as meta
from tests import test_shopify as shop
from tests.chaos.test_fuzz_parsers import SHOPIFY_NODE
from tests.fakes.shopify_fake import FakeClock

SHOP_URL = f"https://shop-x.test/admin/api/{shop.API_VERSION}/graphql.json"
SCOPES = {
    "data": {"currentAppInstallation": {"accessScopes": [{"handle": "read_all_orders"}, {"handle": "read_orders"}]}}
}
BC_URL = "https://bc.test/stores/abc123/v2/orders"
BC_ORDER = {
    "id": 100,
    "customer_id": 7,
    "date_created": "Tue, 25 Nov 2026 12:00:00 +0000",
    "date_modified": "Tue, 25 Nov 2026 12:05:00 +0000",
    "status_id": 10,
    "total_inc_tax": "12.5000",
    "refunded_amount": "0.0000",
    "currency_code": "EUR",
    "billing_address": {"email": "a@example.com"},
}


def outcome(pull) -> tuple[str, object]:
    """("records", [Order | Quarantined]) or ("error", the ConnectorError); anything else propagates."""
    try:
        return "records", list(pull())
    except ConnectorError as exc:
        return "error", exc


def quarantined(records) -> list[str]:
    return [r.reason for r in records if isinstance(r, Quarantined)]


# ------------------------------------------------------------------------------------------ Shopify
def page(nodes, info=None):
    return {"data": {"orders": {"nodes": nodes, "pageInfo": info or {"hasNextPage": False, "endCursor": None}}}}


def changed(base: dict, **changes) -> dict:
    """A copy of ``base`` with fields replaced (``...``: removed)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key)
        else:
            out[key] = value
    return out


def node(**changes):
    return changed(SHOPIFY_NODE, **changes)


# (case, the answer to the orders query, expected: ("quarantined", reason) | (error class, words) | ("orders", n))
SHOPIFY = [
    ("a body that is a list", [1, 2], (RetryableError, "a list where a GraphQL response object belongs")),
    ("a body that is a string", "hello", (RetryableError, "a string where")),
    ("data null", {"data": None}, (FatalError, "returned no data")),
    ("data a list", {"data": [1]}, (FatalError, "a list as its data")),
    ("orders a list", {"data": {"orders": []}}, (FatalError, "shape Shopify does not document")),
    ("nodes an object", {"data": {"orders": {"nodes": {"a": 1}, "pageInfo": {}}}}, (FatalError, "orders.nodes")),
    ("pageInfo a string", {"data": {"orders": {"nodes": [], "pageInfo": "x"}}}, (FatalError, "orders.pageInfo")),
    ("a null among the nodes", page([None, SHOPIFY_NODE]), ("quarantined", "not an order object but null")),
    ("a string among the nodes", page(["x"]), ("quarantined", "not an order object but a string")),
    ("an order without its id", page([node(id=...)]), ("quarantined", "id is missing")),
    ("an order id that is an object", page([node(id={"a": 1})]), ("quarantined", "id is not a number or text")),
    ("an empty order id", page([node(id="")]), ("quarantined", "id is missing")),
    ("a customer that is a string", page([node(customer="9")]), ("quarantined", "customer is not an object")),
    ("a customer id that is a list", page([node(customer={"id": [9]})]), ("quarantined", "customer.id is not")),
    ("no money set", page([node(currentTotalPriceSet=None)]), ("quarantined", "no currentTotalPriceSet")),
    (
        "an amount that is an object",
        page([node(currentTotalPriceSet={"shopMoney": {"amount": {"x": 1}}})]),
        ("quarantined", "amount is not a number"),
    ),
    (
        "a created time that is a number",
        page([node(createdAt=12, processedAt=None)]),
        ("quarantined", "time is not ISO-8601: '12'"),
    ),
    ("hasNextPage without a cursor", page([SHOPIFY_NODE], {"hasNextPage": True}), (FatalError, "refusing to loop")),
    ("errors as text", {"errors": "boom"}, (FatalError, "boom")),
    ("errors as a list of strings", {"errors": ["boom"]}, (FatalError, "boom")),
    (
        "extensions.cost of the wrong types",
        {**page([SHOPIFY_NODE]), "extensions": {"cost": {"throttleStatus": "x", "requestedQueryCost": "abc"}}},
        ("orders", 1),
    ),
    ("extensions.cost a list", {**page([SHOPIFY_NODE]), "extensions": {"cost": [1]}}, ("orders", 1)),
    ("5,000 orders on one page", page([node(id=f"gid://shopify/Order/{i}") for i in range(1, 5001)]), ("orders", 5000)),
]


@pytest.mark.parametrize("answer,expected", [c[1:] for c in SHOPIFY], ids=[c[0] for c in SHOPIFY])
def test_shopify_answers_of_the_wrong_shape(answer, expected):
    clock = FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(SHOP_URL, json=SCOPES)
        rsps.post(SHOP_URL, body=json.dumps(answer), content_type="application/json")
        src = shop.source("https://shop-x.test", clock, attempts=2)
        cursor = json.dumps({"since": "2026-11-01T00:00:00+00:00"})
        kind, got = outcome(
            lambda: (r for p in src.pull(PullContext(cursor=cursor, started_at=clock.now())) for r in p.records)
        )
    check(kind, got, expected)


def check(kind, got, expected):
    what, words = expected
    if isinstance(what, type):
        assert kind == "error" and isinstance(got, what), got
        assert words in str(got)
    elif what == "quarantined":
        assert kind == "records", got
        assert any(words in reason for reason in quarantined(got)), quarantined(got)
        assert all(isinstance(r, (Order, Quarantined)) for r in got)
    else:
        assert kind == "records", got
        assert sum(isinstance(r, Order) for r in got) == words and not quarantined(got)


def test_a_bulk_export_line_that_is_not_an_object_is_quarantined_not_dropped(tmp_path, fake_shop):
    fake_shop.add_orders(3)
    fake_shop.bulk_extra_lines = ['"a string"', "null"]
    src = shop.source(fake_shop.url, fake_shop.clock)
    records = [r for p in src.pull(PullContext(cursor=None, started_at=fake_shop.clock.now())) for r in p.records]
    assert sum(isinstance(r, Order) for r in records) == 3
    assert sorted(quarantined(records)) == ["not an order object but a string", "not an order object but null"]


@pytest.fixture
def fake_shop():
    shop_fake = shop.ShopifyFake(clock=FakeClock())
    yield shop_fake
    shop_fake.close()


# ------------------------------------------------------------------------------------------ BigCommerce
def bc_order(**changes):
    return changed(BC_ORDER, **changes)


BIGCOMMERCE = [
    ("an object instead of a list", {"status": 200, "title": "ok"}, (FatalError, "other than a list of orders")),
    ("JSON null", None, (FatalError, "other than a list of orders")),
    ("a number", 42, (FatalError, "other than a list of orders")),
    ("a list of strings", ["a", "b"], ("quarantined", "not an order object but a string")),
    ("a null among the orders", [None, BC_ORDER], ("quarantined", "not an order object but null")),
    ("an order without its id", [bc_order(id=...)], ("quarantined", "id is missing")),
    ("an order id that is an object", [bc_order(id={"x": 1})], ("quarantined", "id is not a number or text")),
    ("a customer id that is a list", [bc_order(customer_id=[7])], ("quarantined", "customer_id is not")),
    ("a total that is a list", [bc_order(total_inc_tax=[1])], ("quarantined", "total_inc_tax is not a number")),
    (
        "a creation date that is not a date",
        [bc_order(date_created="yesterday")],
        ("quarantined", "not an RFC-2822 date: yesterday"),
    ),
    (
        "a billing address that is a string",
        [bc_order(billing_address="x")],
        ("quarantined", "billing_address is not an object but a string"),
    ),
    ("2,000 orders on one page", [bc_order(id=i) for i in range(1, 2001)], ("orders", 2000)),
]


@pytest.mark.parametrize("answer,expected", [c[1:] for c in BIGCOMMERCE], ids=[c[0] for c in BIGCOMMERCE])
def test_bigcommerce_answers_of_the_wrong_shape(answer, expected):
    clock = FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(BC_URL, body=json.dumps(answer), content_type="application/json")
        rsps.get(BC_URL, status=204)
        src = bc.source("https://bc.test", clock, attempts=2)
        kind, got = outcome(lambda: bc.records(src))
    check(kind, got, expected)


# ------------------------------------------------------------------------------------------ Meta
META_USERS = f"{meta.BASE_URL}/{meta.GRAPH_VERSION}/111/users"


@pytest.mark.parametrize(
    "answer,status,expected",
    [
        ({}, 200, (RetryableError, "without num_received")),
        ({"num_received": "one"}, 200, (RetryableError, "without num_received")),
        ({"num_received": True}, 200, (RetryableError, "without num_received")),
        ([1], 200, (RetryableError, "without num_received")),
        ({"num_received": 1, "num_invalid_entries": "many"}, 200, ("accepted", 1)),
        ({"error": "gone fishing"}, 400, ("failed", "gone fishing")),
        ({"error": {"code": "x", "message": None}}, 400, ("failed", "Graph API error x")),
    ],
    ids=[
        "no count",
        "a count in words",
        "a count that is true",
        "a list",
        "invalid entries in words",
        "an error that is text",
        "an error with odd types",
    ],
)
def test_meta_answers_of_the_wrong_shape(answer, status, expected):
    clock = meta.FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(META_USERS, body=json.dumps(answer), status=status, content_type="application/json")
        dest = meta.destination(clock, audiences=[{"audience_id": "111", "groups": ["Champions"]}])
        try:
            result = dest.push([meta.move(1, None, "Champions")])
        except ConnectorError as exc:
            kind, got = "error", exc
        else:
            kind, got = "result", result
    what, words = expected
    if isinstance(what, type):
        assert kind == "error" and isinstance(got, what) and words in str(got), got
    elif what == "accepted":
        assert kind == "result" and got.accepted == [1], got
    else:
        assert kind == "result" and got.accepted == [] and words in got.failed[1], got


# ------------------------------------------------------------------------------------------ Klaviyo
JOBS = f"{kl.BASE_URL}/api/profile-bulk-import-jobs"


@pytest.mark.parametrize(
    "created,polled,words",
    [
        ({"data": None}, None, "the new bulk import job without data.id"),
        ({"data": {"id": "j1"}}, None, "the new bulk import job without"),
        ({"data": {"id": {"x": 1}, "attributes": {"status": "queued"}}}, None, "without data.id"),
        (
            {"data": {"id": "j1", "attributes": {"status": "queued"}}},
            {"data": {"attributes": {}}},
            "bulk import job j1",
        ),
        ({"data": {"id": "j1", "attributes": {"status": "queued"}}}, [1], "bulk import job j1"),
    ],
    ids=["data null", "no attributes", "an id that is an object", "a poll without status", "a poll that is a list"],
)
def test_klaviyo_job_answers_of_the_wrong_shape_are_retryable(created, polled, words):
    clock = kl.FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(JOBS, json=created, status=202)
        if polled is not None:
            rsps.get(f"{JOBS}/j1", json=polled)
        dest = kl.destination(clock, bulk_min_profiles=2, events=False)
        with pytest.raises(RetryableError) as err:
            dest.push([kl.update(i) for i in range(1, 4)])
    assert words in str(err.value)


def test_klaviyo_import_errors_of_the_wrong_shape_keep_the_job_unacknowledged():
    clock = kl.FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(JOBS, json={"data": {"id": "j1", "attributes": {"status": "complete"}}}, status=202)
        rsps.get(f"{JOBS}/j1", json={"data": {"id": "j1", "attributes": {"status": "complete", "failed_count": 1}}})
        rsps.get(f"{JOBS}/j1/import-errors", json={"data": {"not": "a list"}})
        dest = kl.destination(clock, bulk_min_profiles=2, events=False)
        with pytest.raises(RetryableError, match="import errors of job j1"):
            dest.push([kl.update(i) for i in range(1, 4)])


def test_klaviyo_import_errors_that_are_not_objects_fail_the_whole_job_never_acknowledge_it():
    clock = kl.FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(JOBS, json={"data": {"id": "j1", "attributes": {"status": "complete"}}}, status=202)
        rsps.get(f"{JOBS}/j1", json={"data": {"id": "j1", "attributes": {"status": "complete", "failed_count": 1}}})
        rsps.get(f"{JOBS}/j1/import-errors", json={"data": ["x", None], "links": {"next": 7}})
        dest = kl.destination(clock, bulk_min_profiles=2, events=False)
        result = dest.push([kl.update(i) for i in range(1, 4)])
    assert result.accepted == [] and sorted(result.failed) == [1, 2, 3]
    assert all("could not be matched" in reason for reason in result.failed.values())


def test_a_bigcommerce_order_with_an_empty_customer_id_is_a_guest_not_quarantined():
    clock = FakeClock()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(BC_URL, json=[bc_order(customer_id="")])
        rsps.get(BC_URL, status=204)
        [order] = bc.records(bc.source("https://bc.test", clock, attempts=2))
    assert isinstance(order, Order) and order.customer_id == "email:a@example.com"
