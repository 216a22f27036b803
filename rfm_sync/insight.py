"""What the report shows: a small *insight* recorded by every full cycle, and the summary read back.

A report over a million customers and a year of daily runs has to be written in seconds, so it
never rescans orders nor scores anyone. Instead each full cycle records, in its run's ``stats``
JSON (no migration), what the pictures need, computed from the frame it has just scored:

* per group: customers, spend and orders in the window (revenue share, average order value);
* per dimension (the values the scheme scored: recency days, orders, spend): a histogram with a
  fixed number of bins, plus how many customers got each score;
* the run's transitions (previous → current group, with ``None`` for new and cleared customers),
  which webhook re-scores record too.

:func:`gather` reads them back — every run record, the calibration in force, one ``GROUP BY``
over ``customer_state``, the outbox backlog and a few sample rows per group — into a
:class:`Summary` that :mod:`rfm_sync.report` (terminal) and :mod:`rfm_sync.report_html` (the
page) render. Runs written before insights were recorded still give group sizes over time; what
they lack is shown as "not recorded".

Nothing here returns a full email address: samples, keys and every free text (errors, warnings)
pass through :func:`mask_text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from . import engine
from .engine import thresholds
from .masking import mask
from .store import Store, utcnow
from .store.schema import customer_state, customers, runs

BINS = 40
# runs whose state was committed ("scored": ended after its diff by a crash; "stopped": a graceful stop,
# after its diff when it has group counts)
SCORED = ("ok", "partial", "scored", "stopped")
DIMENSIONS = ("recency", "frequency", "monetary")


# ---------------------------------------------------------------------- masking
def mask_email(email: str | None) -> str:
    """``jane@example.com`` → ``j***@example.com``; no address → ``""``."""
    local, at, domain = (email or "").partition("@")
    return f"{local[:1]}***@{domain}" if at else ""


def mask_text(text: Any) -> str:
    """Any text with every email address in it masked (customer keys such as ``email:…``, errors),
    as the logs mask it (:func:`rfm_sync.masking.mask`)."""
    return mask("" if text is None else str(text))


# ---------------------------------------------------------------------- recorded by the pipeline
def value_columns(options: Any) -> dict[str, str]:
    """The frame column each dimension is scored on (scheme ``thresholds`` may give F and M their own window)."""
    if options.scheme == thresholds.NAME:
        return {
            "recency": "recency_days",
            "frequency": thresholds.value_column(options, "frequency"),
            "monetary": thresholds.value_column(options, "monetary"),
        }
    return {"recency": "recency_days", "frequency": "frequency", "monetary": "monetary_e4"}


def cut_values(options: Any, cut_points: dict[str, Any] | None) -> dict[str, list[Fraction]]:
    """The cut points in force per dimension, in the units of the values (days, orders, money ×10⁴):
    the run's quantiles, the fixed recency bounds (``klaviyo``) or the fixed thresholds."""
    cut_points = cut_points or {}
    if options.scheme == thresholds.NAME:
        return thresholds.cuts_of(options)
    out = {"recency": [Fraction(int(b)) for b in options.recency_bounds]} if options.scheme == "klaviyo" else {}
    for dim, key in (("recency", "recency_days"), ("frequency", "frequency"), ("monetary", "monetary_e4")):
        if key in cut_points:
            out[dim] = [Fraction(p) for p in cut_points[key]]
    return out


