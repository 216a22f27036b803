"""One cycle: pull → store → score → diff (+ outbox, one transaction) → push → acknowledge.

Where each transaction ends, and why a crash at any instant loses nothing:

1. **Pull**, per source and page: the page's orders, customers, quarantined rows *and* the
   cursor that page justifies are committed together. A crash re-reads at most one page; the
   upsert by (source, order_id) makes re-reading harmless.
2. **Score** reads the store and writes nothing.
3. **Diff**: the new customer state, one outbox row per destination for every customer whose
   properties changed, and the run record are committed in *one* transaction. A crash before the
   commit leaves the old state (the next cycle redoes the diff); after it, the outbox holds the
   change durably.
4. **Push**, per destination and batch: only the newest pending snapshot per customer is sent;
   a batch is marked ``sent`` only after the destination accepted it. A crash in between re-sends
   the batch (every send is an idempotent upsert; events carry a deterministic id).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connectors.base import (
    ConnectorContext,
    ConnectorError,
    Destination,
    FatalError,
    NotSentError,
    Order,
    ProfileUpdate,
    PullContext,
    Quarantined,
    Source,
    Transition,
)
from connectors.registry import connector_class
from connectors.validate import is_email, with_notices

from . import currency, delivery, diffing, engine, insight, secrets
from .calibration import freezable, population_of, run_population
from .config import Config, shop_rates
from .stop import StopRequested
from .store import Store, history, orders, outbox, runs, state, utcnow
from .store.schema import MONEY_SCALE

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    run_id: int
    as_of: date
    pulled: dict[str, int] = field(default_factory=dict)  # orders inserted or changed in the store
    read: dict[str, int] = field(default_factory=dict)  # orders the source gave (re-read ones too)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    scored: int = 0
    changed: int = 0
    cleared: int = 0
    group_counts: dict[str, int] = field(default_factory=dict)
    transitions: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    pushed: dict[str, int] = field(default_factory=dict)  # acknowledged by the destination
    failed: dict[str, int] = field(default_factory=dict)
    failure_reason: dict[str, str] = field(default_factory=dict)  # the first row failure's reason, per destination
    skipped: dict[str, int] = field(default_factory=dict)  # done with, nothing to send (PushResult.skipped)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cut_points: dict[str, Any] = field(default_factory=dict)
    calibrated_on: date | None = None  # the day the cut points in force were computed
    calibration_population: int | None = None  # over how many customers (None: unknown)
    durations: dict[str, float] = field(default_factory=dict)
    insight: dict[str, Any] | None = None  # what the report draws, from a full run's scores (rfm_sync/insight.py)
    stopped: bool = False  # a graceful stop ended it early (rfm_sync/stop.py)

    @property
    def status(self) -> str:
        """The run's outcome: ``partial`` if a source or destination failed, else ``stopped`` or ``ok``."""
        return "partial" if self.errors else "stopped" if self.stopped else "ok"

    def counts(self) -> dict[str, Any]:
        """What the cycle read, scored and sent: in the run's stats and the daemon's "cycle done" line."""
        return {
            "pulled": self.pulled,
            "quarantined": len(self.quarantined),
            "scored": self.scored,
            "changed": self.changed,
            "cleared": self.cleared,
            "pushed": self.pushed,
            "failed": self.failed,
        }


def connector_context(config: Config, dry_run: bool = False) -> ConnectorContext:
    return ConnectorContext(zone=config.shop.zone, base_dir=config.base_dir, secret=secrets.resolve, dry_run=dry_run)


def build_sources(config: Config) -> list[Source]:
    ctx = connector_context(config)
    return [_build("source", s, ctx) for s in config.sources]


def build_destinations(config: Config, dry_run: bool = False) -> list[Destination]:
    ctx = connector_context(config, dry_run)
    return [_build("destination", d, ctx) for d in config.destinations]


