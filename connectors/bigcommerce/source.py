"""BigCommerce orders: ``GET /stores/{store_hash}/v2/orders`` (``X-Auth-Token``), oldest change first.

**Cursor.** The stored cursor is a small JSON text,
``{"since": "2026-11-25T12:00:00+00:00", "archived_since": "2026-11-25T12:00:00+00:00"}``:

* ``since`` is a UTC time with an explicit offset: the newest ``date_modified`` among orders already
  committed to the store, never later than the start of the cycle (``PullContext.started_at``).
* The next pull asks for ``min_date_modified = since − overlap`` (RFC-2822, whole seconds, a
  *closed* start; default overlap 15 minutes), ``sort=date_modified:asc``, ``limit`` up to 250.
  Re-read orders are harmless: the store keeps the newest ``date_modified`` per order id, and
  duplicates within one pull are dropped here.
* The cursor only moves through ``Page.cursor``, which the pipeline commits in the same
  transaction as that page's orders: a crash re-reads at most one page.

**Archived orders.** ``DELETE /v2/orders/{id}`` archives an order; the order then carries
``is_deleted: true`` ("Indicates whether the order is deleted/archived", ``order_Resp`` in the
Orders V2 OpenAPI spec). Whether ``GET /v2/orders`` still lists it is not documented: the current
spec lists no ``is_deleted`` filter, while BigCommerce's older API reference listed ``is_deleted``
among the ``GET /v2/orders`` filters (and bigcommerce/docs PRs #360/#374 mention the parameter
missing from the docs). So both cases are handled: after the plain pass, a second pass asks for
``is_deleted=true`` from ``archived_since − overlap`` (same paging and anchoring) and yields those
orders as ``Order(is_deleted=True)``, so an order archived after it was pulled leaves RFM. If that
answer holds an order that is *not* archived, the server ignored the filter, which means the plain
list already carries archived orders: the pass stops and is skipped from then on (per process).
``archived_since`` moves on its own, so a crash between the passes loses nothing; a cursor without
it (older versions) makes the first archived pass read every archived order once. Archiving is
assumed to bump ``date_modified`` (as an edit does); the ``store/order/archived`` webhook, which
fetches the order by id, covers a store where it does not.

**Paging.** Plain ``page=N`` offsets skip an order whenever an earlier one is modified mid-pull
(everything shifts left by one). So after each page the request is re-anchored:
``min_date_modified`` becomes the newest ``date_modified`` on that page and ``page`` goes back to 1;
``page`` only counts up while a whole page shares one second. Paging ends on an empty body, an
empty list or HTTP 204. A request repeated within one pull, or a page identical to the previous
one, is an error rather than an endless loop. After a 5xx the page size halves (it grows back
after successful pages, only at the start of a new anchor so offsets never leave a gap).

**Rate limits.** Every response carries ``X-Rate-Limit-Requests-Left`` and
``X-Rate-Limit-Time-Reset-Ms``; when the quota is used up the next request waits for the reset.
A 429 waits the reset time; a 429 without those headers backs off harder (5 s, doubling, at most
2 minutes), on top of the shared retry policy.

**Webhooks.** BigCommerce webhooks carry the custom headers set when the hook was created, so the
hook is created with a header (``webhook_header``, default ``X-Rfm-Sync-Secret``) whose value is
the secret named by ``webhook_secret``; ``verify_webhook`` compares it in constant time.
``orders_from_webhook`` takes ``store/order/*`` callbacks and fetches ``GET /v2/orders/{id}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack

import requests
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
    RetryableError,
    webhook_json,
)
from ..http import TOKEN_REJECTED, HttpConnector, PlumbingArgs, refusals_explained
from .parse import format_rfc2822, order_from_json

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 250
SCOPE_HINT = "the API account lacks the Orders read-only scope (store_v2_orders_read_only)"


class BigCommerceSettings(ConnectorSettings):
    type: str = "bigcommerce"
    store_hash: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9]+$")
    token_secret: str = Field(..., min_length=1)  # names the secret holding the API account access token
    base_url: str = "https://api.bigcommerce.com"
    page_size: int = Field(MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    overlap_minutes: float = Field(15.0, ge=0)
    count_manual_verification: bool = False  # status 12
    count_disputed: bool = False  # status 13
    webhook_secret: str | None = None
    webhook_header: str = "X-Rfm-Sync-Secret"
    timeout_seconds: float = Field(60.0, gt=0)


class QuotaLimiter:
    """Waits when BigCommerce says the quota is spent; turns 429s into the right pause."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock, self._sleep = clock, sleep
        self.left: int | None = None
        self.reset_at = 0.0
        self.pause = 0.0
        self.strikes = 0
        self.slept: list[float] = []

    def acquire(self) -> None:
        wait = self.pause
        if not wait and self.left is not None and self.left <= 0:
            wait = max(0.0, self.reset_at - self._clock())
        self.pause = 0.0
        if wait > 0:
            self.slept.append(wait)
            self._sleep(wait)
            self.left = None

    def observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        left = _int(response.headers.get("X-Rate-Limit-Requests-Left"))
        reset_ms = _int(response.headers.get("X-Rate-Limit-Time-Reset-Ms"))
        if left is not None:
            self.left = left
        if reset_ms is not None:
            self.reset_at = self._clock() + reset_ms / 1000.0
        if response.status_code == 429:
            if reset_ms is not None:
                self.pause = reset_ms / 1000.0
            else:
                self.pause = min(120.0, 5.0 * 2**self.strikes)
                self.strikes += 1
        elif response.status_code < 400:
            self.strikes = 0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def dump_cursor(since: datetime | None, archived_since: datetime | None = None) -> str | None:
    if since is None and archived_since is None:
        return None
    state = {"since": since.astimezone(UTC).isoformat() if since else None}
    if archived_since is not None:
        state["archived_since"] = archived_since.astimezone(UTC).isoformat()
    return json.dumps(state)


