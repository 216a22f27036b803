"""Listing and creating Klaviyo objects that are found again by name (segments, flows, templates).

* :func:`pages` walks a collection's pages (``links.next``, as Klaviyo's cursor pagination gives
  them) and yields each resource; a page link seen twice is an error, not an endless loop.
* :func:`create_once` sends a create ``POST`` with ``idempotent=False``: Klaviyo gives the new object
  an id, so a second POST makes a second object of the same name. A failure after which Klaviyo may
  have done the work (a reset, a timeout, a cut-off answer, a 5xx) is therefore not retried blindly:
  ``find`` looks the object up by name first, and the POST is repeated only if it is not there.
* :func:`needs_scope` turns Klaviyo's 403 into one line naming the scope the API key lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..base import FatalError, RetryableError
from .destination import KlaviyoDestination

CREATE_ATTEMPTS = 4


def pages(dest: KlaviyoDestination, path: str, *, limiter: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every resource of the collection at ``path`` (``params`` on the first page; the next links carry them)."""
    url: str | None = path
    query: dict[str, Any] | None = params
    seen: set[str] = set()
    while url:
        if url in seen:
            raise FatalError(f"Klaviyo returned the same {path} page twice; refusing to loop", connector=dest.name)
        seen.add(url)
        page = dest.send("GET", url, limiter=limiter, params=query).json()
        for item in page.get("data", []):
            if isinstance(item, dict) and item.get("id") is not None:
                yield item
        url, query = (page.get("links") or {}).get("next"), None


def names(items: Iterator[dict[str, Any]]) -> dict[str, str]:
    """Name → id of the listed resources (those with a name)."""
    found: dict[str, str] = {}
    for item in items:
        name = (item.get("attributes") or {}).get("name")
        if isinstance(name, str):
            found[name] = str(item["id"])
    return found


def create_once(
    dest: KlaviyoDestination, path: str, body: dict[str, Any], *, limiter: str, find: Callable[[], str | None]
) -> dict[str, Any]:
    """POST ``body`` once; the created resource (``data``) as Klaviyo answered it, or, when the
    answer was lost but ``find`` shows the object was made, ``{"id": <its id>}``."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            created: dict[str, Any] = dest.send("POST", path, limiter=limiter, idempotent=False, body=body).json()[
                "data"
            ]
            return created
        except RetryableError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            dest.plumbing.sleep(min(30.0, 2.0**attempt))
            found = find()  # the lost answer may hide an object made
            if found is not None:
                return {"id": found}
    raise AssertionError("unreachable")


@contextmanager
def needs_scope(dest: KlaviyoDestination, scope: str, what: str) -> Iterator[None]:
    """Around calls that need ``scope``: Klaviyo's 403 becomes "cannot <what>: the API key lacks <scope>"."""
    try:
        yield
    except FatalError as exc:
        if exc.status != 403:
            raise
        area, _, access = scope.partition(":")
        raise FatalError(
            f"Klaviyo refused to {what} (HTTP 403): the API key lacks the {scope} scope; give the private key "
            f"{area.title()}: {'Read' if access == 'read' else 'Full'} Access (Klaviyo: Settings → API keys) "
            "and run again",
            connector=dest.name,
            status=403,
        ) from None
