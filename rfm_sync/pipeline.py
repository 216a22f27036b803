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

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Callable

import pandas as pd

from connectors.base import (ConnectorContext, ConnectorError, Destination, FatalError, Order, ProfileUpdate,
                             PullContext, Quarantined, Source, Transition)
from connectors.registry import connector_class

from . import engine, secrets
from .config import Config
from .properties import build_properties, cleared_properties
from .store import MONEY_SCALE, Store, utcnow
from .store import outbox_queries as ob

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    run_id: int
    as_of: date
    pulled: dict[str, int] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    scored: int = 0
    changed: int = 0
    cleared: int = 0
    group_counts: dict[str, int] = field(default_factory=dict)
    transitions: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    pushed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cut_points: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)


def connector_context(config: Config, dry_run: bool = False) -> ConnectorContext:
    return ConnectorContext(zone=config.shop.zone, base_dir=config.base_dir, secret=secrets.resolve, dry_run=dry_run)


def build_sources(config: Config) -> list[Source]:
    ctx = connector_context(config)
    return [connector_class("source", s.type)(s, ctx) for s in config.sources]


def build_destinations(config: Config, dry_run: bool = False) -> list[Destination]:
    ctx = connector_context(config, dry_run)
    return [connector_class("destination", d.type)(d, ctx) for d in config.destinations]


def customer_key(order: Order, merge_by: str) -> str:
    if merge_by == "email" and order.email:
        return "email:" + order.email.strip().lower()
    return order.customer_id


