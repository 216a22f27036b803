"""The checks every source applies to what it reads: identifiers, emails, order dates, amounts.

One definition, in Python (Shopify, BigCommerce, webhooks, the push) and as DuckDB SQL (the two
CSV reads), so every path agrees:

* **Trimmed** around ids and emails: ASCII whitespace and control characters (U+0000–U+001F:
  tab, newline, CR, VT, FF, NUL, ...) and the Unicode spaces DuckDB's ``TRIM`` removes (category
  Zs: U+00A0, U+2000–U+200A, U+3000, ...). "a@b.c\\t" and "a@b.c" are one person.
* A **customer id** with a control character *inside* (NUL, tab, ..., or DEL) is not an id
  someone typed: the record is quarantined, naming the column (the id is the customer's key in
  the destinations and is printed in reports). An **order id** is quarantined only for a NUL
  inside: order ids never leave the store, and NUL is what breaks it (PostgreSQL refuses it in
  text, C tools end the text there); other control characters stay part of the opaque id. The
  reason is cost: the fast CSV read checks every order id, and ``contains(id, chr(0))`` costs a
  seventh of a regular expression over the id (customer ids are checked once per customer).
* An **email** that is not plausibly an address — not exactly one ``@``, an empty local part, a
  domain without a dot or with an empty label, or whitespace/control characters inside — is not
  stored or sent (``None``). The order still counts for its customer id; the source reports a
  notice naming the record and "email is not an address". A guest (no customer id) whose email is
  not an address has no identity: that record is quarantined.
* An order **placed** before 1990-01-01 or from 2100-01-01 (UTC) is quarantined. An absolute
  range, not one around the as-of day: the store keeps future orders for later back-tests, and a
  file must read the same whatever day it is scored. No shop sold online before 1990; dates like
  0001-01-01, 1900-01-01, 1970-01-01 (zero dates of databases and spreadsheets) or 9999-12-31
  (an "open end") are placeholders, not purchases.
* A **negative net amount** on an order that would otherwise count (not test, not cancelled) —
  a refund larger than the order, or a refund exported as a row of its own — is kept (a later
  version of the same order must still replace an earlier one) but never counts (only amounts
  above zero do) and is not subtracted from any other order; a notice says so. A zero amount is
  an ordinary non-qualifying order, without a notice.
* An **amount** in a JSON payload is read exactly from its text (:func:`amount`): not a finite
  number, or 14 digits or more before the point (:data:`~connectors.base.MAX_AMOUNT`), and the
  record is quarantined.

The payload sources (Shopify's pages and webhooks, BigCommerce's) share one path from the values
they read to an order: :func:`amount` for each money field, :func:`identify` for the ids, the date
and who the order belongs to (a customer id, else ``email:<address>``), and :func:`notices` for
what the order carries.

Notices are :class:`~connectors.base.Quarantined` records attached to the order
(``Order.notices``); :func:`with_notices` lays them out after their order for the pipeline,
which lists them with the quarantined rows of the run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, Protocol, TypeVar

from .base import AMOUNT_OUT_OF_RANGE, MAX_AMOUNT, Order, Quarantined

# the characters trimmed around ids and emails: C0 controls, space, and Unicode category Zs
_ZS = "\u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u202f\u205f\u3000"
TRIM_CHARS = "".join(chr(c) for c in range(0x21)) + _ZS
# characters an id may not contain once trimmed
_CONTROL = [(0x00, 0x1F), (0x7F, 0x7F)]
# characters an email may not contain anywhere (besides a second "@"): controls, spaces, C1, line separators
_NOT_IN_EMAIL = [(0x00, 0x20), (0x7F, 0x9F)] + [(ord(c), ord(c)) for c in _ZS] + [(0x2028, 0x2029), (0xFEFF, 0xFEFF)]

PLACED_MIN = datetime(1990, 1, 1, tzinfo=UTC)
PLACED_END = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive

EMAIL_REASON = "email is not an address"
# the notice on an order that keeps its customer id but not its email
EMAIL_NOTICE = f"{EMAIL_REASON}: the order counts, the email is not used"


def _class(ranges: list[tuple[int, int]], code: Callable[[int], str]) -> str:
    return "".join(code(a) if a == b else f"{code(a)}-{code(b)}" for a, b in ranges)


def _py(c: int) -> str:
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def _re2(c: int) -> str:
    return f"\\x{{{c:x}}}"


def _email_pattern(code: Callable[[int], str]) -> str:
    bad = _class(_NOT_IN_EMAIL, code)
    return f"[^@{bad}]+@[^@.{bad}]+(?:\\.[^@.{bad}]+)+"


_EMAIL_RE = re.compile(_email_pattern(_py))
_CONTROL_RE = re.compile(f"[{_class(_CONTROL, _py)}]")


# --------------------------------------------------------------------------- Python
def trim(value: object) -> str | None:
    """Text with :data:`TRIM_CHARS` removed at both ends; ``None`` when nothing is left."""
    if value is None:
        return None
    return str(value).strip(TRIM_CHARS) or None


def id_problem(column: str, value: str | None) -> str | None:
    """Why a (trimmed) id cannot be used, or ``None`` (``order_id``: a NUL; other ids: any control)."""
    if value is None:
        return None
    if column == "order_id":
        return "order_id contains a NUL character" if "\x00" in value else None
    return f"{column} contains a control character" if _CONTROL_RE.search(value) else None


def payload_id_problem(field: str, value: object) -> str | None:
    """Why an id read from a JSON payload cannot be an id (absent, empty, or not a number or
    text), or ``None``. Without its id an order could never be updated, refunded or archived
    later; it is quarantined, never stored under a made-up key."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{field} is missing"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"{field} is not a number or text but {json_type(value)}"
    return None


