"""Outcomes: what the customers who moved from one group to another did next.

A *transition cohort* is everyone who moved from group X to group Y on a day in a period (a customer
who made the move twice is in it twice). For each cohort and each horizon (30, 60 and 90 days) this
counts, among the members whose horizon has passed (*observed*), how many were in a better group than
Y on the day the horizon ended (*up*), still in Y (*stayed*) or in a worse one (*down*; a customer
whose orders no longer qualify has no group, the worst place), and what they spent in those days:
the qualifying orders placed after the day of the move up to the horizon's last day (shop time zone),
in the shop's one currency, exactly.

"Better" follows the scheme's display order, best first (:func:`rfm_sync.engine.group_names`:
Champions … Inactive for the Klaviyo scheme, the segment rules' order when they are set). Moves from
or to a group the current ``[rfm]`` settings do not have are left out and counted in ``left_out``.

The input is the group history (:mod:`rfm_sync.store.history`): each customer's group at the end of
each day (the last row of a day wins), so several runs on one day count as one move. Groups on later
days are found with one sorted join (:func:`pandas.merge_asof`), revenue with one query of the
members' orders: the cost grows with the moves and their orders, not with the days.

What this does and does not show is said in ``docs/outcomes.md``: without a hold-out group it is a
description of what happened after a move, not a measure of what an email caused. With a hold-out
(``[properties] holdout_percent``: a stable random share of every cohort that the flows leave out,
see :mod:`rfm_sync.properties`) each cohort is split into the members *reached* and those *held out*
(the ``arm``), and :func:`effects` compares the two: that difference is an experiment's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, cast

from . import engine
from .config import Config, shop_rates
from .store import Store, history, orders

if TYPE_CHECKING:
    import pandas as pd

HORIZONS = (30, 60, 90)
ARMS = {True: "held out", False: "reached", None: ""}
COLUMNS = [
    "from_group",
    "to_group",
    "arm",  # "held out" / "reached" with a hold-out ([properties] holdout_percent), else ""
    "moved",
    "horizon_days",
    "observed",
    "up",
    "stayed",
    "down",
    "buyers",
    "revenue_e4",
]


@dataclass
class Outcomes:
    table: pd.DataFrame  # one row per cohort and horizon, :data:`COLUMNS`
    known_until: date | None  # the last day the groups are known for (the newest scored run or back-test day)
    currency: str | None
    left_out: int = 0  # moves from or to groups the current settings do not have
    groups: list[str] = field(default_factory=list)  # best first


def moves(day_groups: pd.DataFrame) -> pd.DataFrame:
    """The group moves in a history of day-end groups (customer_key, as_of, to_group, held_out; sorted by
    customer and day): customer_key, as_of, from_group, to_group, held_out where both are groups and
    they differ."""
    same_customer = day_groups["customer_key"].eq(day_groups["customer_key"].shift())
    before = day_groups["to_group"].shift().where(same_customer)
    out = day_groups.assign(from_group=before)
    moved = out["from_group"].notna() & out["to_group"].notna() & out["from_group"].ne(out["to_group"])
    return out.loc[moved, ["customer_key", "as_of", "from_group", "to_group", "held_out"]].reset_index(drop=True)


def day_end_groups(rows: pd.DataFrame) -> pd.DataFrame:
    """The last history row of each customer and day (rows sorted by customer, day, id)."""
    last = ~rows.duplicated(["customer_key", "as_of"], keep="last")
    return rows.loc[last, ["customer_key", "as_of", "to_group", "held_out"]].reset_index(drop=True)


@dataclass(frozen=True)
class Moves:
    """Which moves to follow: from / to a group, made on days in ``[since, until]``; None: any."""

    from_group: str | None = None
    to_group: str | None = None
    since: date | None = None
    until: date | None = None


def compute(config: Config, store: Store, only: Moves = Moves(), horizons: tuple[int, ...] = HORIZONS) -> Outcomes:
    """The outcome table of the moves ``only`` selects, at each horizon (days after the move)."""
    import numpy as np
    import pandas as pd

    from . import currency

    scheme = config.rfm.scheme
    names = engine.group_names(config.rfm)
    currency.check_store(store, shop_rates(config))  # one currency per sum, or stop (as the scoring does)
    currencies = currency.store_currencies(store)
    money = next(iter(currencies)) if currencies else None
    known_until = history.known_until(store, scheme)
    days = day_end_groups(history.load(store, scheme))
    found = moves(days)
    if only.since is not None:
        found = found[found["as_of"] >= only.since]
    if only.until is not None:
        found = found[found["as_of"] <= only.until]
    if only.from_group is not None:
        found = found[found["from_group"] == only.from_group]
    if only.to_group is not None:
        found = found[found["to_group"] == only.to_group]
    known = found["from_group"].isin(names) & found["to_group"].isin(names)
    left_out = int((~known).sum())
    found = found[known].reset_index(drop=True)
    found["arm"] = [ARMS.get(None if pd.isna(h) else bool(h), "") for h in found["held_out"]]
    result = Outcomes(
        table=pd.DataFrame(columns=COLUMNS), known_until=known_until, currency=money, left_out=left_out, groups=names
    )
    if found.empty or known_until is None:
        return result
    rank = {name: i for i, name in enumerate(names)}
    spent = _orders_after(config, store, found)
    parts = []
    for horizon in horizons:
        members = found.assign(target=found["as_of"] + timedelta(days=horizon))
        later = _groups_at(days, members[members["target"] <= known_until])
        # a later group the settings do not have cannot be placed: that member is not observed
        later = later[later["later_group"].isna() | later["later_group"].isin(names)]
        later_rank = later["later_group"].map(rank).fillna(len(names))  # cleared: below every group
        to_rank = later["to_group"].map(rank)
        revenue, bought = _spent_within(spent, later, horizon)
        later = later.assign(
            outcome=np.select([later_rank < to_rank, later_rank > to_rank], ["up", "down"], "stayed"),
            revenue_e4=revenue,
            bought=bought,
        )
        parts.append(_summarise(found, later, horizon))
    result.table = pd.concat(parts, ignore_index=True)[COLUMNS]
    result.table = result.table.sort_values(
        ["from_group", "to_group", "arm", "horizon_days"],
        key=lambda col: col.map(rank) if col.name in ("from_group", "to_group") else col,
        kind="stable",
    ).reset_index(drop=True)
    return result


def _groups_at(days: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """``members`` with ``later_group``: each one's day-end group on its ``target`` day (None: cleared)."""
    import pandas as pd

    left = members.reset_index().rename(columns={"index": "move"})
    left["target_ts"] = pd.to_datetime(left["target"])
    right = days.assign(day_ts=pd.to_datetime(days["as_of"]))[["customer_key", "day_ts", "to_group"]]
    right = right.rename(columns={"to_group": "later_group"}).sort_values("day_ts", kind="stable")
    joined = pd.merge_asof(
        left.sort_values("target_ts", kind="stable"),
        right,
        left_on="target_ts",
        right_on="day_ts",
        by="customer_key",
        direction="backward",
    )
    return joined.sort_values("move").set_index("move").drop(columns=["target_ts", "day_ts"])


