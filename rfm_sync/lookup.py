"""Who is in which group, and why: ``rfm-sync customers`` and ``rfm-sync explain``.

Both start from the *basis*: the newest scored run of the configured scheme — its as-of day and
the cut points it used (the ones in force for every group in ``customer_state``). Groups,
previous groups, change times and scores are what the store holds; the values (days since the
last order, orders and spend in the window) are aggregated from the stored orders as of the
basis day, by the same query the pipeline scores from (:func:`rfm_sync.store.orders.aggregate`).

``explain`` never re-implements a rule. It scores the customer's values with
:func:`rfm_sync.engine.score_customers` and those cut points (and the stored score, for the
hysteresis margin), names the scheme's group for that score from the scheme's own table and the
first matching segment rule from :func:`rfm_sync.engine.segments.first_match`, and finds what would
move them by asking the engine again with changed values (a search over orders, spend and days,
each dimension alone).

A customer without a group is *cleared*: the store has orders of theirs, but none qualifying as
of the basis day (all cancelled, test, refunded). When a destination was sent the clearing, the
outbox tells from which group and when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol

import orjson
import pandas as pd
import sqlalchemy as sa

from . import engine
from .engine import classic11, klaviyo, segments
from .engine import thresholds as thresholds_scheme
from .insight import SCORED, cut_values, readable, value_columns
from .store import Store
from .store.orders import aggregate
from .store.schema import MONEY_SCALE, customer_state, customers, orders, outbox, runs
from .store.state import parse_time

KEY_CHUNK = 10_000
CLEARED = "cleared"  # had a group; a destination was sent the clearing
NO_QUALIFYING = "no qualifying order"  # has orders, none qualifies, and no clearing is on record (never had a group)
NOT_SCORED = "not scored yet"


class LookupError_(Exception):
    """A customer or group that is not there; the message says what to give instead."""


@dataclass
class Basis:
    run_id: int
    as_of: date
    cut_points: dict[str, Any]
    calibrated_on: date | None
    population: int | None


def basis(config: Any, store: Store) -> Basis | None:
    """The newest scored run of the configured scheme (None: nothing scored yet)."""
    q = (
        sa.select(runs.c.id, runs.c.as_of, runs.c.cut_points, runs.c.stats)
        .where(runs.c.status.in_(SCORED), runs.c.scheme == config.rfm.scheme, runs.c.cut_points.is_not(None))
        .order_by(runs.c.as_of.desc(), runs.c.id.desc())
        .limit(1)
    )
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    stats = orjson.loads(row.stats) if row.stats else {}
    on = stats.get("calibrated_on")
    return Basis(
        run_id=row.id,
        as_of=row.as_of,
        cut_points=orjson.loads(row.cut_points),
        calibrated_on=date.fromisoformat(on) if on else None,
        population=stats.get("calibration_population"),
    )


def aggregates(config: Any, store: Store, as_of: date, keys: list[str] | None) -> pd.DataFrame:
    """The pipeline's per-customer aggregates as of ``as_of`` (``keys``: only these customers)."""
    rfm, zone = config.rfm, config.shop.zone
    window_start, end = engine.window_bounds(as_of, rfm.window_days, zone)
    extra = {name: engine.window_bounds(as_of, days, zone)[0] for name, days in engine.windows(rfm).items()}
    if keys is None or len(keys) > 5 * KEY_CHUNK:
        frame = aggregate(store, end, window_start, windows=extra)
        return frame if keys is None else frame[frame["customer_key"].isin(keys)].reset_index(drop=True)
    parts = [
        aggregate(store, end, window_start, keys[i : i + KEY_CHUNK], windows=extra)
        for i in range(0, len(keys), KEY_CHUNK)
    ] or [aggregate(store, end, window_start, [], windows=extra)]
    return pd.concat(parts, ignore_index=True)


