"""Meta Custom Audiences destination: ad audiences follow the RFM groups.

Each ``[[destinations.audiences]]`` rule maps customers to one Custom Audience, either by group
(``groups = ["Champions"]``: a member while in one of these groups) or by transition
(``from = ["Champions", "Loyal"]``, ``to = ["Needs Attention", "At Risk"]``: added on a move from
a ``from`` group into a ``to`` group, removed when leaving the ``to`` groups). Only transitions
change membership, so a batch without group changes makes no call at all.

For one batch, every removal is sent before any addition (``DELETE`` then ``POST
/{audience_id}/users``), at most 10,000 rows per request. ``additive_only = true`` never removes.
Identifiers are normalised the way Meta's customer-list rules ask (emails trimmed and lower-cased;
phones as digits only, always with the country code, without the national trunk prefix) and
SHA-256 hashed: nothing is sent raw. Phone numbers are parsed with ``phonenumbers`` (Google's
libphonenumber metadata), which knows each country's trunk prefix and the countries, like Italy,
whose national numbers keep their leading zero; a hand-written "strip the 0" rule gets those wrong
and cannot tell a US ``1 415 ...`` from a national number. Each response's ``num_received`` must
match the rows sent (else the request is retried) and ``num_invalid_entries`` is reported. An
update that needs no call (no membership change, no identifier) is accepted as ``skipped``: the
cycle's "pushed" counts only what Meta acknowledged.

Graph API errors are classified before the generic status handling: codes 4, 17, 32, 613 and
80000–80014 (throttling) and 1, 2 (transient) back off and retry, waiting as long as Meta says in
``X-Business-Use-Case-Usage`` (``estimated_time_to_regain_access``, minutes) or
``X-Ad-Account-Usage`` (``reset_time_duration``, seconds) and with exponential backoff when it
says nothing; a wait longer than ``max_throttle_wait_s`` is not sat out: the push stops with a
retryable error and the next cycle goes on. 190 (token), 200/10/294 (permission), 2635
(retired API version) and a missing or wrong ``appsecret_proof`` stop the destination with a
clear message; "audience too small" on removal is that request's failure, reported and kept in
the outbox (bounded by ``[push] max_attempts``), never retried in a loop.

The Marketing API version is ``graph_version`` (default :data:`GRAPH_VERSION`); the table
:data:`MARKETING_API_VERSIONS` says when each version retires: a retired one refuses to start, one
within :data:`EXPIRY_WARNING` of retiring adds a warning. The access token comes from the secret
named by ``access_token_secret``, sent in the ``Authorization`` header, never in a URL, log or
message. Apps with "Require App Secret" need ``appsecret_proof`` = HMAC-SHA256(app secret, access
token) as hex on every call: set ``app_secret_secret`` to the name of the secret holding the app
secret; the proof is sent in the form body (reads: the query) and never logged.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Unpack

import phonenumbers
import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..base import (
    ConnectorContext,
    ConnectorSettings,
    FatalError,
    ProfileUpdate,
    PushResult,
    RecordError,
    RetryableError,
    chunked,
)
from ..http import HttpClient, HttpConnector, PlumbingArgs, RetryPolicy

log = logging.getLogger(__name__)

# Marketing API versions: (released, retires). Meta's "Marketing API version history" table
# (developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions,
# read 2026-12-02): v27.0 2026-11-04 (expiry TBD), v26.0 2026-07-29 (TBD), v25.0 2026-02-18 ->
# 2027-02-23, v24.0 2025-10-08 -> 2026-11-10. Marketing API versions live about a year, much less
# than the Graph API's two. None = not yet published: estimated as release + SHORTEST_LIFETIME.
# Move GRAPH_VERSION and this table together; tests fail 60 days before the pinned one retires.
MARKETING_API_VERSIONS: dict[str, tuple[date, date | None]] = {
    "v24.0": (date(2025, 10, 8), date(2026, 11, 10)),
    "v25.0": (date(2026, 2, 18), date(2027, 2, 23)),
    "v26.0": (date(2026, 7, 29), None),
    "v27.0": (date(2026, 11, 4), None),
}
SHORTEST_LIFETIME = timedelta(days=342)  # v21.0: 2024-10-02 -> 2025-09-09, the shortest in the table
EXPIRY_WARNING = timedelta(days=60)
# The one place the default Marketing API version is pinned (``graph_version`` overrides it).
GRAPH_VERSION = "v27.0"
MAX_ROWS_PER_REQUEST = 10_000
THROTTLED = {4, 17, 32, 613, *range(80000, 80015)}
TRANSIENT = {1, 2}
TOKEN = {190}
PERMISSION = {10, 200, 294}
RETIRED_VERSION = 2635  # "You are calling a deprecated version of the Ads API"


def version_expiry(version: str) -> date | None:
    """When Meta retires ``version`` (published, else estimated); None for a version not in the table."""
    known = MARKETING_API_VERSIONS.get(version)
    if known is None:
        return None
    released, retires = known
    return retires or released + SHORTEST_LIFETIME


def version_problem(version: str, today: date) -> tuple[bool, str] | None:
    """(fatal, message) if ``version`` has retired (fatal) or retires within EXPIRY_WARNING."""
    retires = version_expiry(version)
    if retires is None:
        return None
    newest = max(MARKETING_API_VERSIONS, key=lambda v: MARKETING_API_VERSIONS[v][0])
    fix = f'set graph_version = "{newest}" in this destination\'s table (or upgrade rfm-sync)'
    if today >= retires:
        return True, f"Meta retired Marketing API {version} on {retires.isoformat()}: {fix}"
    if today >= retires - EXPIRY_WARNING:
        return False, f"Meta retires Marketing API {version} on {retires.isoformat()}: {fix}"
    return None


class AudienceRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    audience_id: str = Field(min_length=1)
    groups: list[str] = []
    from_groups: list[str] = Field([], alias="from")
    to: list[str] = []

    @model_validator(mode="after")
    def _one_kind(self) -> AudienceRule:
        if bool(self.groups) == bool(self.to):
            raise ValueError("give either groups = [...] or to = [...] (optionally with from = [...])")
        if self.from_groups and not self.to:
            raise ValueError("from = [...] needs to = [...]")
        return self

    def change(self, before: str | None, after: str | None) -> str | None:
        """ "add", "remove" or None for a move from ``before`` to ``after``."""
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
    graph_version: str = Field(GRAPH_VERSION, pattern=r"^v\d+\.\d+$")
    # the secret holding the app secret, for apps with "Require App Secret" (sends appsecret_proof)
    app_secret_secret: str | None = None
    max_throttle_wait_s: float = Field(900.0, gt=0)  # a longer wait Meta asks for ends the push
    batch_size: int = Field(10_000, ge=1, le=100_000)
    audiences: list[AudienceRule] = Field(min_length=1)
    additive_only: bool = False
    # the country of phone numbers written without a country code ("030 1234567" -> "49301234567")
    default_country_code: str | None = Field(None, pattern=r"^[1-9]\d{0,3}$")
    send_phone: bool = True
    timeout_s: float = Field(60.0, gt=0)


def normalise_email(email: str | None) -> str | None:
    value = (email or "").strip().lower()
    return value if "@" in value else None


def normalise_phone(phone: str | None, default_country_code: str | None = None) -> str | None:
    """Meta's PHONE key: digits only, country code first, no trunk prefix ("+44 07700 900123" and
    "07700 900123" with default 44 -> "447700900123"; "(415) 555-0100" with default 1 ->
    "14155550100"; Italian numbers keep their leading 0). A number written with "+" or "00" carries
    its own country code; any other is national, read with ``default_country_code``'s country.
    None when it is not a possible number there (or has no country code and there is no default)."""
    text = (phone or "").strip()
    if not text:
        return None
    if text.startswith("00"):  # the international prefix of most countries; "+" is understood anywhere
        text = "+" + text[2:]
    region = None
    if not text.startswith("+"):
        if default_country_code is None:
            return None  # no country code: Meta could not match it
        region = phonenumbers.region_code_for_country_code(int(default_country_code))
        if region == phonenumbers.UNKNOWN_REGION:
            return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """Meta's ``appsecret_proof``: HMAC-SHA256 of the access token keyed by the app secret, as hex."""
    return hmac.new(app_secret.encode("utf-8"), access_token.encode("utf-8"), hashlib.sha256).hexdigest()


