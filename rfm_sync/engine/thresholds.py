"""Scheme ``thresholds``: fixed per-dimension thresholds with labels, each dimension its own window.

Each dimension has ordered labels and the inclusive upper bound of every label but the last
(``upto``): with recency labels ``short, medium, long`` and ``upto = [30, 90]`` a customer is
*short* at ≤ 30 days since the last order, *medium* at ≤ 90, else *long*. Frequency counts
qualifying orders and monetary sums them over the dimension's own ``window_days`` (e.g. orders
in 180 days, spend in 90 days); monetary bounds are in money (exact, converted to ×10⁴).

Scores follow the labels: F and M = 1 + label position; R = number of labels − position (the
shortest recency scores highest). ``rfm_score`` is the three digits. The group is the first
matching ``[[rfm.segments]]`` rule (applied by the engine), or, with no rules, the three labels
joined by " / ". No quantiles: nothing to calibrate, nothing frozen.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from itertools import product
from typing import TYPE_CHECKING, Any

from .bands import band_up, categorical, code_strings, margin_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .segments import Allowed, Case

NAME = "thresholds"
USES_QUANTILES = False
DIMENSIONS = ("recency", "frequency", "monetary")
MONEY_SCALE = 10_000
GROUP_NAMES: list[str] = []  # depends on the configured labels: see group_names()


def _dims(options: Any) -> dict[str, Any]:
    t = options.thresholds
    return {"recency": t.recency, "frequency": t.frequency, "monetary": t.monetary}


def window_name(days: int) -> str:
    return f"{days}d"


def windows(options: Any) -> dict[str, int]:
    """The extra aggregation windows this scheme needs, by name (see :func:`rfm_sync.store.orders.aggregate`)."""
    out = {}
    for dim in ("frequency", "monetary"):
        days = _dims(options)[dim].window_days
        if days is not None:
            out[window_name(days)] = days
    return out


def _column(options: Any, dim: str) -> str:
    base = {"frequency": "frequency", "monetary": "monetary_e4"}[dim]
    days = _dims(options)[dim].window_days
    return base if days is None else f"{base}_{window_name(days)}"


def value_column(options: Any, dim: str) -> str:
    """The frame column ``frequency`` or ``monetary`` is scored on (its own window, if it has one)."""
    return _column(options, dim)


def cuts_of(options: Any) -> dict[str, list[Fraction]]:
    """Exact cut points per dimension, in the units of the metric (days, orders, money ×10⁴)."""
    d = _dims(options)
    return {
        "recency": [Fraction(str(Decimal(v))) for v in d["recency"].upto],
        "frequency": [Fraction(str(Decimal(v))) for v in d["frequency"].upto],
        "monetary": [Fraction(str(Decimal(v))) * MONEY_SCALE for v in d["monetary"].upto],
    }


def group_names(options: Any) -> list[str]:
    d = _dims(options)
    return [" / ".join(c) for c in product(d["recency"].labels, d["frequency"].labels, d["monetary"].labels)]


def calibrate(metrics: pd.DataFrame, options: Any) -> dict[str, list[str]]:
    return {}


def score(
    metrics: pd.DataFrame, cuts: dict[str, Any], options: Any, previous: np.ndarray | None = None
) -> pd.DataFrame:
    """Add r/f/m scores, one ``<dimension>_label`` column per dimension, rfm_score and rfm_group."""
    import numpy as np

    out = metrics
    d = _dims(options)
    c = cuts_of(options)
    margin = margin_of(options)
    prev = (None, None, None) if previous is None else (previous[:, 0], previous[:, 1], previous[:, 2])
    n_rec = len(d["recency"].labels)
    # every label is "value <= its bound": position = cut points strictly below the value (band_up - 1);
    # recency is scored the other way round, so the shortest (position 0) scores n_rec
    prev_pos = None if prev[0] is None else np.where(prev[0] > 0, n_rec + 1 - prev[0], 0)
    r = (n_rec + 1 - band_up(out["recency_days"].to_numpy(), c["recency"], prev_pos, margin)).astype(np.int8)
    f = band_up(out[_column(options, "frequency")].to_numpy(), c["frequency"], prev[1], margin)
    m = band_up(out[_column(options, "monetary")].to_numpy(), c["monetary"], prev[2], margin)
    out["r_score"], out["f_score"], out["m_score"] = r, f, m
    out["recency_label"] = _labels(n_rec - r, d["recency"].labels, out.index)
    out["frequency_label"] = _labels(f - 1, d["frequency"].labels, out.index)
    out["monetary_label"] = _labels(m - 1, d["monetary"].labels, out.index)
    codes = r.astype(np.int16) * 100 + f.astype(np.int16) * 10 + m
    out["rfm_score"] = code_strings(codes, out.index)
    combo = ((n_rec - r).astype(np.int32) * len(d["frequency"].labels) + (f - 1)) * len(d["monetary"].labels) + (m - 1)
    out["rfm_group"] = categorical(combo, group_names(options), out.index)
    return out


def _labels(position: np.ndarray, labels: list[str], index: pd.Index) -> pd.Series:
    import numpy as np

    return categorical(position.astype(np.int32), list(labels), index)


def label_columns(options: Any) -> dict[str, str]:
    return {dim: f"{dim}_label" for dim in DIMENSIONS}


def rule_space(options: Any) -> tuple[Allowed, list[Case]]:
    d = _dims(options)
    labels = {dim: list(d[dim].labels) for dim in DIMENSIONS}
    allowed: Allowed = {dim: set(labels[dim]) for dim in DIMENSIONS}
    allowed.update(
        {
            "r": set(range(1, len(labels["recency"]) + 1)),
            "f": set(range(1, len(labels["frequency"]) + 1)),
            "m": set(range(1, len(labels["monetary"]) + 1)),
        }
    )
    cases: list[Case] = []
    n_rec = len(labels["recency"])
    for ri, fi, mi in product(*(range(len(labels[dim])) for dim in DIMENSIONS)):
        cases.append(
            {
                "recency": labels["recency"][ri],
                "frequency": labels["frequency"][fi],
                "monetary": labels["monetary"][mi],
                "r": n_rec - ri,
                "f": fi + 1,
                "m": mi + 1,
            }
        )
    return allowed, cases
