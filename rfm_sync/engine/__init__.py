"""The RFM engine: pure functions from per-customer aggregates to scores and groups. No I/O.

Input: a frame with ``customer_key, last_order_at (UTC), frequency, monetary_e4`` — one row per
customer with at least one qualifying order on or before ``as_of`` (frequency/monetary count only
the window). Output: the same frame plus ``recency_days``, scores, ``rfm_score`` and ``rfm_group``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from . import klaviyo

SCHEMES: dict[str, ModuleType] = {klaviyo.NAME: klaviyo}


@dataclass
class ScoreResult:
    frame: pd.DataFrame
    cut_points: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def window_bounds(as_of: date, window_days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``[window_start, end)`` in UTC: the window's first local day at 00:00 to the day after as_of."""
    end = datetime.combine(as_of + timedelta(days=1), time(), zone)
    start = datetime.combine(as_of - timedelta(days=window_days - 1), time(), zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def recency_days(last_order_at: pd.Series, as_of: date, zone: ZoneInfo) -> pd.Series:
    """Calendar days between the local date of each last order and ``as_of``."""
    local_day = last_order_at.dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
    return (pd.Timestamp(as_of) - local_day).dt.days.astype("int64")


def score_customers(aggregates: pd.DataFrame, as_of: date, *, scheme: str, recency_bounds: tuple[int, int],
                    zone: ZoneInfo, cut_points: dict[str, Any] | None = None) -> ScoreResult:
    module = SCHEMES[scheme]
    frame = aggregates.copy()
    frame["recency_days"] = recency_days(frame["last_order_at"], as_of, zone)
    cuts = cut_points if cut_points is not None else module.calibrate(frame)
    frame = module.score(frame, cuts, recency_bounds)
    return ScoreResult(frame=frame, cut_points=cuts, warnings=eligibility_warnings(frame))


def eligibility_warnings(frame: pd.DataFrame) -> list[str]:
    """Klaviyo-style gates: reported, never fatal."""
    out = []
    if len(frame) < 500:
        out.append(f"only {len(frame)} customers with orders (RFM is meaningful from about 500)")
    if len(frame) and int(frame["recency_days"].min()) > 30:
        out.append("no orders in the last 30 days")
    if len(frame) and int(frame["frequency"].max()) < 3:
        out.append("no customer has 3 or more orders in the window")
    if len(frame) and int(frame["recency_days"].max()) < 180:
        out.append("less than 180 days of order history")
    return out


def group_names(scheme: str) -> list[str]:
    return list(SCHEMES[scheme].GROUP_NAMES)
