"""Presets for shops' own order exports: ``preset = "shopify-export"``, ``"bigcommerce-export"`` or
``"woocommerce-export"`` in a ``[[sources]]`` table of type ``csv``.

A shop's own export is not the plain one-row-per-order layout the CSV source reads: Shopify
writes one row per *line item*, the order's money fields (Total, Refunded Amount, Financial
Status, Cancelled at, ...) on its first row only; its times look like ``2026-03-08 13:09:00
-0500``, which DuckDB's cast rejects; and it has no customer id at all. A preset turns such a file
into the plain layout in one SQL subquery (:func:`fold`) in front of the CSV source's validating
scan, which then checks and quarantines exactly as for any other file:

* **Columns.** Each of our fields names the export's column(s); with several, the first one that
  is not empty on the row wins (BigCommerce: ``Customer Email``, else ``Billing Email``). A
  column the file lacks is left out; a file without the order id, time, amount or an email is
  refused with a message naming the preset and the columns it looked for.
* **Times.** ISO 8601 is read as the scan reads it (an offset if given, else the shop's time
  zone). Otherwise the preset's ``strptime`` formats are tried in order (Shopify's ``%Y-%m-%d
  %H:%M:%S %z``, BigCommerce's month/day/year, ...; an ordinal day like ``13th`` is read as 13);
  a time with an offset becomes UTC, one without stays in the shop's zone. A text no format reads
  is passed on as it is, so the scan quarantines it quoting the file.
* **Folding line items.** Rows with the same order id are one order. A row whose amount is empty
  is a line item of its order and is folded into it: the order keeps the row with the amount (its
  line number names it in reports), and a field empty there is taken from the order's first line
  that has it (an email or time written only on a later line). Rows that each carry an amount
  stay rows of their own and the scan's rule for a repeated order id applies (the later line
  wins). An order with no amount on any line keeps its first line, quarantined as ``amount is
  empty``; lines of one order naming different emails, or one with more fields than the header,
  quarantine the order (nothing is folded away silently). A row without an order id is an order
  of its own.
* **Not purchases.** The preset's statuses (matched lower-case, as ``cancelled_statuses``), a
  non-empty ``Cancelled at``, and Shopify's test gateway (a ``Payment Method`` naming "bogus")
  mark an order cancelled or test; the refund column is subtracted from the amount.
* **Customers** are keyed by email (``email:<address>``), as guests are everywhere: Shopify's
  export has no customer id, and one key for all three keeps a customer who once checked out as
  a guest one person. To key by the shop's customer id instead, map ``columns.customer_id``; the
  ids BigCommerce and WooCommerce give guests (``0``) then fall back to the email.
* **Explicit settings win.** A ``[sources.columns]`` entry replaces the preset's column for that
  field (it must then be in the file), and ``cancelled_statuses`` / ``test_statuses`` replace the
  preset's lists.

Where the layouts come from (third-party descriptions of the real exports; see docs/shops.md):
Shopify's "Export orders" CSV header (Name, Email, Financial Status, Paid at, ..., Total, ...,
Created at, Lineitem quantity, ..., Cancelled at, Payment Method, ..., Refunded Amount, ..., Id,
Tags, Risk Level, Source, ..., Phone, ...), BigCommerce's default order export (Order ID,
Customer ID, Customer Name, Customer Email, ..., Order Date, Order Status, ..., Order Total (inc
tax), ..., Order Currency Code, ..., Billing Email, ..., Refund Amount, ...) and the WooCommerce
order export documented on woocommerce.com (order_id, order_number, order_date, status, ...,
order_total, order_currency, ..., customer_email, billing_email, billing_phone, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from ..base import FatalError
from .file import sql_name as _q
from .file import sql_text as _lit

if TYPE_CHECKING:  # duckdb is imported where used: loading a config must not pay for it
    import duckdb

    from .source import CsvSettings

PresetName = Literal["shopify-export", "bigcommerce-export", "woocommerce-export"]

# the fields a preset must find: the order id groups the line items, time and amount make the order
NEEDED = ("order_id", "placed_at", "amount")
# money fields belong to the order's own row: never taken from its line items
MONEY = ("amount", "refunded")


@dataclass(frozen=True)
class Preset:
    label: str  # "Shopify's order export", for messages
    # our field -> the export's column names, the first non-empty of those the file has wins
    columns: dict[str, tuple[str, ...]]
    # strptime formats for a time that is not ISO 8601 (tried in order)
    time_formats: tuple[str, ...] = ()
    # a column holding the time of day of ``placed_at``'s date, joined to it when set
    time_of_day: str | None = None
    # statuses (lower case) that are not purchases / are tests, unless the settings name their own
    cancelled_statuses: tuple[str, ...] = ()
    test_statuses: tuple[str, ...] = ()
    # columns whose being non-empty marks the order cancelled
    cancelled_if_set: tuple[str, ...] = ()
    # (column, text): the order is a test when the column contains the text (any case)
    test_if_contains: tuple[tuple[str, str], ...] = ()
    # customer ids that stand for "no account" (a mapped customer id falls back to the email)
    guest_ids: tuple[str, ...] = field(default=())


# Our field -> each export's column names, in the order of PresetName (Shopify's, BigCommerce's,
# WooCommerce's): a preset's ``columns``. () where an export has no such column.
_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "order_id": (("Name",), ("Order ID",), ("order_id", "order_number")),
    "placed_at": (("Created at",), ("Order Date",), ("order_date",)),
    "amount": (("Total",), ("Order Total (inc tax)",), ("order_total",)),
    "refunded": (("Refunded Amount",), ("Refund Amount",), ()),
    "email": (("Email",), ("Customer Email", "Billing Email"), ("customer_email", "billing_email")),
    "phone": (("Phone", "Billing Phone"), ("Customer Phone", "Billing Phone"), ("billing_phone",)),
    "status": (("Financial Status",), ("Order Status",), ("status",)),
    "currency": (("Currency",), ("Order Currency Code",), ("order_currency",)),
}


def _columns_of(preset: PresetName) -> dict[str, tuple[str, ...]]:
    """The preset's column of :data:`_COLUMNS`, leaving out the fields its export lacks."""
    column = get_args(PresetName).index(preset)
    return {name: row[column] for name, row in _COLUMNS.items() if row[column]}


