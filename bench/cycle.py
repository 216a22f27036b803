"""One full cycle from the store, timed: ``Pipeline.run_cycle(pull=False)`` = score + diff + outbox + push.

The store (orders already loaded by :mod:`bench.store_load`) is copied to a scratch file first, so
every run starts with no customer state: the first cycle assigns every customer (a million outbox
rows at the large size, the worst case); a second cycle one day later shows the steady state; then
an incremental cycle (``Pipeline.run_incremental``) on that day whose pull gives 100 changed orders
(new orders of 100 existing customers), the daemon's every-few-minutes job.
Prints one JSON line with the timings.

    python -m bench.cycle --size small
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.base import Order, Page
from rfm_sync.config import parse_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store

from .generate import DATA, END, SIZES
from .store_load import ensure_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    parser.add_argument("--scheme", default="klaviyo")
    args = parser.parse_args()
    source = ensure_store(args.size)
    scratch = DATA / f"cycle-{args.size}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        (DATA / (scratch.name + suffix)).unlink(missing_ok=True)
    (DATA / f"cycle-{args.size}.jsonl").unlink(missing_ok=True)
    shutil.copyfile(source, scratch)
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{scratch}"},
            "rfm": {"scheme": args.scheme},
            "destinations": [
                {"type": "file", "name": "sink", "path": str(DATA / f"cycle-{args.size}.jsonl"), "batch_size": 10_000}
            ],
        }
    )
    store = Store.open(config.store.url)
    pipeline = Pipeline(config, store, sources=[])
    out = {}
    for label, day in (("first", END), ("next_day", END + timedelta(days=1))):
        started = time.perf_counter()
        report = pipeline.run_cycle(day, pull=False)
        out[label] = {
            "seconds": round(time.perf_counter() - started, 2),
            "steps": report.durations,
            "customers": report.scored,
            "changed": report.changed,
            "pushed": sum(report.pushed.values()),
        }
    day = END + timedelta(days=1)
    changed = IncrementalSource(store, day, count=100)
    started = time.perf_counter()
    report = Pipeline(config, store, sources=[changed]).run_incremental(day)
    out["incremental_100_orders"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "steps": report.durations,
        "customers": report.scored,
        "changed": report.changed,
        "pushed": sum(report.pushed.values()),
    }
    store.close()
    print(json.dumps(out))


class IncrementalSource:
    """A source whose one pull gives ``count`` new orders, one each for the first customers of the store."""

    name = "bench-incremental"

    def __init__(self, store: Store, day: date, count: int):
        import sqlalchemy as sa

        from rfm_sync.store.schema import orders

        with store.engine.connect() as conn:
            keys = conn.execute(sa.select(orders.c.customer_key).distinct().limit(count)).scalars().all()
        moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9)
        self.orders = [
            Order(
                source=self.name,
                order_id=f"inc-{i}",
                customer_id=key,
                placed_at=moment,
                updated_at=moment,
                amount=Decimal("42.50"),
            )
            for i, key in enumerate(keys)
        ]

    def pull(self, context: Any) -> Any:
        given, self.orders = self.orders, []
        if given:
            yield Page(records=given, cursor="done")

    def check(self, online: bool = True) -> list:
        return []


if __name__ == "__main__":
    main()
