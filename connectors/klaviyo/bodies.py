"""Klaviyo JSON:API request bodies, built from :class:`ProfileUpdate` records. Pure functions, no I/O.

Every body built here is validated in the tests against Klaviyo's OpenAPI spec for the pinned
:data:`REVISION` (``../shared/specs/klaviyo/stable.json``), so a wrong shape fails a test.

* :func:`profile_resource` — one ``profile`` resource: identifiers plus the non-null RFM properties,
  and ``meta.patch_properties.unset`` naming the properties that are null (a customer who lost every
  qualifying order has all RFM properties cleared). Bulk import ignores nulls, so only
  ``/api/profile-import`` is sent a resource that unsets something (one with ``meta``).
* :func:`bulk_job_body` — ``POST /api/profile-bulk-import-jobs``, ≤ 10,000 profiles and ≤ 5 MB.
* :func:`event_body` — ``POST /api/events`` with a deterministic ``unique_id`` (a retry never creates
  a second event) and ``backfill`` for first-time assignments when so configured (recorded on the
  profile's timeline, triggers no flow).
* :func:`segment_body` — ``POST /api/segments``: "Current RFM group equals X".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from ..base import ProfileUpdate

# The one place the API revision is pinned. Change it only together with the spec in
# ../shared/specs/klaviyo/ and a test run (the tests validate every body against that spec).
REVISION = "2026-07-15"

MAX_PROFILES_PER_JOB = 10_000
MAX_JOB_BYTES = 5_000_000  # Klaviyo: 5 MB per job; counted in decimal to stay on the safe side

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class NoIdentifier(ValueError):
    """The update has nothing Klaviyo can identify a profile by (no email, phone or external id)."""


def e164(phone: str | None) -> str | None:
    """``+4930123456`` from ``+49 30 123-456``; None when the number has no country code."""
    if not phone:
        return None
    text = phone.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    digits = "+" + re.sub(r"\D", "", text) if text.startswith("+") else ""
    return digits if _E164.match(digits) else None


def identifiers(update: ProfileUpdate, *, external_id: bool, phone: bool) -> dict[str, str]:
    ids: dict[str, str] = {}
    if update.email and update.email.strip():
        ids["email"] = update.email.strip()
    if external_id:
        ids["external_id"] = update.customer_key
    if phone:
        number = e164(update.phone)
        if number:
            ids["phone_number"] = number
    if not ids:
        raise NoIdentifier("no email, phone number or external id to identify the Klaviyo profile")
    return ids


def profile_resource(update: ProfileUpdate, *, external_id: bool = False, phone: bool = False) -> dict[str, Any]:
    attributes: dict[str, Any] = identifiers(update, external_id=external_id, phone=phone)
    properties = update.properties
    unset = [k for k, v in properties.items() if v is None]
    attributes["properties"] = {k: v for k, v in properties.items() if v is not None} if unset else dict(properties)
    resource: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if unset:
        resource["meta"] = {"patch_properties": {"unset": sorted(unset)}}
    return resource


def profile_import_body(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": dict(resource)}


def bulk_job_body(resources: list[Mapping[str, Any]]) -> dict[str, Any]:
    if not 0 < len(resources) <= MAX_PROFILES_PER_JOB:
        raise ValueError(f"a bulk import job takes 1..{MAX_PROFILES_PER_JOB} profiles, got {len(resources)}")
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": list(resources)}}}}


def split_jobs(
    resources: list[tuple[int, dict[str, Any]]],
    *,
    max_profiles: int = MAX_PROFILES_PER_JOB,
    max_bytes: int = MAX_JOB_BYTES,
) -> Iterator[tuple[list[tuple[int, dict[str, Any]]], bytes]]:
    """Group ``(outbox_id, resource)`` pairs into jobs within the profile-count and byte limits.

    Yields each job's items with its serialised body. Chunks by count, then halves any chunk whose
    body is over the byte limit: one serialisation per job, not one per profile."""
    for start in range(0, len(resources), max_profiles):
        yield from _fit(resources[start : start + max_profiles], max_bytes)


def _fit(
    chunk: list[tuple[int, dict[str, Any]]], max_bytes: int
) -> Iterator[tuple[list[tuple[int, dict[str, Any]]], bytes]]:
    data = json.dumps(bulk_job_body([r for _, r in chunk]), ensure_ascii=False).encode("utf-8")
    if len(data) <= max_bytes or len(chunk) == 1:
        yield chunk, data
        return
    middle = len(chunk) // 2
    yield from _fit(chunk[:middle], max_bytes)
    yield from _fit(chunk[middle:], max_bytes)


def event_due(update: ProfileUpdate) -> bool:
    """A group change, or (label schemes) any change of a dimension label."""
    t = update.transition
    if t is None or not update.event_id:
        return False
    return t.from_group != t.to_group or dict(t.labels_before) != dict(t.labels_after)


def event_properties(update: ProfileUpdate) -> dict[str, Any]:
    t = update.transition
    assert t is not None
    props: dict[str, Any] = {
        "from_group": t.from_group,
        "to_group": t.to_group,
        "first_assignment": update.first_assignment,
    }
    if t.labels_before or t.labels_after:
        props["labels_before"] = dict(t.labels_before)
        props["labels_after"] = dict(t.labels_after)
    # the new snapshot (scores, score, change time) as it is written to the profile
    for key, value in update.properties.items():
        props.setdefault(key, value)
    return props


def event_body(
    update: ProfileUpdate, *, metric: str, backfill: bool, external_id: bool = False, phone: bool = False
) -> dict[str, Any]:
    if not update.event_id:
        raise ValueError("an event needs the update's deterministic event_id")
    when = update.changed_at or datetime.now(UTC)
    attributes: dict[str, Any] = {
        "properties": event_properties(update),
        "time": when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "unique_id": update.event_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {
            "data": {"type": "profile", "attributes": identifiers(update, external_id=external_id, phone=phone)}
        },
    }
    if backfill:
        attributes["backfill"] = True
    return {"data": {"type": "event", "attributes": attributes}}


def segment_name(group: str, property_name: str) -> str:
    return f"{property_name} equals {group}"


def segment_body(group: str, property_name: str) -> dict[str, Any]:
    condition = {
        "type": "profile-property",
        "property": f"properties['{property_name}']",
        "filter": {"type": "string", "operator": "equals", "value": group},
    }
    return {
        "data": {
            "type": "segment",
            "attributes": {
                "name": segment_name(group, property_name),
                "definition": {"condition_groups": [{"conditions": [condition]}]},
            },
        }
    }


def mask_email(text: str | None) -> str:
    """``j***@example.com``: enough to recognise a customer in a preview, not to harvest addresses."""
    if not text:
        return ""
    return re.sub(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+)", r"\1***@\2", text)
