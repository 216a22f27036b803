"""The project's fakes of Shopify, BigCommerce, Klaviyo and Meta served on real loopback sockets, with a seeded fault plan.

Run one per process (the harness does): ``python -m tests.chaos.servers --kind klaviyo --seed 3
--port-file PATH [--rate 0.1] [--customers 500]``. The server binds 127.0.0.1 on a free port, writes
the port to ``--port-file`` and serves until it is killed. The two shops are seeded: Shopify with
``--customers`` customers, BigCommerce with ``--customers`` of its own, a quarter of whom also buy in
the Shopify shop (``--shopify-customers`` of them) under the same email in other letter case (one
customer under ``[identity] merge_by = "email"``).

Each request to the vendor API first meets the **fault plan**: with probability ``rate`` (a seeded
``random.Random``, one per server) it gets one fault, chosen among those that fit the request:

* ``429_retry_after`` / ``429_bare`` — 429 with and without ``Retry-After`` (nothing done; not for
  BigCommerce, whose 429s are its own, below);
* ``500`` / ``502`` / ``503`` — a server error (nothing done);
* ``reset_before`` — the socket is closed without an answer before the fake saw the request;
* ``reset_after`` — the fake did the work, then the socket is closed without an answer;
* ``cut_body`` — the fake did the work; the answer declares its full ``Content-Length`` but only half
  of the body is written before the socket is closed;
* ``slow`` — the answer comes ``--slow-seconds`` late (past the client's read timeout); the work is done;
* ``malformed_json`` — the fake did the work, the answer is 200 with a body that is not JSON;
* vendor faults: ``klaviyo_job_partial`` (a bulk job fails some of its profiles),
  ``klaviyo_job_cancelled`` (a bulk job ends ``cancelled``, nothing imported), ``shopify_bulk_failed``
  (a bulk operation ends ``FAILED`` with a partial export), ``shopify_throttled`` (the cost bucket is
  emptied: ``THROTTLED``), ``meta_throttled`` (a Graph API throttling error: codes 4, 17, 613, 80003, 80004),
  ``bigcommerce_quota_spent`` (the store's request quota is used up: 429 with ``X-Rate-Limit-Requests-Left: 0``
  and ``X-Rate-Limit-Time-Reset-Ms``), ``bigcommerce_quota_last`` (this request is answered, as the last of the
  window: ``X-Rate-Limit-Requests-Left: 0``, so the next one must wait for the reset).

Some vendor faults are **forced**: given to the first request they fit, whatever the rate (while the
rate is above 0). Shopify's first ``BulkRun`` (the backfill) gets ``shopify_bulk_failed``, so every
run sees the first export end ``FAILED`` part way and the daemon must start it again.

Control endpoints (never faulted), JSON in and out:

* ``GET /__chaos/state`` — the fake's state (orders / profiles, events / audience members) and the
  faults injected so far, by kind;
* ``GET /__chaos/activity`` — the wall-clock times (``time.time()``) of the last pull request (Shopify:
  orders pages, bulk operations; BigCommerce: order lists) and of the last single-order fetch (what
  a webhook makes the daemon do), so the harness can tell a new cycle from webhook handling;
* ``POST /__chaos/faults`` ``{"rate": 0.0}`` — change the fault rate (0 for the final clean cycle);
* ``POST /__chaos/mutate`` ``{"count": 5}`` — create, edit, refund and cancel (BigCommerce: also
  archive) orders as a shop would; answers what the harness sends to the daemon as webhooks: Shopify's
  changed orders as REST ``orders/updated`` bodies, BigCommerce's ``store/order/*`` scopes and order ids.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

GENERIC = [
    "429_retry_after",
    "429_bare",
    "500",
    "502",
    "503",
    "reset_before",
    "reset_after",
    "cut_body",
    "slow",
    "malformed_json",
]
SHOPIFY_TOKEN = "shpat_chaos_token"
BIGCOMMERCE_TOKEN = "bc-chaos-token"
BIGCOMMERCE_STORE = "chaos1"
BIGCOMMERCE_SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "bigcommerce" / "orders.v2.oas2.yml"
KLAVIYO_KEY = "pk_chaos_0123456789abcdef"
META_TOKEN = "EAAB-chaos-token-not-real"
AUDIENCES = {"111": ["Champions", "Loyal"], "222": ["At Risk", "Needs Attention"]}
META_THROTTLE_CODES = [4, 17, 613, 80003, 80004]


class RealClock:
    """The ``FakeClock`` interface on real time: the shop's cost bucket refills as time passes."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        pass

    def now(self) -> datetime:
        return datetime.now(UTC)


