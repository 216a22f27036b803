"""Talking GraphQL to one shop: the cost bucket, errors inside 200 responses, and the page size.

Shopify limits GraphQL calls by *calculated query cost*: every response carries
``extensions.cost.throttleStatus`` (``maximumAvailable``, ``currentlyAvailable``, ``restoreRate``)
and ``requestedQueryCost``. :class:`CostBucket` mirrors that bucket on our side: before each
attempt it waits until the bucket has refilled enough for the query's requested cost, so a
well-behaved client is never throttled. When it is anyway (another app instance, a stale
estimate), a ``THROTTLED`` error in a 200 body and an HTTP 429 are handled alike: the bucket is
updated from the body and the request is retried (the shared tenacity policy) after the refill.

A 200 response whose body has ``errors`` is an error: ``THROTTLED`` and internal errors are
retryable, ``ACCESS_DENIED`` is fatal and names the scopes, anything else is fatal with the
error code and message (GraphQL messages describe the query, not customer data).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import requests
from pydantic import AfterValidator, Field

from .. import validate
from ..base import FatalError, RetryableError
from ..http import TOKEN_REJECTED, HttpClient, refusals_explained


def shop_domain(value: str) -> str:
    """A shop as configured ("my-shop", "https://my-shop.myshopify.com/") as its domain."""
    value = value.strip().lower().removeprefix("https://").rstrip("/")
    return value if "." in value else f"{value}.myshopify.com"


# the ``shop`` key of every Shopify connector's settings: "my-shop" or "my-shop.myshopify.com"
ShopDomain = Annotated[str, Field(min_length=1), AfterValidator(shop_domain)]

log = logging.getLogger(__name__)

NODE_COST = 5  # Order + customer + defaultEmailAddress + currentTotalPriceSet + shopMoney
SCOPES = "read_orders, read_all_orders and read_customers"
SCOPE_HINT = f"the access token lacks a scope this source needs ({SCOPES})"


class CostBucket:
    """Our estimate of the shop's query-cost bucket; ``acquire(cost)`` waits for the refill."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock, self._sleep = clock, sleep
        self.maximum: float | None = None
        self.available = 0.0
        self.rate = 0.0
        self.stamp = 0.0
        self.waited = 0.0  # seconds spent waiting (for metrics and tests)

    def update(self, status: dict[str, Any], stamp: float) -> None:
        """Take the server's ``throttleStatus``; ``stamp`` is when the request was sent (conservative)."""
        try:
            self.maximum = float(status["maximumAvailable"])
            self.available = float(status["currentlyAvailable"])
            self.rate = float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return
        self.stamp = stamp

    def estimate(self) -> float | None:
        if self.maximum is None:
            return None
        return min(self.maximum, self.available + (self._clock() - self.stamp) * self.rate)

    def wait_time(self, cost: float) -> float:
        now_available = self.estimate()
        if now_available is None or self.rate <= 0:
            return 0.0
        need = min(cost, self.maximum or cost) - now_available
        return need / self.rate + 0.01 if need > 0 else 0.0

    def acquire(self, cost: float) -> None:
        wait = self.wait_time(cost)
        if wait > 0:
            self.waited += wait
            self._sleep(wait)
        if self.maximum is not None:  # spend it locally until the response tells us the truth
            self.available = (self.estimate() or 0.0) - cost
            self.stamp = self._clock()


