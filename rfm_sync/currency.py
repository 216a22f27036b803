"""One currency per sum: orders in another currency are converted with the user's rates, or quarantined.

``[shop] currency`` (ISO 4217) names the currency every amount is scored in. An order in another
currency is converted with a rate the user supplies: ``[shop.rates]`` (``JPY = "0.0061"``: one JPY
is 0.0061 of the shop currency) and/or ``[shop] rates_file``, a CSV ``date,currency,rate`` of daily
rates, of which the rate of the order's local date (shop time zone) counts, or else the latest
earlier one; without such a day the ``[shop.rates]`` rate counts. An order without any rate is
*quarantined* with the reason ``currency JPY has no rate to EUR``: it is never summed raw.
Orders without a currency are taken to be in the shop currency.

Without ``[shop] currency`` amounts are taken as they are, which is right only while all orders
share one currency; mixed currencies then raise :class:`MixedCurrencies`: the pull of a source
stops before a page with a second currency is stored (the store stays in one currency), and
``rfm-sync score`` stops, each with one line naming the currencies. We do not guess the shop's
currency from the first or most frequent one: that would silently drop real sales.

Where: at ingest (:func:`rfm_sync.pipeline.order_row`), so the store's ``amount_e4`` is already
in the shop currency and scoring stays one integer ``SUM`` over the covering index; ``currency``
is the currency of ``amount_e4``, and a converted order keeps ``original_currency`` and
``original_amount_e4`` (migration 0004_currency), so every conversion can be traced. The store
check (:func:`check_store`) reads ``min``/``max`` of the indexed ``currency`` column: an order
stored before ``[shop] currency`` was set, in another currency, stops scoring with a clear error
instead of being summed. A rate changed later applies to orders pulled from then on.

Conversion is exact: the amount times the rate in decimal arithmetic, rounded half-even to
10⁻⁴ (the store's scale). Rates have at most :data:`RATE_PLACES` decimals and are below
:data:`RATE_LIMIT`, so the offline path does the same arithmetic in DuckDB with integers
(:func:`convert_e4_sql`).
"""

from __future__ import annotations

import bisect
import csv
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from connectors.base import FatalError

MONEY_SCALE = 10_000  # = rfm_sync.store.schema.MONEY_SCALE (not imported: the store pulls in SQLAlchemy)
RATE_PLACES = 10  # decimals a rate may have
RATE_LIMIT = Decimal(10) ** 6  # a rate must be below this
CODE = re.compile(r"[A-Z]{3}")


class MixedCurrencies(FatalError):
    """Orders in more than one currency and no ``[shop] currency`` (or stored ones in another one)."""


def parse_code(value: Any) -> str:
    text = str(value)
    if not CODE.fullmatch(text):
        raise ValueError(f"{text!r} is not an ISO 4217 currency code (three capital letters, e.g. 'EUR')")
    return text


def parse_rate(value: Any) -> Decimal:
    """A positive exact decimal (a TOML string or number; a float is read from its shortest text)."""
    if isinstance(value, bool):
        raise ValueError('a rate must be a positive number such as "0.0061"')
    try:
        rate = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"rate {value!r} is not a number") from None
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"rate {value!r} must be a positive number")
    if rate >= RATE_LIMIT or _places(rate) > RATE_PLACES:
        raise ValueError(f"rate {value!r}: at most {RATE_PLACES} decimals and below {RATE_LIMIT:,}")
    return rate


def _places(rate: Decimal) -> int:
    """How many decimals a finite ``rate`` has, trailing zeros not counted."""
    exponent = rate.normalize().as_tuple().exponent
    assert isinstance(exponent, int), "a finite decimal's exponent is an int ('n', 'N', 'F' are NaN and infinity)"
    return -exponent