def printable(text: str) -> str:
    """``text`` with each control character shown as ``?`` (for the raw excerpt of a quarantined row)."""
    return _CONTROL_RE.sub("?", text)


def is_email(value: str | None) -> bool:
    """True for a plausible address (see the module docstring); False for None."""
    return value is not None and _EMAIL_RE.fullmatch(value) is not None


def clean_email(value: object) -> tuple[str | None, bool]:
    """The trimmed, lower-cased email, or ``None``; and whether a value was dropped as not an address."""
    text = trim(value)
    if text is None:
        return None, False
    text = text.lower()
    return (text, False) if is_email(text) else (None, True)


def placed_at_problem(moment: datetime) -> str | None:
    if PLACED_MIN <= moment < PLACED_END:
        return None
    return f"placed_at {moment.date().isoformat()} is outside {PLACED_MIN.year}..{PLACED_END.year - 1}"


def negative_reason(amount: Decimal) -> str:
    return f"amount is negative ({amount}): a refund larger than the order? not counted"


def skip_reason(amount: Decimal, excluded: bool) -> str | None:
    """The notice for an order that would count but for its negative amount, else ``None``."""
    return negative_reason(amount) if amount < 0 and not excluded else None


def amount(value: object, field: str = "") -> Decimal:
    """``value`` read exactly from its text, or a ValueError saying why not: not a finite number,
    or out of range. The messages name ``field`` when given ("total_inc_tax is not a number"),
    else they speak of "amount"."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValueError(f"{field or 'amount'} is not a number")
    if abs(number) >= MAX_AMOUNT:
        raise ValueError(f"{field + ': ' if field else ''}{AMOUNT_OUT_OF_RANGE}")
    return number


class Identity(NamedTuple):
    """Who an order belongs to, once :func:`identify` has checked it."""

    customer_id: str  # the customer's id, or "email:<address>" for a guest
    email: str | None  # trimmed and lower-cased; None when absent or not an address
    notices: tuple[str, ...]  # reasons to list with the order although it counts


def identify(
    order_id: str, customer: str | None, email: object, placed_at: datetime, *, no_email: str
) -> Identity | str:
    """The checks of a payload order's ids and date, then who it belongs to; or the reason to
    quarantine it (the first problem, in that order).

    ``customer`` is the trimmed customer id, ``None`` for a guest; ``email`` is as read (trimmed
    and lower-cased here). A customer's email that is not an address is dropped with a notice; a
    guest needs an address (``no_email``: the reason when there is none at all)."""
    problem = id_problem("order_id", order_id) or id_problem("customer_id", customer) or placed_at_problem(placed_at)
    if problem:
        return problem
    address, dropped = clean_email(email)
    if customer:
        return Identity(customer, address, (EMAIL_NOTICE,) if dropped else ())
    if address:
        return Identity("email:" + address, address, ())
    return f"guest order whose {EMAIL_REASON}" if dropped else no_email


def notices(source: str, location: str, reasons: Iterable[str | None]) -> tuple[Quarantined, ...]:
    """The notices an order carries (``Order.notices``), one per reason that is not ``None``."""
    return tuple(Quarantined(source=source, location=location, reason=reason) for reason in reasons if reason)


def with_notices(records: Iterable[Order | Quarantined]) -> Iterator[Order | Quarantined]:
    """Each record, then the notices its order carries (``Order.notices``)."""
    for record in records:
        yield record
        yield from getattr(record, "notices", ())


Option = TypeVar("Option")
Option_contra = TypeVar("Option_contra", contravariant=True)


class PayloadParser(Protocol[Option_contra]):
    """``parse(source, payload[, option])``: one order payload → its :class:`Order`, or why not."""

    def __call__(self, source: str, data: Any, option: Option_contra = ..., /) -> Order | Quarantined: ...


def shape_checked(parse: PayloadParser[Option]) -> PayloadParser[Option]:
    """A payload whose fields have the wrong JSON types (an object where a string was expected, say)
    becomes a quarantined record naming the problem, not an AttributeError out of the parser."""

    @functools.wraps(parse)
    def checked(source: str, data: Any, *args: Any) -> Order | Quarantined:
        try:
            return parse(source, data, *args)
        except (AttributeError, TypeError, KeyError) as exc:
            inner = data.get("order", data) if isinstance(data, dict) else data
            order_id = inner.get("id", "?") if isinstance(inner, dict) else "?"
            return Quarantined(
                source=source,
                location=f"order {str(order_id)[:80]}",
                reason=f"unexpected payload shape ({type(exc).__name__})",
            )

    return checked


# --------------------------------------------------------------------------- DuckDB SQL
def _sql_chars(chars: str) -> str:
    return "(" + " || ".join(f"chr({ord(c)})" for c in chars) + ")"


def trim_sql(column: str) -> str:
    """``column`` with :data:`TRIM_CHARS` removed at both ends (like :func:`trim`, without the NULL)."""
    return f"TRIM({column}, {_sql_chars(TRIM_CHARS)})"


def control_sql(column: str) -> str:
    """True when the text holds a control character (see :func:`id_problem`)."""
    return f"regexp_matches({column}, '[{_class(_CONTROL, _re2)}]')"


def nul_sql(column: str) -> str:
    """True when the text holds a NUL (the order-id check of :func:`id_problem`)."""
    return f"contains({column}, chr(0))"


def email_ok_sql(column: str) -> str:
    """True for a plausible address (:func:`is_email`); NULL for NULL."""
    return f"regexp_full_match({column}, '{_email_pattern(_re2)}')"


PLACED_RANGE_SQL = (f"TIMESTAMPTZ '{PLACED_MIN.isoformat()}'", f"TIMESTAMPTZ '{PLACED_END.isoformat()}'")


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages about payloads of the wrong shape."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
