"""Hostile webhook bodies, through the Shopify and BigCommerce sources the daemon's ``webhooks`` job
calls. A verified event is always stored; here is what becomes of it: an order, nothing (a topic
that carries no order), or a ``RecordError`` whose reason is kept with the event (``failed``,
``rfm-sync webhooks list`` shows it) — never an exception of another kind (a poison event retried
for ever), never "done" for an order event that named no order."""

from __future__ import annotations

import pytest

from connectors.base import RecordError
from tests import test_bigcommerce as bc
from tests import test_shopify as shop
from tests.fakes.shopify_fake import FakeClock

ORDER = (
    b'{"id": 4501, "created_at": "2026-01-01T10:00:00+00:00", "updated_at": "2026-01-01T10:00:00+00:00", '
    b'"total_price": "5.00", "email": "a@example.com", "customer": {"id": 9}}'
)

# (case, topic, body, the words of the RecordError or [] for "no order in it")
SHOPIFY = [
    ("an empty body", "orders/create", b"", "body is not JSON"),
    ("only whitespace", "orders/create", b"  \n", "body is not JSON"),
    ("Latin-1 bytes", "orders/create", b'{"id": "\xe9"}', "body is not JSON"),
    ("a JSON list", "orders/create", b"[1]", "body is not a JSON object"),
    ("a JSON string", "orders/create", b'"x"', "body is not a JSON object"),
    ("JSON null", "orders/create", b"null", "body is not a JSON object"),
    ("nesting 5000 deep", "orders/create", b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deep"),
    ("the order as a string", "orders/create", b'{"order": "x"}', "unexpected payload shape"),
    ("an order without its id", "orders/create", ORDER.replace(b'"id": 4501, ', b""), "id is missing"),
    ("an order id that is a list", "orders/updated", ORDER.replace(b"4501", b"[4501]"), "id is not a number or text"),
    ("a customer that is text", "orders/create", ORDER.replace(b'{"id": 9}', b'"9"'), "customer is not an object"),
    ("a time without an offset", "orders/create", ORDER.replace(b"+00:00", b""), "time without an offset"),
    ("a total in words", "orders/paid", ORDER.replace(b'"5.00"', b'"five"'), "amount is not a number"),
    ("a refund without its order", "refunds/create", b'{"id": 5}', "without a numeric order_id"),
    ("a refund whose order id is an object", "refunds/create", b'{"order_id": {"a": 1}}', "without a numeric order_id"),
    ("no topic at all", "", ORDER, "without a topic"),
    ("a topic that carries no order", "products/create", b'{"id": 1}', []),
]


def test_a_readable_shopify_order_webhook_is_an_order():
    [order] = shop.source("https://shop-x.test", FakeClock()).orders_from_webhook("orders/create", {}, ORDER)
    assert (order.order_id, order.customer_id, str(order.amount)) == ("4501", "9", "5.00")


BIGCOMMERCE = [
    ("an empty body", "store/order/created", b"", "body is not JSON"),
    ("a JSON list", "store/order/created", b"[1]", "body is not a JSON object"),
    ("JSON null", "store/order/updated", b"null", "body is not a JSON object"),
    ("no data", "store/order/created", b'{"scope": "store/order/created"}', "no data.id"),
    ("data without an id", "store/order/created", b'{"data": {"type": "order"}}', "no data.id"),
    ("data that is a list", "store/order/created", b'{"data": [1]}', "data is not an object"),
    (
        "an id that is an object",
        "store/order/created",
        b'{"data": {"type": "order", "id": {"a": 1}}}',
        "order id is not a number",
    ),
    (
        "an id in words",
        "store/order/statusUpdated",
        b'{"data": {"type": "order", "id": "seven"}}',
        "order id is not a number",
    ),
    ("a callback for another kind of thing", "store/order/created", b'{"data": {"type": "product", "id": 5}}', []),
    ("a scope that is not an order's", "store/product/updated", b'{"data": {"id": 5}}', []),
]


SOURCES = {
    "shopify": lambda: shop.source("https://shop-x.test", FakeClock()),
    "bigcommerce": lambda: bc.source("https://bc.test", FakeClock()),
}
CASES = [("shopify", *c) for c in SHOPIFY] + [("bigcommerce", *c) for c in BIGCOMMERCE]


@pytest.mark.parametrize(
    "shop_kind,topic,body,says", [(c[0], *c[2:]) for c in CASES], ids=[f"{c[0]}: {c[1]}" for c in CASES]
)
def test_hostile_webhook_bodies(shop_kind, topic, body, says):
    src = SOURCES[shop_kind]()
    if says == []:
        assert src.orders_from_webhook(topic, {}, body) == []
        return
    with pytest.raises(RecordError) as err:
        src.orders_from_webhook(topic, {}, body)
    assert says in str(err.value) and "a@example.com" not in str(err.value)
