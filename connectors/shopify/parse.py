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

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .. import validate
from ..base import AMOUNT_OUT_OF_RANGE, MAX_AMOUNT, Order, Quarantined


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


def _decimal(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("amount is not a number") from None
    if not amount.is_finite():
        raise ValueError("amount is not a number")
    if abs(amount) >= MAX_AMOUNT:
        raise ValueError(AMOUNT_OUT_OF_RANGE)
    return amount


def _build(
    source: str,
    order_id: str,
    customer: str | None,
    email: str | None,
    placed: Any,
    updated: Any,
    amount: Any,
    currency: str | None,
    status: str | None,
    test: object,
    cancelled_at: Any,
    non_purchase: Iterable[str],
) -> Order | Quarantined:
    location = f"order {order_id}"
    try:
        placed_at = parse_time(placed)
        if placed_at is None:
            raise ValueError("no processed/created time")
        updated_at = parse_time(updated)
        total = _decimal(amount)
    except ValueError as exc:
        return Quarantined(source=source, location=location, reason=str(exc))
    customer = validate.trim(customer)
    problem = (
        validate.id_problem("order_id", order_id)
        or validate.id_problem("customer_id", customer)
        or validate.placed_at_problem(placed_at)
    )
    if problem:
        return Quarantined(source=source, location=location, reason=problem)
    notices = []
    if email is not None and not validate.is_email(email):
        if not customer:
            return Quarantined(source=source, location=location, reason=f"guest order whose {validate.EMAIL_REASON}")
        email = None
        notices.append(f"{validate.EMAIL_REASON}: the order counts, the email is not used")
    if customer:
        customer_id = customer
    elif email:
        customer_id = "email:" + email
    else:
        return Quarantined(source=source, location=location, reason="guest order without an email")
    status_upper = (status or "").upper()
    is_test = bool(test)
    is_cancelled = bool(cancelled_at) or status_upper in {s.upper() for s in non_purchase}
    skipped = validate.skip_reason(total, is_test or is_cancelled)
    notices += [skipped] if skipped else []
    return Order(
        source=source,
        order_id=order_id,
        customer_id=customer_id,
        placed_at=placed_at,
        updated_at=updated_at,
        amount=total,
        email=email,
        currency=currency,
        status=status_upper.lower() or None,
        is_test=is_test,
        is_cancelled=is_cancelled,
        notices=tuple(Quarantined(source=source, location=location, reason=n) for n in notices),
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


@validate.shape_checked
def order_from_node(source: str, node: dict[str, Any], non_purchase: Iterable[str] = ()) -> Order | Quarantined:
    """A GraphQL ``Order`` node (see :data:`connectors.shopify.queries.ORDER_FIELDS`)."""
    if problem := _ids_problem(node.get("id"), node.get("customer")):
        return Quarantined(source=source, location=_location(node.get("id"), node.get("createdAt")), reason=problem)
    order_id = numeric_id(node["id"])
    customer = node.get("customer") or {}
    email = normalise_email(node.get("email")) or normalise_email(
        (customer.get("defaultEmailAddress") or {}).get("emailAddress")
    )
    money = (node.get("currentTotalPriceSet") or {}).get("shopMoney") or {}
    if "amount" not in money:
        return Quarantined(source=source, location=f"order {order_id}", reason="no currentTotalPriceSet.shopMoney")
    return _build(
        source,
        order_id,
        numeric_id(customer["id"]) if customer.get("id") else None,
        email,
        node.get("processedAt") or node.get("createdAt"),
        node.get("updatedAt"),
        money["amount"],
        money.get("currencyCode") or node.get("currencyCode"),
        node.get("displayFinancialStatus"),
        node.get("test"),
        node.get("cancelledAt"),
        non_purchase,
    )


@validate.shape_checked
def order_from_rest(source: str, body: dict[str, Any], non_purchase: Iterable[str] = ()) -> Order | Quarantined:
    """A REST order as sent by the ``orders/create`` and ``orders/updated`` webhooks.

    The amount is ``current_total_price_set.shop_money`` (or ``current_total_price``); payloads
    without those fall back to ``total_price`` (before refunds) — the next pull corrects it.
    """
    order = body.get("order", body)
    if problem := _ids_problem(order.get("id"), order.get("customer")):
        return Quarantined(source=source, location=_location(order.get("id"), order.get("created_at")), reason=problem)
    order_id = numeric_id(order["id"])
    customer = order.get("customer") or {}
    email = normalise_email(order.get("email")) or normalise_email(customer.get("email"))
    shop_money = (order.get("current_total_price_set") or {}).get("shop_money") or {}
    amount = shop_money.get("amount", order.get("current_total_price", order.get("total_price")))
    if amount is None:
        return Quarantined(source=source, location=f"order {order_id}", reason="no total price")
    status = order.get("financial_status")
    return _build(
        source,
        order_id,
        numeric_id(customer["id"]) if customer.get("id") else None,
        email,
        order.get("processed_at") or order.get("created_at"),
        order.get("updated_at"),
        amount,
        shop_money.get("currency_code") or order.get("currency"),
        status.upper() if status else None,
        order.get("test"),
        order.get("cancelled_at"),
        non_purchase,
    )
