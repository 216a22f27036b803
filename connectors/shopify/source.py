"""Shopify orders through the GraphQL Admin API (version pinned in :mod:`connectors.shopify.queries`).

**Cursor.** The stored cursor is a small JSON text, e.g.
``{"since": "2026-11-25T12:00:00+00:00"}`` or, while a backfill runs,
``{"bulk": "gid://shopify/BulkOperation/1", "since": null}``. Its semantics:

* ``since`` is a UTC time with an explicit offset: the newest ``updatedAt`` among orders already
  committed to the store, never later than the start of the cycle (``PullContext.started_at``).
* The next pull asks for ``updated_at:>='since − overlap'`` (a *closed* start, default overlap
  15 minutes) sorted by ``UPDATED_AT`` oldest first, paginated by ``pageInfo.endCursor``. The
  overlap re-reads orders Shopify indexed late; re-reads are harmless (upsert by order id keeping
  the newest ``updatedAt``, and duplicates within a pull are dropped here).
* The cursor only moves through ``Page.cursor``, which the pipeline commits in the same
  transaction as that page's orders: a crash re-reads at most one page.
* An order updated while we paginate moves to the end of the sort order and is read again later
  in the same pull (or in the next one); keyset cursors never skip the others.

**Backfill.** The first pull (no ``since``) exports the whole history with a bulk operation
(:mod:`connectors.shopify.bulk`); its id is committed at once, so a restart resumes it. When the export is
read, ``since`` becomes the operation's ``createdAt`` and the incremental pull runs at once,
picking up whatever changed during the export. ``backfill = "paged"`` paginates instead.

**Access.** ``read_orders`` shows only the last 60 days; the whole history needs
``read_all_orders``. The source checks the granted scopes once and fails with a clear message
unless ``allow_partial_history = true`` (then it warns). Customer ids and emails need
``read_customers``.

**Webhooks.** ``verify_webhook`` checks ``X-Shopify-Hmac-Sha256`` (base64 HMAC-SHA256 of the raw
body with the app's secret, named by ``webhook_secret``) in constant time.
``orders_from_webhook`` reads ``orders/create``, ``orders/updated`` and ``orders/cancelled``
bodies directly and fetches the order for ``refunds/create``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Generator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, Unpack

from pydantic import Field

from .. import validate
from ..base import (
    ConnectorContext,
    ConnectorSettings,
    FatalError,
    Order,
    Page,
    PullContext,
    Quarantined,
    RecordError,
    webhook_json,
)
from ..http import HttpConnector, PlumbingArgs
from .bulk import BulkExport, BulkGone
from .graphql import CostBucket, PageSize, ShopDomain, ShopifyGraphQL
from .parse import numeric_id, order_from_node, order_from_rest, order_gid, parse_time
from .queries import ACCESS_SCOPES, API_VERSION, MAX_PAGE_SIZE, ORDER_BY_ID, ORDERS_PAGE, updated_since

log = logging.getLogger(__name__)

BULK_BATCH = 1000
ORDER_TOPICS = {"orders/create", "orders/updated", "orders/cancelled", "orders/paid"}


class ShopifySettings(ConnectorSettings):
    type: str = "shopify"
    shop: ShopDomain
    token_secret: str = Field(..., min_length=1)  # names the secret holding the Admin API access token
    base_url: str | None = None  # default https://<shop>.myshopify.com (fakes, proxies)
    webhook_secret: str | None = None  # names the secret the app signs webhooks with
    # ~5 cost points per order: 100 orders request ~500 of the 1,000-point single-query limit
    page_size: int = Field(100, ge=1, le=MAX_PAGE_SIZE)
    overlap_minutes: float = Field(15.0, ge=0)
    backfill: Literal["bulk", "paged"] = "bulk"
    bulk_poll_seconds: float = Field(5.0, gt=0)
    allow_partial_history: bool = False
    non_purchase_financial_statuses: list[str] = ["VOIDED", "EXPIRED"]
    timeout_seconds: float = Field(60.0, gt=0)


def dump_cursor(since: datetime | None, bulk: str | None = None) -> str:
    return json.dumps({"since": since.astimezone(UTC).isoformat() if since else None, "bulk": bulk}, sort_keys=True)


def load_cursor(text: str | None) -> tuple[datetime | None, str | None]:
    if not text:
        return None, None
    try:
        data = json.loads(text)
        return parse_time(data.get("since")), data.get("bulk")
    except (ValueError, AttributeError):
        raise FatalError(f"stored cursor {text[:80]!r} is not a Shopify cursor; reset it") from None


class ShopifySource(HttpConnector[ShopifySettings]):
    Settings = ShopifySettings

    def __init__(self, settings: ShopifySettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.client = self.plumbing.client(
            settings.base_url or f"https://{settings.shop}",
            read_timeout_s=settings.timeout_seconds,
            headers={"Content-Type": "application/json"},
        )
        self.page = PageSize(settings.page_size)
        self.bucket = CostBucket(clock=self.plumbing.clock, sleep=self.plumbing.sleep)
        self.gql = ShopifyGraphQL(
            self.client,
            f"/admin/api/{API_VERSION}/graphql.json",
            bucket=self.bucket,
            clock=self.plumbing.clock,
            on_server_error=self.page.shrink,
            on_cost_exceeded=self.page.cap,
        )
        self.bulk = BulkExport(self.gql, self.client, sleep=self.plumbing.sleep, poll_s=settings.bulk_poll_seconds)
        self.warnings: list[str] = []
        self._scopes_checked = False

    def __repr__(self) -> str:
        return f"ShopifySource(name={self.name!r}, shop={self.settings.shop!r})"

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ pull
    def pull(self, context: PullContext) -> Iterator[Page]:
        since, bulk_id = load_cursor(context.cursor)
        self.check_access()
        if since is None and (bulk_id or self.settings.backfill == "bulk"):
            since = yield from self._backfill(bulk_id, context)
        yield from self._incremental(since, context)

    def _authorise(self) -> None:
        """Put the access token on the session (once); a missing secret is a fatal, clear error."""
        self.client.authorise("X-Shopify-Access-Token", lambda: self.secret(self.settings.token_secret))

    def check_access(self) -> None:
        """Fail (or warn) when the token cannot see orders older than 60 days."""
        self._authorise()
        if self._scopes_checked:
            return
        data = self.gql.execute("AccessScopes", ACCESS_SCOPES, dict)
        scopes = {s.get("handle") for s in ((data.get("currentAppInstallation") or {}).get("accessScopes") or [])}
        self._scopes_checked = True
        if "read_all_orders" in scopes:
            return
        message = (
            "the access token lacks the read_all_orders scope: Shopify shows only the last 60 days of "
            "orders, so RFM would be computed on a partial history"
        )
        if not self.settings.allow_partial_history:
            raise FatalError(
                message + " (grant read_all_orders, or set allow_partial_history = true)", connector=self.name
            )
        self.warnings.append(message)
        log.warning(message, extra={"connector": self.name})

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the token (and webhook secret, when named) are set; ``online``:
        one scopes query proves the token works and can see the whole order history."""
        problems = self._context.missing_secrets(self.name, self.settings.token_secret, self.settings.webhook_secret)
        if problems or not online:
            return problems
        self.warnings.clear()
        self.check_access()
        return [(w, "grant the read_all_orders scope to the app") for w in self.warnings]

    def _backfill(self, bulk_id: str | None, context: PullContext) -> Generator[Page, None, datetime]:
        if bulk_id is None:
            bulk_id = self.bulk.start()
            yield Page(records=[], cursor=dump_cursor(None, bulk_id))  # committed: a restart resumes it
        try:
            result = self.bulk.wait(bulk_id)
        except BulkGone:
            yield Page(records=[], cursor=dump_cursor(None))  # forget it: the next pull starts afresh
            raise
        since = min(result.created_at, context.started_at)
        batch: list[Order | Quarantined] = []
        for n, node in enumerate(self.bulk.lines(result.url) if result.url else ()):
            if not isinstance(node, dict):  # a JSONL line that is not an object: quarantined, never dropped
                batch.append(
                    Quarantined(
                        source=self.name,
                        location=f"bulk export line {n + 1}",
                        reason=f"not an order object but {validate.json_type(node)}",
                    )
                )
            elif "__parentId" not in node:
                batch.append(order_from_node(self.name, node, self.settings.non_purchase_financial_statuses))
            if len(batch) >= BULK_BATCH:
                yield Page(records=batch, cursor=None)
                batch = []
        yield Page(records=batch, cursor=dump_cursor(since))
        return since

    def _incremental(self, since: datetime | None, context: PullContext) -> Iterator[Page]:
        overlap = timedelta(minutes=self.settings.overlap_minutes)
        start = (since - overlap).astimezone(UTC).isoformat() if since else None
        query = updated_since(start) if start else None
        after: str | None = None
        cursors_seen: set[str] = set()
        newest: dict[str, datetime | None] = {}
        high = since
        while True:
            data = self.gql.execute(
                "OrdersPage",
                ORDERS_PAGE,
                lambda: {"first": self.page.size, "after": after, "query": query},  # noqa: B023 (called within this iteration)
            )
            connection = data.get("orders")
            if connection is None:
                raise FatalError("the orders query returned no data", connector=self.name)
            nodes = connection.get("nodes") if isinstance(connection, dict) else None
            info = connection.get("pageInfo") if isinstance(connection, dict) else None
            if (
                not isinstance(connection, dict)
                or not isinstance(nodes, (list, type(None)))
                or not isinstance(info, (dict, type(None)))
            ):
                raise FatalError(
                    "the orders query answered in a shape Shopify does not document (orders.nodes "
                    "must be a list, orders.pageInfo an object)",
                    connector=self.name,
                )
            records: list[Order | Quarantined] = []
            for n, node in enumerate(nodes or []):
                if not isinstance(node, dict):  # quarantined with what it was, never dropped
                    records.append(
                        Quarantined(
                            source=self.name,
                            location=f"orders page item {n + 1}",
                            reason=f"not an order object but {validate.json_type(node)}",
                        )
                    )
                    continue
                record = order_from_node(self.name, node, self.settings.non_purchase_financial_statuses)
                if isinstance(record, Order):
                    if record.order_id in newest:
                        seen = newest[record.order_id]
                        if record.updated_at is None or (seen is not None and seen >= record.updated_at):
                            continue  # the same order again, not newer: drop the duplicate
                    newest[record.order_id] = record.updated_at
                    if record.updated_at and (high is None or record.updated_at > high):
                        high = record.updated_at
                records.append(record)
            self.page.grow()
            yield Page(records=records, cursor=dump_cursor(min(high, context.started_at)) if high else None)
            info = info or {}
            if not info.get("hasNextPage"):
                return
            nxt = info.get("endCursor")
            if not nxt or nxt in cursors_seen:
                raise FatalError(
                    "Shopify returned a page cursor it had returned before; refusing to loop", connector=self.name
                )
            cursors_seen.add(nxt)
            after = nxt

    # ------------------------------------------------------------------ webhooks
    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        if not self.settings.webhook_secret:
            log.warning("webhook received but no webhook_secret is configured", extra={"connector": self.name})
            return False
        given = _header(headers, "X-Shopify-Hmac-Sha256")
        if not given:
            return False
        key = self.secret(self.settings.webhook_secret).encode()
        expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
        return hmac.compare_digest(expected, given.strip().encode())

    def orders_from_webhook(self, topic: str, headers: Mapping[str, str], body: bytes) -> list[Order]:
        """The order of an ``orders/*`` or ``refunds/create`` body ([] for other topics, or a
        refunded order that is gone). An unreadable body or order raises :class:`RecordError` with
        the reason, which the daemon keeps with the event; a failed fetch raises as the client does."""
        topic = (topic or _header(headers, "X-Shopify-Topic") or "").strip().lower()
        if not topic:  # which change it is cannot be told: failed with its reason, never silently "done"
            raise RecordError(
                "webhook without a topic (no X-Shopify-Topic header)", location="webhook", connector=self.name
            )
        payload = webhook_json(body, f"webhook {topic}", self.name)
        record: Order | Quarantined | None
        try:
            if topic in ORDER_TOPICS:
                record = order_from_rest(self.name, payload, self.settings.non_purchase_financial_statuses)
            elif topic == "refunds/create":
                refund = payload.get("refund") or payload
                order_id = refund.get("order_id") if isinstance(refund, dict) else None
                if not order_id or not numeric_id(order_id).isdigit():
                    raise RecordError(
                        "webhook refunds/create without a numeric order_id", location="webhook", connector=self.name
                    )
                record = self.fetch_order(str(order_id))
            else:
                return []
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a field of an unexpected shape
            order = payload.get("order", payload)
            order_id = order.get("id") if isinstance(order, dict) else None
            where = f"order {order_id}" if isinstance(order_id, (int, str)) else "order"
            raise RecordError(
                f"webhook {topic}: {where}: unreadable payload ({type(exc).__name__})",
                location="webhook",
                connector=self.name,
            ) from None
        if isinstance(record, Quarantined):
            raise RecordError(
                f"webhook {topic}: {record.location}: {record.reason}", location=record.location, connector=self.name
            )
        return [record] if record is not None else []

    def fetch_order(self, order_id: str) -> Order | Quarantined | None:
        self._authorise()
        node = self.gql.execute("OrderById", ORDER_BY_ID, lambda: {"id": order_gid(order_id)}).get("order")
        if node is None:
            return None
        return order_from_node(self.name, node, self.settings.non_purchase_financial_statuses)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


__all__ = ["ShopifySource", "ShopifySettings", "dump_cursor", "load_cursor", "numeric_id"]