class PageSize:
    """Halves after a server error, grows back (doubling) after each successful page."""

    def __init__(self, maximum: int, minimum: int = 10):
        self.maximum, self.minimum = maximum, min(minimum, maximum)
        self.size = maximum

    def shrink(self) -> None:
        self.size = max(self.minimum, self.size // 2)

    def grow(self) -> None:
        self.size = min(self.maximum, self.size * 2)

    def cap(self) -> None:
        """The current size is too big for good (e.g. over the query cost limit): never grow back to it."""
        self.maximum = max(self.minimum, self.size // 2)
        self.size = self.maximum


class ShopifyGraphQL:
    def __init__(
        self,
        client: HttpClient,
        path: str,
        *,
        bucket: CostBucket,
        clock: Callable[[], float],
        on_server_error: Callable[[], None] = lambda: None,
        on_cost_exceeded: Callable[[], None] | None = None,
        scope_hint: str = SCOPE_HINT,
    ):
        self.client, self.path, self.bucket, self._clock = client, path, bucket, clock
        self.scope_hint = scope_hint  # what a 403 or ACCESS_DENIED says the token lacks (source or write-back)
        self._on_server_error = on_server_error
        self._on_cost_exceeded = on_cost_exceeded or on_server_error
        self._costs: dict[str, tuple[float, int]] = {}  # operation -> (requested cost, first)
        self._sent_at = 0.0
        self._operation, self._first = "", 1
        self._lock = threading.RLock()
        client.session.hooks["response"].append(self._observe)

    def execute(self, operation: str, document: str, variables: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one query or mutation; ``variables`` is called per attempt (the page size may shrink)."""

        def prepare() -> dict[str, Any]:
            values = variables()
            self.bucket.acquire(self._cost_hint(operation, values))
            self._sent_at = self._clock()
            self._operation, self._first = operation, int(values.get("first") or 1)
            return {"json": {"query": document, "variables": values}}

        with (
            refusals_explained(
                "Shopify", connector=self.client.connector, scope_hint=self.scope_hint, on_401=f"{TOKEN_REJECTED}, or "
            ),
            self._lock,  # a webhook fetch and a pull may share this client: one request at a time
        ):
            response = self.client.request("POST", self.path, classify=self._classify, prepare=prepare)
        data = response.json().get("data")  # _classify made sure the body is an object
        if data is not None and not isinstance(data, dict):
            raise FatalError(
                f"Shopify's {operation} answer has {validate.json_type(data)} as its data",
                connector=self.client.connector,
            )
        return data or {}

    # ------------------------------------------------------------------ internals
    def _cost_hint(self, operation: str, values: dict[str, Any]) -> float:
        first = int(values.get("first") or 1)
        known = self._costs.get(operation)
        if known is None:  # until Shopify told us: ~5 points per order node (see queries.py)
            return float(2 + NODE_COST * first) if "first" in values else 10.0
        cost, then_first = known
        return max(1.0, cost * first / max(1, then_first)) if "first" in values else cost

    def _learn(self, payload: Any) -> dict[str, Any]:
        """Update the bucket and the operation's known cost from ``extensions.cost``."""
        extensions = payload.get("extensions") if isinstance(payload, dict) else None
        cost = extensions.get("cost") if isinstance(extensions, dict) else None
        if not isinstance(cost, dict):  # absent, or of a shape Shopify does not document: learn nothing
            return {}
        if isinstance(cost.get("throttleStatus"), dict):
            self.bucket.update(cost["throttleStatus"], self._sent_at)
        requested = _number(cost.get("requestedQueryCost"))
        if requested is not None:
            self._costs[self._operation] = (requested, self._first)
        return cost

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code >= 500:
            self._on_server_error()
        elif response.status_code == 429:
            try:
                self._learn(response.json())
            except ValueError:
                pass

    def _classify(self, response: requests.Response) -> None:
        connector = self.client.connector
        try:
            payload = response.json()
        except ValueError:
            raise RetryableError(
                "Shopify returned a body that is not JSON", connector=connector, status=response.status_code
            ) from None
        if not isinstance(payload, dict):
            raise RetryableError(
                f"Shopify returned {validate.json_type(payload)} where a GraphQL response object belongs",
                connector=connector,
                status=response.status_code,
            )
        cost = self._learn(payload)
        errors = payload.get("errors")
        if not errors:
            return
        # the documented shape is a list of {"message", "extensions": {"code"}}; anything else is read as text
        errors = [
            e if isinstance(e, dict) else {"message": str(e)}
            for e in (errors if isinstance(errors, list) else [errors])
        ]
        codes = [
            str((e.get("extensions") if isinstance(e.get("extensions"), dict) else {}).get("code") or "")
            for e in errors
        ]
        if "THROTTLED" in codes or any("throttled" in str(e.get("message", "")).lower() for e in errors):
            wait = self.bucket.wait_time(_number(cost.get("requestedQueryCost")) or 0.0)
            raise RetryableError(
                "Shopify throttled the query (cost bucket empty)",
                retry_after=wait,
                connector=connector,
                status=response.status_code,
            )
        if "ACCESS_DENIED" in codes:
            raise FatalError(f"Shopify denied access to the query: {self.scope_hint}", connector=connector)
        if "MAX_COST_EXCEEDED" in codes:  # the page asks too much at once: a smaller one will do
            self._on_cost_exceeded()
            raise RetryableError(
                "the query cost exceeds Shopify's single-query limit; retrying a smaller page", connector=connector
            )
        if "INTERNAL_SERVER_ERROR" in codes:
            self._on_server_error()
            raise RetryableError("Shopify reported an internal error", connector=connector)
        code = codes[0] or "ERROR"
        raise FatalError(f"GraphQL error {code}: {str(errors[0].get('message', ''))[:200]}", connector=connector)


def _number(value: Any) -> float | None:
    """A finite number from a JSON value, or None (``extensions.cost`` values of another type are ignored)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
