"""Scores from cut points, with an optional hysteresis margin. Pure numpy, exact comparisons.

``band_up``: a higher value is better — score = 1 + number of cut points strictly below the value.
``band_down``: a lower value is better (recency) — score = 1 + number of cut points strictly above it.

Hysteresis: given each customer's previous score (0 = none) and a relative ``margin`` (e.g.
``Fraction(1, 20)`` for 5%), a customer keeps the previous score unless the value has passed a
boundary by the margin. Two scores bracket the plain one: *strict* counts a cut point ``c`` only
when the value clears ``c·(1+margin)`` (moving up) and *loose* already when it clears
``c·(1−margin)``. A previous score inside ``[strict, loose]`` is kept; otherwise the score moves
to the nearer end — so a customer who moves lands where the margin puts them, never further.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .quantiles import count_above, count_below

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd


def _scaled(cuts: Sequence[Fraction], factor: Fraction) -> list[Fraction]:
    return [Fraction(c) * factor for c in cuts]


def _with_previous(raw: np.ndarray, strict: np.ndarray, loose: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    import numpy as np

    if previous is None:
        return raw
    prev = np.asarray(previous, dtype=np.int8)
    kept = np.clip(prev, strict, loose)
    return np.where(prev > 0, kept, raw).astype(np.int8)


def band_up(
    values: np.ndarray, cuts: Sequence[Fraction], previous: np.ndarray | None = None, margin: Fraction = Fraction(0)
) -> np.ndarray:
    return _band(count_above, values, cuts, previous, margin)


def band_down(
    values: np.ndarray, cuts: Sequence[Fraction], previous: np.ndarray | None = None, margin: Fraction = Fraction(0)
) -> np.ndarray:
    # a lower value is better: a boundary is passed strictly below c·(1−margin), loosely below c·(1+margin)
    return _band(count_below, values, cuts, previous, -margin)


def _band(
    count: Callable[[np.ndarray, Sequence[Fraction]], np.ndarray],
    values: np.ndarray,
    cuts: Sequence[Fraction],
    previous: np.ndarray | None,
    margin: Fraction,
) -> np.ndarray:
    """1 + ``count(values, cuts)``, held at ``previous`` within the margin: *strict* counts against
    the cut points scaled by ``1 + margin``, *loose* by ``1 − margin`` (``margin`` is negated where
    a lower value is better)."""
    import numpy as np

    raw = (1 + count(values, cuts)).astype(np.int8)
    if previous is None or margin == 0:
        return raw
    strict = (1 + count(values, _scaled(cuts, 1 + margin))).astype(np.int8)
    loose = (1 + count(values, _scaled(cuts, 1 - margin))).astype(np.int8)
    return _with_previous(raw, strict, loose, previous)


def margin_of(options: object) -> Fraction:
    """The hysteresis margin of an options object (``RfmConfig``) as an exact fraction."""
    value = getattr(options, "hysteresis", 0) or 0
    return Fraction(str(value))


def code_strings(codes: np.ndarray, index: pd.Index) -> pd.Series:
    """Three-digit score codes as strings, via a lookup of the few distinct codes (fast at millions)."""
    import numpy as np

    uniq, inverse = np.unique(codes, return_inverse=True)
    return categorical(inverse.astype(np.int32), [str(int(c)) for c in uniq], index)


def categorical(codes: npt.NDArray[np.integer[Any]], categories: list[str], index: pd.Index) -> pd.Series:
    """The categorical Series whose row ``i`` is ``categories[codes[i]]`` (a code of -1: missing)."""
    import pandas as pd

    # pandas takes any list-like as the categories; pandas-stubs types them as an Index only
    values = pd.Categorical.from_codes(codes, categories=categories)  # type: ignore[call-overload]
    return pd.Series(values, index=index)