# US dates first: every reader of BigCommerce and WooCommerce exports we found reads m/d/Y
_US_DAY = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y")

PRESETS: dict[str, Preset] = {
    # one row per line item, the order's own fields on its first row; statuses are the Financial
    # Status values (paid, pending, authorized, partially_paid, partially_refunded, refunded,
    # voided, expired): voided and expired are not purchases, refunds are subtracted (Refunded
    # Amount), as the Shopify source does with the API's current total
    "shopify-export": Preset(
        label="Shopify's order export",
        columns=_columns_of("shopify-export"),
        time_formats=("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z"),
        cancelled_statuses=("voided", "expired"),
        cancelled_if_set=("Cancelled at", "Canceled at"),
        test_if_contains=(("Payment Method", "bogus"),),
    ),
    # one row per order (the products packed into "Product Details"); the statuses that are not
    # purchases are those of the BigCommerce source (connectors/bigcommerce/parse.py), by name
    "bigcommerce-export": Preset(
        label="BigCommerce's order export",
        columns=_columns_of("bigcommerce-export"),
        time_formats=_US_DAY
        + ("%b %d %Y %H:%M:%S", "%b %d %Y", "%d %b %Y %H:%M:%S", "%d %b %Y", "%a, %d %b %Y %H:%M:%S %z"),
        time_of_day="Order Time",
        cancelled_statuses=(
            "incomplete",
            "pending",
            "refunded",
            "cancelled",
            "declined",
            "awaiting payment",
            "manual verification required",
            "disputed",
        ),
        guest_ids=("0",),
    ),
    # one row per order (line items in columns line_item_1, ...); a status may carry WordPress's
    # "wc-" prefix. Paid orders are processing or completed; on-hold and pending await payment
    "woocommerce-export": Preset(
        label="WooCommerce's order export",
        columns=_columns_of("woocommerce-export"),
        time_formats=_US_DAY,
        cancelled_statuses=tuple(
            p + s
            for s in ("pending", "on-hold", "failed", "cancelled", "refunded", "checkout-draft", "draft", "trash")
            for p in ("", "wc-")
        ),
        guest_ids=("0",),
    ),
}
assert set(PRESETS) == set(get_args(PresetName)), "PresetName and PRESETS must name the same presets"