def histogram(values: np.ndarray, cuts: list[Fraction], *, low: int, bins: int = BINS) -> dict[str, Any]:
    """Equal-width integer bins from ``low``, wide enough for the 99th percentile and every cut point;
    values above go to ``over`` and values below ``low`` (no order in the window) to ``below``."""
    values = np.asarray(values, dtype=np.int64)
    inside = values[values >= low]
    top = max([float(np.percentile(inside, 99)) if len(inside) else low + 1.0] + [float(c) * 1.25 for c in cuts])
    width = max(1, int(np.ceil((top - low + 1) / bins)))
    index = np.minimum((inside - low) // width, bins)
    counts = np.bincount(index, minlength=bins + 1)
    return {
        "low": low,
        "width": width,
        "counts": [int(n) for n in counts[:bins]],
        "over": int(counts[bins]),
        "below": int(len(values) - len(inside)),
    }


def score_counts(scores: pd.Series) -> dict[str, int]:
    """Customers per score (``{"1": n, ...}``), lowest score first."""
    counts = scores.value_counts().sort_index()
    return {str(int(k)): int(n) for k, n in zip(counts.index.to_numpy(dtype=np.int64), counts.to_numpy())}


def snapshot(frame: pd.DataFrame, options: Any, cut_points: dict[str, Any] | None) -> dict[str, Any]:
    """The insight of one full run, from its scored frame (one row per customer)."""
    group = frame["rfm_group"].astype(object).to_numpy()
    per = pd.DataFrame(
        {
            "group": group,
            "spend": frame["monetary_e4"].to_numpy(dtype=np.int64),
            "orders": frame["frequency"].to_numpy(dtype=np.int64),
        }
    )
    sums = per.groupby("group", sort=False).agg(
        customers=("spend", "size"), spend=("spend", "sum"), orders=("orders", "sum")
    )
    columns, cuts = value_columns(options), cut_values(options, cut_points)
    dists = {}
    for dim in DIMENSIONS:
        values = frame[columns[dim]].to_numpy(dtype=np.int64)
        dists[dim] = histogram(values, cuts.get(dim, []), low=0 if dim == "recency" else 1)
    scores = {dim[0]: score_counts(frame[f"{dim[0]}_score"]) for dim in DIMENSIONS}
    return {
        "groups": {
            str(g): {"customers": int(r.customers), "monetary_e4": int(r.spend), "orders": int(r.orders)}
            for g, r in sums.iterrows()
        },
        "distributions": dists,
        "scores": scores,
        "columns": columns,
    }


def transitions_json(transitions: dict[tuple[str | None, str | None], int]) -> list[list[Any]]:
    return [[a, b, int(n)] for (a, b), n in sorted(transitions.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]


# ---------------------------------------------------------------------- read back
@dataclass
class RunRecord:
    id: int
    as_of: date
    status: str
    started_at: datetime
    finished_at: datetime | None
    scheme: str
    stats: dict[str, Any]
    group_counts: dict[str, int] | None
    cut_points: dict[str, Any] | None
    warnings: list[str]
    error: str | None

    @property
    def insight(self) -> dict[str, Any] | None:
        return self.stats.get("insight")

    @property
    def transitions(self) -> dict[tuple[str | None, str | None], int] | None:
        raw = self.stats.get("transitions")
        return None if raw is None else {(a, b): int(n) for a, b, n in raw}

    @property
    def seconds(self) -> float | None:
        return None if self.finished_at is None else (self.finished_at - self.started_at).total_seconds()


@dataclass
class Summary:
    scheme: str
    order: list[str]  # group display order
    generated_at: datetime
    store: str
    runs: list[RunRecord]  # every run, oldest first
    latest: RunRecord | None  # the newest scored run with group counts
    latest_insight: RunRecord | None  # the newest with an insight (distributions, revenue)
    calibrated_on: date | None
    calibration_population: int | None
    cuts: dict[str, list[Fraction]]
    frozen: bool  # cut points are quantiles frozen in the calibrations table (not fixed thresholds)
    state_moves: dict[tuple[str | None, str], int]  # Previous RFM group → Current RFM group, every customer
    state_customers: int
    backlog: dict[str, dict[str, int]]
    destinations: list[str]
    samples: dict[str, list[dict[str, Any]]]
    periods: dict[str, dict[tuple[str | None, str | None], int]] = field(default_factory=dict)
    period_runs: dict[str, int] = field(default_factory=dict)  # how many runs recorded each period's moves
    outcomes: Any = None  # rfm_sync.outcomes.Outcomes, what followed each move: the HTML page's (write_report)

    @property
    def scored_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status in SCORED and r.group_counts is not None]

    def recent(self, n: int = 20) -> list[RunRecord]:
        return self.runs[-n:][::-1]

    @property
    def cut_points_origin(self) -> str:
        """Where the cut points in force come from, as the report's caption says it."""
        if not self.frozen:
            return "fixed in the configuration"
        return f"frozen on {self.calibrated_on}" if self.calibrated_on else "computed by the last run"


def _loads(text: Any) -> Any:
    return orjson.loads(text) if text else None


def read_runs(store: Store) -> list[RunRecord]:
    q = sa.select(
        runs.c.id,
        runs.c.as_of,
        runs.c.status,
        runs.c.started_at,
        runs.c.finished_at,
        runs.c.scheme,
        runs.c.stats,
        runs.c.group_counts,
        runs.c.cut_points,
        runs.c.warnings,
        runs.c.error,
    ).order_by(runs.c.id)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        RunRecord(
            id=r.id,
            as_of=r.as_of,
            status=r.status,
            started_at=r.started_at,
            finished_at=r.finished_at,
            scheme=r.scheme,
            stats=_loads(r.stats) or {},
            group_counts=_loads(r.group_counts),
            cut_points=_loads(r.cut_points),
            warnings=_loads(r.warnings) or [],
            error=r.error,
        )
        for r in rows
    ]


