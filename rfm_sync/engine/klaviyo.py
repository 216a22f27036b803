"""Scheme ``klaviyo``: the rules of Klaviyo's RFM report (scores 1–3, six groups).

* R = 3 if recency_days <= bounds[0], 2 if <= bounds[1], else 1.
* F, M: cut points q1, q2 = the 1/3 and 2/3 quantiles of frequency / monetary over customers with
  frequency >= 1; score = 1 + (v > q1) + (v > q2). Customers with nothing in the window get 1.
* Group from the R-F-M string via :data:`GROUPS`.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from .quantiles import count_above, cut_points, from_json, to_json

NAME = "klaviyo"
PROBS = (Fraction(1, 3), Fraction(2, 3))

GROUPS: dict[str, list[str]] = {
    "Champions": ["333", "332", "323"],
    "Loyal": ["321", "322", "331", "232", "233"],
    "Recent": ["312", "313", "311", "222", "223"],
    "Needs Attention": ["213", "221", "123", "132", "133"],
    "At Risk": ["231", "212", "122", "131", "211"],
    "Inactive": ["111", "112", "113", "121"],
}
GROUP_OF = {code: group for group, codes in GROUPS.items() for code in codes}
GROUP_NAMES = list(GROUPS)


def calibrate(metrics: pd.DataFrame) -> dict[str, list[str]]:
    """Cut points for F and M from the customers with at least one order in the window."""
    active = metrics[metrics["frequency"] >= 1]
    return {
        "frequency": to_json(cut_points(active["frequency"].to_numpy(), PROBS)),
        "monetary_e4": to_json(cut_points(active["monetary_e4"].to_numpy(), PROBS)),
    }


def score(metrics: pd.DataFrame, cuts: dict[str, Any], recency_bounds: tuple[int, int]) -> pd.DataFrame:
    """Add r/f/m scores, rfm_score and rfm_group to a frame of recency_days/frequency/monetary_e4."""
    out = metrics
    rd = out["recency_days"].to_numpy()
    r = np.where(rd <= recency_bounds[0], 3, np.where(rd <= recency_bounds[1], 2, 1)).astype(np.int8)
    active = out["frequency"].to_numpy() >= 1
    f = np.where(active, 1 + count_above(out["frequency"].to_numpy(), from_json(cuts["frequency"])), 1)
    m = np.where(active, 1 + count_above(out["monetary_e4"].to_numpy(), from_json(cuts["monetary_e4"])), 1)
    out["r_score"], out["f_score"], out["m_score"] = r, f.astype(np.int8), m.astype(np.int8)
    codes = r.astype(np.int16) * 100 + out["f_score"].to_numpy().astype(np.int16) * 10 + out["m_score"].to_numpy()
    lookup = {int(code): group for code, group in GROUP_OF.items()}
    out["rfm_score"] = pd.Series(codes, index=out.index).astype(str)
    out["rfm_group"] = pd.Series(codes, index=out.index).map(lookup)
    return out