def _state(store: Store, where: Any = None) -> pd.DataFrame:
    cols = [
        customer_state.c.customer_key,
        customers.c.email,
        customer_state.c.current_group,
        customer_state.c.previous_group,
        customer_state.c.group_changed_at,
        customer_state.c.rfm_score,
        customer_state.c.run_id,
    ]
    q = sa.select(*cols).select_from(
        customer_state.outerjoin(customers, customers.c.customer_key == customer_state.c.customer_key)
    )
    if where is not None:
        q = q.where(where)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(
        rows,
        columns=["customer_key", "email", "group", "previous_group", "group_changed_at", "rfm_score", "run_id"],
        dtype=object,
    )


def clearings(store: Store, keys: list[str]) -> dict[str, tuple[str | None, datetime | None]]:
    """customer_key → (the group it was cleared from, when), from the newest clearing in the outbox."""
    out: dict[str, tuple[str | None, datetime | None, int]] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(keys), KEY_CHUNK):
            q = sa.select(outbox.c.id, outbox.c.customer_key, outbox.c.payload, outbox.c.created_at).where(
                outbox.c.customer_key.in_(keys[i : i + KEY_CHUNK])
            )
            for row in conn.execute(q):
                t = orjson.loads(row.payload).get("transition") or {}
                if "to" in t and t["to"] is None and row.id > out.get(row.customer_key, (None, None, -1))[2]:
                    out[row.customer_key] = (t.get("from"), row.created_at, row.id)
    return {k: (g, at) for k, (g, at, _) in out.items()}


def ungrouped(config: Any, store: Store, as_of: date) -> pd.DataFrame:
    """Customers with stored orders but no group: *cleared* (no qualifying order as of ``as_of``; the
    outbox tells from which group and when, if a destination was sent the clearing), or *not scored
    yet* (a qualifying order arrived after the last run)."""
    in_state = sa.select(customer_state.c.customer_key)
    q = sa.select(orders.c.customer_key).where(orders.c.customer_key.not_in(in_state)).distinct()
    with store.engine.connect() as conn:
        keys = sorted(k for (k,) in conn.execute(q))
        emails: dict[str, str | None] = {}
        for i in range(0, len(keys), KEY_CHUNK):
            emails.update(
                conn.execute(
                    sa.select(customers.c.customer_key, customers.c.email).where(
                        customers.c.customer_key.in_(keys[i : i + KEY_CHUNK])
                    )
                ).all()
            )
    qualified = set(aggregates(config, store, as_of, keys)["customer_key"]) if keys else set()
    gone = clearings(store, [k for k in keys if k not in qualified])
    return pd.DataFrame(
        {
            "customer_key": keys,
            "email": [emails.get(k) for k in keys],
            "group": [None] * len(keys),
            "previous_group": [gone.get(k, (None, None))[0] for k in keys],
            "group_changed_at": [gone.get(k, (None, None))[1] for k in keys],
            "rfm_score": [None] * len(keys),
            "run_id": [None] * len(keys),
            "status": [NOT_SCORED if k in qualified else CLEARED if k in gone else NO_QUALIFYING for k in keys],
        },
        dtype=object,
    )


def _when(value: Any) -> datetime | None:
    return None if value is None or (not isinstance(value, (str, datetime)) and pd.isna(value)) else parse_time(value)


def _day_start(day: date, zone: Any) -> datetime:
    return datetime.combine(day, time(), zone)


