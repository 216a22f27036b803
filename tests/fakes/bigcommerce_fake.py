"""A fake BigCommerce V2 Orders API on 127.0.0.1 (``GET /stores/{hash}/v2/orders[/{id}]``).

Orders are built from a template — the ``orderCollection_Resp`` example of the published OpenAPI
spec, loaded by the tests — so every field has the documented shape; only the fields rfm-sync
reads are varied. Like the real API it filters by ``min_date_modified`` (RFC-2822 or ISO-8601),
sorts by ``date_modified:asc`` (ties by id), leaves archived orders out of the list unless asked
for with ``is_deleted=true`` (or, per ``archived_listing``, lists them), pages by ``page``/``limit`` (at most 250), answers
204 past the last page, and enforces a request quota per window with the
``X-Rate-Limit-*`` headers (429 when exceeded). It can fail a share of requests (5xx, resets, bare
429s; ``cut_rate``: answers cut off half way; on demand ``cut_next``/``malformed_next``) and
change orders between pages (refunds, status changes, archiving, edits, new orders).
"""

from __future__ import annotations

import bisect
import json
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from email.utils import parsedate_to_datetime
from typing import Any

from .shopify_fake import RESET, FakeClock, LocalServer

PURCHASE = {2, 3, 8, 9, 10, 11, 14}
STATUS_NAMES = {
    0: "Incomplete",
    1: "Pending",
    2: "Shipped",
    3: "Partially Shipped",
    4: "Refunded",
    5: "Cancelled",
    6: "Declined",
    7: "Awaiting Payment",
    8: "Awaiting Pickup",
    9: "Awaiting Shipment",
    10: "Completed",
    11: "Awaiting Fulfillment",
    12: "Manual Verification Required",
    13: "Disputed",
    14: "Partially Refunded",
}