class FaultPlan:
    """Seeded choice of a fault (or none) per request; counts what it injected."""

    def __init__(self, seed: int, rate: float, forced: tuple[str, ...] = ()):
        self.rng = random.Random(seed)
        self.rate = rate
        self.forced = list(forced)  # vendor faults for the first request each fits, whatever the rate
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.lock = threading.Lock()

    def choose(self, vendor_kinds: list[str], generic: list[str] = GENERIC) -> str | None:
        with self.lock:
            self.requests += 1
            forced = next((k for k in self.forced if k in vendor_kinds), None) if self.rate > 0 else None
            if forced is not None:
                self.forced.remove(forced)
                self.injected[forced] += 1
                return forced
            if self.rate <= 0 or self.rng.random() >= self.rate:
                return None
            # vendor faults that fit this request are as likely as all the generic ones together
            kinds = generic if not vendor_kinds or self.rng.random() < 0.5 else vendor_kinds
            kind = self.rng.choice(kinds)
            self.injected[kind] += 1
            return kind


# ---------------------------------------------------------------------- the shop
def build_shop(customers: int, seed: int):
    """A seeded Shopify shop: ``customers`` customers (one email each), 1-8 orders over two years and a bit."""
    from tests.fakes.shopify_fake import FakeOrder, ShopifyFake

    # a Shopify Plus cost bucket (10,000 points, 500/s): a 5,000-customer shop pages without waiting minutes
    fake = ShopifyFake(
        clock=RealClock(),
        token=SHOPIFY_TOKEN,
        serve=False,
        seed=seed,
        bulk_polls=2,
        bucket_max=10_000.0,
        restore_rate=500.0,
    )
    rng = random.Random(seed * 7919 + 1)
    now = datetime.now(UTC)
    oid = 10_000
    for c in range(customers):
        cid = 700_000 + c
        email = f"c{c}@chaos.example"
        # a mix of recent, lapsing and lost customers; a few only older than the 730-day window
        days_back = rng.choice(
            [
                rng.uniform(1, 170),
                rng.uniform(190, 350),
                rng.uniform(380, 700),
                rng.uniform(760, 900) if rng.random() < 0.1 else rng.uniform(1, 700),
            ]
        )
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 8])):
            placed = now - timedelta(days=days_back, seconds=rng.randrange(3600))
            fake.orders[oid] = FakeOrder(
                id=oid,
                customer_id=cid,
                email=email,
                created_at=placed,
                updated_at=placed + timedelta(minutes=5),
                total=Decimal(rng.randrange(500, 40000)) / 100,
                test=rng.random() < 0.01,
            )
            oid += 1
            days_back = max(0.5, days_back - rng.uniform(5, 200))
    fake.changed()
    return fake


def rest_body(order: Any) -> dict[str, Any]:
    """The order as Shopify's ``orders/updated`` webhook sends it (REST shape)."""

    def iso(moment: datetime | None) -> str | None:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None

    return {
        "id": order.id,
        "created_at": iso(order.created_at),
        "processed_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "cancelled_at": iso(order.cancelled_at),
        "test": order.test,
        "email": order.email,
        "financial_status": order.financial_status.lower(),
        "currency": order.currency,
        "current_total_price_set": {"shop_money": {"amount": str(order.total), "currency_code": order.currency}},
        "customer": {"id": order.customer_id, "email": order.email} if order.customer_id else None,
    }