def list_customers(
    config: Any,
    store: Store,
    *,
    group: str | None = None,
    moved_from: str | None = None,
    since: date | None = None,
    cleared: bool | None = None,
) -> tuple[pd.DataFrame, Basis | None]:
    """Who is where: one row per customer (see :data:`COLUMNS`), best group first, biggest spend first.
    ``group``/``moved_from``: current / previous group; ``since``: the group changed on or after this
    day (shop time zone); ``cleared``: only customers without a group because no order of theirs qualifies
    (True: cleared, or never had a group), or only customers with a group (False)."""
    b = basis(config, store)
    names = engine.group_names(config.rfm)
    where = []
    if group is not None:
        where.append(customer_state.c.current_group == group)
    if moved_from is not None:
        where.append(customer_state.c.previous_group == moved_from)
    state = _state(store, sa.false() if cleared else sa.and_(*where) if where else None)
    state["status"] = "scored"
    parts = [state]
    as_of = b.as_of if b else config.today()
    if group is None and cleared is not False:
        extra = ungrouped(config, store, as_of)
        if moved_from is not None:
            extra = extra[extra["previous_group"] == moved_from]
        if cleared:
            extra = extra[extra["status"] != NOT_SCORED]
        parts.append(extra)
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else state
    values = aggregates(config, store, as_of, out["customer_key"].tolist())
    if since is not None:
        start = _day_start(since, config.shop.zone)
        out = out[[(when := _when(t)) is not None and when >= start for t in out["group_changed_at"]]]
    out = out.merge(_values(config, values, as_of), on="customer_key", how="left")
    out["group_changed_at"] = pd.Series([_when(t) for t in out["group_changed_at"]], dtype=object)
    rank = {name: i for i, name in enumerate(names)}
    out["_rank"] = [rank.get(g, len(rank)) if isinstance(g, str) else len(rank) + 1 for g in out["group"]]
    out["_spend"] = out["monetary_e4"].fillna(-1)
    out = out.sort_values(["_rank", "_spend", "customer_key"], ascending=[True, False, True], kind="stable")
    for i, dim in enumerate(("r_score", "f_score", "m_score")):
        out[dim] = [int(s[i]) if isinstance(s, str) and len(s) == 3 else None for s in out["rfm_score"]]
    return out.drop(columns=["_rank", "_spend"]).reset_index(drop=True), b