def rfc2822(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def money(value: Decimal) -> str:
    return f"{value:.4f}"


@dataclass
class BigCommerceFake:
    clock: FakeClock
    template: dict[str, Any]
    store_hash: str = "abc123"
    token: str = "bc-test-token"
    quota: int = 150  # requests per window
    window_ms: int = 30_000
    fail_rate: float = 0.0
    mutate_per_page: int = 0
    mutation_budget: int = 0
    empty_reply: str = "204"  # how the page past the end looks: "204", "[]" or "" (empty 200 body)
    extra_purchase: frozenset[int] = frozenset()
    cut_rate: float = 0.0  # share of requests answered in full, then cut half way (its own random stream)
    cut_next: int = 0  # answer this many order requests with a body cut half way
    malformed_next: int = 0  # ... or with a truncated JSON body whose length matches
    # how GET /v2/orders treats archived orders (is_deleted), which BigCommerce does not document:
    # "hidden": left out of the plain list, is_deleted=true lists only them; "filter": listed, and
    # is_deleted=true lists only them; "ignored": listed, and the is_deleted parameter is ignored
    archived_listing: str = "hidden"
    seed: int = 5
    # Multi-Currency on: transactional currency -> units per 1 USD (the store's default). Every order
    # then carries store_default_currency_code and store_default_to_transactional_exchange_rate, and
    # every fourth order of add_orders is paid in one of these currencies (its amounts in it)
    multi_currency: dict[str, Decimal] = field(default_factory=dict)
    serve: bool = True  # False: no server of its own (tests/chaos serves ``handle`` in another process)

    def __post_init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.rng = random.Random(self.seed)
        self.window_start = self.clock.monotonic()
        self.used = 0
        self.over_quota = 0  # requests that arrived with the quota spent
        self.calls = 0  # authenticated requests, failed ones included
        self.failures = 0
        self.cut_rng = random.Random(self.seed + 1)
        self.cuts = 0  # answers cut off or malformed
        self._cut_this = False
        self.mutations = 0
        self.requests: list[dict[str, str]] = []  # query parameters of each list request
        self._lock = threading.Lock()
        self._dates: dict[int, datetime] = {}  # parsed date_modified, kept beside the JSON
        self._cache: list[tuple[datetime, int]] | None = None
        self.server = LocalServer(self.handle) if self.serve else None
        self.url = self.server.url if self.server else ""

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    # ------------------------------------------------------------------ data
    def make(
        self,
        oid: int,
        *,
        customer_id: int,
        email: str,
        created: datetime,
        modified: datetime,
        status_id: int,
        total: Decimal,
        refunded: Decimal = Decimal(0),
        deleted: bool = False,
        currency: str = "USD",
    ) -> dict[str, Any]:
        order = dict(self.template)  # nested values are shared, except those replaced below
        self._dates[oid] = modified.replace(microsecond=0)
        self._cache = None
        order.update(
            {
                "id": oid,
                "customer_id": customer_id,
                "date_created": rfc2822(created),
                "date_modified": rfc2822(modified),
                "status_id": status_id,
                "status": STATUS_NAMES[status_id],
                "custom_status": STATUS_NAMES[status_id],
                "total_inc_tax": money(total),
                "total_ex_tax": money(total),
                "subtotal_inc_tax": money(total),
                "subtotal_ex_tax": money(total),
                "refunded_amount": money(refunded),
                "is_deleted": deleted,
                "default_currency_code": currency,
                "currency_code": currency,
            }
        )
        if self.multi_currency:
            rate = self.multi_currency.get(currency, Decimal(1))
            order.update(
                {"store_default_currency_code": "USD", "store_default_to_transactional_exchange_rate": f"{rate:.10f}"}
            )
        order["billing_address"] = {**(order.get("billing_address") or {}), "email": email}
        for key in ("products", "shipping_addresses", "coupons"):
            if isinstance(order.get(key), dict):
                order[key] = {
                    "url": f"{self.url}/stores/{self.store_hash}/v2/orders/{oid}/{key}",
                    "resource": f"/orders/{oid}/{key}",
                }
        return order

    def add_orders(self, count: int, *, start_id: int = 100, days: int = 700) -> None:
        base = self.clock.now() - timedelta(days=days)
        step = days * 86400 / max(1, count)
        people = count // 3 + 1
        for i in range(count):
            created = base + timedelta(seconds=int(i * step))
            guest = i % 9 == 0
            status = self.rng.choice([2, 3, 8, 9, 10, 11, 11, 11, 10, 10, 14, 0, 1, 4, 5, 6, 7, 12, 13])
            total = Decimal(15 + i % 170) + Decimal("0.5")
            currency = "USD"
            if self.multi_currency and i % 4 == 3:  # paid in another currency: prices converted, to the cent
                currency = sorted(self.multi_currency)[i // 4 % len(self.multi_currency)]
                total = (total * self.multi_currency[currency]).quantize(Decimal("0.01"))
            refunded = Decimal("3.25") if status == 14 else (total if status == 4 else Decimal(0))
            self.orders[start_id + i] = self.make(
                start_id + i,
                customer_id=0 if guest else 9000 + i % people,
                email=f" Buyer{i % people}@Example.com" if not guest else f"guest{i}@example.com",
                created=created,
                modified=created + timedelta(minutes=5),
                status_id=status,
                total=total,
                refunded=refunded,
                deleted=(i % 211 == 0),
                currency=currency,
            )

    def mutate(self, n: int) -> None:
        for _ in range(n):
            if self.mutations >= self.mutation_budget:
                return
            self.mutations += 1
            now = self.clock.now()
            kind = self.rng.choice(["refund", "refund", "status", "delete", "edit", "new"])
            if kind == "new":
                oid = max(self.orders) + 1
                self.orders[oid] = self.make(
                    oid,
                    customer_id=0,
                    email=f"new{oid}@example.com",
                    created=now,
                    modified=now,
                    status_id=11,
                    total=Decimal("33.00"),
                )
                continue
            order = self.orders[self.rng.choice(list(self.orders))]
            if kind == "refund":
                refunded = Decimal(order["refunded_amount"]) + Decimal("2.50")
                order["refunded_amount"] = money(min(refunded, Decimal(order["total_inc_tax"])))
                order["status_id"] = 14
            elif kind == "status":
                order["status_id"] = self.rng.choice([5, 6, 10, 2])
            elif kind == "delete":
                order["is_deleted"] = True
            else:
                order["billing_address"]["email"] = f"edited{order['id']}@example.com"
            order["status"] = STATUS_NAMES[order["status_id"]]
            order["date_modified"] = rfc2822(now)
            self._dates[order["id"]] = now.replace(microsecond=0)
            self._cache = None

    def touch(self, oid: int) -> None:
        """After editing an order in ``orders`` directly: its ``date_modified`` becomes now."""
        now = self.clock.now()
        self.orders[oid]["date_modified"] = rfc2822(now)
        self._dates[oid] = now.replace(microsecond=0)
        self._cache = None

    def archive(self, oid: int) -> None:
        """``DELETE /v2/orders/{id}``: the order is archived (``is_deleted``) and its ``date_modified`` moves."""
        now = self.clock.now()
        self.orders[oid]["is_deleted"] = True
        self.orders[oid]["date_modified"] = rfc2822(now)
        self._dates[oid] = now.replace(microsecond=0)
        self._cache = None

    def expected(self) -> dict[str, tuple[Decimal, bool]]:
        out = {}
        for o in self.orders.values():
            amount = Decimal(o["total_inc_tax"]) - Decimal(o["refunded_amount"])  # transactional currency
            if self.multi_currency:  # in USD, the store's default
                amount = (amount / Decimal(o["store_default_to_transactional_exchange_rate"])).quantize(
                    Decimal("0.0001"), rounding=ROUND_HALF_EVEN
                )
            counted = o["status_id"] in PURCHASE or o["status_id"] in self.extra_purchase
            out[str(o["id"])] = (amount, counted and amount > 0 and not o["is_deleted"])
        return out

    # ------------------------------------------------------------------ HTTP
    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes):
        """An answer with a body can be lost half way on the way back (``cut_next``, or a share
        ``cut_rate``: the quota was spent, the page was served) or arrive as truncated JSON
        (``malformed_next``)."""
        with self._lock:
            self._cut_this = False
            reply = self._handle(method, path, query, headers, body)
            if reply is RESET or reply[0] != 200 or not reply[2]:
                return reply
            if self.malformed_next:
                self.malformed_next -= 1
                self.cuts += 1
                return reply[0], reply[1], reply[2][: len(reply[2]) // 2]
            if self._cut_this or self.cut_next:
                if not self._cut_this:
                    self.cut_next -= 1
                self.cuts += 1
                return (*reply[:3], len(reply[2]) // 2)
            return reply

    def _handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes):
        match = re.fullmatch(rf"/stores/{self.store_hash}/v2/orders(?:/(\d+))?", path)
        if method != "GET" or not match:
            return 404, {}, b"[]"
        if headers.get("X-Auth-Token") != self.token:
            return 401, {}, b'[{"status":401,"message":"No credentials"}]'
        self.calls += 1
        if self.fail_rate and self.rng.random() < self.fail_rate:
            self.failures += 1
            kind = self.rng.choice(["500", "502", "503", "reset", "429"])
            if kind == "reset":
                return RESET
            return int(kind), {}, b"busy"  # a bare 429: no quota headers
        if self.cut_rate and self.cut_rng.random() < self.cut_rate:  # served in full, then cut by handle()
            self._cut_this = True
        now_ms = self.clock.monotonic() * 1000
        if now_ms - self.window_start * 1000 >= self.window_ms:
            self.window_start, self.used = self.clock.monotonic(), 0
        reset = int(self.window_ms - (now_ms - self.window_start * 1000))
        if self.used >= self.quota:
            self.over_quota += 1
            return 429, self._quota_headers(0, reset), b'[{"status":429,"message":"Too many requests"}]'
        self.used += 1
        limits = self._quota_headers(self.quota - self.used, reset)
        if match.group(1):
            order = self.orders.get(int(match.group(1)))
            if order is None:
                return 404, limits, b'[{"status":404,"message":"The requested resource was not found."}]'
            return 200, {**limits, "Content-Type": "application/json"}, json.dumps(order).encode()
        params = {k: v[-1] for k, v in query.items()}
        self.requests.append(params)
        self.mutate(self.mutate_per_page)
        rows = self._list(params)
        if not rows:
            if self.empty_reply == "204":
                return 204, limits, b""
            return 200, {**limits, "Content-Type": "application/json"}, self.empty_reply.encode()
        return 200, {**limits, "Content-Type": "application/json"}, json.dumps(rows).encode()

    def _quota_headers(self, left: int, reset_ms: int) -> dict[str, str]:
        return {
            "X-Rate-Limit-Requests-Left": str(left),
            "X-Rate-Limit-Time-Reset-Ms": str(max(0, reset_ms)),
            "X-Rate-Limit-Requests-Quota": str(self.quota),
            "X-Rate-Limit-Time-Window-Ms": str(self.window_ms),
        }

    def _list(self, params: dict[str, str]) -> list[dict[str, Any]]:
        assert params.get("sort") == "date_modified:asc", params
        since = None
        if params.get("min_date_modified"):
            text = params["min_date_modified"]
            since = parsedate_to_datetime(text) if "," in text else datetime.fromisoformat(text)
        page, limit = int(params.get("page", 1)), min(250, int(params.get("limit", 50)))
        if self._cache is None:
            self._cache = sorted((self._dates[oid], oid) for oid in self.orders)
        start = bisect.bisect_left(self._cache, (since, -1)) if since else 0
        wanted = self._archived_filter(params.get("is_deleted"))
        if wanted is None:
            window = self._cache[start + (page - 1) * limit : start + page * limit]
            return [self.orders[oid] for _, oid in window]
        rows, skip = [], (page - 1) * limit  # a filter: offsets count matching orders only
        for _, oid in self._cache[start:]:
            if bool(self.orders[oid]["is_deleted"]) is not wanted:
                continue
            if skip:
                skip -= 1
                continue
            rows.append(self.orders[oid])
            if len(rows) == limit:
                break
        return rows

    def _archived_filter(self, is_deleted: str | None) -> bool | None:
        """True: archived orders only; False: none of them; None: no filter."""
        if self.archived_listing == "ignored":
            return None
        if is_deleted is not None and is_deleted.lower() in ("true", "1"):
            return True
        if is_deleted is not None and is_deleted.lower() in ("false", "0"):
            return False
        return False if self.archived_listing == "hidden" else None
