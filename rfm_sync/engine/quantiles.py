"""Exact quantile cut points and scoring against them.

Cut points use linear interpolation between order statistics (numpy's default ``linear``
method) but are computed exactly, as :class:`~fractions.Fraction`, over integer values
(order counts, money ×10⁴). Comparing a value with a cut point is then exact too: a value lying
exactly on a cut point is never pushed over it by a rounding error, so ties share a score.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def cut_points(values: np.ndarray, probs: Sequence[Fraction]) -> list[Fraction]:
    """Quantiles of integer ``values`` at each probability, numpy ``linear`` method, exactly."""
    import numpy as np

    if len(values) == 0:
        return []
    ordered = np.sort(np.asarray(values, dtype=np.int64))
    n = len(ordered)
    out = []
    for p in probs:
        h = (n - 1) * Fraction(p)
        lo = int(h)  # floor, h >= 0
        hi = min(lo + 1, n - 1)
        frac = h - lo
        a, b = int(ordered[lo]), int(ordered[hi])
        out.append(a + (b - a) * frac)
    return out


def count_above(values: np.ndarray, cuts: Sequence[Fraction]) -> np.ndarray:
    """For each value, how many cut points lie strictly below it (``v > c``), exactly."""
    return _count(values, cuts, operator.gt)


def count_below(values: np.ndarray, cuts: Sequence[Fraction]) -> np.ndarray:
    """For each value, how many cut points lie strictly above it (``v < c``), exactly."""
    return _count(values, cuts, operator.lt)


def _count(values: np.ndarray, cuts: Sequence[Fraction], beyond: Callable[[Any, Any], Any]) -> np.ndarray:
    """How many cut points ``c`` have ``beyond(v, c)``, per value: ``v·denominator`` against the
    numerator, so no rounding decides a tie."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    total = np.zeros(len(values), dtype=np.int8)
    for c in cuts:
        c = Fraction(c)
        total += beyond(values * c.denominator, c.numerator).astype(np.int8)
    return total


def to_json(cuts: Sequence[Fraction]) -> list[str]:
    return [str(c) for c in cuts]


def from_json(items: Sequence[str]) -> list[Fraction]:
    return [Fraction(s) for s in items]