def _count(value: Any, default: int | None = 0) -> int | None:
    """A count Meta reports (``num_received``, ``num_invalid_entries``): a whole number >= 0, as a
    JSON number or its text; anything else is ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return default


def _json_header(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def reported_wait(headers: Any) -> float | None:
    """Seconds until Meta lets us back in, from its usage headers; None when it does not say.

    ``X-Business-Use-Case-Usage`` is ``{"<business or ad account id>": [{"type": "custom_audience",
    "call_count": 100, ..., "estimated_time_to_regain_access": <minutes>}]}``; ``X-Ad-Account-Usage``
    is ``{"acc_id_util_pct": 100, "reset_time_duration": <seconds>, ...}``. The longest wait wins."""
    waits: list[float] = []
    usage = _json_header(headers.get("X-Business-Use-Case-Usage"))
    for entries in usage.values() if isinstance(usage, dict) else ():
        for entry in entries if isinstance(entries, list) else ():
            minutes = entry.get("estimated_time_to_regain_access") if isinstance(entry, dict) else None
            if isinstance(minutes, (int, float)) and minutes > 0:
                waits.append(60.0 * minutes)
    account = _json_header(headers.get("X-Ad-Account-Usage"))
    if isinstance(account, dict):
        seconds = account.get("reset_time_duration")
        if isinstance(seconds, (int, float)) and seconds > 0:
            waits.append(float(seconds))
        minutes = account.get("estimated_time_to_regain_access")
        if isinstance(minutes, (int, float)) and minutes > 0:
            waits.append(60.0 * minutes)
    return max(waits) if waits else None


@dataclass(frozen=True)
class Op:
    action: str  # "add" | "remove"
    audience_id: str
    outbox_id: int
    row: tuple[str, str]  # hashed (email, phone); "" where unknown


class MetaAudiencesDestination(HttpConnector[MetaAudiencesSettings]):
    Settings = MetaAudiencesSettings

    def __init__(self, settings: MetaAudiencesSettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.batch_size = settings.batch_size
        # Meta's audience limits are per ad account and opaque; stay well under a few calls per second.
        self.limiter = self.plumbing.rate_limiter([(5, 1.0), (200, 60.0)])
        self._proof: str | None = None  # appsecret_proof, when the app requires it
        self.version = settings.graph_version
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"MetaAudiencesDestination(name={self.name!r}, base_url={self.settings.base_url!r})"

    @functools.cached_property
    def client(self) -> HttpClient:
        # built on first use: the token is read then (not when the config loads), never for a dry run
        self._context.refuse_dry_run(self.name)
        self._check_version(date.today())
        token = self.secret(self.settings.access_token_secret)
        if self.settings.app_secret_secret:
            app_secret = self.secret(self.settings.app_secret_secret)
            self._proof = appsecret_proof(app_secret, token)
        return self.plumbing.client(
            self.settings.base_url,
            read_timeout_s=self.settings.timeout_s,
            headers={"Authorization": f"Bearer {token}"},
            hooks=[self._graph_errors],
            policy=dataclasses.replace(
                self.plumbing.policy or RetryPolicy(), max_server_wait_s=self.settings.max_throttle_wait_s
            ),
        )

    def _check_version(self, today: date) -> None:
        problem = version_problem(self.version, today)
        if problem is None:
            return
        fatal, message = problem
        if fatal:
            raise FatalError(message, connector=self.name)
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("meta api version retires soon", extra={"destination": self.name, "version": self.version})

    def _proofed(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "appsecret_proof": self._proof} if self._proof else fields

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
        # an update with no membership change (or no identifier) is done, but Meta never saw it:
        # only updates whose every row Meta acknowledged (num_received, see _check_counts) count
        involved = {op.outbox_id for op in ops}
        return PushResult(
            accepted=[u.outbox_id for u in updates if u.outbox_id not in failed],
            failed=failed,
            skipped=[u.outbox_id for u in updates if u.outbox_id not in involved],
        )

    def send(self, action: str, audience_id: str, rows: list[tuple[str, str]]) -> dict[str, Any]:
        with_phone = any(phone for _, phone in rows)
        if with_phone:
            payload = {"schema": ["EMAIL", "PHONE"], "data": [list(r) for r in rows]}
        else:
            payload = {"schema": "EMAIL", "data": [email for email, _ in rows]}
        method = "POST" if action == "add" else "DELETE"
        client = self.client  # built first: it computes the appsecret_proof
        form = self._proofed({"payload": json.dumps(payload, separators=(",", ":"))})
        response = client.request(
            method,
            f"/{self.version}/{audience_id}/users",
            limiter=self.limiter,
            data=form,
            classify=lambda r: self._check_counts(r, len(rows), audience_id),
        )
        body: dict[str, Any] = response.json()  # an object: _check_counts read num_received from it
        invalid = _count(body.get("num_invalid_entries"))
        if invalid:
            message = (
                f"audience {audience_id}: Meta reported {invalid} invalid entr{'y' if invalid == 1 else 'ies'} "
                f"of {len(rows)} ({action})"
            )
            self.warnings.append(message)
            log.warning(
                "meta invalid entries",
                extra={"destination": self.name, "audience": audience_id, "invalid": invalid, "rows": len(rows)},
            )
        return body

    def _check_counts(self, response: requests.Response, sent: int, audience_id: str) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        received = _count(body.get("num_received"), None) if isinstance(body, dict) else None
        if received is None:
            raise RetryableError(f"audience {audience_id}: response without num_received", connector=self.name)
        if received != sent:
            raise RetryableError(
                f"audience {audience_id}: Meta received {received} of {sent} rows", connector=self.name
            )

    def _graph_errors(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code < 400:
            return response
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            return response  # not a Graph error body: the generic status handling decides
        if not isinstance(error, dict):  # "error": "text" is not Graph's shape; keep the text as the message
            error = {"message": str(error)}
        code = error.get("code")
        where = f"{response.request.method} {response.url.split('?', 1)[0].split('/', 3)[-1]}"
        message = str(error.get("message", ""))
        text = f"{message} {error.get('error_user_title', '')}".lower()
        label = f"{where}: Graph API error {code}" + (
            f"/{error.get('error_subcode')}" if error.get("error_subcode") else ""
        )
        if code in TOKEN:
            raise FatalError(
                f"{label}: the access token is invalid or expired; create a new system-user token "
                f"and store it in the secret {self.settings.access_token_secret!r}",
                connector=self.name,
                status=response.status_code,
            )
        if code in PERMISSION:
            raise FatalError(
                f"{label}: permission denied; the token needs ads_management on the ad account that owns the audience",
                connector=self.name,
                status=response.status_code,
            )
        if code == RETIRED_VERSION:
            latest = re.search(r"v\d+\.\d+", message.split("latest version", 1)[-1])
            fix = (
                f'set graph_version = "{latest.group(0)}"' if latest else "set graph_version to Meta's current version"
            )
            raise FatalError(
                f"{label}: Meta no longer serves Marketing API {self.version}; {fix} in this "
                f"destination's table (or upgrade rfm-sync)",
                connector=self.name,
                status=response.status_code,
            )
        if "appsecret_proof" in text:
            fix = (
                f"check that the secret {self.settings.app_secret_secret!r} holds this app's secret"
                if self._proof
                else "the app requires an app secret proof: set app_secret_secret to the name "
                "of a secret holding the app secret"
            )
            raise FatalError(f"{label}: {fix}", connector=self.name, status=response.status_code)
        if code in THROTTLED or code in TRANSIENT or response.status_code >= 500:
            wait = reported_wait(response.headers)
            if wait is not None and wait > self.settings.max_throttle_wait_s:
                raise RetryableError(
                    f"{label}: throttled; Meta asks to wait {wait / 60:.0f} min, longer than "
                    f"max_throttle_wait_s: left for the next cycle",
                    connector=self.name,
                    status=response.status_code,
                    retry_after=wait,
                )
            raise RetryableError(
                f"{label}: throttled or temporary, backing off",
                connector=self.name,
                status=response.status_code,
                retry_after=wait,
            )
        if "too small" in text:
            raise RecordError(
                f"{label}: audience too small to remove users; left for a later cycle",
                connector=self.name,
                status=response.status_code,
            )
        raise RecordError(
            f"{label}: {error.get('message', 'request rejected')}"[:300],
            connector=self.name,
            status=response.status_code,
        )

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the token (and app secret, when named) are set and the API version
        is not retired or about to retire; ``online``: every mapped audience exists, is reachable with
        this token and is not flagged. Token and permission errors raise :class:`FatalError`."""
        missing = self._context.missing_secrets(
            self.name, self.settings.access_token_secret, self.settings.app_secret_secret
        )
        problems = list(missing)
        version = version_problem(self.version, date.today())
        if version is not None:
            retired, message = version
            problems.append(
                (
                    message,
                    "Meta refuses every call in a retired version"
                    if retired
                    else "move to the newer version before that day",
                )
            )
        if missing or (version is not None and version[0]) or not online:
            return problems  # without a token, or in a retired version, no call can succeed
        for rule in self.settings.audiences:
            try:
                client = self.client
                body = client.request(
                    "GET",
                    f"/{self.version}/{rule.audience_id}",
                    limiter=self.limiter,
                    params=self._proofed({"fields": "id,name,operation_status"}),
                ).json()
            except RecordError as exc:
                problems.append(
                    (
                        f"audience {rule.audience_id}: {exc}",
                        "check the audience id and that the token's ad account owns it",
                    )
                )
                continue
            status = (body.get("operation_status") or {}).get("code")
            if status not in (None, 200):
                problems.append(
                    (
                        f"audience {rule.audience_id}: operation_status {status}",
                        "resolve the audience's restrictions in Audience Manager",
                    )
                )
        return problems

    def close(self) -> None:
        if "client" in vars(self):  # built (functools.cached_property keeps it there)
            self.client.close()
