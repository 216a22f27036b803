"""Meta Custom Audiences destination: ad audiences follow the RFM groups.

Each ``[[destinations.audiences]]`` rule maps customers to one Custom Audience, either by group
(``groups = ["Champions"]``: a member while in one of these groups) or by transition
(``from = ["Champions", "Loyal"]``, ``to = ["Needs Attention", "At Risk"]``: added on a move from
a ``from`` group into a ``to`` group, removed when leaving the ``to`` groups). Only transitions
change membership, so a batch without group changes makes no call at all.

For one batch, every removal is sent before any addition (``DELETE`` then ``POST
/{audience_id}/users``), at most 10,000 rows per request. ``additive_only = true`` never removes.
Identifiers are normalised (emails trimmed and lower-cased; phones as digits with country code, no
leading zeros) and SHA-256 hashed: nothing is sent raw. Each response's ``num_received`` must match
the rows sent (else the request is retried) and ``num_invalid_entries`` is reported.

Graph API errors are classified before the generic status handling: codes 4, 17, 80003, 80004
(throttling) and 1, 2 (transient) back off and retry; 190 (token) and 200/10/294 (permission) stop the
destination with a clear message; "audience too small" on removal is that request's failure,
reported and kept in the outbox (bounded by ``[push] max_attempts``), never retried in a loop.
The access token comes from the secret named by ``access_token_secret``, sent in the
``Authorization`` header, never in a URL, log or message.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import (ConnectorContext, ConnectorSettings, FatalError, ProfileUpdate, PushResult, RecordError,
                   RetryableError, chunked)
from .http import HttpClient, RateLimiter, RetryPolicy

log = logging.getLogger(__name__)

# The one place the Graph API version is pinned.
GRAPH_VERSION = "v25.0"
MAX_ROWS_PER_REQUEST = 10_000
THROTTLED = {4, 17, 32, 613, 80003, 80004}
TRANSIENT = {1, 2}
TOKEN = {190}
PERMISSION = {10, 200, 294}


class AudienceRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    audience_id: str = Field(min_length=1)
    groups: list[str] = []
    from_groups: list[str] = Field([], alias="from")
    to: list[str] = []

    @model_validator(mode="after")
    def _one_kind(self) -> "AudienceRule":
        if bool(self.groups) == bool(self.to):
            raise ValueError("give either groups = [...] or to = [...] (optionally with from = [...])")
        if self.from_groups and not self.to:
            raise ValueError("from = [...] needs to = [...]")
        return self

    def change(self, before: str | None, after: str | None) -> str | None:
        """"add", "remove" or None for a move from ``before`` to ``after``."""
        members = set(self.groups or self.to)
        was, now = before in members, after in members
        if self.to and self.from_groups:
            if now and not was and before in self.from_groups:
                return "add"
            return "remove" if was and not now else None
        if now and not was:
            return "add"
        return "remove" if was and not now else None


class MetaAudiencesSettings(ConnectorSettings):
    type: str = "meta_audiences"
    access_token_secret: str
    base_url: str = "https://graph.facebook.com"
    batch_size: int = Field(10_000, ge=1, le=100_000)
    audiences: list[AudienceRule] = Field(min_length=1)
    additive_only: bool = False
    # used for phone numbers written without a country code ("030 1234" -> "49301234")
    default_country_code: str | None = Field(None, pattern=r"^[1-9]\d{0,3}$")
    send_phone: bool = True
    timeout_s: float = Field(60.0, gt=0)


def normalise_email(email: str | None) -> str | None:
    value = (email or "").strip().lower()
    return value if "@" in value else None


def normalise_phone(phone: str | None, default_country_code: str | None = None) -> str | None:
    text = (phone or "").strip()
    if not text:
        return None
    international = text.startswith("+") or text.startswith("00")
    digits = re.sub(r"\D", "", text.replace("(0)", ""))  # "+49 (0)30 ..." -> "4930..."
    if international:
        digits = digits.lstrip("0")
    elif digits.startswith("0") and default_country_code:
        digits = default_country_code + digits.lstrip("0")
    elif default_country_code is None or digits.startswith("0"):
        return None  # no country code: Meta could not match it
    return digits if 7 <= len(digits) <= 15 else None


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Op:
    action: str  # "add" | "remove"
    audience_id: str
    outbox_id: int
    row: tuple[str, str]  # hashed (email, phone); "" where unknown


class MetaAudiencesDestination:
    Settings = MetaAudiencesSettings

    def __init__(self, settings: MetaAudiencesSettings, context: ConnectorContext, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 policy: RetryPolicy | None = None):
        self.settings = settings
        self.name = settings.name
        self.batch_size = settings.batch_size
        self._context = context
        self._sleep = sleep
        self._policy = policy
        # Meta's audience limits are per ad account and opaque; stay well under a few calls per second.
        self.limiter = RateLimiter([(5, 1.0), (200, 60.0)], clock=clock, sleep=sleep)
        self._client: HttpClient | None = None
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"MetaAudiencesDestination(name={self.name!r}, base_url={self.settings.base_url!r})"

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            if self._context.dry_run:  # built for `run --dry-run`: never send, not even by mistake
                raise FatalError("built for a dry run: nothing may be sent", connector=self.name)
            token = self._context.reveal_secret(self.settings.access_token_secret, self.name)
            self._client = HttpClient(connector=self.name, base_url=self.settings.base_url, sleep=self._sleep,
                                      policy=self._policy, timeout=(10.0, self.settings.timeout_s),
                                      headers={"Authorization": f"Bearer {token}"})
            self._client.session.hooks["response"].append(self._graph_errors)
        return self._client

    # ------------------------------------------------------------------ planning
    def row(self, update: ProfileUpdate) -> tuple[str, str] | None:
        email = normalise_email(update.email)
        phone = normalise_phone(update.phone, self.settings.default_country_code) if self.settings.send_phone else None
        if not email and not phone:
            return None
        return (sha256(email) if email else "", sha256(phone) if phone else "")

    def plan(self, updates: list[ProfileUpdate]) -> list[Op]:
        """Every membership change this batch implies: removals first, then additions."""
        ops: list[Op] = []
        for update in updates:
            t = update.transition
            if t is None or t.from_group == t.to_group:
                continue
            row = self.row(update)
            if row is None:
                continue
            for rule in self.settings.audiences:
                action = rule.change(t.from_group, t.to_group)
                if action == "remove" and self.settings.additive_only:
                    continue
                if action:
                    ops.append(Op(action, rule.audience_id, update.outbox_id, row))
        return sorted(ops, key=lambda op: op.action != "remove")  # stable: removals first

    # ------------------------------------------------------------------ push
    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        ops = self.plan(updates)
        failed: dict[int, str] = {}
        groups: dict[tuple[str, str], list[Op]] = {}
        for op in ops:
            groups.setdefault((op.action, op.audience_id), []).append(op)
        for (action, audience_id), members in groups.items():
            for chunk in chunked(members, MAX_ROWS_PER_REQUEST):
                try:
                    self.send(action, audience_id, [op.row for op in chunk])
                except RecordError as exc:
                    for op in chunk:
                        failed.setdefault(op.outbox_id, f"{action} audience {audience_id}: {exc}")
        return PushResult(accepted=[u.outbox_id for u in updates if u.outbox_id not in failed], failed=failed)

    def send(self, action: str, audience_id: str, rows: list[tuple[str, str]]) -> dict[str, Any]:
        with_phone = any(phone for _, phone in rows)
        if with_phone:
            payload = {"schema": ["EMAIL", "PHONE"], "data": [list(r) for r in rows]}
        else:
            payload = {"schema": "EMAIL", "data": [email for email, _ in rows]}
        method = "POST" if action == "add" else "DELETE"
        response = self.client.request(method, f"/{GRAPH_VERSION}/{audience_id}/users", limiter=self.limiter,
                                       data={"payload": json.dumps(payload, separators=(",", ":"))},
                                       classify=lambda r: self._check_counts(r, len(rows), audience_id))
        body = response.json()
        invalid = int(body.get("num_invalid_entries") or 0)
        if invalid:
            message = f"audience {audience_id}: Meta reported {invalid} invalid entr{'y' if invalid == 1 else 'ies'} " \
                      f"of {len(rows)} ({action})"
            self.warnings.append(message)
            log.warning("meta invalid entries", extra={"destination": self.name, "audience": audience_id,
                                                       "invalid": invalid, "rows": len(rows)})
        return body

    def _check_counts(self, response: requests.Response, sent: int, audience_id: str) -> None:
        try:
            received = int(response.json().get("num_received"))
        except (ValueError, TypeError, AttributeError):
            raise RetryableError(f"audience {audience_id}: response without num_received", connector=self.name) from None
        if received != sent:
            raise RetryableError(f"audience {audience_id}: Meta received {received} of {sent} rows",
                                 connector=self.name)

    def _graph_errors(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code < 400:
            return response
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            return response  # not a Graph error body: the generic status handling decides
        code = error.get("code")
        where = f"{response.request.method} {response.url.split('?', 1)[0].split('/', 3)[-1]}"
        text = f"{error.get('message', '')} {error.get('error_user_title', '')}".lower()
        label = f"{where}: Graph API error {code}" + (f"/{error.get('error_subcode')}" if error.get("error_subcode") else "")
        if code in TOKEN:
            raise FatalError(f"{label}: the access token is invalid or expired; create a new system-user token "
                             f"and store it in the secret {self.settings.access_token_secret!r}", connector=self.name,
                             status=response.status_code)
        if code in PERMISSION:
            raise FatalError(f"{label}: permission denied; the token needs ads_management on the ad account that "
                             f"owns the audience", connector=self.name, status=response.status_code)
        if code in THROTTLED or code in TRANSIENT or response.status_code >= 500:
            raise RetryableError(f"{label}: throttled or temporary, backing off", connector=self.name,
                                 status=response.status_code,
                                 retry_after=60.0 if code in (80003, 80004) else None)
        if "too small" in text:
            raise RecordError(f"{label}: audience too small to remove users; left for a later cycle",
                              connector=self.name, status=response.status_code)
        raise RecordError(f"{label}: {error.get('message', 'request rejected')}"[:300], connector=self.name,
                          status=response.status_code)

    def check(self) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: every mapped audience exists, is reachable with this token and is
        not flagged. Token and permission errors raise :class:`FatalError`."""
        problems = []
        for rule in self.settings.audiences:
            try:
                body = self.client.request("GET", f"/{GRAPH_VERSION}/{rule.audience_id}", limiter=self.limiter,
                                           params={"fields": "id,name,operation_status"}).json()
            except RecordError as exc:
                problems.append((f"audience {rule.audience_id}: {exc}",
                                 "check the audience id and that the token's ad account owns it"))
                continue
            status = (body.get("operation_status") or {}).get("code")
            if status not in (None, 200):
                problems.append((f"audience {rule.audience_id}: operation_status {status}",
                                 "resolve the audience's restrictions in Audience Manager"))
        return problems

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
