"""Klaviyo destination: RFM properties on profiles, and an optional "RFM Group Changed" event.

One :meth:`KlaviyoDestination.push` call receives one outbox batch (``batch_size`` ≤ 10,000, so a
large batch is exactly one Bulk Import Profiles job unless it would exceed 5 MB):

1. **Profiles.** A batch of at least ``bulk_min_profiles`` goes through a bulk import job
   (:mod:`connectors.klaviyo.jobs`: submit, poll to completion, map import errors back to outbox ids).
   Smaller batches, and every profile whose snapshot clears a property (a customer who lost all
   qualifying orders: bulk import ignores nulls), go one by one through ``POST /api/profile-import``
   with ``meta.patch_properties.unset``.
2. **Events**, once the profile carries its new properties (so flow filters see them): for each
   group (or label) change, ``POST /api/events`` with ``unique_id`` = the update's deterministic
   ``event_id`` — Klaviyo records only the first event per profile, metric and unique id, so a
   retry or a re-sent batch never creates a second event. First-time assignments are skipped,
   sent with ``backfill`` (no flow fires) or sent as is, per ``first_assignment_events``.

An outbox id is accepted only when its profile *and* its event (if any) were accepted; a failed
event leaves the row pending, and the re-send is harmless (idempotent upsert, de-duplicated event).

Errors: 429 (``Retry-After`` honoured) and 5xx are retried by :class:`HttpClient`; 401/403 are
fatal; a 400/409/422 on a single profile or event is that record's failure, kept in the outbox with
Klaviyo's error code, title, detail and pointer (emails masked); any other 4xx is fatal with the same
detail (never the request body). The API key is read from the secret named by
``api_key_secret`` and never appears in logs, reprs or messages. Client-side token buckets keep
each endpoint at ``HEADROOM`` (80 %) of Klaviyo's published limits (``DOCUMENTED``), in any window.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Literal, Unpack

import requests
from pydantic import Field

from ..base import (
    ConnectorContext,
    ConnectorSettings,
    FatalError,
    ProfileUpdate,
    PushResult,
    RecordError,
    RetryableError,
)
from ..http import HttpClient, HttpConnector, PlumbingArgs
from .bodies import (
    REVISION,
    NoIdentifier,
    event_body,
    event_due,
    mask_email,
    profile_import_body,
    profile_resource,
    split_jobs,
)
from .flow_config import FlowsConfig
from .jobs import BulkJobs

log = logging.getLogger(__name__)

# Klaviyo's rate limits per endpoint, as documented: ``x-klaviyo-ratelimit`` of each operation in
# the OpenAPI spec (revision 2026-07-15; the API reference prints the same "Rate limits: Burst /
# Steady"). Klaviyo counts them per account, shared by all of the account's private-key
# integrations, in *fixed* windows of 1 second (burst) and 1 minute (steady); either one exceeded
# is a 429 (developers.klaviyo.com/en/docs/rate_limits_and_error_handling).
DOCUMENTED: dict[str, tuple[int, int]] = {  # limiter -> (burst per second, steady per minute)
    "bulk_jobs": (10, 150),  # /api/profile-bulk-import-jobs: POST, GET, GET {id}, GET {id}/import-errors
    "profile_import": (75, 750),  # POST /api/profile-import
    "events": (350, 3500),  # POST /api/events
    "segments_read": (75, 750),  # GET /api/segments
    "segments_write": (1, 15),  # POST /api/segments (also 100 a day; rfm-sync creates a handful, once)
    # `rfm-sync klaviyo bootstrap --flows` (connectors/klaviyo/flows.py)
    "flows_read": (3, 60),  # GET /api/flows
    "flows_write": (1, 15),  # POST /api/flows (also 100 a day; rfm-sync creates a handful, once)
    "metrics_read": (10, 150),  # GET /api/metrics
    "templates": (75, 750),  # GET /api/templates, POST /api/templates
}
# We plan for this share of each documented limit: the account's other integrations (the shop's own
# Klaviyo app) draw on the same quota, and our clock and Klaviyo's windows are not aligned.
HEADROOM = 0.8


def client_buckets(burst_per_s: int, steady_per_min: int, headroom: float = HEADROOM) -> list[tuple[int, float]]:
    """Token buckets (capacity, seconds to refill it) that never send more than ``headroom`` × the
    documented limit in *any* window of 1 s or 1 min, wherever Klaviyo's fixed windows fall.

    A bucket of capacity C refilling at r per second lets through at most C + r·T requests in a
    window of T seconds (a full bucket, then the refill). So for a limit L per T we allow
    B = headroom × L and take C = B/2, r = (B − C)/T. For the steady window C is at most the burst
    capacity (bursts are the burst bucket's business) so that nearly all of B goes to the rate.
    A limit too small to split (B < 2, e.g. 1/s) becomes one request every T/B seconds."""
    buckets: list[tuple[int, float]] = []
    burst_cap = None
    for limit, window in ((burst_per_s, 1.0), (steady_per_min, 60.0)):
        budget = headroom * limit
        if budget < 2:
            cap, rate = 1, budget / window
        else:
            cap = int(budget // 2) if burst_cap is None else min(burst_cap, int(budget // 2))
            rate = (budget - cap) / window
        burst_cap = cap if burst_cap is None else burst_cap
        buckets.append((cap, cap / rate))
    return buckets


# Client-side limits per endpoint: RateLimiter buckets derived from the documented limits above.
LIMITS: dict[str, list[tuple[int, float]]] = {name: client_buckets(*limits) for name, limits in DOCUMENTED.items()}
MEDIA_TYPE = "application/vnd.api+json"
PROFILE_IMPORT_PATH = "/api/profile-import"
EVENTS_PATH = "/api/events"


class KlaviyoSettings(ConnectorSettings):
    type: str = "klaviyo"
    # name of the secret holding the private API key (pk_...)
    api_key_secret: str
    base_url: str = "https://a.klaviyo.com"
    # one push() = one bulk import job of up to this many profiles
    batch_size: int = Field(10_000, ge=1, le=10_000)
    # batches smaller than this use POST /api/profile-import per profile instead of a bulk job
    bulk_min_profiles: int = Field(100, ge=1)
    # also identify profiles by external_id = rfm-sync's customer key
    external_id: bool = False
    # also send the phone number (E.164 only; others are left out)
    phone: bool = False
    events: bool = True
    metric_name: str = Field("RFM Group Changed", min_length=1)
    # first-time assignment: "skip" (no event; the default, so a first sync of a big shop costs no
    # event calls), "backfill" (recorded on the timeline, triggers no flows), "send" (may trigger flows)
    first_assignment_events: Literal["skip", "backfill", "send"] = "skip"
    poll_interval_s: float = Field(2.0, gt=0)
    job_timeout_s: float = Field(3600.0, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    # [destinations.flows]: the draft flows `rfm-sync klaviyo bootstrap --flows` creates
    flows: FlowsConfig = FlowsConfig()


class KlaviyoDestination(HttpConnector[KlaviyoSettings]):
    Settings = KlaviyoSettings

    def __init__(self, settings: KlaviyoSettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.batch_size = settings.batch_size
        self.limiters = {k: self.plumbing.rate_limiter(v) for k, v in LIMITS.items()}

    def __repr__(self) -> str:
        return f"KlaviyoDestination(name={self.name!r}, base_url={self.settings.base_url!r})"

    # ------------------------------------------------------------------ http
    @functools.cached_property
    def client(self) -> HttpClient:
        # built on first use: the API key is read then (not when the config loads), never for a dry run
        key = self.client_secret(self.settings.api_key_secret)
        return self.plumbing.client(
            self.settings.base_url,
            read_timeout_s=self.settings.timeout_s,
            headers={"Authorization": f"Klaviyo-API-Key {key}", "revision": REVISION, "Accept": MEDIA_TYPE},
            hooks=[self._record_errors],
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        limiter: str,
        body: Any = None,
        data: bytes | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
    ) -> requests.Response:
        """One API call with retries and the endpoint's rate limiter; ``body`` is JSON-encoded
        (or ``data`` is sent as already-encoded JSON) as ``application/vnd.api+json``.
        ``idempotent=False``: a call that may have reached Klaviyo is not retried (see connectors/http.py)."""
        kwargs: dict[str, Any] = {"limiter": self.limiters[limiter], "idempotent": idempotent}
        if params:
            kwargs["params"] = params
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if data is not None:
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": MEDIA_TYPE}
        return self.client.request(method, path, **kwargs)

    def _record_errors(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        """400/409/422 on one profile or event: that record's problem, not the connector's. Any
        other 4xx but 401/403/429 (which :func:`classify_status` explains): fatal, with Klaviyo's own
        error detail (code, title, detail, source.pointer) rather than a bare "HTTP 400"."""
        status = response.status_code
        if not 400 <= status < 500 or status in (401, 403, 429):
            return response
        path = response.url.split("?", 1)[0]  # never the query string
        if (
            status in (400, 409, 422)
            and response.request.method == "POST"
            and path.endswith((PROFILE_IMPORT_PATH, EVENTS_PATH))
        ):
            raise RecordError(error_summary(response), connector=self.name, status=status)
        where = path.split("://", 1)[-1].split("/", 1)[-1]
        raise FatalError(
            f"{response.request.method} /{where} was refused: {error_summary(response)}",
            connector=self.name,
            status=status,
        )

    # ------------------------------------------------------------------ push
    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        result = PushResult()
        s = self.settings
        bulk: list[tuple[ProfileUpdate, dict[str, Any]]] = []
        single: list[tuple[ProfileUpdate, dict[str, Any]]] = []
        for update in updates:
            try:
                resource = profile_resource(update, external_id=s.external_id, phone=s.phone)
            except NoIdentifier as exc:
                result.failed[update.outbox_id] = str(exc)
                continue
            # a resource that unsets properties ("meta") must not go through bulk import (it ignores nulls)
            (single if "meta" in resource else bulk).append((update, resource))
        if len(bulk) < s.bulk_min_profiles:
            single, bulk = bulk + single, []
        done: list[ProfileUpdate] = []
        if bulk:
            by_id = {u.outbox_id: u for u, _ in bulk}
            jobs = BulkJobs(
                lambda method, path, **kw: self.send(method, path, limiter="bulk_jobs", **kw),
                connector=self.name,
                poll_interval_s=s.poll_interval_s,
                timeout_s=s.job_timeout_s,
                sleep=self.plumbing.sleep,
                clock=self.plumbing.clock,
            )
            for job, data in split_jobs([(u.outbox_id, r) for u, r in bulk]):
                outcome = jobs.run(job, data)
                log.info(
                    "klaviyo bulk job done",
                    extra={
                        "destination": self.name,
                        "job": outcome.job_id,
                        "profiles": len(job),
                        "failed": len(outcome.failed),
                        "polls": outcome.polls,
                    },
                )
                result.failed.update(outcome.failed)
                done.extend(by_id[oid] for oid in outcome.accepted)
        for n, (update, resource) in enumerate(single):
            try:
                self.send("POST", PROFILE_IMPORT_PATH, limiter="profile_import", body=profile_import_body(resource))
                done.append(update)
            except RecordError as exc:
                result.failed[update.outbox_id] = f"profile: {exc}"
            except RetryableError as exc:  # still throttled after retries: keep the rest for the next cycle
                for later, _ in single[n:]:
                    result.failed[later.outbox_id] = f"profile not sent: {exc}"
                break
        result.accepted = self._events(done, result.failed)
        return result

    def event_mode(self, update: ProfileUpdate) -> str | None:
        """None (no event), "backfill" or "send"."""
        if not self.settings.events or not event_due(update):
            return None
        if update.first_assignment or (update.transition and update.transition.from_group is None):
            mode = self.settings.first_assignment_events
            return None if mode == "skip" else mode
        return "send"

    def _events(self, done: list[ProfileUpdate], failed: dict[int, str]) -> list[int]:
        accepted: list[int] = []
        s = self.settings
        for n, update in enumerate(done):
            mode = self.event_mode(update)
            if mode is None:
                accepted.append(update.outbox_id)
                continue
            body = event_body(
                update, metric=s.metric_name, backfill=mode == "backfill", external_id=s.external_id, phone=s.phone
            )
            try:
                self.send("POST", EVENTS_PATH, limiter="events", body=body)
                accepted.append(update.outbox_id)
            except RecordError as exc:
                failed[update.outbox_id] = f"event: {exc}"
            except RetryableError as exc:
                for later in done[n:]:
                    if self.event_mode(later) is None:
                        accepted.append(later.outbox_id)
                    else:
                        failed[later.outbox_id] = f"event not sent: {exc}"
                break
        return accepted

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the API key is set; ``online``: one read call proves the key and
        its scopes. 401/403 raise :class:`FatalError` (the doctor reports them); problems come back
        as (problem, fix)."""
        problems = self._context.missing_secrets(self.name, self.settings.api_key_secret)
        if problems or not online:
            return problems
        try:
            self.send("GET", "/api/profile-bulk-import-jobs", limiter="bulk_jobs", params={"page[size]": 1})
        except RecordError as exc:
            return [(f"Klaviyo rejected the check call: {exc}", "check base_url and the API key's scopes")]
        return []

    def close(self) -> None:
        if "client" in vars(self):  # built (functools.cached_property keeps it there)
            self.client.close()


def error_summary(response: requests.Response, most: int = 3) -> str:
    """``HTTP 400 invalid: Invalid input.: <detail> (at /data/attributes/email)`` from Klaviyo's
    JSON:API error body (``errors[].code/title/detail/source.pointer``), up to ``most`` errors,
    emails masked. Never the request body; a body that is not Klaviyo's JSON gives just the status."""
    try:
        errors = [e for e in (response.json().get("errors") or []) if isinstance(e, dict)]
    except (ValueError, AttributeError):
        errors = []
    described = []
    for error in errors[:most]:
        parts = [str(error[k]) for k in ("code", "title", "detail") if error.get(k)]
        pointer = (error.get("source") or {}).get("pointer") if isinstance(error.get("source"), dict) else None
        text = ": ".join(parts) + (f" (at {pointer})" if pointer else "")
        if text:
            described.append(text)
    if len(errors) > most:
        described.append(f"and {len(errors) - most} more")
    return mask_email(f"HTTP {response.status_code} " + "; ".join(described)).strip()[:500]