def fold(
    conn: duckdb.DuckDBPyConnection, path: Path, settings: CsvSettings, reader: str, numbered: bool = False
) -> tuple[str, CsvSettings]:
    """The file read by ``reader`` (every field as text) as a subquery in the CSV source's own
    layout, its line items folded into their orders, and the settings to scan it with (our column
    names, the preset's statuses unless set). Its columns: ``line``, our fields, ``preset_test``,
    ``preset_cancelled`` and ``fold_problem`` (a reason to quarantine the order, or NULL).

    ``numbered``: the reader already has the column ``line`` (the physical line each record starts
    on, connectors/csv/file.py); otherwise records are numbered here.

    A file that cannot be read is handed back unchanged: the scan's own open says why."""
    import duckdb

    from .scan import OPTIONAL, REQUIRED, cheap_trim_sql
    from .source import ColumnNames

    assert settings.preset is not None, "fold() is only called for a file with a preset"
    preset = PRESETS[settings.preset]
    try:
        header = [d[0] for d in conn.execute(f"SELECT * FROM {reader} LIMIT 0").description][1 if numbered else 0 :]
    except duckdb.Error:
        return reader, settings
    chosen = _columns(preset, settings, header, path, REQUIRED + OPTIONAL)

    def text(column: str) -> str:
        return f"NULLIF({cheap_trim_sql(_q(column))}, '')"

    def first(columns: tuple[str, ...]) -> str:
        parts = [text(c) for c in columns]
        return "NULL::VARCHAR" if not parts else parts[0] if len(parts) == 1 else f"COALESCE({', '.join(parts)})"

    values = {name: first(chosen[name]) for name in REQUIRED + OPTIONAL}
    for name in MONEY:  # a leading currency sign is not part of the number
        values[name] = f"regexp_replace({values[name]}, '^[$€£¥]\\s*', '')"
    if preset.guest_ids and chosen["customer_id"]:
        values["customer_id"] = (
            f"CASE WHEN {values['customer_id']} IN ({', '.join(map(_lit, preset.guest_ids))}) "
            f"THEN NULL ELSE {values['customer_id']} END"
        )
    if preset.time_of_day in header and "placed_at" not in settings.columns.model_fields_set:
        values["placed_at"] = f"{values['placed_at']} || COALESCE(' ' || {text(preset.time_of_day)}, '')"
    # the columns behind the cancelled and test marks, filled from the line items like other fields
    marks = {f"mark_cancelled_{i}": text(c) for i, c in enumerate(preset.cancelled_if_set) if c in header}
    marks |= {f"mark_test_{i}": f"LOWER({text(c)})" for i, (c, _) in enumerate(preset.test_if_contains) if c in header}
    extra = [c for c in header if c.startswith("column")]  # fields past the header (strict_mode=false)
    overflow = " OR ".join(f"{_q(c)} IS NOT NULL" for c in extra) or "false"
    rows = ", ".join(f"{sql} AS {name}" for name, sql in {**values, **marks}.items())
    filled = ", ".join(
        name
        if name in MONEY
        else f"COALESCE({name}, arg_min({name}, line) FILTER (WHERE {name} IS NOT NULL) OVER one_order) AS {name}"
        for name in [*values, *marks]
    )
    tests = [
        f"COALESCE(contains(mark_test_{i}, {_lit(needle.lower())}), false)"
        for i, (c, needle) in enumerate(preset.test_if_contains)
        if c in header
    ]
    cancelled = [f"mark_cancelled_{i} IS NOT NULL" for i, c in enumerate(preset.cancelled_if_set) if c in header]
    placed = _time_sql("placed_at", preset.time_formats)
    sql = f"""(
        SELECT line, {", ".join(n for n in values if n != "placed_at")}, {placed} AS placed_at,
               {" OR ".join(tests) or "false"} AS preset_test, {" OR ".join(cancelled) or "false"} AS preset_cancelled,
               CASE WHEN overflowing THEN 'more fields than the header'
                    WHEN email_low <> email_high THEN 'order id ' || order_id || ' appears with different emails on lines '
                         || least(email_low_line, email_high_line) || ' and ' || greatest(email_low_line, email_high_line)
               END AS fold_problem
        FROM (SELECT {filled}, line,
                     count(amount) OVER one_order AS amounts,
                     row_number() OVER (one_order ORDER BY line) AS nth,
                     bool_or(overflow) OVER one_order AS overflowing,
                     min(LOWER(email)) OVER one_order AS email_low, max(LOWER(email)) OVER one_order AS email_high,
                     arg_min(line, LOWER(email)) OVER one_order AS email_low_line,
                     arg_max(line, LOWER(email)) OVER one_order AS email_high_line
              FROM (SELECT {"line" if numbered else "row_number() OVER () + 1 AS line"}, {rows}, ({overflow}) AS overflow
                    FROM {reader})
              WINDOW one_order AS (PARTITION BY CASE WHEN order_id IS NULL THEN 'line ' || line
                                                      ELSE 'order ' || order_id END))
        WHERE amount IS NOT NULL OR (amounts = 0 AND nth = 1))"""
    update: dict[str, object] = {"columns": ColumnNames()}
    for key in ("cancelled_statuses", "test_statuses"):
        if key not in settings.model_fields_set:
            update[key] = list(getattr(preset, key))
    return sql, settings.model_copy(update=update)