def moves_between(records: list[RunRecord]) -> tuple[dict[tuple[str | None, str | None], int], int]:
    """The group changes recorded by these runs, summed (a customer who moved twice counts twice),
    and how many of the runs recorded them."""
    total: dict[tuple[str | None, str | None], int] = {}
    recorded = 0
    for run in records:
        moves = run.transitions
        if moves is None:
            continue
        recorded += 1
        for key, n in moves.items():
            total[key] = total.get(key, 0) + n
    return total, recorded


PERIODS = (("last run", 0), ("last 7 days", 7), ("last 30 days", 30), ("last 90 days", 90), ("last 365 days", 365))


def period_moves(
    scored: list[RunRecord], since: date | None = None
) -> tuple[dict[str, dict[tuple[str | None, str | None], int]], dict[str, int]]:
    """Moves per period, ending with the newest scored run; periods go by the runs' as-of days."""
    out: dict[str, dict[tuple[str | None, str | None], int]] = {}
    counts: dict[str, int] = {}
    if not scored:
        return out, counts
    end = max(r.as_of for r in scored)
    newest = max(scored, key=lambda r: (r.as_of, r.id))
    choices: list[tuple[str, list[RunRecord]]] = [("last run", [newest])]
    if since is not None:
        choices.insert(0, (f"since {since.isoformat()}", [r for r in scored if r.as_of >= since]))
    for label, days in PERIODS[1:]:
        choices.append((label, [r for r in scored if r.as_of > end - timedelta(days=days)]))
    choices.append(("every recorded run", scored))
    for label, chosen in choices:
        out[label], counts[label] = moves_between(chosen)
    return out, counts


def state_moves(store: Store) -> tuple[dict[tuple[str | None, str], int], int]:
    """Every customer's last group change as the platforms see it: Previous RFM group → Current RFM group."""
    q = sa.select(customer_state.c.previous_group, customer_state.c.current_group, sa.func.count()).group_by(
        customer_state.c.previous_group, customer_state.c.current_group
    )
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return {(a, b): int(n) for a, b, n in rows}, sum(int(n) for *_, n in rows)


