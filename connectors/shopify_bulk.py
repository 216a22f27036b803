"""Backfill of a shop's whole order history with a bulk operation.

``bulkOperationRunQuery`` asks Shopify to export every order; we poll the operation (by id, so a
restarted process resumes *its* operation instead of starting another), then download the JSONL
file and stream it line by line — the file is never held in memory. The download URL points at
Shopify's storage, not the shop, so the access token is *not* sent with it. A connection that
drops mid-download is re-opened and the lines already read are skipped.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

import requests

from .base import FatalError, RetryableError
from .http import HttpClient
from .shopify_graphql import ShopifyGraphQL
from .shopify_parse import parse_time
from .shopify_queries import BULK_ORDERS, BULK_RUN, BULK_STATUS

log = logging.getLogger(__name__)

RUNNING = {"CREATED", "RUNNING", "CANCELING"}
DOWNLOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class BulkResult:
    op_id: str
    created_at: datetime
    url: str | None  # None when the shop has no orders
    object_count: int


class BulkGone(RetryableError):
    """The operation failed, was cancelled or expired: the next pull starts a new one."""


class BulkExport:
    def __init__(self, gql: ShopifyGraphQL, client: HttpClient, *, sleep: Callable[[float], None],
                 poll_s: float = 5.0, max_wait_s: float = 6 * 3600.0, token_header: str = "X-Shopify-Access-Token"):
        self.gql, self.client, self._sleep = gql, client, sleep
        self.poll_s, self.max_wait_s, self.token_header = poll_s, max_wait_s, token_header

    def start(self) -> str:
        data = self.gql.execute("BulkRun", BULK_RUN, lambda: {"query": BULK_ORDERS})
        result = data.get("bulkOperationRunQuery") or {}
        problems = [str(e.get("message", ""))[:200] for e in result.get("userErrors") or []]
        if problems or not (result.get("bulkOperation") or {}).get("id"):
            raise FatalError("Shopify refused the bulk export: " + ("; ".join(problems) or "no operation returned"),
                             connector=self.client.connector)
        op_id = result["bulkOperation"]["id"]
        log.info("bulk export started", extra={"connector": self.client.connector, "operation": op_id})
        return op_id

    def wait(self, op_id: str) -> BulkResult:
        """Poll until the operation completes; raise :class:`BulkGone` if it never will."""
        waited = 0.0
        while True:
            node = self.gql.execute("BulkStatus", BULK_STATUS, lambda: {"id": op_id}).get("node")
            if not node:
                raise BulkGone(f"bulk operation {op_id} is unknown to the shop", connector=self.client.connector)
            status = node.get("status")
            if status == "COMPLETED":
                created = parse_time(node.get("createdAt"))
                if created is None:
                    raise FatalError("bulk operation without createdAt", connector=self.client.connector)
                return BulkResult(op_id=op_id, created_at=created, url=node.get("url"),
                                  object_count=int(node.get("objectCount") or 0))
            if status not in RUNNING:
                raise BulkGone(f"bulk operation {op_id} ended {status} ({node.get('errorCode') or 'no code'})",
                               connector=self.client.connector)
            if waited >= self.max_wait_s:
                raise RetryableError(f"bulk operation {op_id} still {status} after {waited:.0f}s; "
                                     "the next pull resumes it", connector=self.client.connector)
            self._sleep(self.poll_s)
            waited += self.poll_s

    def lines(self, url: str) -> Iterator[dict[str, Any]]:
        """Each JSON object of the export, streamed; resumes after a dropped connection."""
        done = 0
        for attempt in range(DOWNLOAD_ATTEMPTS):
            response = self.client.request("GET", url, stream=True, headers={self.token_header: None})
            try:
                index = 0
                for raw in response.iter_lines():
                    if not raw:
                        continue
                    index += 1
                    if index <= done:
                        continue
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        raise RetryableError(f"bulk export line {index} is not JSON",
                                             connector=self.client.connector) from None
                    done = index
                return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                log.info("bulk download interrupted; resuming", extra={"connector": self.client.connector,
                                                                      "lines": done, "attempt": attempt + 1})
                self._sleep(min(30.0, 2.0 ** attempt))
            finally:
                response.close()
        raise RetryableError(f"bulk export download kept failing after {done} lines",
                             connector=self.client.connector)
