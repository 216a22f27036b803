"""The project's fakes of Shopify, Klaviyo and Meta served on real loopback sockets, with a seeded fault plan.

Run one per process (the harness does): ``python -m tests.chaos.servers --kind klaviyo --seed 3
--port-file PATH [--rate 0.1] [--customers 500]``. The server binds 127.0.0.1 on a free port, writes
the port to ``--port-file`` and serves until it is killed.

Each request to the vendor API first meets the **fault plan**: with probability ``rate`` (a seeded
``random.Random``, one per server) it gets one fault, chosen among those that fit the request:

* ``429_retry_after`` / ``429_bare`` — 429 with and without ``Retry-After`` (nothing done);
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
  emptied: ``THROTTLED``), ``meta_throttled`` (a Graph API throttling error: codes 4, 17, 613, 80003, 80004).

Control endpoints (never faulted), JSON in and out:

* ``GET /__chaos/state`` — the fake's state (orders / profiles, events / audience members) and the
  faults injected so far, by kind;
* ``POST /__chaos/faults`` ``{"rate": 0.0}`` — change the fault rate (0 for the final clean cycle);
* ``POST /__chaos/mutate`` ``{"count": 5}`` (shopify) — create, edit, refund and cancel orders as a
  shop would; answers the changed orders as REST webhook bodies (the harness sends them to the daemon).
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

GENERIC = ["429_retry_after", "429_bare", "500", "502", "503", "reset_before", "reset_after", "cut_body",
           "slow", "malformed_json"]
SHOPIFY_TOKEN = "shpat_chaos_token"
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
        return datetime.now(timezone.utc)


class FaultPlan:
    """Seeded choice of a fault (or none) per request; counts what it injected."""

    def __init__(self, seed: int, rate: float):
        self.rng = random.Random(seed)
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.lock = threading.Lock()

    def choose(self, vendor_kinds: list[str]) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rate <= 0 or self.rng.random() >= self.rate:
                return None
            # vendor faults that fit this request are as likely as all the generic ones together
            kinds = GENERIC if not vendor_kinds or self.rng.random() < 0.5 else vendor_kinds
            kind = self.rng.choice(kinds)
            self.injected[kind] += 1
            return kind


# ---------------------------------------------------------------------- the shop
def build_shop(customers: int, seed: int):
    """A seeded Shopify shop: ``customers`` customers (one email each), 1-8 orders over two years and a bit."""
    from tests.fakes.shopify_fake import FakeOrder, ShopifyFake

    # a Shopify Plus cost bucket (10,000 points, 500/s): a 5,000-customer shop pages without waiting minutes
    fake = ShopifyFake(clock=RealClock(), token=SHOPIFY_TOKEN, serve=False, seed=seed, bulk_polls=2,
                       bucket_max=10_000.0, restore_rate=500.0)
    rng = random.Random(seed * 7919 + 1)
    now = datetime.now(timezone.utc)
    oid = 10_000
    for c in range(customers):
        cid = 700_000 + c
        email = f"c{c}@chaos.example"
        # a mix of recent, lapsing and lost customers; a few only older than the 730-day window
        days_back = rng.choice([rng.uniform(1, 170), rng.uniform(190, 350), rng.uniform(380, 700),
                                rng.uniform(760, 900) if rng.random() < 0.1 else rng.uniform(1, 700)])
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 8])):
            placed = now - timedelta(days=days_back, seconds=rng.randrange(3600))
            fake.orders[oid] = FakeOrder(id=oid, customer_id=cid, email=email, created_at=placed,
                                         updated_at=placed + timedelta(minutes=5),
                                         total=Decimal(rng.randrange(500, 40000)) / 100,
                                         test=rng.random() < 0.01)
            oid += 1
            days_back = max(0.5, days_back - rng.uniform(5, 200))
    fake.changed()
    return fake


def rest_body(order: Any) -> dict[str, Any]:
    """The order as Shopify's ``orders/updated`` webhook sends it (REST shape)."""
    def iso(moment: datetime | None) -> str | None:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
    return {"id": order.id, "created_at": iso(order.created_at), "processed_at": iso(order.created_at),
            "updated_at": iso(order.updated_at), "cancelled_at": iso(order.cancelled_at), "test": order.test,
            "email": order.email, "financial_status": order.financial_status.lower(), "currency": order.currency,
            "current_total_price_set": {"shop_money": {"amount": str(order.total), "currency_code": order.currency}},
            "customer": {"id": order.customer_id, "email": order.email} if order.customer_id else None}


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
            order = FakeOrder(id=max(fake.orders) + 1, customer_id=cid, email=email, created_at=fake.clock.now(),
                              updated_at=fake.next_ts(), total=Decimal(rng.randrange(500, 60000)) / 100)
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