def samples(store: Store, order: list[str], per_group: int = 5) -> dict[str, list[dict[str, Any]]]:
    """A few customers of each group, keys and emails masked (the most recently changed first)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for group in order:
            q = (
                sa.select(
                    customer_state.c.customer_key,
                    customers.c.email,
                    customer_state.c.rfm_score,
                    customer_state.c.previous_group,
                    customer_state.c.group_changed_at,
                )
                .select_from(
                    customer_state.outerjoin(customers, customers.c.customer_key == customer_state.c.customer_key)
                )
                .where(customer_state.c.current_group == group)
                .limit(per_group)
            )
            out[group] = [
                {
                    "customer": mask_text(r.customer_key),
                    "email": mask_email(r.email),
                    "score": r.rfm_score,
                    "previous": r.previous_group,
                    "changed": r.group_changed_at,
                }
                for r in conn.execute(q)
            ]
    return out


def gather(config: Any, store: Store, *, since: date | None = None, sample_size: int = 5) -> Summary:
    from .store.outbox import backlog
    from .store.state import current_calibration

    rfm = config.rfm
    order = engine.group_names(rfm)
    records = read_runs(store)
    scored = [r for r in records if r.status in SCORED and r.group_counts is not None]
    latest = max(scored, key=lambda r: (r.as_of, r.id), default=None)
    with_insight = [r for r in scored if r.insight]
    latest_insight = max(with_insight, key=lambda r: (r.as_of, r.id), default=None)
    extra = [g for r in scored for g in (r.group_counts or {}) if g not in order]
    order = order + list(dict.fromkeys(extra))  # groups of an earlier configuration, after today's
    basis = latest_insight or latest
    quantiles = engine.SCHEMES[rfm.scheme].USES_QUANTILES
    calibrated_on, population = None, None
    if basis is not None:
        on = basis.stats.get("calibrated_on")
        calibrated_on = date.fromisoformat(on) if on else None
        population = basis.stats.get("calibration_population")
    elif quantiles:
        calibration = current_calibration(store, rfm.scheme, rfm.window_days)
        if calibration:
            calibrated_on, population = calibration["as_of"], calibration["population"]
    moves, total = state_moves(store)
    summary = Summary(
        scheme=rfm.scheme,
        order=order,
        generated_at=utcnow(),
        store=store.where,
        runs=records,
        latest=latest,
        latest_insight=latest_insight,
        calibrated_on=calibrated_on,
        calibration_population=population,
        cuts=cut_values(rfm, basis.cut_points if basis else None),
        frozen=quantiles,
        state_moves=moves,
        state_customers=total,
        backlog=backlog(store),
        destinations=[d.name for d in config.destinations],
        samples=samples(store, order, sample_size),
    )
    summary.periods, summary.period_runs = period_moves(scored, since)
    return summary


# ---------------------------------------------------------------------- derived tables
def money(e4: int | float) -> float:
    return float(e4) / 10_000


def group_rows(summary: Summary) -> list[dict[str, Any]]:
    """Groups now: customers and share; with an insight also revenue, revenue share, orders, AOV."""
    if summary.latest is None:
        return []
    counts = summary.latest.group_counts or {}
    insight = (
        summary.latest_insight.insight
        if summary.latest_insight is not None and summary.latest_insight.id == summary.latest.id
        else None
    )
    groups = insight["groups"] if insight is not None else None
    total = sum(counts.values()) or 1
    revenue = sum(g["monetary_e4"] for g in groups.values()) if groups else 0
    out = []
    for name in summary.order:
        n = counts.get(name, 0)
        row: dict[str, Any] = {"group": name, "customers": n, "share": n / total}
        if groups is not None:
            g = groups.get(name, {"monetary_e4": 0, "orders": 0})
            row.update(
                revenue=money(g["monetary_e4"]),
                revenue_share=(g["monetary_e4"] / revenue) if revenue else 0.0,
                orders=g["orders"],
                aov=money(g["monetary_e4"] / g["orders"]) if g["orders"] else None,
            )
        out.append(row)
    return out


def buckets(summary: Summary, by: str) -> list[dict[str, Any]]:
    """Per week (Monday) or month: customers and revenue per group at the bucket's last run, and the
    net flow into each group (moves in minus moves out, new customers in, cleared out) over its runs."""
    out: dict[date, dict[str, Any]] = {}
    for run in sorted(summary.scored_runs, key=lambda r: (r.as_of, r.id)):
        start = run.as_of - timedelta(days=run.as_of.weekday()) if by == "week" else run.as_of.replace(day=1)
        b = out.setdefault(
            start, {"start": start, "customers": {}, "revenue": None, "net": {}, "moves_recorded": 0, "runs": 0}
        )
        b["runs"] += 1
        b["customers"] = dict(run.group_counts or {})
        b["last_run"] = run.id
        b["revenue"] = {g: money(v["monetary_e4"]) for g, v in run.insight["groups"].items()} if run.insight else None
        moves = run.transitions
        if moves is not None:
            b["moves_recorded"] += 1
            for (a, c), n in moves.items():
                if c is not None:
                    b["net"][c] = b["net"].get(c, 0) + n
                if a is not None:
                    b["net"][a] = b["net"].get(a, 0) - n
    return [out[k] for k in sorted(out)]


def dimension_rows(summary: Summary) -> list[dict[str, Any]]:
    """Per dimension: the histogram, the cut points in force, and the customers per score."""
    insight = summary.latest_insight.insight if summary.latest_insight else None
    rows = []
    for dim in DIMENSIONS:
        hist = insight["distributions"][dim] if insight is not None else None
        scores = insight["scores"][dim[0]] if insight is not None else {}
        rows.append(
            {
                "dimension": dim,
                "histogram": hist,
                "cuts": summary.cuts.get(dim, []),
                "scores": scores,
                "money": dim == "monetary",
            }
        )
    return rows


UNITS = {"recency": "days since the last order", "frequency": "orders in the window", "monetary": "spend in the window"}


def readable(dim: str, value: Fraction | float) -> str:
    v = float(value) / 10_000 if dim == "monetary" else float(value)
    text = f"{v:,.2f}"
    return text[:-3] if text.endswith(".00") else text
