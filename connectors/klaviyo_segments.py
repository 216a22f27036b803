"""Klaviyo segments for the RFM groups: one "Current RFM group equals X" segment per group.

The pinned revision (:data:`connectors.klaviyo_bodies.REVISION`) has ``POST /api/segments`` with a
``profile-property`` condition, so segments can be created through the API (scope
``segments:write``; Klaviyo allows 1/s, 15/min and 100/day). Creation is idempotent: existing
segments are listed first (``GET /api/segments``, 10 per page) and a segment whose name already
exists is left alone, whatever its definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .klaviyo import KlaviyoDestination
from .klaviyo_bodies import segment_body, segment_name

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
            raise RuntimeError("Klaviyo returned the same segments page twice")
        seen.add(path)
        page = dest.send("GET", path, limiter="segments_read", params=params).json()
        for item in page.get("data", []):
            found[item["attributes"]["name"]] = str(item["id"])
        path, params = (page.get("links") or {}).get("next"), None
    return found


def bootstrap_segments(dest: KlaviyoDestination, groups: list[str], property_name: str, *,
                       dry_run: bool = False) -> list[SegmentResult]:
    existing = existing_segments(dest)
    results = []
    for group in groups:
        name = segment_name(group, property_name)
        if name in existing:
            results.append(SegmentResult(group, name, "exists", existing[name]))
        elif dry_run:
            results.append(SegmentResult(group, name, "would create"))
        else:
            created = dest.send("POST", SEGMENTS_PATH, limiter="segments_write",
                                body=segment_body(group, property_name)).json()
            results.append(SegmentResult(group, name, "created", str(created["data"]["id"])))
    return results