# ---------------------------------------------------------------------- per vendor
class Vendor:
    """Adapts one fake: its dispatch, the vendor faults that fit a request, its state and controls."""

    kind = ""

    def __init__(self, args: argparse.Namespace, url: str):
        self.args, self.url = args, url
        self.lock = threading.Lock()  # the fakes are not all thread-safe: one request at a time
        self.mutations: Counter[str] = Counter()

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
            orders = [{"id": o.id, "customer_id": o.customer_id, "email": o.email,
                       "created_at": o.created_at.isoformat(), "total": str(o.total), "test": o.test,
                       "cancelled": o.cancelled_at is not None, "financial_status": o.financial_status}
                      for o in self.fake.orders.values()]
        return {"orders": orders, "mutations": dict(self.mutations), "bulk_ops": len(self.fake.bulk_ops),
                "throttled": self.fake.throttled}

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

        self.fake = FakeKlaviyo(base_url=url, api_key=KLAVIYO_KEY, seed=args.seed, polls_until_complete=2,
                                retry_after="1", record_bodies=False)
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
            events = [{"key": k[0], "metric": k[1], "unique_id": k[2], "time": e.get("time"),
                       "from_group": (e.get("properties") or {}).get("from_group"),
                       "to_group": (e.get("properties") or {}).get("to_group")}
                      for k, e in self.fake.events.items()]
            return {"profiles": self.fake.profiles, "events": events, "event_posts": len(self.fake.event_log),
                    "group_changes": self.group_changes, "jobs": len(self.fake.jobs)}


class MetaVendor(Vendor):
    kind = "meta"

    def __init__(self, args: argparse.Namespace, url: str):
        super().__init__(args, url)
        from tests.fakes.meta_fake import FakeMeta

        self.fake = FakeMeta(base_url=url, token=META_TOKEN)
        self.fake.audiences = {a: 200 for a in AUDIENCES}
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
            return {"members": {a: sorted(v for _, v in m) for a, m in self.fake.members.items()},
                    "calls": len(self.fake.calls)}


VENDORS: dict[str, Callable[..., Vendor]] = {"shopify": ShopifyVendor, "klaviyo": KlaviyoVendor, "meta": MetaVendor}


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
            path = urlsplit(self.path).path
            if path.startswith("/__chaos/"):
                self._control(vendor, path.rsplit("/", 1)[-1], body)
                return
            headers = CaseInsensitiveDict(dict(self.headers.items()))
            url = vendor.url + self.path
            fault = plan.choose(vendor.vendor_faults(self.command, path, body))
            if fault == "reset_before":
                self._drop()
                return
            if fault in ("429_retry_after", "429_bare", "500", "502", "503"):
                status = int(fault[:3])
                extra = {"Retry-After": "1"} if fault == "429_retry_after" else {}
                self._answer(status, {**extra, "Content-Type": "application/json"},
                             b'{"errors":[{"title":"injected by the chaos plan"}]}')
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
                answer = {"kind": vendor.kind, "faults": dict(plan.injected), "rate": plan.rate, "requests": plan.requests,
                          "problems": problems, **vendor.state()}
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
    parser.add_argument("--slow-seconds", type=float, default=2.5)
    parser.add_argument("--slow-codes", action="store_true", help="also Meta's 60-second throttling codes")
    parser.add_argument("--port-file", required=True)
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
