"""Scheme ``klaviyo``: the rules of Klaviyo's RFM report (scores 1–3, six groups).

* R = 3 if recency_days <= bounds[0], 2 if <= bounds[1], else 1 (fixed bounds, not quantiles).
* F, M: cut points q1, q2 = the 1/3 and 2/3 quantiles of frequency / monetary over customers with
  frequency >= 1; score = 1 + (v > q1) + (v > q2). Customers with nothing in the window get 1.
* Group from the R-F-M string via :data:`GROUPS`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .bands import band_up, categorical, code_strings, margin_of
from .quantiles import cut_points, from_json, to_json

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .segments import Allowed, Case

NAME = "klaviyo"
USES_QUANTILES = True
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


def group_index() -> np.ndarray:
    """Score code (RFM as a three-digit number) → position of its group in GROUP_NAMES (-1: not a code)."""
    import numpy as np

    index = np.full(1000, -1, dtype=np.int8)
    for code, group in GROUP_OF.items():
        index[int(code)] = GROUP_NAMES.index(group)
    return index


def calibrate(metrics: pd.DataFrame, options: Any) -> dict[str, list[str]]:
    """Cut points for F and M from the customers with at least one order in the window."""
    active = metrics[metrics["frequency"] >= 1]
    return {
        "frequency": to_json(cut_points(active["frequency"].to_numpy(), PROBS)),
        "monetary_e4": to_json(cut_points(active["monetary_e4"].to_numpy(), PROBS)),
    }


def score(
    metrics: pd.DataFrame, cuts: dict[str, Any], options: Any, previous: np.ndarray | None = None
) -> pd.DataFrame:
    """Add r/f/m scores, rfm_score and rfm_group to a frame of recency_days/frequency/monetary_e4
    (``options``: ``recency_bounds``, ``hysteresis``)."""
    import numpy as np

    out = metrics
    bounds = options.recency_bounds
    margin = margin_of(options)
    prev = (None, None, None) if previous is None else (previous[:, 0], previous[:, 1], previous[:, 2])
    # R = 3 if days <= bounds[0], 2 if <= bounds[1], else 1: position = bounds strictly below the days
    prev_pos = None if prev[0] is None else np.where(prev[0] > 0, 4 - prev[0], 0)
    rd = out["recency_days"].to_numpy()
    r = (4 - band_up(rd, [Fraction(int(b)) for b in bounds], prev_pos, margin)).astype(np.int8)
    active = out["frequency"].to_numpy() >= 1
    f = np.where(active, band_up(out["frequency"].to_numpy(), from_json(cuts["frequency"]), prev[1], margin), 1)
    m = np.where(active, band_up(out["monetary_e4"].to_numpy(), from_json(cuts["monetary_e4"]), prev[2], margin), 1)
    out["r_score"], out["f_score"], out["m_score"] = r, f.astype(np.int8), m.astype(np.int8)
    codes = r.astype(np.int16) * 100 + f.astype(np.int16) * 10 + m
    out["rfm_score"] = code_strings(codes, out.index)
    out["rfm_group"] = categorical(group_index()[codes], GROUP_NAMES, out.index)
    return out


def windows(options: Any) -> dict[str, int]:
    return {}


def group_names(options: Any) -> list[str]:
    return list(GROUP_NAMES)


def rule_space(options: Any) -> tuple[Allowed, list[Case]]:
    """What segment rules may test, and every case of the scheme (for checking rules)."""
    scores = range(1, 4)
    allowed: Allowed = {"r": set(scores), "f": set(scores), "m": set(scores), "group": set(GROUP_NAMES)}
    cases: list[Case] = [
        {"r": r, "f": f, "m": m, "group": GROUP_OF[f"{r}{f}{m}"]} for r in scores for f in scores for m in scores
    ]
    return allowed, cases