def _columns(
    preset: Preset, settings: CsvSettings, header: list[str], path: Path, fields: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Our field -> the file's columns to read it from: an explicit ``columns`` entry (which must be
    in the file), else the preset's columns the file has. Refuses a file without the fields a
    preset needs, naming the preset and the columns it looked for."""
    explicit = settings.columns.model_fields_set
    names = settings.columns.model_dump()
    chosen: dict[str, tuple[str, ...]] = {}
    absent = []
    for name in fields:
        if name in explicit:
            chosen[name] = (names[name],)
            if names[name] not in header:
                absent.append(f"{name} (column {names[name]!r} of [sources.columns])")
        else:
            chosen[name] = tuple(c for c in preset.columns.get(name, ()) if c in header)
    wanted = [*NEEDED, *([] if chosen["customer_id"] else ["email"])]
    for name in wanted:
        if not chosen[name] and name not in explicit:
            looked = " or ".join(repr(c) for c in preset.columns.get(name, ())) or "none"
            absent.append(f"{name} (column {looked})")
    if absent:
        raise FatalError(
            f"{path}: not {preset.label} as preset {settings.preset!r} reads it: missing column(s) "
            f"{', '.join(absent)}; found {header}",
            connector=settings.name,
        )
    return chosen


def _time_sql(text: str, formats: tuple[str, ...]) -> str:
    """``text`` as a time the scan's cast reads: unchanged when it is ISO 8601 already (or empty),
    else the first of ``formats`` that reads it, written as ISO text (UTC when the format has an
    offset, else the shop's zone, as the cast takes a time without one), else unchanged."""
    if not formats:
        return text
    # "Mar 13th 2026": the ordinal suffix is not part of any strptime format
    plain = f"regexp_replace({text}, '(\\d)(st|nd|rd|th)\\b', '\\1', 'g')"
    aware = [f for f in formats if "%z" in f]
    naive = [f for f in formats if "%z" not in f]
    parts = []
    if aware:
        parts.append(
            f"strftime(timezone('UTC', try_strptime({plain}, [{', '.join(map(_lit, aware))}])), "
            f"'%Y-%m-%d %H:%M:%S.%f') || '+00:00'"
        )
    if naive:
        parts.append(f"strftime(try_strptime({plain}, [{', '.join(map(_lit, naive))}]), '%Y-%m-%d %H:%M:%S.%f')")
    return (
        f"CASE WHEN {text} IS NULL OR TRY_CAST({text} AS TIMESTAMPTZ) IS NOT NULL THEN {text} "
        f"ELSE COALESCE({', '.join(parts)}, {text}) END"
    )
