"""Parsers of outside input, fuzzed with hypothesis (bounded: ``max_examples``, no deadline).

The contract (connectors/base.py): what a shop sends becomes an ``Order``, a ``Quarantined`` record
with its reason, or a clear ``ConnectorError`` (a ``RecordError`` for one bad record) — never a
``KeyError``/``AttributeError``/``TypeError`` out of the middle of a parser, which the daemon would
not know how to treat (a webhook that raises one is retried for ever: a poison event).

Shapes are built around the real payloads (Shopify GraphQL nodes and REST webhook bodies,
BigCommerce V2 orders, CSV exports) with any field replaced by arbitrary JSON, so the examples
reach deep into the parsers instead of failing at the first key.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import ConnectorContext, ConnectorError, Order, PullContext, Quarantined
from connectors.bigcommerce.parse import order_from_json
from connectors.csv.source import CsvSettings, CsvSource
from connectors.shopify.parse import order_from_node, order_from_rest
from connectors.shopify.source import ShopifySettings, ShopifySource
from rfm_sync.daemon.webhooks import event_id, kept_headers, topic_of

pytestmark = pytest.mark.slow  # fuzzing: hundreds of examples per parser

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e400",
            "NaN",
            "Infinity",
            "12.50",
            "2026-11-25T12:00:00Z",
            "2026-11-25T12:00:00",
            "gid://shopify/Order/1",
            "Tue, 25 Nov 2026 12:00:00 +0000",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def mangled(base: dict) -> st.SearchStrategy[dict]:
    """``base`` with some fields replaced by arbitrary JSON and some removed."""
    keys = sorted(base)
    return st.tuples(
        st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys)),
        st.sets(st.sampled_from(keys), max_size=3),
    ).map(lambda t: {k: v for k, v in {**base, **t[0]}.items() if k not in t[1]})


SHOPIFY_NODE = {
    "id": "gid://shopify/Order/1",
    "createdAt": "2026-11-25T12:00:00Z",
    "processedAt": "2026-11-25T12:00:00Z",
    "updatedAt": "2026-11-25T12:05:00Z",
    "cancelledAt": None,
    "test": False,
    "email": "a@example.com",
    "displayFinancialStatus": "PAID",
    "currencyCode": "EUR",
    "currentTotalPriceSet": {"shopMoney": {"amount": "12.50", "currencyCode": "EUR"}},
    "customer": {"id": "gid://shopify/Customer/9", "defaultEmailAddress": {"emailAddress": "a@example.com"}},
}
SHOPIFY_REST = {
    "id": 1,
    "created_at": "2026-11-25T12:00:00Z",
    "updated_at": "2026-11-25T12:05:00Z",
    "cancelled_at": None,
    "test": False,
    "email": "a@example.com",
    "financial_status": "paid",
    "currency": "EUR",
    "current_total_price_set": {"shop_money": {"amount": "12.50", "currency_code": "EUR"}},
    "customer": {"id": 9, "email": "a@example.com"},
}
BIGCOMMERCE = {
    "id": 100,
    "customer_id": 7,
    "date_created": "Tue, 25 Nov 2026 12:00:00 +0000",
    "date_modified": "Tue, 25 Nov 2026 12:05:00 +0000",
    "total_inc_tax": "12.5000",
    "refunded_amount": "0.0000",
    "status_id": 10,
    "status": "Completed",
    "currency_code": "EUR",
    "billing_address": {"email": "a@example.com"},
    "is_deleted": False,
}


def assert_contained(call):
    """The parser's answer is a record, or what it raises is a ConnectorError."""
    try:
        result = call()
    except ConnectorError:
        return None
    assert isinstance(result, (Order, Quarantined)) or result is None or isinstance(result, list), result
    return result


@FUZZ
@given(mangled(SHOPIFY_NODE))
def test_shopify_graphql_node(node):
    assert_contained(lambda: order_from_node("shop", node, ["VOIDED"]))


@FUZZ
@given(mangled(SHOPIFY_REST))
def test_shopify_rest_body(body):
    assert_contained(lambda: order_from_rest("shop", body, ["VOIDED"]))


@FUZZ
@given(mangled(BIGCOMMERCE))
def test_bigcommerce_order(data):
    assert_contained(lambda: order_from_json("bc", data))


@pytest.fixture(scope="module")
def shopify_source(tmp_path_factory):
    context = ConnectorContext(
        zone=ZoneInfo("UTC"),
        base_dir=tmp_path_factory.mktemp("fuzz"),
        secret=lambda name: (_ for _ in ()).throw(LookupError(name)),
    )
    # base_url on a closed port: a refunds/create body that names an order fails as a ConnectorError
    return ShopifySource(
        ShopifySettings(name="shop", shop="fuzz", token_secret="none", base_url="http://127.0.0.1:9"), context
    )


@FUZZ
@given(
    st.one_of(mangled(SHOPIFY_REST), mangled({"order": SHOPIFY_REST}), json_values),
    st.sampled_from(["orders/create", "orders/updated", "orders/cancelled", "refunds/create", "", "other/x"]),
    st.booleans(),
)
def test_webhook_body(shopify_source, payload, topic, raw_garbage):
    body = b"\xff{not json" if raw_garbage else json.dumps(payload).encode()
    headers = {"x-shopify-topic": topic, "content-type": "application/json"}
    assert isinstance(topic_of(headers, body), str)
    assert isinstance(event_id(headers, body), str)
    assert "x-shopify-hmac-sha256" not in kept_headers({**headers, "x-shopify-hmac-sha256": "x"})
    result = assert_contained(lambda: shopify_source.orders_from_webhook(topic, headers, body))
    assert result is None or all(isinstance(o, Order) for o in result)


@FUZZ
@given(st.one_of(st.none(), json_values).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=60))
def test_webhook_topic_from_any_body(body):
    assert isinstance(topic_of({}, body), str)


cells = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "12.50",
            "-3",
            "1e309",
            "NaN",
            "2026-11-25",
            "2026-11-25 12:00:00",
            "2026-11-25T12:00:00+01:00",
            "0042",
            "a@example.com",
            '"',
            ",",
            "\n",
        ]
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(st.lists(st.tuples(cells, cells, cells, cells, cells), min_size=1, max_size=8))
def test_csv_rows(tmp_path, rows):
    path = Path(tmp_path) / "orders.csv"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["order_id", "customer_id", "placed_at", "amount", "email"])
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    source = CsvSource(
        CsvSettings(name="csv", path=str(path)),
        ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path(tmp_path), secret=lambda n: None),
    )
    try:
        records = [
            r for page in source.pull(PullContext(cursor=None, started_at=datetime.now(UTC))) for r in page.records
        ]
    except ConnectorError:
        return
    assert all(isinstance(r, (Order, Quarantined)) for r in records)
    # every data line is accounted for: an order or a quarantined record, never a silent drop
    assert len(records) == len(list(csv.reader(io.StringIO(out.getvalue())))) - 1
