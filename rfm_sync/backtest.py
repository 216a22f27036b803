"""The back-test: which group each customer would have been in on earlier days, from the orders the store holds.

The group history (:mod:`rfm_sync.store.history`) starts with the first run; a shop that installs
rfm-sync today has years of orders but no history, so "what did the customers who fell into At Risk
last spring do next" has no answer. The back-test scores the store's orders as of earlier days — every
``every`` days from ``since`` up to the day before the first recorded run — with today's ``[rfm]``
settings, and records each customer's group changes between those days as history rows without a run
(``run_id`` None). It writes nothing else: no state, no outbox, no events.

What it reconstructs is what rfm-sync *would* have said, not what a merchant saw: cut points are
computed on each day (as a first run on that day would), orders are taken as they are stored today
(an order refunded since counts as refunded on every day), and a customer's moves between two
back-test days are seen as one. A new back-test replaces the previous one's rows as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from . import engine
from .config import Config
from .pipeline import scoring_input
from .store import Store, history, utcnow

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Backtest:
    since: date
    until: date  # the last day scored
    days: int  # how many days were scored
    changes: int  # history rows written
    customers: int  # customers with at least one group on those days


def days_to_score(since: date, before: date, every: int) -> list[date]:
    """``since``, ``since + every``, … while before ``before``; and the last day before ``before`` when the
    steps miss it, so the back-test reaches the first recorded run."""
    out = []
    day = since
    while day < before:
        out.append(day)
        day += timedelta(days=every)
    if out and out[-1] != before - timedelta(days=1):
        out.append(before - timedelta(days=1))
    return out


def limit(config: Config, store: Store) -> tuple[date, date | None]:
    """The day a back-test stops before — the first recorded run's, else tomorrow in the shop's time
    zone — and that first recorded day (None: no run yet)."""
    first = history.first_recorded_day(store, config.rfm.scheme)
    return first or config.today() + timedelta(days=1), first


def run_backtest(
    config: Config,
    store: Store,
    *,
    since: date,
    every: int = 7,
    before: date | None = None,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> Backtest:
    """Score as of ``since``, ``since + every``, … up to the day before the first recorded run (or
    ``before``, or today in the shop's time zone when there is no run yet) and replace the back-test's
    history rows with the group changes between those days. ``progress(done, total)`` after each day."""
    import pandas as pd

    rfm = config.rfm
    end, _ = limit(config, store)
    days = days_to_score(since, min(end, before) if before is not None else end, every)
    groups = pd.Series(dtype=object)
    scores = None
    moves: list[tuple[date, pd.DataFrame]] = []
    everyone: set[str] = set()
    for i, day in enumerate(days):
        new, scores = _groups_on(config, store, day, scores if rfm.hysteresis else None)
        both = pd.concat([groups.rename("before"), new.rename("after")], axis=1).sort_index()
        moves.append((day, both.rename_axis("customer_key").reset_index()))
        groups = new
        everyone.update(new.index)
        progress(i + 1, len(days))
    written = history.replace_backtest(store, rfm.scheme, moves, utcnow())
    return Backtest(
        since=since, until=days[-1] if days else since, days=len(days), changes=written, customers=len(everyone)
    )


def _groups_on(config: Config, store: Store, day: date, previous: Any) -> tuple[pd.Series, Any]:
    """customer_key → group as of ``day``, and the scores (for a hysteresis margin on the next day)."""
    import pandas as pd

    aggregates = scoring_input(config, store, day)
    if aggregates.empty:
        return pd.Series(dtype=object), None
    frame = engine.score_customers(aggregates, day, config.rfm, zone=config.shop.zone, previous=previous).frame
    keys = frame["customer_key"].astype(object).to_numpy()
    scores = pd.Series(frame["rfm_score"].astype(object).to_numpy(), index=keys, dtype=object)
    return pd.Series(frame["rfm_group"].astype(object).to_numpy(), index=keys, dtype=object), scores
