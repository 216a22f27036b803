"""The RFM engine: pure functions from per-customer aggregates to scores and groups. No I/O.

Input: a frame with ``customer_key, last_order_at (UTC), frequency, monetary_e4`` — one row per
customer with at least one qualifying order on or before ``as_of`` (frequency/monetary count only
the window) — plus ``frequency_<w>, monetary_e4_<w>`` for each extra window a scheme asks for
(:func:`windows`), and optionally ``first_order_at`` and ``orders`` (all time) for the warnings.
Output: the same frame plus ``recency_days``, scores, ``rfm_score``, ``rfm_group`` and the
scheme's label columns (:attr:`ScoreResult.labels`).

A scheme is a module with ``NAME``, ``USES_QUANTILES``, ``calibrate(frame, options) → cut points``
(JSON-able; ``{}`` when nothing is calibrated), ``score(frame, cuts, options, previous) → frame``,
``windows(options)``, ``group_names(options)`` and ``rule_space(options)`` (for segment rules).
``options`` is the ``[rfm]`` config; ``previous`` the last scores (n × 3, 0 = none) for hysteresis.

The engine knows nothing of configuration files: every function is given the ``[rfm]`` object
(:class:`rfm_sync.rfm_config.RfmConfig`, or anything with its attributes). numpy and pandas are
imported inside the functions that compute, so naming a scheme's groups and checking its rules
(config validation, ``rfm-sync status``) does not load them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from . import classic11, klaviyo, segments, thresholds

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .segments import Allowed, Case


class Scheme(Protocol):
    """What the engine uses of a scheme module (see the module docstring); ``label_columns`` is optional."""

    NAME: str
    USES_QUANTILES: bool

    def calibrate(self, metrics: pd.DataFrame, options: Any) -> dict[str, list[str]]: ...

    def score(
        self, metrics: pd.DataFrame, cuts: dict[str, Any], options: Any, previous: np.ndarray | None = ...
    ) -> pd.DataFrame: ...

    def windows(self, options: Any) -> dict[str, int]: ...

    def group_names(self, options: Any) -> list[str]: ...

    def rule_space(self, options: Any) -> tuple[Allowed, list[Case]]: ...


_SCHEME_MODULES: tuple[Scheme, ...] = (klaviyo, classic11, thresholds)  # typed: mypy checks each against Scheme
SCHEMES: dict[str, Scheme] = {m.NAME: m for m in _SCHEME_MODULES}


@dataclass
class ScoreResult:
    frame: pd.DataFrame
    cut_points: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    # label dimension (recency, frequency, monetary, macro_group) -> frame column holding it
    labels: dict[str, str] = field(default_factory=dict)
    # set by the pipeline: the day the cut points in force were computed, and whether this run computed them
    calibrated_on: date | None = None
    new_calibration: bool = False
    calibration_population: int | None = None  # customers those cut points were computed over (None: unknown)


# a customer's figures in the tables that list them (the scores CSV of ``rfm-sync score``, the rows
# of ``rfm-sync customers``), named and ordered alike: the window's values (``monetary`` as money,
# where the frame has ``monetary_e4``), then the scores
FIGURE_COLUMNS = ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "rfm_score")


def window_bounds(as_of: date, window_days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``[window_start, end)`` in UTC: the window's first local day at 00:00 to the day after as_of."""
    end = datetime.combine(as_of + timedelta(days=1), time(), zone)
    start = datetime.combine(as_of - timedelta(days=window_days - 1), time(), zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def recency_days(last_order_at: pd.Series[pd.Timestamp], as_of: date, zone: ZoneInfo) -> pd.Series[int]:
    """Calendar days between the local date of each last order and ``as_of``."""
    import pandas as pd

    local_day = last_order_at.dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
    return (pd.Timestamp(as_of) - local_day).dt.days.astype("int64")


def score_customers(
    aggregates: pd.DataFrame,
    as_of: date,
    options: Any,
    *,
    zone: ZoneInfo,
    cut_points: dict[str, Any] | None = None,
    previous: pd.Series | None = None,
) -> ScoreResult:
    """Score every customer with the scheme of ``options`` (the ``[rfm]`` config). ``cut_points``
    (frozen ones) are used as given, else calibrated here. ``previous`` maps customer_key → last
    ``rfm_score`` and is only used with a hysteresis margin.
    """
    module = SCHEMES[options.scheme]
    frame = aggregates.copy(deep=False)  # columns are added, never changed in place
    frame["recency_days"] = recency_days(frame["last_order_at"], as_of, zone)
    cuts = cut_points if cut_points is not None else module.calibrate(frame, options)
    frame = module.score(frame, cuts, options, previous_scores(previous, frame["customer_key"]))
    labels = dict(module.label_columns(options)) if hasattr(module, "label_columns") else {}
    if "macro_group" in frame.columns:
        labels["macro_group"] = "macro_group"
    rules = options.segments
    if rules:
        frame["scheme_group"] = frame["rfm_group"]
        frame["rfm_group"] = segments.apply(frame, rules, options.fallback_segment)
    return ScoreResult(frame=frame, cut_points=cuts, warnings=eligibility_warnings(frame, as_of, zone), labels=labels)


def previous_scores(previous: pd.Series | None, keys: pd.Series) -> np.ndarray | None:
    """Last R, F, M scores per row of ``keys`` from ``rfm_score`` strings (n × 3 int8, 0 = none)."""
    import numpy as np
    import pandas as pd

    if previous is None or len(previous) == 0:
        return None
    codes = pd.to_numeric(previous.reindex(keys.to_numpy()), errors="coerce").fillna(0).to_numpy().astype(np.int64)
    codes = np.where((codes >= 111) & (codes <= 999), codes, 0)
    return np.stack([codes // 100, codes // 10 % 10, codes % 10], axis=1).astype(np.int8)


def windows(options: Any) -> dict[str, int]:
    """Extra aggregation windows (name → days) the configured scheme needs."""
    return SCHEMES[options.scheme].windows(options)


def eligibility_warnings(frame: pd.DataFrame, as_of: date | None = None, zone: ZoneInfo | None = None) -> list[str]:
    """Klaviyo's gates for its RFM report, as warnings (never fatal): at least 500 customers with
    orders, at least 180 days of order history, an order in the last 30 days, a customer with 3+ orders."""
    import pandas as pd

    out = []
    n = len(frame)
    if n < 500:
        out.append(f"only {n} customers with orders (RFM is meaningful from about 500)")
    if not n:
        return out + [
            "less than 180 days of order history",
            "no orders in the last 30 days",
            "no customer has 3 or more orders",
        ]
    if "first_order_at" in frame.columns and as_of is not None and zone is not None:
        first = pd.Series([frame["first_order_at"].min()])  # the oldest order's day gives the most days
        history = int(recency_days(first, as_of, zone).iloc[0]) + 1
    else:
        history = int(frame["recency_days"].max()) + 1
    if history < 180:
        out.append(f"less than 180 days of order history ({history} days)")
    if int(frame["recency_days"].min()) >= 30:
        out.append("no orders in the last 30 days")
    orders = frame["orders"] if "orders" in frame.columns else frame["frequency"]
    if int(orders.max()) < 3:
        out.append("no customer has 3 or more orders")
    return out


def group_names(options: Any) -> list[str]:
    """Group names in display order: the segment names when rules are set, else the scheme's groups."""
    if options.segments:
        return segments.segment_names(options.segments, options.fallback_segment)
    return SCHEMES[options.scheme].group_names(options)
