"""Scheme ``classic11``: R, F, M scored 1–5 by quintiles, eleven groups (Connectif, most RFM literature).

* Cut points: the 0.2/0.4/0.6/0.8 quantiles (``rfm.quintiles``; exact linear interpolation) of
  ``recency_days``, ``frequency`` and ``monetary_e4`` over customers with frequency >= 1.
* F, M = 1 + number of cut points strictly below the value; customers with nothing in the window
  get F = M = 1. R = 1 + number of cut points strictly *above* ``recency_days`` (fewer days is better).
* FM = ceil((F + M) / 2); the group comes from the pair (R, FM) via :data:`GROUPS`.
* Optional macro groups (``rfm.macro_groups``): best / alert / tightrope, as an extra label.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product
from typing import TYPE_CHECKING, Any

from .bands import band_down, band_up, categorical, code_strings, margin_of
from .quantiles import cut_points, from_json, to_json

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from .segments import Allowed, Case

NAME = "classic11"
USES_QUANTILES = True
DEFAULT_PROBS = (Fraction(1, 5), Fraction(2, 5), Fraction(3, 5), Fraction(4, 5))
SCORES = range(1, 6)

GROUPS: dict[str, list[str]] = {
    "Champions": ["55", "54", "45"],
    "Loyal": ["53", "44", "35", "34"],
    "Potential Loyalist": ["52", "42", "33", "43"],
    "New Customers": ["51"],
    "Promising": ["41", "31"],
    "Need Attention": ["32", "23", "22"],
    "About To Sleep": ["21"],
    "At Risk": ["25", "24", "13"],
    "Can't Lose Them": ["15", "14"],
    "Hibernating": ["12"],
    "Lost": ["11"],
}
GROUP_OF = {code: group for group, codes in GROUPS.items() for code in codes}
GROUP_NAMES = list(GROUPS)

MACRO_GROUPS: dict[str, list[str]] = {
    "best": ["Champions", "Loyal", "Potential Loyalist"],
    "alert": ["About To Sleep", "Need Attention", "Promising", "Can't Lose Them", "New Customers"],
    "tightrope": ["Lost", "Hibernating", "At Risk"],
}
MACRO_OF = {group: macro for macro, groups in MACRO_GROUPS.items() for group in groups}


def probs(options: Any) -> list[Fraction]:
    given = getattr(options, "quintiles", None)
    return [Fraction(str(p)) for p in given] if given else list(DEFAULT_PROBS)


def windows(options: Any) -> dict[str, int]:
    return {}


def group_names(options: Any) -> list[str]:
    return list(GROUP_NAMES)


def calibrate(metrics: pd.DataFrame, options: Any) -> dict[str, list[str]]:
    """Quintile cut points of recency_days, frequency and monetary_e4 over active customers."""
    active = metrics[metrics["frequency"].to_numpy() >= 1]
    p = probs(options)
    return {
        "recency_days": to_json(cut_points(active["recency_days"].to_numpy(), p)),
        "frequency": to_json(cut_points(active["frequency"].to_numpy(), p)),
        "monetary_e4": to_json(cut_points(active["monetary_e4"].to_numpy(), p)),
    }


def score(
    metrics: pd.DataFrame, cuts: dict[str, Any], options: Any, previous: np.ndarray | None = None
) -> pd.DataFrame:
    """Add r/f/m/fm scores, rfm_score ("RFM" digits), rfm_group and, if enabled, macro_group."""
    import numpy as np

    out = metrics
    margin = margin_of(options)
    prev = (None, None, None) if previous is None else (previous[:, 0], previous[:, 1], previous[:, 2])
    active = out["frequency"].to_numpy() >= 1
    r = band_down(out["recency_days"].to_numpy(), from_json(cuts["recency_days"]), prev[0], margin)
    f = np.where(active, band_up(out["frequency"].to_numpy(), from_json(cuts["frequency"]), prev[1], margin), 1)
    m = np.where(active, band_up(out["monetary_e4"].to_numpy(), from_json(cuts["monetary_e4"]), prev[2], margin), 1)
    f, m = f.astype(np.int8), m.astype(np.int8)
    fm = ((f.astype(np.int16) + m + 1) // 2).astype(np.int8)
    out["r_score"], out["f_score"], out["m_score"], out["fm_score"] = r, f, m, fm
    codes = r.astype(np.int16) * 100 + f.astype(np.int16) * 10 + m
    out["rfm_score"] = code_strings(codes, out.index)
    out["rfm_group"] = categorical(_group_codes(r, fm), GROUP_NAMES, out.index)
    if getattr(options, "macro_groups", False):
        out["macro_group"] = out["rfm_group"].map(MACRO_OF).astype("category")
    return out


def _group_codes(r: npt.NDArray[np.int8], fm: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """The position in GROUP_NAMES of each (R, FM) pair, by a 6×6 table indexed by score (row/column 0 unused)."""
    import numpy as np

    table = np.full((6, 6), -1, dtype=np.int8)
    for code, group in GROUP_OF.items():
        table[int(code[0]), int(code[1])] = GROUP_NAMES.index(group)
    return table[r, fm]


def rule_space(options: Any) -> tuple[Allowed, list[Case]]:
    """What segment rules may test, and every case of the scheme (for checking rules)."""
    allowed: Allowed = {
        "r": set(SCORES),
        "f": set(SCORES),
        "m": set(SCORES),
        "fm": set(SCORES),
        "group": set(GROUP_NAMES),
    }
    cases: list[Case] = []
    for r, f, m in product(SCORES, SCORES, SCORES):
        fm = (f + m + 1) // 2
        cases.append({"r": r, "f": f, "m": m, "fm": fm, "group": GROUP_OF[f"{r}{fm}"]})
    return allowed, cases
