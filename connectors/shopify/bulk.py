"""Backfill of a shop's whole order history with a bulk operation.

``bulkOperationRunQuery`` asks Shopify to export every order; we poll the operation (by id, so a
restarted process resumes *its* operation instead of starting another), then download the JSONL
file and stream it line by line — the file is never held in memory. The download URL points at
Shopify's storage, not the shop, so the access token is *not* sent with it. A connection that
drops mid-download is re-opened and the lines already read are skipped.

**A busy shop.** ``bulkOperationRunQuery`` answers with a ``userErrors[].code`` of the enum
``BulkOperationUserErrorCode`` (Admin GraphQL schema 2026-10: ``INVALID``, ``LIMIT_REACHED`` "Bulk
operations limit reached. Please try again later.", ``OPERATION_IN_PROGRESS`` "A bulk operation is
already in progress."). Shopify's bulk-operations guide: before API version 2026-01 an app runs one
bulk query at a time per shop, from 2026-01 up to five. So ``LIMIT_REACHED`` and
``OPERATION_IN_PROGRESS`` mean "another of this app's exports holds the slot" (a second rfm-sync,
a retried request whose first answer was lost): temporary. :meth:`BulkExport.start` waits and asks
again (``poll_s`` doubling up to the retry policy's ``max_delay_s``), for at most ``busy_wait_s``;
then it raises :class:`RetryableError` and the next cycle asks again. Any other user error
(``INVALID``: the query itself is wrong) is fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from ..base import FatalError, RetryableError
from ..http import HttpClient
from .graphql import ShopifyGraphQL
from .parse import parse_time
from .queries import BULK_ORDERS, BULK_RUN, BULK_STATUS

log = logging.getLogger(__name__)

RUNNING = {"CREATED", "RUNNING", "CANCELING"}
DOWNLOAD_ATTEMPTS = 5
# BulkOperationUserErrorCode values that mean "not now": another export holds the slot
BUSY_CODES = frozenset({"LIMIT_REACHED", "OPERATION_IN_PROGRESS"})


@dataclass(frozen=True)
class BulkResult:
    op_id: str
    created_at: datetime
    url: str | None  # None when the shop has no orders
    object_count: int


class BulkGone(RetryableError):
    """The operation failed, was cancelled or expired: the next pull starts a new one."""


class BulkExport:
    def __init__(
        self,
        gql: ShopifyGraphQL,
        client: HttpClient,
        *,
        sleep: Callable[[float], None],
        poll_s: float = 5.0,
        max_wait_s: float = 6 * 3600.0,
        busy_wait_s: float = 600.0,
        token_header: str = "X-Shopify-Access-Token",
    ):
        self.gql, self.client, self._sleep = gql, client, sleep
        self.poll_s, self.max_wait_s, self.token_header = poll_s, max_wait_s, token_header
        self.busy_wait_s = busy_wait_s
        self.busy_waits: list[float] = []  # pauses spent waiting for a free bulk slot (for tests and logs)

    def start(self) -> str:
        """Start the export and return its id; wait (bounded) while the shop's bulk slots are taken."""
        waited, attempt = 0.0, 0
        while True:
            data = self.gql.execute("BulkRun", BULK_RUN, lambda: {"query": BULK_ORDERS})
            result = data.get("bulkOperationRunQuery") or {}
            errors = [e for e in result.get("userErrors") or [] if isinstance(e, dict)]
            op_id: str | None = (result.get("bulkOperation") or {}).get("id")  # a GraphQL ID: text
            if op_id and not errors:
                log.info("bulk export started", extra={"connector": self.client.connector, "operation": op_id})
                return op_id
            problems = "; ".join(f"{e.get('code') or 'ERROR'}: {str(e.get('message', ''))[:200]}" for e in errors)
            if not errors or any(e.get("code") not in BUSY_CODES for e in errors):
                raise FatalError(
                    "Shopify refused the bulk export: " + (problems or "no operation returned"),
                    connector=self.client.connector,
                )
            pause = min(self.client.policy.max_delay_s, self.poll_s * 2**attempt, self.busy_wait_s - waited)
            if pause <= 0:
                raise RetryableError(
                    f"Shopify has no free bulk operation slot after {waited:.0f}s ({problems}); "
                    "the next pull asks again",
                    connector=self.client.connector,
                    retry_after=self.client.policy.max_delay_s,
                )
            log.info(
                "bulk export slot taken; waiting",
                extra={"connector": self.client.connector, "reason": problems, "seconds": pause},
            )
            self.busy_waits.append(pause)
            self._sleep(pause)
            waited += pause
            attempt += 1

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
                return BulkResult(
                    op_id=op_id, created_at=created, url=node.get("url"), object_count=int(node.get("objectCount") or 0)
                )
            if status not in RUNNING:
                raise BulkGone(
                    f"bulk operation {op_id} ended {status} ({node.get('errorCode') or 'no code'})",
                    connector=self.client.connector,
                )
            if waited >= self.max_wait_s:
                raise RetryableError(
                    f"bulk operation {op_id} still {status} after {waited:.0f}s; the next pull resumes it",
                    connector=self.client.connector,
                )
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
                        raise RetryableError(
                            f"bulk export line {index} is not JSON", connector=self.client.connector
                        ) from None
                    done = index
                return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                log.info(
                    "bulk download interrupted; resuming",
                    extra={"connector": self.client.connector, "lines": done, "attempt": attempt + 1},
                )
                self._sleep(min(30.0, 2.0**attempt))
            finally:
                response.close()
        raise RetryableError(f"bulk export download kept failing after {done} lines", connector=self.client.connector)
