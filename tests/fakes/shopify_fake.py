"""A fake Shopify GraphQL Admin API on 127.0.0.1 (a ThreadingHTTPServer on port 0, in a thread).

It keeps a set of orders and serves what the Shopify source asks for: the orders connection
(``query: updated_at:>='…'``, sorted by ``UPDATED_AT``, keyset cursors), ``order(id:)``, the app's
access scopes, bulk operations (run, poll, JSONL download), and the write-back's customer calls
(``nodes(ids:)`` for tags and metafields, ``metafieldsSet`` — at most 25 inputs, atomic, ``userErrors``
with ``elementIndex`` — ``metafieldsDelete``, ``tagsAdd``, ``tagsRemove``; customers it does not
have, ``reject_customers`` and metafield ``definitions`` of another type answer with ``userErrors``
as Shopify does; without the ``write_customers`` scope the mutations are ``ACCESS_DENIED``). Like the real thing it enforces a
query-cost bucket (``extensions.cost.throttleStatus``; ``THROTTLED`` in a 200 body, or HTTP 429
when ``throttle_with_429``) and a single-query cost limit. It can fail a share of requests (5xx,
429, connection resets; ``cut_rate``: answers cut off half way; on demand ``cut_next``/
``malformed_next``) and change orders between pages (updates, refunds, cancellations, new
orders) to show the source ends up with exactly the shop's final state.

Time is a :class:`FakeClock` shared with the source under test: the source's ``sleep`` advances
it, the bucket refills by it, so tests never really wait. :class:`LocalServer` and
:class:`FakeClock` are shared with ``bigcommerce_fake``.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

RESET = object()  # a handler result: drop the connection without answering
Reply = tuple[int, dict[str, str], bytes]


class FakeClock:
    """Seconds (``monotonic``) and UTC time (``now``) that only move when someone sleeps."""

    def __init__(self, start: datetime = datetime(2026, 11, 1, tzinfo=UTC)):
        self.start = start
        self.seconds = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.seconds += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.monotonic())


class LocalServer:
    """Runs ``handle(method, path, query, headers, body) -> Reply | RESET`` on 127.0.0.1:<free port>.

    A reply ``(status, headers, body, cut)`` announces the whole body but sends only ``cut`` bytes
    and closes the connection: a response cut off mid-body, as a dropped connection or a proxy
    timeout leaves it. With ``Transfer-Encoding: chunked`` in the headers the body goes in chunks
    and a cut omits the last-chunk marker; otherwise ``Content-Length`` announces the full size."""

    def __init__(self, handle: Callable[[str, str, dict[str, list[str]], dict[str, str], bytes], Any]):
        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                headers = dict(self.headers.items())
                result = handle(self.command, parts.path, parse_qs(parts.query), headers, body)
                if result is RESET:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                status, extra, payload = result[:3]
                cut = result[3] if len(result) > 3 else None  # send only this many bytes, then drop
                chunked = extra.get("Transfer-Encoding") == "chunked"
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                if not chunked:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if chunked:  # two chunks and the last-chunk marker; a cut stops before the marker
                    sent = payload if cut is None else payload[:cut]
                    half = len(sent) // 2
                    for piece in (sent[:half], sent[half:]):
                        if piece:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    if cut is None:
                        self.wfile.write(b"0\r\n\r\n")
                elif payload:
                    self.wfile.write(payload if cut is None else payload[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeOrder:
    id: int
    customer_id: int | None
    email: str | None
    created_at: datetime
    updated_at: datetime
    total: Decimal
    currency: str = "EUR"  # the shop currency: ``total`` is in it (shopMoney)
    test: bool = False
    cancelled_at: datetime | None = None
    financial_status: str = "PAID"
    # the customer's currency (presentmentMoney) and its units per unit of the shop currency; like
    # Shopify, an order paid in another currency still has its shopMoney in the shop currency
    presentment_currency: str | None = None
    presentment_rate: Decimal = Decimal(1)

    def node(self) -> dict[str, Any]:
        customer = None
        if self.customer_id is not None:
            customer = {
                "id": f"gid://shopify/Customer/{self.customer_id}",
                "defaultEmailAddress": {"emailAddress": self.email} if self.email else None,
            }
        return {
            "id": f"gid://shopify/Order/{self.id}",
            "createdAt": iso(self.created_at),
            "processedAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "cancelledAt": iso(self.cancelled_at) if self.cancelled_at else None,
            "test": self.test,
            "email": self.email,
            "displayFinancialStatus": self.financial_status,
            "currencyCode": self.currency,
            "presentmentCurrencyCode": self.presentment_currency or self.currency,
            "currentTotalPriceSet": {
                "shopMoney": {"amount": str(self.total), "currencyCode": self.currency},
                "presentmentMoney": {
                    "amount": str((self.total * self.presentment_rate).quantize(Decimal("0.01")))
                    if self.presentment_currency
                    else str(self.total),
                    "currencyCode": self.presentment_currency or self.currency,
                },
            },
            "customer": customer,
        }

    def qualifies(self) -> bool:
        return (
            self.total > 0
            and not self.test
            and self.cancelled_at is None
            and self.financial_status not in ("VOIDED", "EXPIRED")
        )


NODE_COST = 5  # Order + customer + defaultEmailAddress + currentTotalPriceSet + shopMoney
MUTATION_COST = 10  # Shopify's cost of a mutation
CUSTOMER_STATE_COST = 4  # per customer of a nodes(ids:) read: Customer + metafields connection + nodes
MAX_METAFIELDS_PER_SET = 25


WRITEBACK = {  # operation -> handler of the write-back's calls
    "CustomerRfmState": "_customer_state",
    "RfmMetafieldsSet": "_metafields_set",
    "RfmMetafieldsDelete": "_metafields_delete",
    "RfmTagsAdd": "_tags_add",
    "RfmTagsRemove": "_tags_remove",
}


@dataclass
class FakeCustomer:
    id: int
    tags: list[str] = field(default_factory=list)
    metafields: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (ns, key) -> (type, value)


@dataclass
class ShopifyFake:
    clock: FakeClock
    token: str = "shpat_test_token"
    scopes: list[str] = field(default_factory=lambda: ["read_orders", "read_all_orders", "read_customers"])
    bucket_max: float = 1000.0
    restore_rate: float = 50.0
    max_query_cost: int = 1000
    throttle_with_429: bool = False
    fail_rate: float = 0.0  # share of GraphQL requests answered with 5xx/429/reset
    mutate_per_page: int = 0  # orders changed each time a page is requested ...
    mutation_budget: int = 0  # ... until this many changes were made
    bulk_polls: int = 2  # polls answered RUNNING before COMPLETED
    reset_download_once: bool = False
    cut_rate: float = 0.0  # share of requests answered in full, then cut half way (its own random stream)
    cut_next: int = 0  # answer this many GraphQL requests (after doing the work) with a body cut half way
    cut_only: str = ""  # ... only requests whose operation name starts with this ("RfmTagsAdd": those mutations)
    malformed_next: int = 0  # ... or with a complete-looking but truncated JSON body (length matches)
    # another export of this app holds the bulk slot until this fake-clock second: BulkRun answers a
    # userError with this BulkOperationUserErrorCode ("LIMIT_REACHED" or "OPERATION_IN_PROGRESS")
    bulk_blocked_until: float = 0.0
    bulk_block_code: str = "LIMIT_REACHED"
    seed: int = 7
    serve: bool = True  # False: no server of its own (tests/chaos serves ``handle`` in another process)
    fail_next_bulk: int = 0  # the next bulk operations end FAILED part way (partialDataUrl: half the lines)
    bulk_extra_lines: list[str] = field(default_factory=list)  # JSONL lines appended to every bulk export
    # write-back: the shop's customers (made for every customer id of add_orders), customers whose
    # writes Shopify refuses with a userError, metafield definitions ((namespace, key) -> type)
    customers: dict[int, FakeCustomer] = field(default_factory=dict)
    reject_customers: set[int] = field(default_factory=set)
    definitions: dict[tuple[str, str], str] = field(default_factory=dict)
    server_errors_next: int = 0  # answer this many GraphQL requests with HTTP 503 before doing the work

    def __post_init__(self) -> None:
        self.orders: dict[int, FakeOrder] = {}
        self.rng = random.Random(self.seed)
        self.available = self.bucket_max
        self.bucket_stamp = self.clock.monotonic()
        self.throttled = 0
        self.requests: list[str] = []  # operation names, in order
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (document, variables) of every GraphQL request
        self.queries: list[str | None] = []  # the search filter of each orders page asked for
        self.page_sizes: list[int] = []  # the `first` of each orders page asked for
        self.failures = 0
        self.cut_rng = random.Random(self.seed + 1)
        self.cuts = 0  # answers cut off or malformed
        self._cut_this = False
        self.mutations = 0
        self.bulk_ops: dict[str, dict[str, Any]] = {}
        self.bulk_refusals = 0  # BulkRun calls refused because the slot was taken
        self.downloads_with_token = 0
        self.writes: list[str] = []  # mutations that were carried out (the work done), by operation name
        self.largest_set = 0  # the most metafields one metafieldsSet call asked for
        self.last_ts = self.clock.now()
        self._lock = threading.Lock()
        self._cache: tuple[list[FakeOrder], list[tuple[datetime, int]]] | None = None
        self.server = LocalServer(self.handle) if self.serve else None
        self.url = self.server.url if self.server else ""

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    # ------------------------------------------------------------------ data
    def add_orders(self, count: int, *, start_id: int = 1000, guests_every: int = 7, days: int = 700) -> None:
        self._cache = None
        base = self.clock.now() - timedelta(days=days)
        step = days * 86400 / max(1, count)
        for i in range(count):
            oid = start_id + i
            created = base + timedelta(seconds=int(i * step))
            guest = i % guests_every == 0
            cid = None if guest else 500_000 + (i % (count // 3 + 1))
            email = f"Customer{i % (count // 3 + 1)}@Example.com " if not guest or i % 2 else None
            if guest and email is None:
                email = f"guest{i}@example.com"
            if cid is not None:
                self.customers.setdefault(cid, FakeCustomer(cid))
            self.orders[oid] = FakeOrder(
                id=oid,
                customer_id=cid,
                email=email,
                created_at=created,
                updated_at=created + timedelta(seconds=30),
                total=Decimal(10 + i % 190) + Decimal("0.99"),
                test=(i % 97 == 0),
                financial_status="PAID",
            )

    def next_ts(self) -> datetime:
        self.last_ts = max(self.clock.now(), self.last_ts + timedelta(seconds=1))
        return self.last_ts

    def mutate(self, n: int) -> None:
        for _ in range(n):
            self._cache = None
            if self.mutations >= self.mutation_budget:
                return
            self.mutations += 1
            kind = self.rng.choice(["refund", "refund", "update", "cancel", "new"])
            if kind == "new":
                oid = max(self.orders) + 1
                self.orders[oid] = FakeOrder(
                    id=oid,
                    customer_id=None,
                    email=f"new{oid}@example.com",
                    created_at=self.clock.now(),
                    updated_at=self.next_ts(),
                    total=Decimal("42.50"),
                )
                continue
            order = self.orders[self.rng.choice(list(self.orders))]
            if kind == "refund":
                order.total = max(Decimal(0), order.total - Decimal("5.25"))
                order.financial_status = "PARTIALLY_REFUNDED" if order.total else "REFUNDED"
            elif kind == "cancel":
                order.cancelled_at = self.clock.now()
            else:
                order.email = f"changed{order.id}@example.com"
            order.updated_at = self.next_ts()

    def changed(self) -> None:
        """Call after editing ``orders`` directly (the sorted index is cached)."""
        self._cache = None

    def _index(self) -> tuple[list[FakeOrder], list[tuple[datetime, int]]]:
        if self._cache is None:  # sorted by (updated_at, id), like the shop's search index
            ordered = sorted(self.orders.values(), key=lambda o: (o.updated_at, o.id))
            self._cache = (ordered, [(o.updated_at, o.id) for o in ordered])
        return self._cache

    def expected(self) -> dict[str, tuple[Decimal, bool]]:
        return {str(o.id): (o.total, o.qualifies()) for o in self.orders.values()}

    # ------------------------------------------------------------------ HTTP
    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes):
        """A GraphQL answer can be lost on the way back after the shop did the work (and charged
        the cost bucket): cut half way (``cut_next``, or a share ``cut_rate``) or truncated into
        malformed JSON (``malformed_next``)."""
        with self._lock:
            self._cut_this = False
            asked = len(self.requests)
            reply = self._handle(method, path, query, headers, body)
            operation = self.requests[-1] if len(self.requests) > asked else ""
            if reply is RESET or path.startswith("/bulk/") or reply[0] not in (200, 429):
                return reply
            if self.malformed_next:
                self.malformed_next -= 1
                self.cuts += 1
                return reply[0], reply[1], reply[2][: len(reply[2]) // 2]
            if self._cut_this or (self.cut_next and operation.startswith(self.cut_only)):
                if not self._cut_this:
                    self.cut_next -= 1
                self.cuts += 1
                return (*reply[:3], len(reply[2]) // 2)
            return reply

    def _handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes):
        if path.startswith("/bulk/"):
            return self._download(path, headers)
        if method != "POST" or not re.fullmatch(r"/admin/api/\d{4}-\d{2}/graphql\.json", path):
            return 404, {}, b""
        if headers.get("X-Shopify-Access-Token") != self.token:
            return 401, {}, b'{"errors":"[API] Invalid API key or access token"}'
        request = json.loads(body)
        document, variables = request["query"], request.get("variables") or {}
        name = re.search(r"(?:query|mutation)\s+(\w+)", document).group(1)
        self.requests.append(name)
        self.sent.append((document, variables))
        if self.fail_rate and self.rng.random() < self.fail_rate:
            self.failures += 1
            kind = self.rng.choice(["500", "502", "503", "reset", "429"])
            if kind == "reset":
                return RESET
            return int(kind), ({"Retry-After": "1"} if kind == "429" else {}), b"oops"
        if self.server_errors_next:
            self.server_errors_next -= 1
            self.failures += 1
            return 503, {}, b"Service Unavailable"
        if self.cut_rate and self.cut_rng.random() < self.cut_rate:  # served in full, then cut by handle()
            self._cut_this = True
        requested = self._requested(name, document, variables)
        if requested > self.max_query_cost:
            return self._json(
                {"errors": [{"message": "Query cost is too high", "extensions": {"code": "MAX_COST_EXCEEDED"}}]},
                requested,
                0,
            )
        self._refill()
        if requested > self.available:
            self.throttled += 1
            payload = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}
            return self._json(payload, requested, None, 429 if self.throttle_with_429 else 200)
        if name in WRITEBACK and name != "CustomerRfmState" and "write_customers" not in self.scopes:
            self.available -= requested
            denied = {
                "message": f"Access denied for {name} field. Required access: `write_customers` access scope.",
                "extensions": {"code": "ACCESS_DENIED", "documentation": "https://shopify.dev/api/usage/access-scopes"},
            }
            return self._json({"data": None, "errors": [denied]}, requested, requested)
        data, actual = self._run(name, variables)
        self.available -= actual
        return self._json({"data": data}, requested, actual)

    @staticmethod
    def _requested(name: str, document: str, variables: dict[str, Any]) -> int:
        if name == "OrdersPage":
            return 2 + NODE_COST * int(variables.get("first") or 0)
        if name == "CustomerRfmState":
            return 2 + CUSTOMER_STATE_COST * len(variables.get("ids") or [])
        if document.lstrip().startswith("mutation") and name != "BulkRun":
            return MUTATION_COST
        return 2

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self.available = min(self.bucket_max, self.available + (now - self.bucket_stamp) * self.restore_rate)
        self.bucket_stamp = now

    def _json(self, payload: dict[str, Any], requested: int, actual: int | None, status: int = 200) -> Reply:
        payload["extensions"] = {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": self.bucket_max,
                    "currentlyAvailable": self.available,
                    "restoreRate": self.restore_rate,
                },
            }
        }
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _run(self, name: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if name == "AccessScopes":
            return {"currentAppInstallation": {"accessScopes": [{"handle": s} for s in self.scopes]}}, 2
        if name == "OrdersPage":
            self.mutate(self.mutate_per_page)
            return self._orders_page(variables)
        if name == "OrderById":
            order = self.orders.get(int(variables["id"].rsplit("/", 1)[-1]))
            return {"order": order.node() if order else None}, 2 + NODE_COST
        if name in WRITEBACK:
            return getattr(self, WRITEBACK[name])(variables)
        if name == "BulkRun" and self.clock.monotonic() < self.bulk_blocked_until:
            self.bulk_refusals += 1
            message = {
                "LIMIT_REACHED": "Bulk operations limit reached. Please try again later.",
                "OPERATION_IN_PROGRESS": "A bulk query operation for this app and shop is already in "
                "progress: gid://shopify/BulkOperation/999.",
            }[self.bulk_block_code]
            return {
                "bulkOperationRunQuery": {
                    "bulkOperation": None,
                    "userErrors": [{"field": None, "message": message, "code": self.bulk_block_code}],
                }
            }, 10
        if name == "BulkRun":
            op_id = f"gid://shopify/BulkOperation/{len(self.bulk_ops) + 1}"
            self.bulk_ops[op_id] = {
                "id": op_id,
                "status": "CREATED",
                "createdAt": iso(self.clock.now()),
                "polls": self.bulk_polls,
                "lines": None,
                "fail": self.fail_next_bulk > 0,
            }
            self.fail_next_bulk = max(0, self.fail_next_bulk - 1)
            return {
                "bulkOperationRunQuery": {
                    "bulkOperation": {"id": op_id, "status": "CREATED", "createdAt": self.bulk_ops[op_id]["createdAt"]},
                    "userErrors": [],
                }
            }, 10
        if name == "BulkStatus":
            op = self.bulk_ops.get(variables["id"])
            if op is None:
                return {"node": None}, 1
            if op["status"] in ("CREATED", "RUNNING"):
                if op["polls"] > 0:
                    op["polls"] -= 1
                    op["status"] = "RUNNING"
                    self.mutate(self.mutate_per_page)
                else:
                    op["status"] = "FAILED" if op.get("fail") else "COMPLETED"
                    op["lines"] = [json.dumps(o.node()) for o in self.orders.values()]
                    if op.get("fail"):
                        op["lines"] = op["lines"][: len(op["lines"]) // 2]
            link = f"{self.url}/bulk/{op['id'].rsplit('/', 1)[-1]}.jsonl"
            url = link if op["status"] == "COMPLETED" else None
            node = {k: op[k] for k in ("id", "status", "createdAt")}
            node.update(
                {
                    "errorCode": "INTERNAL_SERVER_ERROR" if op["status"] == "FAILED" else None,
                    "completedAt": None,
                    "objectCount": len(op["lines"] or []),
                    "url": url,
                    "partialDataUrl": link if op["status"] == "FAILED" else None,
                }
            )
            return {"node": node}, 1
        raise AssertionError(f"fake does not know {name}")

    # ------------------------------------------------------------------ write-back (customers)
    def _customer(self, gid: Any) -> FakeCustomer | None:
        match = re.fullmatch(r"gid://shopify/Customer/(\d+)", str(gid))
        return self.customers.get(int(match.group(1))) if match else None

    def _customer_state(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        keys = {tuple(k.split(".", 1)) for k in variables["keys"]}
        nodes: list[dict[str, Any] | None] = []
        for gid in variables["ids"]:
            c = self._customer(gid)
            if c is None:
                nodes.append(None)
                continue
            found = [
                {"namespace": ns, "key": key, "value": value}
                for (ns, key), (_, value) in sorted(c.metafields.items())
                if (ns, key) in keys
            ][: int(variables["count"])]
            nodes.append({"id": gid, "tags": sorted(c.tags), "metafields": {"nodes": found}})
        return {"nodes": nodes}, 2 + CUSTOMER_STATE_COST * len(nodes)

    def _metafields_set(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        inputs = variables["metafields"]
        self.largest_set = max(self.largest_set, len(inputs))
        errors: list[dict[str, Any]] = []
        if len(inputs) > MAX_METAFIELDS_PER_SET:
            errors.append(
                {
                    "field": ["metafields"],
                    "message": f"Exceeded the maximum metafields input limit of {MAX_METAFIELDS_PER_SET}.",
                    "code": "LESS_THAN_OR_EQUAL_TO",
                    "elementIndex": None,
                }
            )
        for i, m in enumerate(inputs):
            c = self._customer(m["ownerId"])
            where = ["metafields", str(i)]
            if c is None:
                errors.append(
                    {
                        "field": [*where, "ownerId"],
                        "message": "Owner does not exist.",
                        "code": "INVALID",
                        "elementIndex": i,
                    }
                )
            elif c.id in self.reject_customers:
                errors.append(
                    {
                        "field": [*where, "value"],
                        "message": "Value is invalid.",
                        "code": "INVALID_VALUE",
                        "elementIndex": i,
                    }
                )
            elif self.definitions.get((m["namespace"], m["key"]), m["type"]) != m["type"]:
                errors.append(
                    {
                        "field": [*where, "type"],
                        "message": "Type must match the definition's type.",
                        "code": "INVALID_TYPE",
                        "elementIndex": i,
                    }
                )
        if not errors:  # atomic: all or nothing
            for m in inputs:
                c = self._customer(m["ownerId"])
                assert c is not None
                c.metafields[(m["namespace"], m["key"])] = (m["type"], m["value"])
            self.writes.append("RfmMetafieldsSet")
        saved = None if errors else [{"namespace": m["namespace"], "key": m["key"]} for m in inputs]
        return {"metafieldsSet": {"metafields": saved, "userErrors": errors}}, MUTATION_COST

    def _metafields_delete(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        deleted: list[dict[str, Any] | None] = []
        for m in variables["metafields"]:
            c = self._customer(m["ownerId"])
            gone = c.metafields.pop((m["namespace"], m["key"]), None) if c else None
            deleted.append(dict(m) if gone else None)
        self.writes.append("RfmMetafieldsDelete")
        return {"metafieldsDelete": {"deletedMetafields": deleted, "userErrors": []}}, MUTATION_COST

    def _tags(self, root: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        c = self._customer(variables["id"])
        if c is None or c.id in self.reject_customers:
            errors = [{"field": ["id"], "message": "Customer does not exist" if c is None else "Tags are invalid"}]
            return {root: {"node": None, "userErrors": errors}}, MUTATION_COST
        tags = [t.strip() for tag in variables["tags"] for t in tag.split(",") if t.strip()]
        if root == "tagsAdd":
            c.tags += [t for t in tags if t.lower() not in {x.lower() for x in c.tags}]
        else:
            c.tags = [t for t in c.tags if t.lower() not in {x.lower() for x in tags}]
        self.writes.append("RfmTagsAdd" if root == "tagsAdd" else "RfmTagsRemove")
        return {root: {"node": {"id": variables["id"]}, "userErrors": []}}, MUTATION_COST

    def _tags_add(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self._tags("tagsAdd", variables)

    def _tags_remove(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self._tags("tagsRemove", variables)

    def _orders_page(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        first = int(variables["first"])
        self.queries.append(variables.get("query"))
        self.page_sizes.append(first)
        since = None
        match = re.fullmatch(r"updated_at:>='([^']+)'", variables.get("query") or "")
        if variables.get("query") and not match:
            raise AssertionError(f"unexpected search query {variables.get('query')!r}")
        if match:
            since = datetime.fromisoformat(match.group(1))
        ordered, keys = self._index()
        start = bisect.bisect_left(keys, (since, -1)) if since else 0
        if variables.get("after"):
            ts, oid = json.loads(base64.b64decode(variables["after"]))
            start = max(start, bisect.bisect_right(keys, (datetime.fromisoformat(ts), oid)))
        page = ordered[start : start + first]
        end = (
            base64.b64encode(json.dumps([page[-1].updated_at.isoformat(), page[-1].id]).encode()).decode()
            if page
            else None
        )
        data = {
            "orders": {
                "pageInfo": {"hasNextPage": start + first < len(ordered), "endCursor": end},
                "nodes": [o.node() for o in page],
            }
        }
        return data, 2 + NODE_COST * len(page)

    def _download(self, path: str, headers: dict[str, str]):
        if "X-Shopify-Access-Token" in headers:
            self.downloads_with_token += 1
        op = self.bulk_ops.get(f"gid://shopify/BulkOperation/{path.rsplit('/', 1)[-1].split('.')[0]}")
        if op is None or op["lines"] is None:
            return 404, {}, b""
        body = ("\n".join(op["lines"] + self.bulk_extra_lines) + "\n").encode()
        if self.reset_download_once:
            self.reset_download_once = False
            return 200, {"Content-Type": "application/jsonl"}, body, len(body) // 2
        return 200, {"Content-Type": "application/jsonl"}, body