def convert(amount: Decimal, rate: Decimal) -> Decimal:
    """``amount × rate``, exact, rounded half-even to 4 decimals."""
    with localcontext(prec=80):
        return (amount * rate).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def load_rates_file(path: Path) -> dict[str, list[tuple[date, Decimal]]]:
    """``date,currency,rate`` rows → per currency, (date, rate) sorted by date. Raises ValueError
    naming the file and line of the first bad row."""
    out: dict[str, dict[date, Decimal]] = {}
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        if not {"date", "currency", "rate"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs the columns date,currency,rate; found {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                day = date.fromisoformat((row["date"] or "").strip())
                code = parse_code((row["currency"] or "").strip().upper())
                rate = parse_rate(row["rate"] or "")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if out.setdefault(code, {}).setdefault(day, rate) != rate:
                raise ValueError(f"{where}: a second, different rate for {code} on {day}")
    return {code: sorted(days.items()) for code, days in out.items()}


@dataclass(frozen=True)
class Rates:
    """What ``[shop]`` says about currencies: the shop's, fixed rates, daily rates."""

    currency: str | None = None
    fixed: dict[str, Decimal] = field(default_factory=dict)
    daily: dict[str, list[tuple[date, Decimal]]] = field(default_factory=dict)

    def rate(self, code: str, day: date) -> Decimal | None:
        """The rate from ``code`` to the shop currency on ``day``, or None."""
        days = self.daily.get(code)
        if days:
            i = bisect.bisect_right(days, (day, RATE_LIMIT))
            if i:
                return days[i - 1][1]
        return self.fixed.get(code)

    def no_rate(self, code: str) -> str:
        return f"currency {code} has no rate to {self.currency}"


@dataclass(frozen=True)
class Converted:
    amount: Decimal  # in the shop currency (or as given, without one)
    currency: str | None  # of ``amount``
    original_currency: str | None = None  # set only when converted
    original_amount: Decimal | None = None


class NoRate(ValueError):
    """An order in a currency without a rate; the message is the quarantine reason."""


def to_shop(rates: Rates, amount: Decimal, code: str | None, placed_at: datetime, zone: Any) -> Converted:
    """The amount in the shop currency; raises :class:`NoRate` when there is no rate."""
    code = code.strip().upper() if code else None
    if rates.currency is None or code is None or code == rates.currency:
        return Converted(amount, code or rates.currency)
    rate = rates.rate(code, placed_at.astimezone(zone).date())
    if rate is None:
        raise NoRate(rates.no_rate(code))
    return Converted(convert(amount, rate), rates.currency, code, amount)


def mixed_message(where: str, codes: list[str]) -> str:
    return (
        f"{where}: orders in {len(codes)} currencies ({', '.join(sorted(codes))}) and no [shop] currency; "
        "set [shop] currency and a rate for the others ([shop.rates] or [shop] rates_file)"
    )


def store_currencies(store: Any) -> set[str]:
    """The lowest and highest currency of the store's amounts (one element: all share it). Two
    index look-ups (``min`` and ``max`` of the indexed ``orders.currency``), not a scan."""
    import sqlalchemy as sa

    from .store.schema import orders

    with store.engine.connect() as conn:
        low = conn.execute(sa.select(sa.func.min(orders.c.currency))).scalar()
        high = conn.execute(sa.select(sa.func.max(orders.c.currency))).scalar()
    return {c for c in (low, high) if c is not None}


def check_page(where: str, seen: set[str], rows: Any) -> None:
    """Without ``[shop] currency``: add the page's currencies to ``seen`` (the store's so far) and raise
    :class:`MixedCurrencies` before a second currency is stored."""
    codes = seen | {r["currency"] for r in rows if r["currency"] is not None}
    if len(codes) > 1:
        raise MixedCurrencies(mixed_message(where, sorted(codes)))
    seen |= codes


def check_store(store: Any, rates: Rates) -> None:
    """Raise :class:`MixedCurrencies` when the store's amounts are not all in one currency (the shop's,
    when it is set)."""
    codes = sorted(store_currencies(store))
    if rates.currency is None and len(codes) > 1:
        raise MixedCurrencies(mixed_message("store", codes))
    other = [c for c in codes if rates.currency is not None and c != rates.currency]
    if other:
        raise MixedCurrencies(
            f"store: orders stored in {', '.join(other)} (amounts not converted) while [shop] currency is "
            f"{rates.currency}; they were pulled before [shop] currency was set: pull them again into a new "
            "store, or remove [shop] currency"
        )


# ----------------------------------------------------------------------------- DuckDB (rfm-sync score)
def register_rates_sql(conn: Any, rates: Rates) -> None:
    """Tables ``fixed_rates(currency, rate_e10)`` and ``daily_rates(currency, day, rate_e10)``:
    rates as integers × 10^RATE_PLACES, for :func:`convert_e4_sql`."""
    scale = Decimal(10) ** RATE_PLACES
    conn.execute("CREATE OR REPLACE TEMP TABLE fixed_rates (currency VARCHAR, rate_e10 HUGEINT)")
    conn.execute("CREATE OR REPLACE TEMP TABLE daily_rates (currency VARCHAR, day DATE, rate_e10 HUGEINT)")
    if rates.fixed:
        conn.executemany(
            "INSERT INTO fixed_rates VALUES (?, ?)", [(c, str(int(r * scale))) for c, r in rates.fixed.items()]
        )
    daily = [(c, d, str(int(r * scale))) for c, days in rates.daily.items() for d, r in days]
    if daily:
        conn.executemany("INSERT INTO daily_rates VALUES (?, ?, ?)", daily)


def convert_e4_sql(amount_e4: str, rate_e10: str) -> str:
    """``amount_e4 × rate_e10 / 10^10`` rounded half-even, in HUGEINT arithmetic: the same value as
    :func:`convert` (amounts below 10^14 and rates below 10^6 keep the product under 10^34)."""
    d = 10**RATE_PLACES
    p = f"(CAST({amount_e4} AS HUGEINT) * {rate_e10})"
    a = f"abs({p})"
    q, r = f"({a} // {d})", f"({a} % {d})"
    rounded = f"({q} + CASE WHEN 2 * {r} > {d} OR (2 * {r} = {d} AND {q} % 2 = 1) THEN 1 ELSE 0 END)"
    return f"CAST(sign({p}) * {rounded} AS BIGINT)"
