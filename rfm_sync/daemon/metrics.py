"""Prometheus metrics of the daemon, in a registry of its own (no global state).

Counters move as cycles and webhooks happen; gauges that describe the store (outbox backlog, webhook
events waiting) are read from it at scrape time, so they are never stale. Those gauges carry every
status, 0 included, for every configured destination: an alert on ``rfm_sync_outbox_rows{status=
"dead"} > 0`` or on its increase needs a series that exists before the first dead row, and a series
that vanishes when its count drops to 0 reads as "no data", not as "none".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from connectors.http import HttpClient

log = logging.getLogger(__name__)

SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _StoreCollector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        store = self.metrics.store
        if store is None:
            return
        from ..store import outbox
        from ..store import webhooks as webhook_store

        backlog = GaugeMetricFamily(
            "rfm_sync_outbox_rows",
            "Outbox rows by destination and status (pending = backlog, dead = gave up)",
            labels=["destination", "status"],
        )
        events = GaugeMetricFamily("rfm_sync_webhook_events", "Stored webhook events by status", labels=["status"])
        try:
            rows = outbox.backlog(store)
            for dest in sorted(set(self.metrics.destinations) | set(rows)):
                by_status = rows.get(dest, {})
                for status in (*outbox.STATUSES, *sorted(set(by_status) - set(outbox.STATUSES))):
                    backlog.add_metric([dest, status], by_status.get(status, 0))
            counts = webhook_store.counts(store)
            for status in (*webhook_store.STATUSES, *sorted(set(counts) - set(webhook_store.STATUSES))):
                events.add_metric([status], counts.get(status, 0))
        except Exception as exc:  # a scrape must not fail because the store is busy
            log.warning("metrics: cannot read the store", extra={"error": type(exc).__name__})
            return
        yield backlog
        yield events


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.store: Any = None
        self.destinations: list[str] = []  # configured destinations: their outbox series exist from the start
        self.cycles = Counter("rfm_sync_cycles", "Cycles run, by job and outcome", ["job", "status"], registry=r)
        self.cycle_seconds = Histogram(
            "rfm_sync_cycle_duration_seconds", "Wall time of a cycle", ["job"], buckets=SECONDS, registry=r
        )
        self.step_seconds = Histogram(
            "rfm_sync_step_duration_seconds", "Wall time of a cycle step", ["step"], buckets=SECONDS, registry=r
        )
        self.orders_pulled = Counter("rfm_sync_orders_pulled", "Orders stored, by source", ["source"], registry=r)
        self.quarantined = Counter("rfm_sync_rows_quarantined", "Unreadable records set aside", ["source"], registry=r)
        self.pushed = Counter(
            "rfm_sync_profiles_pushed", "Profile updates accepted, by destination", ["destination"], registry=r
        )
        self.push_failed = Counter(
            "rfm_sync_profiles_failed", "Profile updates refused, by destination", ["destination"], registry=r
        )
        self.api_errors = Counter(
            "rfm_sync_api_errors", "Connector errors that stopped a pull or push", ["connector"], registry=r
        )
        self.api_retries = Counter(
            "rfm_sync_api_retries",
            "HTTP retries after throttling (429) or transient errors, by connector",
            ["connector"],
            registry=r,
        )
        self.webhooks = Counter(
            "rfm_sync_webhooks", "Webhook requests by source and outcome", ["source", "outcome"], registry=r
        )
        self.customers = Gauge(
            "rfm_sync_customers", "Customers per RFM group after the last cycle", ["group"], registry=r
        )
        self.last_success = Gauge(
            "rfm_sync_last_success_timestamp_seconds", "Unix time of the last successful cycle", registry=r
        )
        r.register(_StoreCollector(self))
        self._retries_seen: dict[int, int] = {}

    def observe_cycle(self, job: str, report: Any, seconds: float, status: str) -> None:
        self.cycles.labels(job, status).inc()
        self.cycle_seconds.labels(job).observe(seconds)
        if report is None:
            return
        for step, took in report.durations.items():
            self.step_seconds.labels(step).observe(took)
        for source, n in report.pulled.items():
            self.orders_pulled.labels(source).inc(n)
        for row in report.quarantined:
            self.quarantined.labels(row.get("source", "")).inc()
        for dest, n in report.pushed.items():
            self.pushed.labels(dest).inc(n)
        for dest, n in report.failed.items():
            self.push_failed.labels(dest).inc(n)
        for connector in report.errors:
            self.api_errors.labels(connector).inc()

    def set_groups(self, counts: dict[str, int]) -> None:
        self.customers.clear()
        for group, n in counts.items():
            self.customers.labels(group).set(n)

    def observe_retries(self, connectors: Iterable[Any]) -> None:
        """Add what each connector's HTTP clients retried since the last call."""
        for connector in connectors:
            for client in vars(connector).values() if hasattr(connector, "__dict__") else ():
                if isinstance(client, HttpClient):
                    seen = self._retries_seen.get(id(client), 0)
                    if client.retries > seen:
                        self.api_retries.labels(connector.name).inc(client.retries - seen)
                    self._retries_seen[id(client)] = client.retries

    def render(self) -> bytes:
        return generate_latest(self.registry)
