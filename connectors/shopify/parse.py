"""Shopify payloads → :class:`Order`: GraphQL order nodes (pages, bulk JSONL) and REST webhook bodies.

Both shapes yield the same ``order_id`` and ``customer_id``: the numeric tail of the GraphQL
global id (``gid://shopify/Order/450789469`` → ``"450789469"``), which is also the REST ``id``.
A guest order (no customer) is identified as ``email:<trimmed, lower-case email>``; an order with
neither customer nor email is quarantined. Ids, emails and dates get the checks of
:mod:`connectors.validate` (an email that is not an address is dropped with a notice). Amounts are exact decimals in the shop's currency:
the current total (after edits, returns and refunds). Test orders, cancelled orders and orders
whose financial status is in ``non_purchase_statuses`` are flagged so they never count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .. import validate
from ..base import Order, Quarantined


def numeric_id(value: Any) -> str:
    """``gid://shopify/Order/123`` or ``123`` → ``"123"`` (an opaque string either way)."""
    text = str(value)
    return text.rsplit("/", 1)[-1] if text.startswith("gid://") else text


def order_gid(order_id: str) -> str:
    return f"gid://shopify/Order/{numeric_id(order_id)}"


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 with offset (``Z`` allowed) → UTC-aware datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time is not ISO-8601: {str(value)[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("time without an offset")
    return parsed.astimezone(UTC)


def normalise_email(value: Any) -> str | None:
    """Trimmed (``validate.trim``) and lower-cased; not yet checked to be an address."""
    text = validate.trim(value or None)
    return text.lower() if text else None


class _Style(NamedTuple):
    """How one payload style differs from the other; everything else :func:`_order` reads alike."""

    key: Callable[[str], str]  # a field's name in this style, from its GraphQL name
    customer_email: Callable[[dict[str, Any]], Any]
    money: Callable[[dict[str, Any]], tuple[Any, Any] | str]  # (amount, currency), or why there is none
    status: Callable[[dict[str, Any]], str | None]  # the financial status


def _snake_case(name: str) -> str:
    """A GraphQL field's name in the REST payloads: ``processedAt`` → ``processed_at``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def _node_money(node: dict[str, Any]) -> tuple[Any, Any] | str:
    money = (node.get("currentTotalPriceSet") or {}).get("shopMoney") or {}
    if "amount" not in money:
        return "no currentTotalPriceSet.shopMoney"
    return money["amount"], money.get("currencyCode") or node.get("currencyCode")


def _rest_money(order: dict[str, Any]) -> tuple[Any, Any] | str:
    shop_money = (order.get("current_total_price_set") or {}).get("shop_money") or {}
    amount = shop_money.get("amount", order.get("current_total_price", order.get("total_price")))
    if amount is None:
        return "no total price"
    return amount, shop_money.get("currency_code") or order.get("currency")


def _rest_status(order: dict[str, Any]) -> str | None:
    status = order.get("financial_status")
    return status.upper() if status else None


GRAPHQL = _Style(
    key=lambda name: name,
    customer_email=lambda customer: (customer.get("defaultEmailAddress") or {}).get("emailAddress"),
    money=_node_money,
    status=lambda node: node.get("displayFinancialStatus"),
)
REST = _Style(
    key=_snake_case, customer_email=lambda customer: customer.get("email"), money=_rest_money, status=_rest_status
)


def _location(order_id: Any, created: Any) -> str:
    """``order N``, or when the id cannot be used, the order's creation time."""
    if validate.payload_id_problem("id", order_id) is None:
        return f"order {numeric_id(order_id)}"
    return f"order created {str(created)[:40]}"


def _ids_problem(order_id: Any, customer: Any) -> str | None:
    """The order's id must be there; a customer, when there is one, must be an object with an id."""
    if problem := validate.payload_id_problem("id", order_id):
        return problem
    if customer is None:
        return None
    if not isinstance(customer, dict):
        return f"customer is not an object but {validate.json_type(customer)}"
    return validate.payload_id_problem("customer.id", customer.get("id")) if "id" in customer else None


def _order(source: str, order: dict[str, Any], style: _Style, non_purchase: Iterable[str]) -> Order | Quarantined:
    """One order payload in either style: its ids first, then its email, money and status as the
    style keeps them, then its times and the checks of :mod:`connectors.validate`."""

    def field(graphql_name: str) -> Any:
        return order.get(style.key(graphql_name))

    if problem := _ids_problem(order.get("id"), order.get("customer")):
        return Quarantined(source=source, location=_location(order.get("id"), field("createdAt")), reason=problem)
    order_id = numeric_id(order["id"])
    location = f"order {order_id}"
    customer = order.get("customer") or {}
    email = normalise_email(order.get("email")) or normalise_email(style.customer_email(customer))
    money = style.money(order)
    if isinstance(money, str):
        return Quarantined(source=source, location=location, reason=money)
    amount, currency = money
    financial_status = style.status(order)
    try:
        placed_at = parse_time(field("processedAt") or field("createdAt"))
        if placed_at is None:
            raise ValueError("no processed/created time")
        updated_at = parse_time(field("updatedAt"))
        total = validate.amount(amount)
    except ValueError as exc:
        return Quarantined(source=source, location=location, reason=str(exc))
    customer_id = numeric_id(customer["id"]) if customer.get("id") else None
    who = validate.identify(
        order_id, validate.trim(customer_id), email, placed_at, no_email="guest order without an email"
    )
    if isinstance(who, str):
        return Quarantined(source=source, location=location, reason=who)
    status = (financial_status or "").upper()
    is_test = bool(order.get("test"))
    is_cancelled = bool(field("cancelledAt")) or status in {s.upper() for s in non_purchase}
    return Order(
        source=source,
        order_id=order_id,
        customer_id=who.customer_id,
        placed_at=placed_at,
        updated_at=updated_at,
        amount=total,
        email=who.email,
        currency=currency,
        status=status.lower() or None,
        is_test=is_test,
        is_cancelled=is_cancelled,
        notices=validate.notices(
            source, location, [*who.notices, validate.skip_reason(total, is_test or is_cancelled)]
        ),
    )


@validate.shape_checked
def order_from_node(source: str, node: dict[str, Any], non_purchase: Iterable[str] = ()) -> Order | Quarantined:
    """A GraphQL ``Order`` node (see :data:`connectors.shopify.queries.ORDER_FIELDS`)."""
    return _order(source, node, GRAPHQL, non_purchase)


@validate.shape_checked
def order_from_rest(source: str, body: dict[str, Any], non_purchase: Iterable[str] = ()) -> Order | Quarantined:
    """A REST order as sent by the ``orders/create`` and ``orders/updated`` webhooks.

    The amount is ``current_total_price_set.shop_money`` (or ``current_total_price``); payloads
    without those fall back to ``total_price`` (before refunds) — the next pull corrects it.
    """
    return _order(source, body.get("order", body), REST, non_purchase)
