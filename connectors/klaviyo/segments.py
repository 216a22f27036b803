"""Klaviyo segments for the RFM groups: one "Current RFM group equals X" segment per group.

The pinned revision (:data:`connectors.klaviyo.bodies.REVISION`) has ``POST /api/segments`` with a
``profile-property`` condition, so segments can be created through the API (scope
``segments:write``; Klaviyo allows 1/s, 15/min and 100/day). Creation is idempotent: existing
segments are listed first (``GET /api/segments``, 10 per page) and a segment whose name already
exists is left alone, whatever its definition.

Creating a segment is not itself idempotent (a second POST makes a second segment of the same
name), so it is sent through :func:`connectors.klaviyo.listing.create_once`: a failure after which
Klaviyo may have done the work (a reset, a timeout, a cut-off answer, a 5xx) is not retried blindly;
the segments are listed again and the POST is repeated only if the segment is not there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bodies import segment_body, segment_name
from .destination import KlaviyoDestination
from .listing import create_once, names, pages

SEGMENTS_PATH = "/api/segments"


@dataclass(frozen=True)
class SegmentResult:
    group: str
    name: str
    status: str  # "created" | "exists" | "would create"
    segment_id: str | None = None


def existing_segments(dest: KlaviyoDestination) -> dict[str, str]:
    """Name → id of every segment in the account."""
    return names(pages(dest, SEGMENTS_PATH, limiter="segments_read", params={"fields[segment]": "name"}))


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


def _create(dest: KlaviyoDestination, name: str, group: str, property_name: str) -> str:
    """Create the segment ``name`` once; the id Klaviyo gave it."""
    created = create_once(
        dest,
        SEGMENTS_PATH,
        segment_body(group, property_name),
        limiter="segments_write",
        find=lambda: existing_segments(dest).get(name),
    )
    return str(created["id"])