def _orders_after(config: Config, store: Store, found: pd.DataFrame) -> pd.DataFrame:
    """The qualifying orders of the movers placed after the first move's day: customer_key, local_day, amount_e4."""
    zone = config.shop.zone
    start = datetime.combine(found["as_of"].min() + timedelta(days=1), time(), zone)
    placed = orders.qualifying_orders(store, sorted(set(found["customer_key"])), start)
    placed["local_day"] = placed["placed_at"].dt.tz_convert(zone).dt.date
    return placed


def _spent_within(spent: pd.DataFrame, members: pd.DataFrame, horizon: int) -> tuple[pd.Series, pd.Series]:
    """Per member: the sum of its qualifying orders placed in the ``horizon`` days after its move's day,
    and whether it placed one (a zero-amount order counts as buying)."""
    joined = members[["customer_key", "as_of"]].reset_index().merge(spent, on="customer_key")
    after = joined["local_day"] > joined["as_of"]
    inside = joined[after & (joined["local_day"] <= joined["as_of"] + timedelta(days=horizon))]
    revenue = inside.groupby("move")["amount_e4"].sum().reindex(members.index, fill_value=0).astype("int64")
    return revenue, members.index.to_series().isin(inside["move"])


def _summarise(found: pd.DataFrame, later: pd.DataFrame, horizon: int) -> pd.DataFrame:
    import pandas as pd

    cohort = ["from_group", "to_group", "arm"]
    cohorts = found.groupby(cohort, sort=False).size().rename("moved")
    counts = later.groupby([*cohort, "outcome"], sort=False).size().unstack(fill_value=0)
    for outcome in ("up", "stayed", "down"):
        if outcome not in counts.columns:
            counts[outcome] = 0
    sums = later.groupby(cohort, sort=False).agg(
        observed=("outcome", "size"), buyers=("bought", "sum"), revenue_e4=("revenue_e4", "sum")
    )
    table = pd.concat([cohorts, counts[["up", "stayed", "down"]], sums], axis=1).fillna(0)
    table = table.astype(dict.fromkeys(("moved", "up", "stayed", "down", "observed", "buyers", "revenue_e4"), "int64"))
    return table.reset_index().assign(horizon_days=horizon)


def effects(result: Outcomes) -> pd.DataFrame:
    """With a hold-out: per cohort and horizon, the share back up among the members reached and among
    those held out, the difference (reached − held out) and its 95 % interval (normal approximation
    of the difference of two proportions; None where either arm has no observed member)."""
    import pandas as pd

    columns = ["from_group", "to_group", "horizon_days", "reached", "held_out", "up_reached", "up_held_out"]
    columns += ["difference", "low", "high"]
    table = result.table
    if table.empty or not table["arm"].isin(["held out"]).any():
        return pd.DataFrame(columns=columns)
    rows = []
    keys = ["from_group", "to_group", "horizon_days"]
    for (src, dst, horizon), both in table.groupby(keys, sort=False):
        arm = {a: r for a, r in zip(both["arm"], both.to_dict("records"))}
        reached, held = arm.get("reached"), arm.get("held out")
        n1 = int(reached["observed"]) if reached else 0
        n2 = int(held["observed"]) if held else 0
        p1 = reached["up"] / n1 if reached and n1 else None
        p2 = held["up"] / n2 if held and n2 else None
        diff = low = high = None
        if p1 is not None and p2 is not None:
            diff = p1 - p2
            half = 1.96 * (p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) ** 0.5
            low, high = diff - half, diff + half
        rows.append([src, dst, horizon, n1, n2, p1, p2, diff, low, high])
    return pd.DataFrame(rows, columns=columns)


def records(result: Outcomes) -> list[dict[str, Any]]:
    """The table as plain values, money as exact decimal text (for ``--json``)."""
    from .lookup import money_text

    out: list[dict[str, Any]] = []
    for row in cast(list[dict[str, Any]], result.table.to_dict("records")):  # labels are COLUMNS, strings
        counts = {k: int(row[k]) for k in COLUMNS[3:]}
        out.append(
            {
                **{k: row[k] for k in COLUMNS[:3]},
                **counts,
                "revenue": money_text(row["revenue_e4"]),
            }
        )
    return out