def order_row(order: Order, key: str, now: datetime) -> dict[str, Any]:
    amount_e4 = int((order.amount * MONEY_SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return {
        "source": order.source, "order_id": order.order_id, "customer_key": key,
        "source_customer_id": order.customer_id, "email": order.email, "phone": order.phone,
        "placed_at": order.placed_at, "updated_at": order.updated_at, "amount_e4": amount_e4,
        "currency": order.currency, "status": order.status, "is_test": order.is_test,
        "is_cancelled": order.is_cancelled, "is_deleted": order.is_deleted,
        "qualifies": amount_e4 > 0 and not (order.is_test or order.is_cancelled or order.is_deleted),
        "ingested_at": now,
    }


def event_id(key: str, before: str | None, after: str | None, run_id: int) -> str:
    return hashlib.sha256(f"{key}|{before}|{after}|{run_id}".encode()).hexdigest()[:32]


class Pipeline:
    def __init__(self, config: Config, store: Store, *, sources: list[Source] | None = None,
                 destinations: list[Destination] | None = None, clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.store = store
        self.sources = sources if sources is not None else build_sources(config)
        self.destinations = destinations if destinations is not None else build_destinations(config)
        self.clock = clock

    # ------------------------------------------------------------------ 1. pull
    def pull(self, run_id: int | None, report: CycleReport) -> None:
        merge_by = self.config.identity.merge_by
        for source in self.sources:
            context = PullContext(cursor=self.store.get_cursor(source.name), started_at=self.clock())
            count = 0
            try:
                for page in source.pull(context):
                    now = self.clock()
                    orders, customers, bad = {}, {}, []
                    for rec in page.records:
                        if isinstance(rec, Quarantined):
                            bad.append({"source": rec.source, "location": rec.location, "reason": rec.reason,
                                        "raw": rec.raw})
                            continue
                        key = customer_key(rec, merge_by)
                        previous = orders.get(rec.order_id)
                        if previous is None or (rec.updated_at or now) >= (previous["updated_at"] or now):
                            orders[rec.order_id] = order_row(rec, key, now)
                        if rec.email or rec.phone or key not in customers:
                            customers[key] = {"customer_key": key, "email": rec.email, "phone": rec.phone,
                                              "updated_at": now}
                    with self.store.begin() as conn:
                        self.store.upsert_orders(conn, list(orders.values()))
                        self.store.upsert_customers(conn, list(customers.values()))
                        self.store.add_quarantine(conn, run_id, bad)
                        if page.cursor is not None:
                            self.store.set_cursor(conn, source.name, page.cursor)
                    count += len(orders)
                    report.quarantined.extend(bad)
            except ConnectorError as exc:
                report.errors[source.name] = str(exc)
                log.error("pull failed", extra={"source": source.name, "error": str(exc)})
            report.pulled[source.name] = count

    # ------------------------------------------------------------------ 2. score
    def score(self, as_of: date) -> engine.ScoreResult:
        rfm = self.config.rfm
        zone = self.config.shop.zone
        window_start, end = engine.window_bounds(as_of, rfm.window_days, zone)
        aggregates = self.store.aggregate(end, window_start)
        return engine.score_customers(aggregates, as_of, scheme=rfm.scheme, recency_bounds=rfm.recency_bounds,
                                      zone=zone)

    # ------------------------------------------------------------------ 3. diff
    def diff(self, run_id: int, result: engine.ScoreResult, report: CycleReport) -> None:
        now = self.clock()
        names = self.config.properties
        state = self.store.load_state().set_index("customer_key")
        frame = result.frame.set_index("customer_key")
        new_state, changes = [], []
        old_group = state["current_group"].to_dict()
        old_prev = state["previous_group"].to_dict()
        old_changed = state["group_changed_at"].to_dict()
        old_props = state["properties"].to_dict()
        for key, row in zip(frame.index, frame.itertuples(index=False)):
            before = old_group.get(key)
            group = row.rfm_group
            if before is None:
                previous, changed_at = None, now
            elif before != group:
                previous, changed_at = before, now
            else:
                previous, changed_at = old_prev.get(key), old_changed[key]
            props = build_properties(names, row, previous, changed_at)
            text = json.dumps(props, sort_keys=True)
            if text == old_props.get(key):
                continue
            new_state.append({"customer_key": key, "current_group": group, "previous_group": previous,
                              "group_changed_at": changed_at, "rfm_score": row.rfm_score, "properties": text,
                              "labels": None, "run_id": run_id})
            transition = (before, group) if before != group else None
            changes.append((key, props, transition, changed_at))
        gone = [k for k in state.index if k not in frame.index]
        for key in gone:
            changes.append((key, cleared_properties(names), (old_group[key], None), now))
        contacts = self.store.contacts(k for k, *_ in changes)
        rows = []
        for key, props, transition, changed_at in changes:
            email, phone = contacts.get(key, (None, None))
            payload = {"email": email, "phone": phone, "properties": props, "changed_at": changed_at.isoformat(),
                       "transition": None, "event_id": None, "first_assignment": False}
            if transition is not None:
                payload["transition"] = {"from": transition[0], "to": transition[1]}
                payload["event_id"] = event_id(key, transition[0], transition[1], run_id)
                payload["first_assignment"] = transition[0] is None
                report.transitions[transition] = report.transitions.get(transition, 0) + 1
            text = json.dumps(payload, sort_keys=True, default=str)
            rows.extend({"destination": d.name, "customer_key": key, "run_id": run_id, "payload": text}
                        for d in self.destinations)
        report.scored, report.changed, report.cleared = len(frame), len(changes) - len(gone), len(gone)
        report.group_counts = {g: int(n) for g, n in frame["rfm_group"].value_counts().items()}
        report.cut_points, report.warnings = result.cut_points, result.warnings
        with self.store.begin() as conn:
            self.store.upsert_state(conn, new_state)
            if gone:
                from .store import customer_state
                conn.execute(customer_state.delete().where(customer_state.c.customer_key.in_(gone)))
            ob.enqueue(conn, rows)
            self.store.finish_run(conn, run_id, status="scored", stats=self._stats(report),
                                  group_counts=report.group_counts, cut_points=result.cut_points,
                                  warnings=result.warnings)

    # ------------------------------------------------------------------ 4. push
    def push(self, report: CycleReport) -> None:
        for dest in self.destinations:
            ob.supersede(self.store, dest.name)
            sent = failed = 0
            after = 0
            try:
                while True:
                    batch = ob.next_batch(self.store, dest.name, after, dest.batch_size)
                    if not batch:
                        break
                    after = batch[-1]["id"]
                    result = dest.push([update_from_row(r) for r in batch])
                    ob.mark_sent(self.store, result.accepted)
                    if result.failed:
                        ob.mark_failed(self.store, result.failed, self.config.push.max_attempts)
                    sent += len(result.accepted)
                    failed += len(result.failed)
            except ConnectorError as exc:
                report.errors[dest.name] = str(exc)
                level = logging.ERROR if isinstance(exc, FatalError) else logging.WARNING
                log.log(level, "push stopped", extra={"destination": dest.name, "error": str(exc)})
            report.pushed[dest.name], report.failed[dest.name] = sent, failed

    # ------------------------------------------------------------------ the cycle
    def run_cycle(self, as_of: date | None = None, *, pull: bool = True, push: bool = True) -> CycleReport:
        as_of = as_of or self.clock().astimezone(self.config.shop.zone).date()
        run_id = self.store.start_run(as_of, self.config.rfm.scheme)
        report = CycleReport(run_id=run_id, as_of=as_of)
        try:
            for step, fn in (("pull", lambda: self.pull(run_id, report) if pull else None),
                             ("score+diff", lambda: self.diff(run_id, self.score(as_of), report)),
                             ("push", lambda: self.push(report) if push else None)):
                started = time.perf_counter()
                fn()
                report.durations[step] = round(time.perf_counter() - started, 3)
                log.info("cycle step done", extra={"step": step, "seconds": report.durations[step], "run": run_id})
        except Exception as exc:
            with self.store.begin() as conn:
                self.store.finish_run(conn, run_id, status="failed", stats=self._stats(report),
                                      error=f"{type(exc).__name__}: {exc}"[:1000])
            raise
        status = "ok" if not report.errors else "partial"
        with self.store.begin() as conn:
            self.store.finish_run(conn, run_id, status=status, stats=self._stats(report),
                                  error="; ".join(f"{k}: {v}" for k, v in report.errors.items()) or None)
        return report

    @staticmethod
    def _stats(report: CycleReport) -> dict[str, Any]:
        return {"pulled": report.pulled, "quarantined": len(report.quarantined), "scored": report.scored,
                "changed": report.changed, "cleared": report.cleared, "pushed": report.pushed,
                "failed": report.failed, "durations": report.durations}


def update_from_row(row: dict[str, Any]) -> ProfileUpdate:
    p = row["payload"]
    t = p.get("transition")
    return ProfileUpdate(
        outbox_id=row["id"], customer_key=row["customer_key"], email=p.get("email"), phone=p.get("phone"),
        properties=p["properties"], event_id=p.get("event_id"),
        transition=Transition(from_group=t["from"], to_group=t["to"]) if t else None,
        changed_at=datetime.fromisoformat(p["changed_at"]) if p.get("changed_at") else None,
        first_assignment=bool(p.get("first_assignment")),
    )


def transitions_frame(report: CycleReport) -> pd.DataFrame:
    rows = [{"from": a or "(new)", "to": b or "(none)", "customers": n} for (a, b), n in report.transitions.items()]
    return pd.DataFrame(rows, columns=["from", "to", "customers"])