def mutate_shop(fake: Any, rng: random.Random, count: int) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Create, edit, refund and cancel ``count`` orders, as merchants and customers do while we sync."""
    from tests.fakes.shopify_fake import FakeOrder

    kinds: Counter[str] = Counter()
    changed = []
    ids = sorted(fake.orders)
    for _ in range(count):
        kind = rng.choice(["create", "create", "edit", "refund", "refund", "cancel"])
        kinds[kind] += 1
        if kind == "create":
            source = fake.orders[rng.choice(ids)]  # a returning customer (or, rarely, a new one)
            cid, email = source.customer_id, source.email
            if rng.random() < 0.1:
                cid = 900_000 + len(fake.orders)
                email = f"new{cid}@chaos.example"
            order = FakeOrder(
                id=max(fake.orders) + 1,
                customer_id=cid,
                email=email,
                created_at=fake.clock.now(),
                updated_at=fake.next_ts(),
                total=Decimal(rng.randrange(500, 60000)) / 100,
            )
            fake.orders[order.id] = order
        else:
            order = fake.orders[rng.choice(ids)]
            if kind == "edit":  # an order edit: items added or removed
                order.total = max(Decimal(0), order.total + Decimal(rng.randrange(-3000, 6000)) / 100)
            elif kind == "refund":
                share = Decimal(rng.choice([25, 50, 100])) / 100
                order.total = (order.total * (1 - share)).quantize(Decimal("0.01"))
                order.financial_status = "PARTIALLY_REFUNDED" if order.total else "REFUNDED"
            else:
                order.cancelled_at = fake.clock.now()
            order.updated_at = fake.next_ts()
        changed.append(rest_body(order))
    fake.changed()
    return changed, kinds


# ---------------------------------------------------------------------- the BigCommerce store
# mostly purchases; some Partially Refunded (14, counted net), some that never count (0, 1, 4-7) and
# Manual Verification Required / Disputed (12, 13: not counted unless switched on, and they are not)
BIGCOMMERCE_STATUSES = [10] * 6 + [11] * 4 + [2, 2, 3, 8, 9, 14, 14, 0, 1, 4, 5, 6, 7, 12, 13]
BIGCOMMERCE_SCOPES = {
    "create": "store/order/created",
    "edit": "store/order/updated",
    "refund": "store/order/refund/created",
    "cancel": "store/order/statusUpdated",
    "archive": "store/order/archived",
}


def bigcommerce_template() -> dict[str, Any]:
    """An order of the published spec's ``orderCollection_Resp`` example (as tests/test_bigcommerce.py
    takes it); without the spec, the fields rfm-sync reads, in the spec's shapes."""
    if BIGCOMMERCE_SPEC.is_file():
        import yaml

        spec = yaml.load(
            BIGCOMMERCE_SPEC.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
        return spec["components"]["responses"]["orderCollection_Resp"]["content"]["application/json"]["examples"][
            "response"
        ]["value"][0]
    return {
        "id": 100,
        "customer_id": 20,
        "date_created": "Wed, 10 Jan 2018 21:05:30 +0000",
        "date_modified": "Wed, 05 Dec 2018 20:16:55 +0000",
        "status_id": 11,
        "status": "Awaiting Fulfillment",
        "total_inc_tax": "361.9500",
        "refunded_amount": "0.0000",
        "currency_code": "USD",
        "default_currency_code": "USD",
        "store_default_currency_code": "",
        "store_default_to_transactional_exchange_rate": "1.0000000000",
        "is_deleted": False,
        "billing_address": {"first_name": "Jane", "email": "janedoe@example.com"},
    }


def build_bigcommerce(customers: int, seed: int, url: str, shopify_customers: int):
    """A seeded BigCommerce store in EUR (the Shopify shop's currency): ``customers`` customers, a quarter
    of them also Shopify customers (same email, other letter case and a stray space), 1-6 orders each,
    a few as guests (customer id 0) and a few archived."""
    from tests.fakes.bigcommerce_fake import BigCommerceFake

    # a quota no honest client reaches (1000 requests a second): 429s come from the fault plan only
    fake = BigCommerceFake(
        clock=RealClock(),
        template=bigcommerce_template(),
        store_hash=BIGCOMMERCE_STORE,
        token=BIGCOMMERCE_TOKEN,
        quota=1000,
        window_ms=1000,
        seed=seed,
        serve=False,
    )
    fake.url = url
    rng = random.Random(seed * 7919 + 2)
    now = datetime.now(UTC)
    oid = 50_000
    for c in range(customers):
        cid = 5_000_000 + c  # never a Shopify customer id
        email = f"bc{c}@chaos.example"
        if shopify_customers and rng.random() < 0.25:
            email = f" C{rng.randrange(shopify_customers)}@Chaos.Example"  # c<n>@chaos.example in the Shopify shop
        days_back = rng.choice(
            [
                rng.uniform(1, 170),
                rng.uniform(190, 350),
                rng.uniform(380, 700),
                rng.uniform(760, 900) if rng.random() < 0.1 else rng.uniform(1, 700),
            ]
        )
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6])):
            placed = now - timedelta(days=days_back, seconds=rng.randrange(3600))
            status = rng.choice(BIGCOMMERCE_STATUSES)
            total = Decimal(rng.randrange(500, 40000)) / 100
            refunded = (
                (total * rng.choice([Decimal("0.25"), Decimal("0.5")])).quantize(Decimal("0.01"))
                if status == 14
                else total
                if status == 4
                else Decimal(0)
            )
            fake.orders[oid] = fake.make(
                oid,
                customer_id=0 if rng.random() < 0.08 else cid,
                email=email,
                created=placed,
                modified=placed + timedelta(minutes=5),
                status_id=status,
                total=total,
                refunded=refunded,
                deleted=rng.random() < 0.02,
                currency="EUR",
            )
            oid += 1
            days_back = max(0.5, days_back - rng.uniform(5, 200))
    return fake


