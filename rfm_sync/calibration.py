"""Frozen cut points: recalibrate on demand, and show cut points so people can read them.

Quantile cut points are computed from the shop's customers and then *frozen* in the
``calibrations`` table: every run uses the newest calibration until it is ``recalibrate_days``
old (the pipeline then recalibrates in its diff transaction), or until ``rfm-sync recalibrate``
stores a new one. Recomputing quantiles on every run would let one promo day move a third of the
inactive customers into another group without any of them buying anything.

Frozen cut points must deserve freezing. The *population* of a calibration is the number of
customers with a qualifying order in the window — the values its quantiles were taken from — and
is stored with it. Cut points over no customers are never stored (they are empty: every customer
would score F = M = 1, no Champions, for a month); over fewer than ``min_calibration_customers``
they are used for their run but not frozen, so the next run computes them again; and frozen ones
are due again once the population has grown or shrunk by more than
``recalibrate_population_change`` (a first pull that found a few weeks of history, a source
added). ``status`` and ``doctor`` say when the cut points in force came from a small population.
"""

from __future__ import annotations

from datetime import date
from fractions import Fraction
from typing import Any

from rich.table import Table

from . import engine
from .config import Config
from .store import Store, orders, state


def population_of(frame: Any) -> int:
    """The customers a calibration is computed over: those with a qualifying order in the window
    (what klaviyo's and classic11's ``calibrate`` take their quantiles of)."""
    return int((frame["frequency"].to_numpy() >= 1).sum()) if len(frame) else 0


def freezable(count: int, rfm: Any) -> bool:
    """Whether cut points computed over ``count`` customers may be frozen."""
    return count > 0 and count >= rfm.min_calibration_customers


def small_population(count: int | None, rfm: Any) -> str | None:
    """What to tell people when the cut points in force came from too few customers (else None)."""
    if count is None or count >= rfm.min_calibration_customers:
        return None
    size = "no customers" if count == 0 else f"only {count:,} customer{'s' if count != 1 else ''}"
    return (
        f"the cut points in force were computed over {size} with an order in the window (fewer than "
        f"[rfm] min_calibration_customers = {rfm.min_calibration_customers}): they are not frozen and every "
        f"run computes them again, so groups can move without anyone buying"
    )


def run_population(run: dict[str, Any]) -> int | None:
    """The population behind a run's cut points: recorded in its stats, or 0 for the empty cut points an
    older version recorded after a run over no customers, else None (unknown)."""
    stats = run.get("stats") or {}
    if stats.get("calibration_population") is not None:
        return int(stats["calibration_population"])
    return state.stored_population({"points": run.get("cut_points")})


def recalibrate(config: Config, store: Store, as_of: date) -> dict[str, Any]:
    """Compute cut points as of ``as_of`` from the store and freeze them (no run, no profile change).

    Returns ``{"cut_points": new, "previous": the calibration it replaces or None, "population": the
    customers they were computed over, "frozen": whether they were stored}``. Cut points over fewer
    than ``min_calibration_customers`` (over none, above all) are not frozen.
    """
    rfm, zone = config.rfm, config.shop.zone
    module = engine.SCHEMES[rfm.scheme]
    previous = state.current_calibration(store, rfm.scheme, rfm.window_days)
    if not module.USES_QUANTILES:
        return {"cut_points": {}, "previous": previous, "population": None, "frozen": False}
    window_start, end = engine.window_bounds(as_of, rfm.window_days, zone)
    frame = orders.aggregate(store, end, window_start)
    frame["recency_days"] = engine.recency_days(frame["last_order_at"], as_of, zone)
    cuts = module.calibrate(frame, rfm)
    count = population_of(frame)
    frozen = freezable(count, rfm)
    if frozen:
        with store.begin() as conn:
            state.add_calibration(conn, rfm.scheme, rfm.window_days, as_of, cuts, None, count)
    return {"cut_points": cuts, "previous": previous, "population": count, "frozen": frozen}


UNITS = {
    "recency_days": "days since last order",
    "frequency": "orders in the window",
    "monetary_e4": "spend in the window",
}


def readable(dimension: str, value: str) -> str:
    """A cut point as people read it: days and orders with up to 2 decimals, money in currency units."""
    v = Fraction(value)
    if dimension == "monetary_e4":
        v /= 10_000
    text = f"{float(v):,.2f}"
    return text[:-3] if text.endswith(".00") else text


def cut_points_table(
    cut_points: dict[str, Any],
    calibrated_on: Any = None,
    title: str = "cut points in force",
    population: int | None = None,
) -> Table:
    caption = f"calibrated as of {calibrated_on}" if calibrated_on else ""
    if population is not None:
        caption += f"{' ' if caption else ''}over {population:,} customers"
    table = Table(title=title, caption=caption or None)
    table.add_column("dimension")
    table.add_column("cut points", justify="right")
    for dim, points in cut_points.items():
        table.add_row(UNITS.get(dim, dim), "  ·  ".join(readable(dim, p) for p in points) or "(no customers)")
    return table
