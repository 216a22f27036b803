"""BigCommerce V2 order JSON → :class:`Order`.

Which orders count as purchases, by ``status_id`` (the fixed ids of ``GET /v2/order_statuses``):

====================  ==========================================================
2, 3, 8, 9, 10, 11    purchases: Shipped, Partially Shipped, Awaiting Pickup,
                      Awaiting Shipment, Completed, Awaiting Fulfillment
14                    Partially Refunded: a purchase, net of ``refunded_amount``
0, 1, 4, 5, 6, 7      not purchases: Incomplete, Pending, Refunded, Cancelled,
                      Declined, Awaiting Payment
12, 13                Manual Verification Required, Disputed: configurable
                      (``count_manual_verification``, ``count_disputed``; off by default)
====================  ==========================================================

An order's amount is ``total_inc_tax − refunded_amount``. Those are in the order's
*transactional* currency, ``default_currency_code`` (the spec's "Currency Fields": the currency
the shopper pays in; ``currency_code`` is only the display currency). With Multi-Currency the
order also has ``store_default_currency_code`` and ``store_default_to_transactional_exchange_rate``
(units of the transactional currency per unit of the store's default currency, the rate
BigCommerce converted the default prices with): the amount is divided by that rate, exact and
rounded half-even to 4 decimals, and the order is in the store's default currency; without
those fields (empty, or a rate of 1 with the same code) it stays in the transactional one. An order that does not count is flagged
``is_cancelled`` (the store keeps it, it never qualifies) and its status says why. Archived
orders (``is_deleted``) become ``Order(is_deleted=True)``. Dates are RFC-2822 and always UTC.
Guests (``customer_id`` 0) are identified as ``email:<normalised billing email>``. Ids, emails
and dates get the checks of :mod:`connectors.validate` (an email that is not an address is
dropped with a notice).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from email.utils import parsedate_to_datetime
from typing import Any

from .. import validate
from ..base import Order, Quarantined

PURCHASE = frozenset({2, 3, 8, 9, 10, 11, 14})
NOT_PURCHASE = frozenset({0, 1, 4, 5, 6, 7})
CONFIGURABLE = {12: "count_manual_verification", 13: "count_disputed"}


def parse_rfc2822(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        raise ValueError(f"not an RFC-2822 date: {str(value)[:40]}") from None
    if parsed.tzinfo is None:
        raise ValueError("date without an offset")
    return parsed.astimezone(UTC)


def format_rfc2822(moment: datetime) -> str:
    """``Wed, 05 Dec 2018 20:16:55 +0000`` (UTC, explicit offset, whole seconds)."""
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _money(value: Any, field: str) -> Decimal:
    """An amount field (:func:`connectors.validate.amount`); absent or empty is zero."""
    return validate.amount(value if value not in (None, "") else "0", field)


def store_default_amount(data: dict[str, Any], amount: Decimal) -> tuple[Decimal, str | None]:
    """``amount`` (transactional currency) in the store's default currency, and that currency."""
    transactional = str(data.get("default_currency_code") or data.get("currency_code") or "").strip().upper() or None
    store_default = str(data.get("store_default_currency_code") or "").strip().upper() or None
    if store_default is None or store_default == transactional:
        return amount, transactional
    rate = _money(
        data.get("store_default_to_transactional_exchange_rate"), "store_default_to_transactional_exchange_rate"
    )
    if rate <= 0:
        raise ValueError(
            f"store_default_to_transactional_exchange_rate is not positive ({transactional} to {store_default})"
        )
    with localcontext(prec=80):
        converted = (amount / rate).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    return converted, store_default


def counts(status_id: int, extra: frozenset[int]) -> bool:
    return status_id in PURCHASE or status_id in extra


@validate.shape_checked
def order_from_json(
    source: str, data: dict[str, Any], extra_purchase: frozenset[int] = frozenset()
) -> Order | Quarantined:
    raw_id = data.get("id")
    if problem := validate.payload_id_problem("id", raw_id):
        return Quarantined(
            source=source, location=f"order with date_created {str(data.get('date_created'))[:40]}", reason=problem
        )
    order_id = str(raw_id)
    location = f"order {order_id}"
    try:
        placed_at = parse_rfc2822(data.get("date_created"))
        if placed_at is None:
            raise ValueError("no date_created")
        updated_at = parse_rfc2822(data.get("date_modified"))
        total = _money(data.get("total_inc_tax"), "total_inc_tax")
        refunded = _money(data.get("refunded_amount"), "refunded_amount")
        status_id = int(data.get("status_id", -1))
    except (ValueError, TypeError) as exc:
        return Quarantined(source=source, location=location, reason=str(exc))
    billing = data.get("billing_address") or {}
    if not isinstance(billing, dict):
        return Quarantined(
            source=source,
            location=location,
            reason=f"billing_address is not an object but {validate.json_type(billing)}",
        )
    if data.get("customer_id") not in (None, "") and (
        problem := validate.payload_id_problem("customer_id", data["customer_id"])
    ):
        return Quarantined(source=source, location=location, reason=problem)  # absent or empty: a guest
    customer = validate.trim(data.get("customer_id"))
    who = validate.identify(
        order_id,
        None if customer in (None, "0") else customer,
        billing.get("email"),
        placed_at,
        no_email="guest order without a billing email",
    )
    if isinstance(who, str):
        return Quarantined(source=source, location=location, reason=who)
    try:
        amount, code = store_default_amount(data, total - refunded)
    except ValueError as exc:
        return Quarantined(source=source, location=location, reason=str(exc))
    counted = counts(status_id, extra_purchase)
    deleted = bool(data.get("is_deleted"))
    return Order(
        source=source,
        order_id=order_id,
        customer_id=who.customer_id,
        placed_at=placed_at,
        updated_at=updated_at,
        amount=amount,
        email=who.email,
        currency=code,
        status=f"{status_id} {data.get('status') or ''}".strip(),
        is_cancelled=not counted,
        is_deleted=deleted,
        notices=validate.notices(
            source, location, [*who.notices, validate.skip_reason(total - refunded, not counted or deleted)]
        ),
    )
