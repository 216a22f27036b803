"""Frozen cut points: recalibrate on demand, and show cut points so people can read them.

Quantile cut points are computed from the shop's customers and then *frozen* in the
``calibrations`` table: every run uses the newest calibration until it is ``recalibrate_days``
old (the pipeline then recalibrates in its diff transaction), or until ``rfm-sync recalibrate``
stores a new one. Recomputing quantiles on every run would let one promo day move a third of the
inactive customers into another group without any of them buying anything.
"""
from __future__ import annotations

from datetime import date
from fractions import Fraction
from typing import Any

from rich.table import Table

from . import engine
from .config import Config
from .store import Store
from .store import state_queries as sq


def recalibrate(config: Config, store: Store, as_of: date) -> dict[str, Any]:
    """Compute cut points as of ``as_of`` from the store and freeze them (no run, no profile change).

    Returns ``{"cut_points": new, "previous": the calibration it replaces or None}``.
    """
    rfm, zone = config.rfm, config.shop.zone
    module = engine.SCHEMES[rfm.scheme]
    previous = sq.current_calibration(store, rfm.scheme, rfm.window_days)
    if not module.USES_QUANTILES:
        return {"cut_points": {}, "previous": previous}
    window_start, end = engine.window_bounds(as_of, rfm.window_days, zone)
    frame = store.aggregate(end, window_start)
    frame["recency_days"] = engine.recency_days(frame["last_order_at"], as_of, zone)
    cuts = module.calibrate(frame, rfm)
    with store.begin() as conn:
        sq.add_calibration(conn, rfm.scheme, rfm.window_days, as_of, cuts, None)
    return {"cut_points": cuts, "previous": previous}


UNITS = {"recency_days": "days since last order", "frequency": "orders in the window",
         "monetary_e4": "spend in the window"}


def readable(dimension: str, value: str) -> str:
    """A cut point as people read it: days and orders with up to 2 decimals, money in currency units."""
    v = Fraction(value)
    if dimension == "monetary_e4":
        v /= 10_000
    text = f"{float(v):,.2f}"
    return text[:-3] if text.endswith(".00") else text


def cut_points_table(cut_points: dict[str, Any], calibrated_on: Any = None, title: str = "cut points in force") -> Table:
    table = Table(title=title, caption=f"calibrated as of {calibrated_on}" if calibrated_on else None)
    table.add_column("dimension")
    table.add_column("cut points", justify="right")
    for dim, points in cut_points.items():
        table.add_row(UNITS.get(dim, dim), "  ·  ".join(readable(dim, p) for p in points) or "(no customers)")
    return table
