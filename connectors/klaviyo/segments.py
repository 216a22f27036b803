"""Klaviyo segments for the RFM groups: one "Current RFM group equals X" segment per group.

The pinned revision (:data:`connectors.klaviyo.bodies.REVISION`) has ``POST /api/segments`` with a
``profile-property`` condition, so segments can be created through the API (scope
``segments:write``; Klaviyo allows 1/s, 15/min and 100/day). Creation is idempotent: existing
segments are listed first (``GET /api/segments``, 10 per page) and a segment whose name already
exists is left alone, whatever its definition.

Creating a segment is not itself idempotent (a second POST makes a second segment of the same
name), so it is sent with ``idempotent=False``: a failure after which Klaviyo may have done the
work (a reset, a timeout, a cut-off answer, a 5xx) is not retried blindly; the segments are listed
again and the POST is repeated only if the segment is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import FatalError, RetryableError
from .bodies import segment_body, segment_name
from .destination import KlaviyoDestination

SEGMENTS_PATH = "/api/segments"


@dataclass(frozen=True)
class SegmentResult:
    group: str
    name: str
    status: str  # "created" | "exists" | "would create"
    segment_id: str | None = None


def existing_segments(dest: KlaviyoDestination) -> dict[str, str]:
    """Name → id of every segment in the account."""
    found: dict[str, str] = {}
    path: str | None = SEGMENTS_PATH
    params: dict[str, Any] | None = {"fields[segment]": "name"}
    seen: set[str] = set()
    while path:
        if path in seen:  # a repeated page link is an error, not an endless loop
            raise FatalError("Klaviyo returned the same segments page twice; refusing to loop", connector=dest.name)
        seen.add(path)
        page = dest.send("GET", path, limiter="segments_read", params=params).json()
        for item in page.get("data", []):
            name = (item.get("attributes") or {}).get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and item.get("id") is not None:
                found[name] = str(item["id"])
        path, params = (page.get("links") or {}).get("next"), None
    return found


def bootstrap_segments(
    dest: KlaviyoDestination, groups: list[str], property_name: str, *, dry_run: bool = False
) -> list[SegmentResult]:
    existing = existing_segments(dest)
    results = []
    for group in groups:
        name = segment_name(group, property_name)
        if name in existing:
            results.append(SegmentResult(group, name, "exists", existing[name]))
        elif dry_run:
            results.append(SegmentResult(group, name, "would create"))
        else:
            results.append(SegmentResult(group, name, "created", _create(dest, name, group, property_name)))
    return results


CREATE_ATTEMPTS = 4


def _create(dest: KlaviyoDestination, name: str, group: str, property_name: str) -> str:
    """Create the segment ``name`` once; the id Klaviyo gave it."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            created = dest.send(
                "POST",
                SEGMENTS_PATH,
                limiter="segments_write",
                idempotent=False,
                body=segment_body(group, property_name),
            ).json()
            return str(created["data"]["id"])
        except RetryableError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            dest.plumbing.sleep(min(30.0, 2.0**attempt))
            found = existing_segments(dest).get(name)  # the lost answer may hide a segment made
            if found is not None:
                return found
    raise AssertionError("unreachable")