def _build(kind: str, settings: Any, ctx: ConnectorContext) -> Any:
    """The connector; one that cannot even be built (a missing secret, an unreadable file) becomes an
    :class:`Unavailable` stand-in, so it fails on its own in the cycle and the others still run."""
    cls = connector_class(kind, settings.type)
    try:
        return cls(settings, ctx)
    except sa.exc.SQLAlchemyError:
        raise
    except Exception as exc:
        return Unavailable(settings, exc)


class Unavailable:
    """Stands in for a source or destination whose constructor failed; pulling or pushing re-raises
    that error, which the cycle records as this connector's failure."""

    batch_size = 1

    def __init__(self, settings: Any, error: Exception):
        self.settings, self.name, self.error = settings, settings.name, error

    def __repr__(self) -> str:
        return f"Unavailable({self.name!r})"

    def pull(self, context: PullContext):
        raise self.error

    def push(self, updates: list[ProfileUpdate]):
        raise self.error

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        return [
            (
                f"{self.name}: cannot be set up: {connector_fault(self.name, self.error)}",
                "fix the setting, secret or file it names",
            )
        ]


def scoring_input(config: Config, store: Store, as_of: date, keys: set[str] | None = None) -> pd.DataFrame:
    """The per-customer aggregates the engine scores as of ``as_of``: the ``[rfm]`` window and the
    scheme's extra windows, in the shop's time zone. ``keys``: only these customers."""
    rfm, zone = config.rfm, config.shop.zone
    window_start, end = engine.window_bounds(as_of, rfm.window_days, zone)
    extra = {name: engine.window_bounds(as_of, days, zone)[0] for name, days in engine.windows(rfm).items()}
    return orders.aggregate(store, end, window_start, keys, windows=extra)


def shared_email_warning(count: int) -> str:
    """The run's warning when customers share an email address under ``merge_by = "customer_id"``."""
    return (
        f"{count:,} email address{'es' if count != 1 else ''} belong{'' if count != 1 else 's'} to more than one "
        "customer (an account and a guest's orders, say): a destination that matches profiles by email "
        '(Klaviyo, Mailchimp) keeps whichever of them changed last; [identity] merge_by = "email" makes them '
        "one customer (the Shopify write-back then skips them: it needs customer ids)"
    )


def customer_key(order: Order, merge_by: str) -> str:
    if merge_by == "email" and order.email:
        email = order.email.strip().lower()
        if is_email(email):
            return "email:" + email
    return order.customer_id