def mutate_bigcommerce(fake: Any, rng: random.Random, count: int) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Create, edit, refund, cancel and archive ``count`` orders; each change's ``store/order/*`` scope
    and callback ``data`` (what BigCommerce's webhook says: only which order)."""
    from tests.fakes.bigcommerce_fake import STATUS_NAMES, money

    kinds: Counter[str] = Counter()
    changed = []
    ids = sorted(fake.orders)
    for _ in range(count):
        kind = rng.choice(["create", "create", "edit", "refund", "refund", "cancel", "archive"])
        kinds[kind] += 1
        data: dict[str, Any] = {"type": "order"}
        if kind == "create":
            source = fake.orders[rng.choice(ids)]  # a returning customer (or, rarely, a new one)
            oid = max(fake.orders) + 1
            cid, email = source["customer_id"], source["billing_address"]["email"]
            if rng.random() < 0.1:
                cid, email = 6_000_000 + oid, f"bcnew{oid}@chaos.example"
            now = fake.clock.now()
            fake.orders[oid] = fake.make(
                oid,
                customer_id=cid,
                email=email,
                created=now,
                modified=now,
                status_id=rng.choice([11, 11, 10, 9]),
                total=Decimal(rng.randrange(500, 60000)) / 100,
                currency="EUR",
            )
        else:
            oid = rng.choice(ids)
            order = fake.orders[oid]
            total, refunded = Decimal(order["total_inc_tax"]), Decimal(order["refunded_amount"])
            if kind == "edit":  # items added or removed; never below what was refunded
                total = max(refunded, total + Decimal(rng.randrange(-3000, 6000)) / 100)
                for key in ("total_inc_tax", "total_ex_tax", "subtotal_inc_tax", "subtotal_ex_tax"):
                    order[key] = money(total)
            elif kind == "refund":
                share = Decimal(rng.choice([25, 50, 100])) / 100
                refunded = min(total, refunded + ((total - refunded) * share).quantize(Decimal("0.01")))
                order["refunded_amount"] = money(refunded)
                order["status_id"] = 4 if refunded >= total else 14
                data["refund"] = {"refund_id": len(fake.orders) * 10 + kinds[kind]}
            elif kind == "cancel":
                data["status"] = {"previous_status_id": order["status_id"], "new_status_id": 5}
                order["status_id"] = 5
            order["status"] = order["custom_status"] = STATUS_NAMES[order["status_id"]]
            if kind == "archive":
                fake.archive(oid)
            else:
                fake.touch(oid)
        data["id"] = oid
        changed.append({"scope": BIGCOMMERCE_SCOPES[kind], "data": data})
    return changed, kinds


# ---------------------------------------------------------------------- per vendor
class Vendor:
    """Adapts one fake: its dispatch, the vendor faults that fit a request, its state and controls."""

    kind = ""
    generic = GENERIC  # the generic faults that fit this vendor
    forced: tuple[str, ...] = ()  # vendor faults the plan gives the first request they fit

    def __init__(self, args: argparse.Namespace, url: str):
        self.args, self.url = args, url
        self.lock = threading.Lock()  # the fakes are not all thread-safe: one request at a time
        self.mutations: Counter[str] = Counter()
        self.last_pull_at = 0.0  # time.time() of the last pull request (see activity())
        self.last_fetch_at = 0.0  # ... and of the last single-order fetch

    def activity(self, method: str, path: str, body: bytes) -> str | None:
        """``"pull"``, ``"fetch"`` or None: what this request is part of (before any fault)."""
        return None

    def vendor_faults(self, method: str, path: str, body: bytes) -> list[str]:
        return []

    def apply(self, fault: str) -> None:
        """Arm a vendor fault in the fake before it handles the request."""

    def dispatch(self, method: str, url: str, headers: CaseInsensitiveDict, body: bytes):
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def control(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"error": f"unknown control {name}"}


class ShopifyVendor(Vendor):
    kind = "shopify"

    def __init__(self, args: argparse.Namespace, url: str):
        super().__init__(args, url)
        self.fake = build_shop(args.customers, args.seed)
        self.fake.url = url  # bulk download links point here
        self.rng = random.Random(args.seed * 31 + 5)

    forced = ("shopify_bulk_failed",)  # the backfill's first export fails part way

    def activity(self, method: str, path: str, body: bytes) -> str | None:
        head = body[:300]
        if b"OrderById" in head:
            return "fetch"
        return "pull" if path.startswith("/bulk/") or b"OrdersPage" in head or b"Bulk" in head else None

    def vendor_faults(self, method: str, path: str, body: bytes) -> list[str]:
        if b"BulkRun" in body[:200]:
            return ["shopify_bulk_failed"]
        return ["shopify_throttled"] if method == "POST" and path.endswith("graphql.json") else []

    def apply(self, fault: str) -> None:
        if fault == "shopify_bulk_failed":
            self.fake.fail_next_bulk += 1
        elif fault == "shopify_throttled":
            # an empty bucket: the next page waits ~1 s of refill (500 points/s)
            self.fake.available, self.fake.bucket_stamp = 0.0, self.fake.clock.monotonic()

    def dispatch(self, method: str, url: str, headers: CaseInsensitiveDict, body: bytes):
        parts = urlsplit(url)
        result = self.fake.handle(method, parts.path, parse_qs(parts.query), dict(headers), body)
        from tests.fakes.shopify_fake import RESET

        if result is RESET:
            return "reset"
        status, extra, payload = result[:3]
        if len(result) > 3:  # the fake's own cut download
            return status, extra, payload, result[3]
        return status, extra, payload

    def state(self) -> dict[str, Any]:
        with self.fake._lock:
            orders = [
                {
                    "id": o.id,
                    "customer_id": o.customer_id,
                    "email": o.email,
                    "created_at": o.created_at.isoformat(),
                    "total": str(o.total),
                    "test": o.test,
                    "cancelled": o.cancelled_at is not None,
                    "financial_status": o.financial_status,
                }
                for o in self.fake.orders.values()
            ]
        return {
            "orders": orders,
            "mutations": dict(self.mutations),
            "bulk_ops": len(self.fake.bulk_ops),
            "throttled": self.fake.throttled,
        }

    def control(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        if name != "mutate":
            return super().control(name, payload)
        with self.fake._lock:
            changed, kinds = mutate_shop(self.fake, self.rng, int(payload.get("count", 1)))
        self.mutations.update(kinds)
        return {"changed": changed, "kinds": dict(kinds)}


class KlaviyoVendor(Vendor):
    kind = "klaviyo"

    def __init__(self, args: argparse.Namespace, url: str):
        super().__init__(args, url)
        from tests.fakes.klaviyo_fake import FakeKlaviyo

        self.fake = FakeKlaviyo(
            base_url=url,
            api_key=KLAVIYO_KEY,
            seed=args.seed,
            polls_until_complete=2,
            retry_after="1",
            record_bodies=False,
        )
        self.group_changes: list[tuple[str, Any, Any]] = []  # (profile, before, after) as the fake saw them

    def vendor_faults(self, method: str, path: str, body: bytes) -> list[str]:
        if method == "POST" and path.rstrip("/").endswith("/profile-bulk-import-jobs"):
            return ["klaviyo_job_partial", "klaviyo_job_cancelled"]
        return []

    def apply(self, fault: str) -> None:
        if fault == "klaviyo_job_partial":
            self.fake.fail_in_next_job = 1 + self.fake.rng.randrange(5)
        elif fault == "klaviyo_job_cancelled":
            self.fake.cancel_next_jobs += 1

    def dispatch(self, method: str, url: str, headers: CaseInsensitiveDict, body: bytes):
        with self.lock:
            writes = method == "POST" and ("profile-import" in url or "profile-bulk-import-jobs" in url)
            before = {k: p.get("Current RFM group") for k, p in self.fake.profiles.items()} if writes else None
            result = self.fake.dispatch(method, url, headers, body or None)
            if before is not None:
                for key, props in self.fake.profiles.items():
                    after = props.get("Current RFM group")
                    if before.get(key) != after:
                        self.group_changes.append((key, before.get(key), after))
        if result is None:
            return 404, {}, b""
        status, extra, payload = result
        return status, extra, payload.encode() if isinstance(payload, str) else payload

    def state(self) -> dict[str, Any]:
        with self.lock:
            events = [
                {
                    "key": k[0],
                    "metric": k[1],
                    "unique_id": k[2],
                    "time": e.get("time"),
                    "from_group": (e.get("properties") or {}).get("from_group"),
                    "to_group": (e.get("properties") or {}).get("to_group"),
                }
                for k, e in self.fake.events.items()
            ]
            return {
                "profiles": self.fake.profiles,
                "events": events,
                "event_posts": len(self.fake.event_log),
                "group_changes": self.group_changes,
                "jobs": len(self.fake.jobs),
            }


class MetaVendor(Vendor):
    kind = "meta"

    def __init__(self, args: argparse.Namespace, url: str):
        super().__init__(args, url)
        from tests.fakes.meta_fake import FakeMeta

        self.fake = FakeMeta(base_url=url, token=META_TOKEN)
        self.fake.audiences = dict.fromkeys(AUDIENCES, 200)
        self.rng = random.Random(args.seed * 13 + 2)

    def vendor_faults(self, method: str, path: str, body: bytes) -> list[str]:
        return ["meta_throttled"] if path.endswith("/users") else []

    def apply(self, fault: str) -> None:
        if fault == "meta_throttled":
            # 80003/80004 mean "wait a minute" (the connector backs off 60 s): only in long runs
            code = self.rng.choice(META_THROTTLE_CODES if self.args.slow_codes else META_THROTTLE_CODES[:3])
            self.fake.fail_next.append((400, code))

    def dispatch(self, method: str, url: str, headers: CaseInsensitiveDict, body: bytes):
        with self.lock:
            result = self.fake.dispatch(method, url, headers, body)
        if result is None:
            return 404, {}, b""
        status, extra, payload = result
        return status, extra, payload.encode() if isinstance(payload, str) else payload

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "members": {a: sorted(v for _, v in m) for a, m in self.fake.members.items()},
                "calls": len(self.fake.calls),
            }


class BigCommerceVendor(Vendor):
    kind = "bigcommerce"
    generic = [f for f in GENERIC if not f.startswith("429")]  # its 429s carry the quota headers (below)

    def __init__(self, args: argparse.Namespace, url: str):
        super().__init__(args, url)
        self.fake = build_bigcommerce(args.customers, args.seed, url, args.shopify_customers)
        self.rng = random.Random(args.seed * 17 + 3)
        self.prefix = f"/stores/{BIGCOMMERCE_STORE}/v2/orders"

    def activity(self, method: str, path: str, body: bytes) -> str | None:
        if not path.startswith(self.prefix):
            return None
        return "fetch" if path[len(self.prefix) :].strip("/") else "pull"

    def vendor_faults(self, method: str, path: str, body: bytes) -> list[str]:
        return (
            ["bigcommerce_quota_spent", "bigcommerce_quota_last"]
            if method == "GET" and path.startswith(self.prefix)
            else []
        )

    def apply(self, fault: str) -> None:
        fake = self.fake
        with fake._lock:
            now = fake.clock.monotonic()
            if now - fake.window_start >= fake.window_ms / 1000:  # the window would reset on this request
                fake.window_start = now
            # spent: this request is refused (429, Requests-Left 0, Time-Reset-Ms); last: it is the window's last
            fake.used = fake.quota if fault == "bigcommerce_quota_spent" else fake.quota - 1

    def dispatch(self, method: str, url: str, headers: CaseInsensitiveDict, body: bytes):
        from tests.fakes.shopify_fake import RESET

        parts = urlsplit(url)
        result = self.fake.handle(method, parts.path, parse_qs(parts.query), dict(headers), body)
        return "reset" if result is RESET else result

    def state(self) -> dict[str, Any]:
        with self.fake._lock:
            orders = [
                {
                    "id": o["id"],
                    "customer_id": o["customer_id"],
                    "email": o["billing_address"].get("email"),
                    "date_created": o["date_created"],
                    "status_id": o["status_id"],
                    "total_inc_tax": o["total_inc_tax"],
                    "refunded_amount": o["refunded_amount"],
                    "is_deleted": o["is_deleted"],
                }
                for o in self.fake.orders.values()
            ]
            return {"orders": orders, "mutations": dict(self.mutations), "over_quota": self.fake.over_quota}

    def control(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        if name != "mutate":
            return super().control(name, payload)
        with self.fake._lock:
            changed, kinds = mutate_bigcommerce(self.fake, self.rng, int(payload.get("count", 1)))
        self.mutations.update(kinds)
        return {"changed": changed, "kinds": dict(kinds)}


VENDORS: dict[str, Callable[..., Vendor]] = {
    "shopify": ShopifyVendor,
    "klaviyo": KlaviyoVendor,
    "meta": MetaVendor,
    "bigcommerce": BigCommerceVendor,
}


# ---------------------------------------------------------------------- the socket layer
def make_handler(vendor_box: list[Vendor], plan: FaultPlan, args: argparse.Namespace, problems: list[str]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the vendors do: resets hit pooled connections

        def log_message(self, *args: Any) -> None:
            pass

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _answer(self, status: int, headers: dict[str, str], payload: bytes, cut: int | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload if cut is None else payload[:cut])
            self.wfile.flush()
            if cut is not None:
                self._drop()

        def _serve(self) -> None:
            vendor = vendor_box[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client went away mid-upload (a SIGKILLed daemon): no request at all
                self._drop()
                return
            path = urlsplit(self.path).path
            if path.startswith("/__chaos/"):
                self._control(vendor, path.rsplit("/", 1)[-1], body)
                return
            headers = CaseInsensitiveDict(dict(self.headers.items()))
            url = vendor.url + self.path
            doing = vendor.activity(self.command, path, body)
            if doing == "pull":
                vendor.last_pull_at = time.time()
            elif doing == "fetch":
                vendor.last_fetch_at = time.time()
            fault = plan.choose(vendor.vendor_faults(self.command, path, body), vendor.generic)
            if fault == "reset_before":
                self._drop()
                return
            if fault in ("429_retry_after", "429_bare", "500", "502", "503"):
                status = int(fault[:3])
                extra = {"Retry-After": "1"} if fault == "429_retry_after" else {}
                self._answer(
                    status,
                    {**extra, "Content-Type": "application/json"},
                    b'{"errors":[{"title":"injected by the chaos plan"}]}',
                )
                return
            if fault and fault not in GENERIC:
                vendor.apply(fault)
            if fault == "slow":
                time.sleep(args.slow_seconds)
            try:
                result = vendor.dispatch(self.command, url, headers, body)
            except Exception as exc:  # a fake's assertion: rfm-sync sent something the vendor would refuse
                problems.append(f"{self.command} {path}: {type(exc).__name__}: {exc}"[:500])
                self._answer(500, {}, b"fake assertion failed")
                return
            if result == "reset":
                self._drop()
                return
            status, extra, payload = result[:3]
            if fault == "reset_after":
                self._drop()
                return
            if fault == "cut_body" and len(payload) >= 2:
                self._answer(status, extra, payload, cut=len(payload) // 2)
                return
            if fault == "malformed_json":
                self._answer(200, {"Content-Type": "application/json"}, b'{"data": {"id": "1", "attributes": ')
                return
            try:
                self._answer(status, extra, payload, result[3] if len(result) > 3 else None)
            except OSError:  # the client gave up (slow answer): fine
                self.close_connection = True

        def _control(self, vendor: Vendor, name: str, body: bytes) -> None:
            payload = json.loads(body or b"{}")
            if name == "state":
                answer = {
                    "kind": vendor.kind,
                    "faults": dict(plan.injected),
                    "rate": plan.rate,
                    "requests": plan.requests,
                    "problems": problems,
                    **vendor.state(),
                }
            elif name == "activity":
                answer = {"last_pull_at": vendor.last_pull_at, "last_fetch_at": vendor.last_fetch_at}
            elif name == "faults":
                plan.rate = float(payload.get("rate", plan.rate))
                answer = {"rate": plan.rate}
            else:
                answer = vendor.control(name, payload)
            self._answer(200, {"Content-Type": "application/json"}, json.dumps(answer, default=str).encode())

        do_GET = do_POST = do_DELETE = do_PUT = _serve

    return Handler


def serve(args: argparse.Namespace) -> None:
    plan = FaultPlan(args.seed, args.rate)
    problems: list[str] = []
    box: list[Vendor] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(box, plan, args, problems))
    httpd.daemon_threads = True
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    box.append(VENDORS[args.kind](args, url))
    plan.forced = list(box[0].forced)
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(httpd.server_address[1]))
    tmp.rename(args.port_file)  # the harness sees the whole port or nothing
    httpd.serve_forever(poll_interval=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kind", choices=sorted(VENDORS), required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument(
        "--shopify-customers",
        type=int,
        default=0,
        help="bigcommerce: the Shopify shop's customer count (a quarter of ours share their emails)",
    )
    parser.add_argument("--slow-seconds", type=float, default=2.5)
    parser.add_argument("--slow-codes", action="store_true", help="also Meta's 60-second throttling codes")
    parser.add_argument("--port-file", required=True)
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