def _values(config: Any, frame: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """customer_key, recency_days, frequency, monetary_e4 (the window's, as the report shows them)."""
    if frame.empty:
        return pd.DataFrame(columns=["customer_key", "recency_days", "frequency", "monetary_e4"])
    days = engine.recency_days(frame["last_order_at"], as_of, config.shop.zone)
    return pd.DataFrame(
        {
            "customer_key": frame["customer_key"].to_numpy(dtype=object),
            "recency_days": days.to_numpy(),
            "frequency": frame["frequency"].to_numpy(),
            "monetary_e4": frame["monetary_e4"].to_numpy(),
        }
    )


COLUMNS = ["customer_key", "email", "group", "previous_group", "group_changed_at", *engine.FIGURE_COLUMNS, "status"]


def money_text(e4: Any) -> str | None:
    """Money ×10⁴ as exact decimal text, at least two decimals: ``812.40``, ``12.3456``."""
    if e4 is None or e4 != e4:
        return None
    v = Decimal(int(e4)) / MONEY_SCALE
    cents = v.quantize(Decimal("0.01"))
    return str(cents) if v == cents else str(v.normalize())


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain values (times as ISO-8601 UTC, money as exact decimal text) in :data:`COLUMNS` order."""
    out = []
    for r in frame.to_dict("records"):

        def plain(v: Any) -> Any:
            return None if v is None or (not isinstance(v, (str, dict, list)) and pd.isna(v)) else v

        changed = plain(r.get("group_changed_at"))
        out.append(
            {
                "customer_key": r["customer_key"],
                "email": plain(r.get("email")),
                "group": plain(r.get("group")),
                "previous_group": plain(r.get("previous_group")),
                "group_changed_at": changed.isoformat(timespec="seconds") if changed is not None else None,
                "recency_days": None if plain(r.get("recency_days")) is None else int(r["recency_days"]),
                "frequency": None if plain(r.get("frequency")) is None else int(r["frequency"]),
                "monetary": money_text(plain(r.get("monetary_e4"))),
                **{k: None if plain(r.get(k)) is None else int(r[k]) for k in ("r_score", "f_score", "m_score")},
                "rfm_score": plain(r.get("rfm_score")),
                "status": r["status"],
            }
        )
    return out


# ---------------------------------------------------------------------- explain
DIM_SCORE = {"recency": "r_score", "frequency": "f_score", "monetary": "m_score"}


@dataclass
class Move:
    dimension: str
    score_from: int
    score_to: int
    needs: str  # what value it takes, in words
    group: str | None  # the group the engine gives then (other values unchanged)


@dataclass
class Explanation:
    customer_key: str
    email: str | None
    status: str  # scored | cleared | not scored yet
    group: str | None = None
    previous_group: str | None = None
    changed_at: datetime | None = None
    basis: Basis | None = None
    values: dict[str, Any] = field(default_factory=dict)  # dimension -> value (days, orders, money ×10⁴)
    value_text: dict[str, str] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)  # dimension -> stored score
    plain_scores: dict[str, int] = field(default_factory=dict)  # without the hysteresis margin
    cuts: dict[str, list[str]] = field(default_factory=dict)  # dimension -> readable cut points
    bands: dict[str, str] = field(default_factory=dict)  # dimension -> where the value lies against them
    rfm_score: str | None = None
    scheme_rule: str = ""  # how the scheme turns the scores into its group
    segment_rule: str | None = None  # which [[rfm.segments]] rule matched (when rules are set)
    moves: list[Move] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    orders: dict[str, int] = field(default_factory=dict)  # for a customer without a group: stored orders by kind
    windows: dict[str, str] = field(default_factory=dict)  # dimension -> the days its value counts, in words


def find_customer(store: Store, given: str) -> str:
    """The customer_key for ``given``: a key, else an email address, else a shop's customer id."""
    with store.engine.connect() as conn:
        for q in (
            sa.select(customers.c.customer_key).where(customers.c.customer_key == given),
            sa.select(orders.c.customer_key).where(orders.c.customer_key == given).limit(1),
            sa.select(customers.c.customer_key).where(sa.func.lower(customers.c.email) == given.strip().lower()),
            sa.select(orders.c.customer_key).where(orders.c.source_customer_id == given).limit(1),
        ):
            keys = sorted({k for (k,) in conn.execute(q)})
            if len(keys) == 1:
                return keys[0]
            if len(keys) > 1:
                raise LookupError_(
                    f"{given!r} matches {len(keys)} customers ({', '.join(keys[:5])}); "
                    "give one customer key as `rfm-sync customers` lists it"
                )
    raise LookupError_(
        f"no customer {given!r} in the store (give a customer key as `rfm-sync customers` lists it, "
        "an email address or the shop's customer id)"
    )


def _frame_for(config: Any, row: pd.Series, as_of: date, **change: Any) -> pd.DataFrame:
    """A one-row aggregates frame from ``row``, with ``recency_days``/``add_orders``/``add_spend_e4`` changed."""
    frame = row.to_frame().T.reset_index(drop=True)
    for col in frame.columns:
        if col.startswith(("frequency", "monetary_e4", "orders")):
            frame[col] = frame[col].astype("int64")
    if "recency_days" in change:  # the last order that many days before as_of, at local noon
        local = datetime.combine(as_of - timedelta(days=int(change["recency_days"])), time(12), config.shop.zone)
        frame["last_order_at"] = pd.to_datetime([local], utc=True)
    else:
        frame["last_order_at"] = pd.to_datetime(frame["last_order_at"], utc=True)
    for col in [c for c in frame.columns if c.startswith("frequency")]:
        frame[col] = frame[col] + int(change.get("add_orders", 0))
    for col in [c for c in frame.columns if c.startswith("monetary_e4")]:
        frame[col] = frame[col] + int(change.get("add_spend_e4", 0))
    return frame


class Scorer(Protocol):
    """One customer's frame scored with the basis's cut points, as the result's row; ``margin=False``
    scores it without the hysteresis margin of their stored group."""

    def __call__(self, frame: pd.DataFrame, *, margin: bool = True) -> pd.Series: ...


def _scorer(config: Any, b: Basis, previous: str | None) -> Scorer:
    rfm, zone = config.rfm, config.shop.zone
    prev = pd.Series([previous], index=["?"], dtype=object) if previous and rfm.hysteresis else None

    def score(frame: pd.DataFrame, *, margin: bool = True) -> pd.Series:
        frame = frame.assign(customer_key="?")
        result = engine.score_customers(
            frame, b.as_of, rfm, zone=zone, cut_points=b.cut_points, previous=prev if margin else None
        )
        return result.frame.iloc[0]

    return score


def _search(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest v in [lo, hi] with ok(v) (ok monotone: False … False True … True), else None."""
    if not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def explain(config: Any, store: Store, given: str) -> Explanation:
    key = find_customer(store, given)
    rfm = config.rfm
    with store.engine.connect() as conn:
        email = conn.execute(sa.select(customers.c.email).where(customers.c.customer_key == key)).scalar()
    state = _state(store, customer_state.c.customer_key == key)
    b = basis(config, store)
    as_of = b.as_of if b else config.today()
    agg = aggregates(config, store, as_of, [key])
    if state.empty or b is None:
        return _without_group(config, store, key, email, b, agg)
    s = state.iloc[0]
    out = Explanation(
        customer_key=key,
        email=email,
        status="scored",
        group=s["group"],
        previous_group=s["previous_group"],
        changed_at=parse_time(s["group_changed_at"]),
        basis=b,
        rfm_score=s["rfm_score"],
    )
    if str(s["run_id"]) != str(b.run_id) and int(s["run_id"]) > b.run_id:
        out.notes.append(f"their group was last written by run {s['run_id']} (a re-score of a few customers)")
    if agg.empty:
        out.notes.append(
            f"the store has no qualifying order of theirs as of {as_of} any more: the next run clears "
            "their RFM properties"
        )
        return out
    row = agg.iloc[0]
    score = _scorer(config, b, s["rfm_score"])
    now = score(_frame_for(config, row, as_of))
    plain = score(_frame_for(config, row, as_of), margin=False)
    columns, cuts = value_columns(rfm), cut_values(rfm, b.cut_points)
    out.values = {
        "recency": int(now["recency_days"]),
        "frequency": int(now[columns["frequency"]]),
        "monetary": int(now[columns["monetary"]]),
    }
    out.value_text = {
        "recency": f"{out.values['recency']:,} days since the last order "
        f"({pd.Timestamp(row['last_order_at']).tz_convert(config.shop.zone).date()})",
        "frequency": f"{out.values['frequency']:,} qualifying order"
        f"{'s' if out.values['frequency'] != 1 else ''} in the window",
        "monetary": f"{money_text(out.values['monetary'])} spent in the window",
    }
    out.windows = dict.fromkeys(DIM_SCORE, "the window")
    if rfm.scheme == thresholds_scheme.NAME:
        for dim in ("frequency", "monetary"):
            days = getattr(rfm.thresholds, dim).window_days
            if days:
                out.windows[dim] = f"the last {days} days"
                out.value_text[dim] = out.value_text[dim].replace("the window", out.windows[dim])
    out.scores = {dim: int(now[c]) for dim, c in DIM_SCORE.items()}
    out.plain_scores = {dim: int(plain[c]) for dim, c in DIM_SCORE.items()}
    out.cuts = {dim: [readable(dim, c) for c in cuts.get(dim, [])] for dim in DIM_SCORE}
    out.bands = {dim: _band(rfm, dim, out.values[dim], cuts.get(dim, []), out.scores[dim]) for dim in DIM_SCORE}
    if now["rfm_group"] != s["group"] or now["rfm_score"] != s["rfm_score"]:
        out.notes.append(
            f"scored again now, their values give {now['rfm_score']} {now['rfm_group']!r}, not the "
            f"stored {s['rfm_score']} {s['group']!r}: orders changed since run {b.run_id}; the next "
            "run moves them"
        )
    if out.plain_scores != out.scores:
        out.notes.append(
            f"the hysteresis margin ({rfm.hysteresis}) keeps a score until a value passes a cut point "
            f"by that fraction: without it they would score "
            f"{''.join(str(out.plain_scores[d]) for d in DIM_SCORE)}"
        )
    out.scheme_rule = _scheme_rule(rfm, now)
    if rfm.segments:
        index = segments.first_match(now.to_frame().T, rfm.segments)[0]
        rule = segments.normalise(rfm.segments)[index - 1] if index else None
        out.segment_rule = (
            f"segment rule {index} {rule.name!r} matched (when "
            f"{', '.join(f'{k} = {sorted(v, key=str)}' for k, v in rule.when.items()) or 'no conditions'}); "
            f"rules before it did not"
            if rule
            else f"no [[rfm.segments]] rule matched: the fallback {rfm.fallback_segment!r}"
        )
    out.moves = _moves(config, row, as_of, score, out, b)
    return out


def _band(rfm: Any, dim: str, value: int, cuts: list, score: int) -> str:
    """The cut points as the score steps they make, in words ("3 at ≤ 180 days, 2 at ≤ 365, else 1")."""
    if not cuts:
        return "no cut points (no customers had an order in the window when they were computed)"
    text = [readable(dim, c) for c in cuts]
    unit = " days" if dim == "recency" else ""
    fixed = (
        " (fixed)" if rfm.scheme == thresholds_scheme.NAME or (dim == "recency" and rfm.scheme == klaviyo.NAME) else ""
    )
    top = len(cuts) + 1
    if dim == "recency" and rfm.scheme != classic11.NAME:  # a label or score per "at most N days"
        steps = [f"{top - i} at ≤ {t}{unit}" for i, t in enumerate(text)]
    elif dim == "recency":  # quintiles of days: fewer days than a cut point scores higher
        steps = [f"{top - i} below {t}{unit}" for i, t in enumerate(text)]
    else:
        steps = [f"{i + 2} above {t}" for i, t in enumerate(text)]
        return f"scores 1 up to {text[0]}, " + ", ".join(steps) + fixed
    return "scores " + ", ".join(steps) + ", else 1" + fixed


def _scheme_rule(rfm: Any, row: pd.Series) -> str:
    code = str(row["rfm_score"])
    if rfm.scheme == klaviyo.NAME:
        group = klaviyo.GROUP_OF[code]
        return f"score {code} is one of {group}'s scores ({' '.join(klaviyo.GROUPS[group])}) in the klaviyo scheme"
    if rfm.scheme == classic11.NAME:
        fm = int(row["fm_score"])
        group = classic11.GROUP_OF[f"{int(row['r_score'])}{fm}"]
        return (
            f"FM = ceil((F + M) / 2) = {fm}; (R, FM) = {int(row['r_score'])}{fm} is one of {group}'s pairs "
            f"({' '.join(classic11.GROUPS[group])}) in the classic11 scheme"
        )
    labels = " / ".join(str(row[f"{d}_label"]) for d in ("recency", "frequency", "monetary"))
    return f"labels {labels} (scores {code}) in the thresholds scheme"


def _moves(config: Any, row: pd.Series, as_of: date, score: Scorer, out: Explanation, b: Basis) -> list[Move]:
    """Per dimension, the smallest change that raises its score by one (others unchanged), found by asking
    the engine; and the group that would give."""
    moves = []
    top = {dim: _top_score(config.rfm, dim) for dim in DIM_SCORE}
    # each lambda below is called at once, inside its own iteration (B023 cannot see that)
    for dim, col in DIM_SCORE.items():
        current = out.scores[dim]
        if current >= top[dim]:
            continue
        if dim == "recency":
            days = out.values["recency"]
            if days == 0:
                continue
            # fewer days scores higher: the largest day count that does (search over days ago, descending)
            best = _search(
                0,
                days,
                lambda d: int(score(_frame_for(config, row, as_of, recency_days=days - d))[col]) > current,  # noqa: B023
            )
            if best is None:
                continue
            need_days = days - best
            after = score(_frame_for(config, row, as_of, recency_days=need_days))
            needs = f"a last order at most {need_days:,} days before {as_of} (an order today would do)"
        elif dim == "frequency":
            cuts = cut_values(config.rfm, b.cut_points).get("frequency", [])
            limit = 2 * max([int(c) + 1 for c in cuts] + [1]) + 2  # past every cut point, with any margin
            best = _search(1, limit, lambda n: int(score(_frame_for(config, row, as_of, add_orders=n))[col]) > current)  # noqa: B023
            if best is None:
                continue
            after = score(_frame_for(config, row, as_of, add_orders=best))
            needs = f"{best:,} more qualifying order{'s' if best != 1 else ''} in {out.windows['frequency']}"
        else:
            cuts = cut_values(config.rfm, b.cut_points).get("monetary", [])
            limit = 2 * max([int(c) + 1 for c in cuts] + [1]) + 2
            best = _search(
                1,
                limit,
                lambda e4: int(score(_frame_for(config, row, as_of, add_spend_e4=e4))[col]) > current,  # noqa: B023
            )
            if best is None:
                continue
            after = score(_frame_for(config, row, as_of, add_spend_e4=best))
            needs = f"{money_text(best)} more spend in {out.windows['monetary']}"
        moves.append(
            Move(
                dimension=dim, score_from=current, score_to=int(after[col]), needs=needs, group=str(after["rfm_group"])
            )
        )
    return moves


def _top_score(rfm: Any, dim: str) -> int:
    if rfm.scheme == klaviyo.NAME:
        return 3
    if rfm.scheme == classic11.NAME:
        return 5
    return len(getattr(rfm.thresholds, dim).labels)


def _without_group(
    config: Any, store: Store, key: str, email: str | None, b: Basis | None, agg: pd.DataFrame
) -> Explanation:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                orders.c.qualifies,
                orders.c.is_test,
                orders.c.is_cancelled,
                orders.c.is_deleted,
                orders.c.amount_e4,
                orders.c.placed_at,
            ).where(orders.c.customer_key == key)
        ).all()
    kinds: dict[str, int] = {}
    as_of = b.as_of if b else config.today()
    _, end = engine.window_bounds(as_of, config.rfm.window_days, config.shop.zone)
    for r in rows:
        kind = (
            "test"
            if r.is_test
            else "cancelled"
            if r.is_cancelled
            else "deleted"
            if r.is_deleted
            else "refunded or zero amount"
            if r.amount_e4 <= 0
            else f"placed after {as_of}"
            if r.placed_at >= end
            else "qualifying"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
    if not agg.empty or b is None:
        out = Explanation(customer_key=key, email=email, status=NOT_SCORED, basis=b, orders=kinds)
        out.notes.append(
            "no run has scored them yet: the next run gives them a group"
            if b
            else "nothing has been scored yet: run `rfm-sync run --once -c CONFIG`"
        )
        return out
    gone = clearings(store, [key]).get(key)
    out = Explanation(
        customer_key=key,
        email=email,
        status=CLEARED if gone else NO_QUALIFYING,
        basis=b,
        orders=kinds,
        previous_group=gone[0] if gone else None,
        changed_at=_when(gone[1]) if gone else None,
    )
    why = (
        f"no qualifying order as of {as_of} (a qualifying order has an amount after refunds above 0 and is not a "
        "test, cancelled or deleted order)"
    )
    out.notes.append(
        f"{why}: every RFM property was cleared (set to null)"
        if gone
        else f"{why}: they have no group and no RFM properties"
    )
    out.moves = [Move(dimension="any", score_from=0, score_to=0, needs="one qualifying order", group=None)]
    return out