def _e4(amount: Decimal) -> int:
    return int((amount * MONEY_SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def order_row(
    order: Order, key: str, now: datetime, rates: currency.Rates | None = None, zone: Any = None
) -> dict[str, Any]:
    """The store row of an order, its amount in the shop currency (``rates``: see
    :mod:`rfm_sync.currency`; raises :class:`currency.NoRate` for a currency without a rate)."""
    money = currency.to_shop(rates or currency.Rates(), order.amount, order.currency, order.placed_at, zone or UTC)
    amount_e4 = _e4(money.amount)
    return {
        "source": order.source,
        "order_id": order.order_id,
        "customer_key": key,
        "source_customer_id": order.customer_id,
        "email": order.email,
        "phone": order.phone,
        "placed_at": order.placed_at,
        "updated_at": order.updated_at,
        "amount_e4": amount_e4,
        "currency": money.currency,
        "original_currency": money.original_currency,
        "original_amount_e4": None if money.original_amount is None else _e4(money.original_amount),
        "status": order.status,
        "is_test": order.is_test,
        "is_cancelled": order.is_cancelled,
        "is_deleted": order.is_deleted,
        "qualifies": amount_e4 > 0 and not (order.is_test or order.is_cancelled or order.is_deleted),
        "ingested_at": now,
    }


@dataclass
class Rows:
    """The store rows of a batch of pulled records: the newest row of each order, each customer's
    contact, and the records quarantined (bad ones, and orders in a currency without a rate)."""

    orders: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad: list[dict[str, Any]] = field(default_factory=list)


def rows_of(
    records: Iterable[Order | Quarantined], merge_by: str, now: datetime, rates: currency.Rates, zone: Any
) -> Rows:
    """The store rows of these records (a later record of the same order wins unless it is older)."""
    out = Rows()
    for rec in records:
        if isinstance(rec, Quarantined):
            out.bad.append({"source": rec.source, "location": rec.location, "reason": rec.reason, "raw": rec.raw})
            continue
        key = customer_key(rec, merge_by)
        try:
            row = order_row(rec, key, now, rates, zone)
        except currency.NoRate as exc:  # never summed raw: kept with its reason
            out.bad.append(
                {
                    "source": rec.source,
                    "location": f"order {rec.order_id}",
                    "reason": str(exc),
                    "raw": f"{rec.amount} {rec.currency}",
                }
            )
            continue
        previous = out.orders.get((rec.source, rec.order_id))
        if previous is None or (rec.updated_at or now) >= (previous["updated_at"] or now):
            out.orders[(rec.source, rec.order_id)] = row
        if rec.email or rec.phone or key not in out.customers:
            out.customers[key] = {"customer_key": key, "email": rec.email, "phone": rec.phone, "updated_at": now}
    return out


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        sources: list[Source] | None = None,
        destinations: list[Destination] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.config = config
        self.store = store
        self.sources = sources if sources is not None else build_sources(config)
        self.destinations = destinations if destinations is not None else build_destinations(config)
        self.clock = clock

    # ------------------------------------------------------------------ 1. pull
    def pull(self, run_id: int | None, report: CycleReport, touched: set[str] | None = None) -> None:
        """Read every source's new pages into the store, each page with its cursor in one transaction.
        ``touched``: add the customers of the orders read, and those an order left (see
        :func:`orders.stored_keys`), for a rescore of only them (:meth:`run_incremental`)."""
        merge_by = self.config.identity.merge_by
        rates, zone = shop_rates(self.config), self.config.shop.zone
        for source in self.sources:
            context = PullContext(cursor=orders.get_cursor(self.store, source.name), started_at=self.clock())
            count = given = 0
            stop: StopRequested | None = None
            seen = currency.store_currencies(self.store) if rates.currency is None else set()
            try:
                for page in source.pull(context):
                    # an order's notices are listed as quarantined
                    rows = rows_of(with_notices(page.records), merge_by, self.clock(), rates, zone)
                    if rates.currency is None:
                        currency.check_page(source.name, seen, rows.orders.values())
                    if touched is not None:
                        touched.update(rows.customers, orders.stored_keys(self.store, list(rows.orders)))
                    count += self._write_rows(rows, run_id, None if page.cursor is None else (source.name, page.cursor))
                    given += len(rows.orders)
                    report.quarantined.extend(rows.bad)
            except StopRequested as exc:  # not a failure: counted below, then the cycle ends
                stop = exc
            except ConnectorError as exc:
                report.errors[source.name] = connector_fault(source.name, exc)
                log.error("pull failed: %s", exc, extra={"source": source.name, "error": str(exc)})
            except sa.exc.SQLAlchemyError:
                raise  # the store, not the source: the cycle stops (nothing half-written)
            except Exception as exc:  # e.g. an OSError reading a file: this source's failure, not the cycle's
                unexpected_fault(report, "source", source.name, exc, "pull failed: %s")
            report.pulled[source.name], report.read[source.name] = count, given
            if stop is not None:
                raise stop
        self._check_quarantine_share(report)

    def _write_rows(self, rows: Rows, run_id: int | None, cursor: tuple[str, str] | None = None) -> int:
        """Store ``rows`` and, with them, a source's new ``cursor`` (source, cursor) in one transaction.
        Returns how many orders were inserted or changed."""
        with self.store.begin() as conn:
            stored = orders.upsert_orders(conn, list(rows.orders.values()))
            orders.upsert_customers(conn, list(rows.customers.values()))
            orders.add_quarantine(conn, run_id, rows.bad)
            if cursor is not None:
                orders.set_cursor(conn, *cursor)
        return stored

    def _check_quarantine_share(self, report: CycleReport) -> None:
        """Too many rows quarantined makes the run partial: a broken export must not look like a quiet day."""
        bad, read = len(report.quarantined), sum(report.read.values()) + len(report.quarantined)
        limit = self.config.pull.max_quarantine_share
        if read and bad / read > limit:
            report.errors["quarantine"] = (
                f"{bad:,} of {read:,} rows read ({bad / read:.0%}) were quarantined, "
                f"more than pull.max_quarantine_share ({limit:.0%}); see `rfm-sync status`"
            )

    # ------------------------------------------------------------------ 2. score
    def score(
        self, as_of: date, *, keys: set[str] | None = None, cut_points: dict[str, Any] | None = None
    ) -> engine.ScoreResult:
        """Score as of ``as_of`` with the frozen cut points (recalibrated when due, see
        :mod:`rfm_sync.store.state`). ``keys``: only these customers; ``cut_points``: use
        these instead of the frozen ones (e.g. the last run's). Reads the store, writes nothing.

        Fresh cut points are marked for freezing (``new_calibration``) only when computed over the
        whole shop and at least ``min_calibration_customers`` customers (:mod:`rfm_sync.calibration`)."""
        rfm = self.config.rfm
        zone = self.config.shop.zone
        currency.check_store(self.store, shop_rates(self.config))  # one currency per sum, or stop
        aggregates = scoring_input(self.config, self.store, as_of, keys)
        frozen, calibrated_on, population = cut_points, None, None
        quantiles = engine.SCHEMES[rfm.scheme].USES_QUANTILES
        count = population_of(aggregates) if keys is None else None  # the population a calibration would have
        if frozen is None and quantiles:
            calibration = state.current_calibration(self.store, rfm.scheme, rfm.window_days)
            if calibration is not None and not state.is_due(  # none stored is due
                calibration,
                as_of,
                rfm.recalibrate_days,
                population=count,
                population_change=rfm.recalibrate_population_change,
            ):
                frozen, calibrated_on, population = (
                    calibration["cut_points"],
                    calibration["as_of"],
                    calibration["population"],
                )
        previous = state.previous_scores(self.store) if rfm.hysteresis else None
        result = engine.score_customers(aggregates, as_of, rfm, zone=zone, cut_points=frozen, previous=previous)
        if (
            keys is None
            and self.config.identity.merge_by == "customer_id"
            and (shared := orders.shared_emails(self.store))
        ):
            result.warnings.append(shared_email_warning(shared))
        computed = frozen is None and quantiles and keys is None  # fresh cut points over the whole shop
        result.new_calibration = computed and count is not None and freezable(count, rfm)
        result.calibrated_on = as_of if computed else calibrated_on
        result.calibration_population = count if computed else population
        return result

    # ------------------------------------------------------------------ 3. diff
    def diff(
        self, run_id: int, result: engine.ScoreResult, report: CycleReport, *, only: set[str] | None = None
    ) -> None:
        """``only``: the result covers just these customers (the others keep their state).

        Vectorised (:mod:`rfm_sync.diffing`); state, outbox rows, the group changes
        (:mod:`.store.history`), the run record and a new calibration are written in one transaction."""
        now = self.clock()
        rfm = self.config.rfm
        frame = result.frame
        state_keys = None if only is None else set(only) | set(frame["customer_key"])
        stored = state.load_state_frame(self.store, state_keys)
        label_names = {dim: getattr(rfm.label_properties, dim) for dim in result.labels}
        changes = diffing.compute(
            frame,
            stored,
            names=self.config.properties,
            labels=result.labels,
            label_names=label_names,
            now=now,
            run_id=run_id,
            only=only,
        )
        out = changes.outbox
        contacts = orders.contacts_frame(self.store, out["customer_key"].tolist())
        out["payload"] = diffing.payloads(out, contacts, run_id)
        rows = diffing.outbox_rows(out, [d.name for d in self.destinations], run_id)
        for transition, n in changes.transitions.items():
            report.transitions[transition] = report.transitions.get(transition, 0) + n
        report.scored, report.changed, report.cleared = len(frame), changes.changed, len(changes.gone)
        counts = frame["rfm_group"].astype(object).value_counts()
        report.group_counts = {str(g): int(n) for g, n in counts.items() if n}
        report.cut_points, report.warnings = result.cut_points, result.warnings
        report.calibrated_on = result.calibrated_on
        report.calibration_population = result.calibration_population
        if only is None:  # a few re-scored customers say nothing of the whole shop's groups
            report.insight = insight.snapshot(frame, rfm, result.cut_points)
        stats = self._stats(report)
        with self.store.begin() as conn:
            state.write_state(conn, changes.state)
            state.delete_state(conn, changes.gone)
            outbox.enqueue(conn, rows)
            history.record(conn, out, scheme=rfm.scheme, as_of=report.as_of, changed_at=now, run_id=run_id)
            if result.new_calibration:
                assert result.calibrated_on is not None and result.calibration_population is not None, (
                    "score() sets both with new_calibration"
                )
                state.add_calibration(
                    conn,
                    rfm.scheme,
                    rfm.window_days,
                    result.calibrated_on,
                    result.cut_points,
                    run_id,
                    result.calibration_population,
                )
            runs.finish_run(
                conn,
                run_id,
                status="scored",
                stats=stats,
                group_counts=report.group_counts,
                cut_points=result.cut_points,
                warnings=result.warnings,
            )

    # ------------------------------------------------------------------ 4. push
    def push(self, report: CycleReport, *, dry_run: bool = False) -> dict[str, dict[str, Any]] | None:
        """Send pending outbox rows. ``dry_run``: send nothing and mark nothing; return, per
        destination, what would be sent (counts and a sample with masked emails)."""
        if dry_run:
            return {dest.name: self._preview(dest) for dest in self.destinations}
        for dest in self.destinations:
            sent = failed = skipped = 0
            stop: StopRequested | None = None
            try:
                # first what a destination may already have (handed over, never acknowledged: a crash),
                # exactly as it was, so its events keep their ids; then the newest pending snapshots
                for status in ("sending", "pending"):
                    if status == "pending":
                        outbox.supersede(self.store, dest.name)
                    after = 0
                    while batch := outbox.next_batch(self.store, dest.name, after, dest.batch_size, status=status):
                        first_after, after = after, batch[-1]["id"]
                        self._as_destination_knows(dest.name, batch)
                        if status == "pending":
                            outbox.mark_sending(self.store, dest.name, first_after, after)
                        # a push that raises leaves its rows "sending" like a crash does: a lost answer
                        # (reset after the work, retries used up) may hide a delivery, so they are resent
                        # first, as they are, and never folded into a newer snapshot
                        try:
                            result = dest.push([update_from_row(r) for r in batch])
                        except (NotSentError, StopRequested):
                            if status == "pending":  # refused before anything left: pending again
                                outbox.mark_unsent(self.store, dest.name, first_after, after)
                            raise
                        accepted = set(result.accepted)
                        memory = [self._memory_row(dest.name, r) for r in batch if r["id"] in accepted]
                        whole = not result.failed and accepted == {r["id"] for r in batch}
                        if whole and status == "pending":
                            outbox.mark_batch_sent(self.store, dest.name, first_after, after, memory)
                        else:
                            outbox.mark_sent(self.store, result.accepted, memory)
                        if result.failed:
                            outbox.mark_failed(self.store, result.failed, self.config.push.max_attempts)
                        nothing = accepted & set(result.skipped)
                        sent += len(accepted) - len(nothing)
                        skipped += len(nothing)
                        failed += len(result.failed)
                        if result.failed and dest.name not in report.failure_reason:
                            report.failure_reason[dest.name] = next(iter(result.failed.values()))
                        if not whole and len(accepted) + len(result.failed) < len(batch):
                            break  # rows the destination said nothing about stay "sending": resent first next time
                    else:
                        continue
                    break
            except StopRequested as exc:  # not a failure: counted below, then the cycle ends
                stop = exc
            except ConnectorError as exc:
                report.errors[dest.name] = connector_fault(dest.name, exc)
                level = logging.ERROR if isinstance(exc, FatalError) else logging.WARNING
                log.log(level, "push stopped: %s", exc, extra={"destination": dest.name, "error": str(exc)})
            except sa.exc.SQLAlchemyError:
                raise
            except Exception as exc:  # e.g. OSError in the file sink: this destination's failure
                unexpected_fault(report, "destination", dest.name, exc, "push stopped: %s")
            report.pushed[dest.name], report.failed[dest.name] = sent, failed
            if skipped:
                report.skipped[dest.name] = skipped
            if stop is not None:
                raise stop
        return None

    def _as_destination_knows(self, destination: str, batch: list[dict[str, Any]]) -> None:
        """Reconcile each row's payload with what this destination was last sent (:mod:`rfm_sync.delivery`)."""
        stored = outbox.memory(self.store, destination, [r["customer_key"] for r in batch])
        known = {key: delivery.memory_from_row(row) for key, row in stored.items()}
        names = self.config.properties
        for r in batch:  # in order: a later row of the same customer follows what the earlier one sends
            key = r["customer_key"]
            r["payload"] = delivery.for_destination(key, r["id"], r["payload"], known.get(key), names)
            known[key] = delivery.sent_memory(r["payload"], names)

    def _memory_row(self, destination: str, row: dict[str, Any]) -> dict[str, Any]:
        m = delivery.sent_memory(row["payload"], self.config.properties)
        return {
            "destination": destination,
            "customer_key": row["customer_key"],
            "rfm_group": m.group,
            "previous_group": m.previous_group,
            "group_changed_at": m.group_changed_at,
            "labels": json.dumps(m.labels, sort_keys=True) if m.labels is not None else None,
            "outbox_id": row["id"],
        }

    def _preview(self, dest: Destination, sample: int = 5) -> dict[str, Any]:
        """Read-only: the newest pending snapshot per customer, as the next push would send it."""
        newest: dict[str, dict[str, Any]] = {}
        after = 0
        while batch := outbox.next_batch(self.store, dest.name, after, 10_000):
            after = batch[-1]["id"]
            self._as_destination_knows(dest.name, batch)
            newest.update((r["customer_key"], r) for r in batch)
        updates = [update_from_row(r) for r in sorted(newest.values(), key=lambda r: r["id"])]
        transitions = [u.transition for u in updates if u.transition is not None]

        def masked(email: str | None) -> str:
            return insight.mask_email(email) or "(no email)"

        return {
            "profiles": len(updates),
            "batches": -(-len(updates) // dest.batch_size),
            "group_changes": len(transitions),
            "cleared": sum(t.to_group is None for t in transitions),
            "sample": [
                {
                    "email": masked(u.email),
                    "change": f"{u.transition.from_group or '(new)'} -> {u.transition.to_group or '(none)'}"
                    if u.transition
                    else "properties only",
                    "properties": len(u.properties),
                }
                for u in updates[:sample]
            ],
        }

    # ------------------------------------------------------------------ the cycle
    def run_cycle(self, as_of: date | None = None, *, pull: bool = True, push: bool = True) -> CycleReport:
        as_of = as_of or self.config.today(self.clock())
        run_id = runs.start_run(self.store, as_of, self.config.rfm.scheme)
        report = CycleReport(run_id=run_id, as_of=as_of)
        with self._failed_run(report):
            for step, fn in (
                ("pull", lambda: self.pull(run_id, report) if pull else None),
                ("score+diff", lambda: self.diff(run_id, self.score(as_of), report)),
                ("push", lambda: self.push(report) if push else None),
            ):
                started = time.perf_counter()
                fn()
                report.durations[step] = round(time.perf_counter() - started, 3)
                log.info(
                    "cycle step done",
                    extra={"step": step, "seconds": report.durations[step], "run": run_id, **step_counts(step, report)},
                )
        self._finish_run(report)
        return report

    @contextmanager
    def _failed_run(self, report: CycleReport) -> Iterator[None]:
        """A run whose work raises is recorded ``failed`` with the error, and the error goes on. A
        graceful stop is no failure: the work ends there and the report is marked ``stopped``
        (:mod:`rfm_sync.stop`), what is not sent yet stays pending for the next cycle."""
        try:
            yield
        except StopRequested:
            report.stopped = True
            log.info(
                "cycle stopped: a stop was requested; what is not sent stays pending for the next cycle",
                extra={"run": report.run_id},
            )
        except Exception as exc:
            with self.store.begin() as conn:
                runs.finish_run(
                    conn,
                    report.run_id,
                    status="failed",
                    stats=self._stats(report),
                    error=f"{type(exc).__name__}: {exc}"[:1000],
                )
            raise

    def _finish_run(self, report: CycleReport, **recorded: Any) -> None:
        """Record the run ``ok``, ``stopped``, or ``partial`` with its errors (``recorded``: more columns to set)."""
        with self.store.begin() as conn:
            runs.finish_run(
                conn,
                report.run_id,
                status=report.status,
                stats=self._stats(report),
                error="; ".join(f"{k}: {v}" for k, v in report.errors.items()) or None,
                **recorded,
            )

    @staticmethod
    def _stats(report: CycleReport) -> dict[str, Any]:
        return {
            **report.counts(),
            "skipped": report.skipped,
            "durations": report.durations,
            "calibrated_on": report.calibrated_on.isoformat() if report.calibrated_on else None,
            "calibration_population": report.calibration_population,
            "transitions": insight.transitions_json(report.transitions),
            **({"insight": report.insight} if report.insight is not None else {}),
        }

    # ------------------------------------------------------------------ near real time (webhooks)
    def last_scored_run(self, *, stopped: bool = True) -> dict[str, Any] | None:
        """The newest ok/partial (or, with ``stopped``, stopped after its diff) run of this scheme that
        recorded cut points and group counts."""
        statuses = ("ok", "partial", "stopped") if stopped else ("ok", "partial")
        for run in runs.recent_runs(self.store, 100):
            if (
                run["status"] in statuses
                and run["scheme"] == self.config.rfm.scheme
                and run.get("cut_points")
                and run.get("group_counts") is not None
            ):
                return run
        return None

    def rescore_orders(self, received: list[Order], as_of: date | None = None) -> CycleReport:
        """Store these orders (from webhooks), then score, diff and push only their customers with the
        cut points of the last scored run. Without such a run, or when its cut points were computed
        over no customers (they are empty), a full cycle without pull."""
        now, rates = self.clock(), shop_rates(self.config)
        rows = rows_of(received, self.config.identity.merge_by, now, rates, self.config.shop.zone)
        if rates.currency is None:
            currency.check_page("webhooks", currency.store_currencies(self.store), rows.orders.values())
        # an order moved to another customer (a reassigned or merged customer) changes the one it left too
        left = orders.stored_keys(self.store, list(rows.orders))
        stored = self._write_rows(rows, None)
        base = self.last_scored_run()
        if base is None or run_population(base) == 0:
            return self.run_cycle(as_of, pull=False)
        as_of = as_of or self.config.today(now)
        keys = set(rows.customers) | left
        run_id = runs.start_run(self.store, as_of, self.config.rfm.scheme)
        report = CycleReport(
            run_id=run_id, as_of=as_of, pulled={"webhooks": stored}, read={"webhooks": len(rows.orders)}
        )
        with self._failed_run(report):
            self._rescore(report, keys, base)
        return self._finish_rescore(report, keys, base)

    def run_incremental(self, as_of: date | None = None) -> CycleReport:
        """A cycle that rescores only the customers whose orders its pull read (and those an order left).

        Only when the last scored run is of the same day, with cut points computed over customers: every
        other customer's values — recency included — and cut points are then as that run left them, so
        their scores would not change. Otherwise (the first cycle of a day, no run yet) a whole cycle.
        ``tests/test_incremental.py`` shows the result equals a whole rescore with the same cut points."""
        as_of = as_of or self.config.today(self.clock())
        base = self.last_scored_run()
        if base is None or run_population(base) == 0 or base["as_of"] != as_of:
            return self.run_cycle(as_of)
        run_id = runs.start_run(self.store, as_of, self.config.rfm.scheme)
        report = CycleReport(run_id=run_id, as_of=as_of)
        touched: set[str] = set()
        with self._failed_run(report):
            started = time.perf_counter()
            self.pull(run_id, report, touched)
            report.durations["pull"] = round(time.perf_counter() - started, 3)
            self._rescore(report, touched, base)
        return self._finish_rescore(report, touched, base)

    def _rescore(self, report: CycleReport, keys: set[str], base: dict[str, Any]) -> None:
        """Score, diff and push only ``keys`` as of the report's day, with the cut points of ``base``."""
        started = time.perf_counter()
        result = self.score(report.as_of, keys=keys, cut_points=base["cut_points"])
        calibrated_on = (base.get("stats") or {}).get("calibrated_on")
        result.calibrated_on = date.fromisoformat(calibrated_on) if calibrated_on else None
        result.calibration_population = (base.get("stats") or {}).get("calibration_population")
        result.warnings = []  # eligibility is a property of the whole shop, not of a few customers
        self.diff(report.run_id, result, report, only=keys)
        report.durations["score+diff"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        self.push(report)
        report.durations["push"] = round(time.perf_counter() - started, 3)

    def _finish_rescore(self, report: CycleReport, keys: set[str], base: dict[str, Any]) -> CycleReport:
        """Record a rescore's run: the group counts are ``base``'s, moved by the rescore's transitions."""
        counts = dict(base["group_counts"])
        for (before, after), n in report.transitions.items():
            if before is not None:
                counts[before] = counts.get(before, 0) - n
            if after is not None:
                counts[after] = counts.get(after, 0) + n
        report.group_counts = {g: n for g, n in counts.items() if n > 0}
        self._finish_run(report, group_counts=report.group_counts)
        log.info(
            "customers rescored",
            extra={
                "run": report.run_id,
                "customers": len(keys),
                "changed": report.changed,
                "pushed": sum(report.pushed.values()),
            },
        )
        return report


def connector_fault(name: str, exc: BaseException) -> str:
    """One line for a connector's failure, without the connector's name (the report is keyed by it):
    a :class:`ConnectorError`'s message, an OSError's file and reason, else the type and message."""
    if isinstance(exc, ConnectorError):
        text = Exception.__str__(exc)
        return text if exc.connector in ("", name) else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}"[:500]


def unexpected_fault(report: CycleReport, kind: str, name: str, exc: Exception, message: str) -> None:
    """A source's or destination's failure that is not a :class:`ConnectorError` (an OSError, a bug):
    recorded as that connector's error in ``report`` and logged with its traceback. ``kind``
    (``source`` or ``destination``) is the log field naming it; ``message`` takes the error as ``%s``."""
    report.errors[name] = connector_fault(name, exc)
    log.error(message, report.errors[name], exc_info=exc, extra={kind: name, "error": report.errors[name]})


def step_counts(step: str, report: CycleReport) -> dict[str, int]:
    """The counts logged with each step's "cycle step done" line."""
    if step == "pull":
        return {"pulled": sum(report.pulled.values()), "quarantined": len(report.quarantined)}
    if step == "push":
        return {"pushed": sum(report.pushed.values()), "failed": sum(report.failed.values())}
    return {"scored": report.scored, "changed": report.changed, "cleared": report.cleared}


def update_from_row(row: dict[str, Any]) -> ProfileUpdate:
    p = row["payload"]
    t = p.get("transition")
    return ProfileUpdate(
        outbox_id=row["id"],
        customer_key=row["customer_key"],
        phone=p.get("phone"),
        email=p.get("email") if is_email(p.get("email")) else None,  # never send what is not an address
        properties=p["properties"],
        event_id=p.get("event_id"),
        transition=Transition(
            from_group=t["from"],
            to_group=t["to"],
            labels_before=t.get("labels_before") or {},
            labels_after=t.get("labels_after") or {},
        )
        if t
        else None,
        changed_at=datetime.fromisoformat(p["changed_at"]) if p.get("changed_at") else None,
        first_assignment=bool(p.get("first_assignment")),
    )