def _moment(text: str, value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value) if value else None
    except (ValueError, TypeError):
        raise FatalError(f"stored cursor {text[:80]!r} is not a BigCommerce cursor; reset it") from None
    if moment is not None and moment.tzinfo is None:
        raise FatalError("stored cursor has no UTC offset; reset it")
    return moment.astimezone(UTC) if moment else None


def load_state(text: str | None) -> tuple[datetime | None, datetime | None]:
    """``(since, archived_since)``. A cursor from before ``archived_since`` existed gives None: the
    archived pass then reads every archived order once."""
    if not text:
        return None, None
    try:
        state = json.loads(text)
        since, archived = state.get("since"), state.get("archived_since")
    except (ValueError, AttributeError):
        raise FatalError(f"stored cursor {text[:80]!r} is not a BigCommerce cursor; reset it") from None
    return _moment(text, since), _moment(text, archived)


def load_cursor(text: str | None) -> datetime | None:
    return load_state(text)[0]


def _cap(moment: datetime | None, context: PullContext) -> datetime | None:
    return min(moment, context.started_at) if moment else None


class BigCommerceSource(HttpConnector[BigCommerceSettings]):
    Settings = BigCommerceSettings

    def __init__(self, settings: BigCommerceSettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.quota = QuotaLimiter(clock=self.plumbing.clock, sleep=self.plumbing.sleep)
        self.client = self.plumbing.client(
            settings.base_url,
            read_timeout_s=settings.timeout_seconds,
            headers={"Accept": "application/json"},
            hooks=[self.quota.observe, self._observe],
            limiter=self.quota,
        )
        self._lock = threading.Lock()
        self.prefix = f"/stores/{settings.store_hash}/v2"
        self.page_size = settings.page_size
        self.list_includes_archived = False  # set once is_deleted=true turns out to be ignored (see pull)
        extra = {12} if settings.count_manual_verification else set()
        self.extra_purchase = frozenset(extra | ({13} if settings.count_disputed else set()))

    def __repr__(self) -> str:
        return f"BigCommerceSource(name={self.name!r}, store_hash={self.settings.store_hash!r})"

    def close(self) -> None:
        self.client.close()

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code >= 500:
            self.page_size = max(1, self.page_size // 2)

    def _authorise(self) -> None:
        """Put the access token on the session (once); a missing secret is a fatal, clear error."""
        self.client.authorise("X-Auth-Token", lambda: self.secret(self.settings.token_secret))

    def _get(self, path: str, prepare: Callable[[], dict[str, Any]] | None = None) -> requests.Response:
        self._authorise()
        with (
            refusals_explained("BigCommerce", connector=self.name, scope_hint=SCOPE_HINT, on_401=f"{TOKEN_REJECTED}; "),
            self._lock,  # a webhook fetch and a pull may share this client: one request at a time
        ):
            return self.client.request("GET", self.prefix + path, prepare=prepare)

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the token (and webhook secret, when named) are set; ``online``:
        one order listed (``GET /v2/orders?limit=1``) proves the token, the store hash and the
        Orders read scope (a refusal raises :class:`FatalError` naming the scope)."""
        problems = self._context.missing_secrets(self.name, self.settings.token_secret, self.settings.webhook_secret)
        if problems or not online:
            return problems
        self._rows(self._get("/orders", lambda: {"params": {"limit": 1, "page": 1}}))
        return []

    # ------------------------------------------------------------------ pull
    def pull(self, context: PullContext) -> Iterator[Page]:
        since, archived_since = load_state(context.cursor)
        high = since
        for records, high in self._pass(since, context):
            yield Page(records=records, cursor=dump_cursor(_cap(high, context), archived_since))
        since = _cap(high, context)
        if self.list_includes_archived:  # learnt earlier: the plain list already carries archived orders
            yield Page(records=[], cursor=dump_cursor(since, since))
            return
        archived_high = archived_since
        for records, archived_high in self._pass(archived_since, context, archived=True):
            if self.list_includes_archived:
                break
            yield Page(records=records, cursor=dump_cursor(since, _cap(archived_high, context)))
        # a complete pass has seen every archived order changed up to now: start the next one from here
        done = max((t for t in (archived_high, since) if t is not None), default=None)
        yield Page(records=[], cursor=dump_cursor(since, _cap(done, context)))

    def _pass(
        self, since: datetime | None, context: PullContext, *, archived: bool = False
    ) -> Iterator[tuple[list[Order | Quarantined], datetime | None]]:
        """Page through ``GET /v2/orders`` from ``since − overlap``; yield each page's records and the
        newest ``date_modified`` so far. ``archived``: only archived orders (``is_deleted=true``)."""
        overlap = timedelta(minutes=self.settings.overlap_minutes)
        anchor = (since - overlap).replace(microsecond=0) if since else None
        page_no = 1
        requested: set[tuple[datetime | None, int]] = set()
        newest: dict[str, datetime | None] = {}
        previous_page: list[tuple[Any, Any]] | None = None
        high = since
        while True:
            if (anchor, page_no) in requested:
                raise FatalError("BigCommerce paging repeated a request; refusing to loop", connector=self.name)
            requested.add((anchor, page_no))

            def params(anchor: datetime | None = anchor, page_no: int = page_no) -> dict[str, Any]:
                query: dict[str, Any] = {"sort": "date_modified:asc", "page": page_no, "limit": self.page_size}
                if anchor is not None:
                    query["min_date_modified"] = format_rfc2822(anchor)
                if archived:
                    query["is_deleted"] = "true"
                return {"params": query}

            rows = self._rows(self._get("/orders", params))
            if not rows:
                return
            if archived and not all(r.get("is_deleted") is True for r in rows):
                # is_deleted=true was not applied, so the plain list (the main pass) had them all
                log.info(
                    "BigCommerce ignores is_deleted=true: archived orders come with the plain list",
                    extra={"connector": self.name},
                )
                self.list_includes_archived = True
                return
            content = [(r.get("id"), r.get("date_modified")) if isinstance(r, dict) else r for r in rows]
            if page_no > 1 and content == previous_page:
                raise FatalError("BigCommerce returned the same page twice; refusing to loop", connector=self.name)
            previous_page = content
            records: list[Order | Quarantined] = []
            page_max: datetime | None = None
            for n, row in enumerate(rows):
                record = (
                    order_from_json(self.name, row, self.extra_purchase)
                    if isinstance(row, dict)
                    else Quarantined(
                        source=self.name,
                        location=f"page {page_no}, item {n + 1}",
                        reason=f"not an order object but {validate.json_type(row)}",
                        raw=validate.printable(json.dumps(row)[:200]),
                    )
                )
                if isinstance(record, Order) and record.updated_at is not None:
                    page_max = max(page_max, record.updated_at) if page_max else record.updated_at
                    seen = newest.get(record.order_id)
                    if record.order_id in newest and seen is not None and seen >= record.updated_at:
                        continue
                    newest[record.order_id] = record.updated_at
                    high = max(high, record.updated_at) if high else record.updated_at
                records.append(record)
            yield records, high
            if page_max is not None and (anchor is None or page_max > anchor):
                anchor, page_no = page_max, 1
                self.page_size = min(self.settings.page_size, self.page_size * 2)  # only at a fresh anchor
            else:
                page_no += 1

    def _rows(self, response: requests.Response) -> list[Any]:
        if response.status_code == 204 or not response.content.strip():
            return []
        try:
            rows = response.json()
        except ValueError:
            raise RetryableError("BigCommerce returned a body that is not JSON", connector=self.name) from None
        if not isinstance(rows, list):
            raise FatalError("BigCommerce returned something other than a list of orders", connector=self.name)
        return rows  # an item that is not an object is quarantined by the caller, never dropped

    # ------------------------------------------------------------------ webhooks
    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        if not self.settings.webhook_secret:
            log.warning("webhook received but no webhook_secret is configured", extra={"connector": self.name})
            return False
        wanted = self.settings.webhook_header.lower()
        given = next((v for k, v in headers.items() if k.lower() == wanted), None)
        if not given:
            return False
        expected = self.secret(self.settings.webhook_secret)
        return hmac.compare_digest(expected.encode(), given.strip().encode())

    def orders_from_webhook(self, topic: str, headers: Mapping[str, str], body: bytes) -> list[Order]:
        """The order a ``store/order/*`` callback names, fetched ([] for other scopes, or an order
        that is gone). An unreadable body or order raises :class:`RecordError` with the reason;
        a failed fetch raises as the client does (retryable or fatal)."""
        payload = webhook_json(body, "webhook", self.name)
        scope = str(topic or payload.get("scope") or "")
        data = payload.get("data") or {}
        if not scope.startswith("store/order/"):
            return []
        if not isinstance(data, dict):
            raise RecordError(f"webhook {scope}: data is not an object", location="webhook", connector=self.name)
        order_id = data.get("id")
        if data.get("type", "order") != "order":
            return []
        if order_id is None or order_id == "":  # an order callback that names no order: failed, never "done"
            raise RecordError(f"webhook {scope}: no data.id (which order?)", location="webhook", connector=self.name)
        if isinstance(order_id, bool) or not isinstance(order_id, (int, str)) or not str(order_id).isdigit():
            raise RecordError(f"webhook {scope}: order id is not a number", location="webhook", connector=self.name)
        record = self.fetch_order(str(order_id))
        if isinstance(record, Quarantined):
            raise RecordError(
                f"webhook {scope}: {record.location}: {record.reason}", location=record.location, connector=self.name
            )
        return [record] if record is not None else []

    def fetch_order(self, order_id: str) -> Order | Quarantined | None:
        if not order_id.isdigit():
            raise FatalError("order id must be numeric", connector=self.name)
        try:
            response = self._get(f"/orders/{order_id}")
        except FatalError as exc:
            if exc.status == 404:
                return None
            raise
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            data = response.json()
        except ValueError:
            raise RetryableError("BigCommerce returned a body that is not JSON", connector=self.name) from None
        if isinstance(data, list):  # tolerate a one-element list
            data = data[0] if data else None
        return order_from_json(self.name, data, self.extra_purchase) if isinstance(data, dict) else None
