"""Mailchimp destination: the RFM properties as merge fields on the members of one audience.

What it writes. Each property named in ``merge_fields`` (property name -> merge tag) is written as a
text merge field on the member of the audience ``audience_id`` (Mailchimp's list id). Before the first
push the audience's merge fields are listed (``GET /lists/{id}/merge-fields``, paged by count/offset)
and only the missing ones are created (``POST``), so running it again creates nothing. Mailchimp's
limits are checked before anything is created: a merge tag is 1-10 upper-case letters, digits or
underscores (a settings error otherwise, never a silent truncation that could make two tags collide),
and an audience holds at most ``max_merge_fields`` fields (30 on most plans, 80 on Premium): a push
that would need more stops with a clear error instead of creating some of them.

Tags. With ``tags = true`` the member gets the tag ``<tag_prefix><group>`` (``rfm:Loyal``) of its
current group; any other tag with that prefix the member carries is made inactive in the same call
(``POST .../members/{hash}/tags``, status active/inactive), so a group change replaces the tag and a
member never keeps two group tags. The member's tags are read from the answer to the merge-field
write; no tag call is made when they are already right. A group tag longer than Mailchimp's 100
characters is that record's failure, never cut short (two long group names could share a prefix).
``is_syncing`` is not set: a tag added this way starts the merchant's "Tag added" customer journeys
(with ``is_syncing: true`` Mailchimp would not fire them).

Who is written. Members are addressed by Mailchimp's subscriber hash, the MD5 of the lower-cased
email. An update without an email is skipped (reported as skipped, not pushed). rfm-sync never
subscribes anyone and never changes a member's status: ``unknown_members = "transactional"`` (the
default) upserts with ``PUT`` and ``status_if_new = "transactional"``, which only applies to a new
contact; ``"skip"`` uses ``PATCH``, which Mailchimp answers with 404 for someone not in the audience
(that update is skipped). ``status`` is never sent, so an unsubscribed member stays unsubscribed.

Errors. One HTTP client (connectors/http.py) with one retry policy: 429 (Mailchimp allows 10
simultaneous connections per account; rfm-sync uses one) and 5xx are retried; a 400 on one member
is that record's failure, kept with Mailchimp's problem detail (``title``, ``detail``, ``errors[]``,
emails masked); 401/403 stop the destination naming the secret; any other 4xx is fatal with the
detail. Every write is idempotent (PUT/PATCH of the same values, tags set to a status), so retrying
after a lost answer is safe; creating a merge field is not retried blindly: the fields are listed
again first.

The API key comes from the secret named by ``api_key_secret`` and travels only in the
``Authorization`` header (HTTP Basic, as Mailchimp documents); it is never in a log, repr or
message. The data center is the key's suffix (``...-us21`` -> ``https://us21.api.mailchimp.com``)
unless ``data_center`` or ``base_url`` says otherwise.

Large pushes. A push of at least ``batch_min_members`` members uses Mailchimp's batch operations:
``POST /batches`` with one operation per member (``operation_id`` = ``m<outbox id>``), polled
(``GET /batches/{id}``, every ``poll_interval_s``, up to ``batch_timeout_s``) until ``finished``;
then the ``response_body_url`` archive (a ``.tar.gz`` of JSON files; the link is pre-signed on
another host, so it is fetched without the API key) gives each operation's status and answer,
matched by ``operation_id``. The tag changes those answers call for go as a second batch. A batch
started twice (a lost answer to ``POST /batches``) repeats idempotent writes, nothing else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import re
import tarfile
from typing import Any, Literal, Unpack

import requests
from pydantic import Field, field_validator, model_validator

from ..base import (
    ConnectorContext,
    ConnectorSettings,
    FatalError,
    ProfileUpdate,
    PushResult,
    RecordError,
    RetryableError,
)
from ..http import HttpClient, HttpConnector, PlumbingArgs, refusals_explained
from ..klaviyo.bodies import mask_email

log = logging.getLogger(__name__)

MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")  # Mailchimp: upper case, digits, underscore; at most 10
TAG_NAME_MAX = 100  # longest tag name Mailchimp takes; a longer group tag is that record's failure
PAGE_SIZE = 1000  # the largest count Mailchimp's list endpoints accept
DEFAULT_MERGE_FIELDS = {
    "Current RFM group": "RFM_GROUP",
    "Previous RFM group": "RFM_PREV",
    "RFM group last changed": "RFM_CHANGE",
    "RFM score": "RFM_SCORE",
}


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 hex digest of the lower-cased email."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()  # noqa: S324 - Mailchimp's id, not security


def data_center(api_key: str) -> str | None:
    """``us21`` from ``0123abcd-us21``; None when the key has no suffix."""
    _, sep, dc = api_key.rpartition("-")
    return dc if sep and re.fullmatch(r"[a-z]+\d+", dc) else None


class MailchimpSettings(ConnectorSettings):
    type: str = "mailchimp"
    api_key_secret: str
    audience_id: str = Field(min_length=1)  # Mailchimp's list id
    # unset: from the API key's suffix ("-us21"); base_url overrides both (a proxy or a test double)
    data_center: str | None = Field(None, pattern=r"^[a-z]+\d+$")
    base_url: str | None = None
    # profile property -> merge tag; every field is created as a text field if the audience lacks it
    merge_fields: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MERGE_FIELDS))
    # which property holds the current group (for tags)
    group_property: str = "Current RFM group"
    max_merge_fields: int = Field(30, ge=1, le=80)
    tags: bool = True
    tag_prefix: str = Field("rfm:", min_length=1, max_length=50)
    unknown_members: Literal["transactional", "skip"] = "transactional"
    batch_size: int = Field(1000, ge=1, le=10_000)
    # a push of at least this many members goes through one batch operation (POST /batches)
    batch_min_members: int = Field(200, ge=1)
    poll_interval_s: float = Field(5.0, gt=0)
    batch_timeout_s: float = Field(3600.0, gt=0)
    timeout_s: float = Field(60.0, gt=0)

    @field_validator("merge_fields")
    @classmethod
    def _tags_fit(cls, value: dict[str, str]) -> dict[str, str]:
        for prop, tag in value.items():
            if not MERGE_TAG.match(tag):
                raise ValueError(
                    f"merge tag {tag!r} for {prop!r}: Mailchimp merge tags are 1-10 characters, "
                    "upper-case letters, digits or underscores"
                )
        seen: dict[str, str] = {}
        for prop, tag in value.items():
            if tag in seen:
                raise ValueError(f"merge tag {tag!r} is given to both {seen[tag]!r} and {prop!r}")
            seen[tag] = prop
        if "EMAIL" in seen:
            raise ValueError("EMAIL is Mailchimp's own merge tag")
        return value

    @model_validator(mode="after")
    def _fits(self) -> MailchimpSettings:
        if len(self.merge_fields) > self.max_merge_fields:
            raise ValueError(
                f"{len(self.merge_fields)} merge fields, more than max_merge_fields = {self.max_merge_fields}"
            )
        return self


class MailchimpDestination(HttpConnector[MailchimpSettings]):
    Settings = MailchimpSettings

    def __init__(self, settings: MailchimpSettings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        super().__init__(settings, context, **plumbing)
        self.batch_size = settings.batch_size
        # Mailchimp limits simultaneous connections (10), not a rate; one connection, a polite pace
        self.limiter = self.plumbing.rate_limiter([(10, 1.0)])
        self._fields_ready = False
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"MailchimpDestination(name={self.name!r}, audience_id={self.settings.audience_id!r})"

    # ------------------------------------------------------------------ http
    @functools.cached_property
    def client(self) -> HttpClient:
        # built on first use: the key is read then (not when the config loads), never for a dry run
        key = self.client_secret(self.settings.api_key_secret)
        base_url = self.settings.base_url
        if not base_url:
            dc = self.settings.data_center or data_center(key)
            if dc is None:
                raise FatalError(
                    f"the API key in secret {self.settings.api_key_secret!r} has no data-center suffix "
                    '(like "-us21"): set data_center in this destination\'s table',
                    connector=self.name,
                )
            base_url = f"https://{dc}.api.mailchimp.com"
        basic = base64.b64encode(f"rfm-sync:{key}".encode()).decode("ascii")
        return self.plumbing.client(
            base_url,
            read_timeout_s=self.settings.timeout_s,
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            hooks=[self._problems],
        )

    def send(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None, idempotent: bool = True
    ) -> requests.Response:
        kwargs: dict[str, Any] = {"limiter": self.limiter, "idempotent": idempotent}
        if params:
            kwargs["params"] = params
        if body is not None:
            kwargs["json"] = body
        with refusals_explained(
            "Mailchimp",
            connector=self.name,
            scope_hint="the key must belong to a user with access to this audience (Manager or above)",
            on_401=f"the API key was rejected (check the secret {self.settings.api_key_secret!r}); ",
        ):
            return self.client.request(method, f"/3.0{path}", **kwargs)

    def _problems(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        """Mailchimp's problem+json errors: a 400 (or 404) on one member is that record's problem;
        other 4xx but 401/403/429 are fatal with Mailchimp's detail. 401/403/429/5xx: the generic handling."""
        status = response.status_code
        if not 400 <= status < 500 or status in (401, 403, 429):
            return response
        path = response.url.split("?", 1)[0]
        what = problem_summary(response)
        if "/members/" in path and (status == 400 or (status == 404 and response.request.method == "PATCH")):
            raise RecordError(what, connector=self.name, status=status)
        where = "/" + path.split("://", 1)[-1].split("/", 1)[-1]
        raise FatalError(f"{response.request.method} {where} was refused: {what}", connector=self.name, status=status)

    # ------------------------------------------------------------------ merge fields
    def _list_path(self) -> str:
        return f"/lists/{self.settings.audience_id}"

    def merge_fields(self) -> dict[str, dict[str, Any]]:
        """The audience's merge fields by tag, every page (count/offset)."""
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            body = self.send(
                "GET", f"{self._list_path()}/merge-fields", params={"count": PAGE_SIZE, "offset": offset}
            ).json()
            page = body.get("merge_fields") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise RetryableError("merge-fields listing without merge_fields", connector=self.name)
            for field in page:
                if isinstance(field, dict) and isinstance(field.get("tag"), str):
                    found[field["tag"]] = field
            offset += len(page)
            total = body.get("total_items")
            if not page or not isinstance(total, int) or offset >= total:
                return found

    def ensure_merge_fields(self) -> list[str]:
        """Create the merge fields the audience lacks (listed first: idempotent); the tags created."""
        if self._fields_ready:
            return []
        existing = self.merge_fields()
        missing = [(prop, tag) for prop, tag in self.settings.merge_fields.items() if tag not in existing]
        # Mailchimp counts the EMAIL address among its fields only implicitly; the listing holds the rest
        if missing and len(existing) + len(missing) > self.settings.max_merge_fields:
            raise FatalError(
                f"audience {self.settings.audience_id} has {len(existing)} merge fields; adding "
                f"{', '.join(t for _, t in missing)} would pass max_merge_fields = {self.settings.max_merge_fields}",
                connector=self.name,
            )
        for tag, field in existing.items():
            if tag in self.settings.merge_fields.values() and field.get("type") not in ("text", None):
                message = f"merge field {tag} is of type {field.get('type')!r}, not text: values may be refused"
                if message not in self.warnings:
                    self.warnings.append(message)
                    log.warning("mailchimp merge field type", extra={"destination": self.name, "tag": tag})
        created = []
        for prop, tag in missing:
            # not retried blindly: a lost answer may hide a created field; the next push lists again
            self.send(
                "POST",
                f"{self._list_path()}/merge-fields",
                body={"tag": tag, "name": prop, "type": "text", "required": False, "public": False},
                idempotent=False,
            )
            created.append(tag)
            log.info("mailchimp merge field created", extra={"destination": self.name, "tag": tag})
        self._fields_ready = True
        return created

    # ------------------------------------------------------------------ push
    def member_body(self, update: ProfileUpdate, email: str) -> dict[str, Any]:
        fields = {}
        for prop, tag in self.settings.merge_fields.items():
            value = update.properties.get(prop)
            fields[tag] = "" if value is None else str(value)  # "" clears a field in Mailchimp
        body: dict[str, Any] = {"merge_fields": fields}
        if self.settings.unknown_members == "transactional":
            body = {"email_address": email, "status_if_new": "transactional", **body}
        return body

    def group_tag(self, update: ProfileUpdate) -> str | None:
        """``rfm:Loyal`` for a member in Loyal; None without a group (cleared)."""
        group = update.properties.get(self.settings.group_property)
        return f"{self.settings.tag_prefix}{group}" if group else None

    def tag_changes(self, update: ProfileUpdate, member: dict[str, Any]) -> list[dict[str, str]]:
        """The tag statuses to send: the current group's tag active, every other group tag inactive;
        [] when the member's tags are right already."""
        prefix = self.settings.tag_prefix
        wanted = self.group_tag(update)
        have = {t.get("name") for t in member.get("tags") or [] if isinstance(t, dict)}
        changes = [
            {"name": name, "status": "inactive"}
            for name in sorted(n for n in have if isinstance(n, str))
            if name.startswith(prefix) and name != wanted
        ]
        if wanted and wanted not in have:
            changes.append({"name": wanted, "status": "active"})
        return changes

    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        result = PushResult()
        if not updates:
            return result
        self.ensure_merge_fields()
        work: list[tuple[ProfileUpdate, str, str]] = []  # (update, email, member path)
        for update in updates:
            email = (update.email or "").strip().lower()
            if "@" not in email:
                result.accepted.append(update.outbox_id)
                result.skipped.append(update.outbox_id)  # no email: no member to write to
                continue
            tag = self.group_tag(update) if self.settings.tags else None
            if tag is not None and len(tag) > TAG_NAME_MAX:  # never cut short: two groups could share a tag
                result.failed[update.outbox_id] = f"tag {tag[:40]!r}... is longer than {TAG_NAME_MAX} characters"
                continue
            work.append((update, email, f"{self._list_path()}/members/{subscriber_hash(email)}"))
        if len(work) >= self.settings.batch_min_members:
            self._push_batched(work, result)
        else:
            self._push_plain(work, result)
        return result

    @property
    def _member_method(self) -> str:
        return "PUT" if self.settings.unknown_members == "transactional" else "PATCH"

    def _not_a_member(self, result: PushResult, update: ProfileUpdate) -> None:
        result.accepted.append(update.outbox_id)
        result.skipped.append(update.outbox_id)  # not in the audience: never added (unknown_members = "skip")

    def _push_plain(self, work: list[tuple[ProfileUpdate, str, str]], result: PushResult) -> None:
        for n, (update, email, path) in enumerate(work):
            try:
                response = self.send(self._member_method, path, body=self.member_body(update, email))
                member = response.json() if response.content.strip() else {}
                if self.settings.tags:
                    changes = self.tag_changes(update, member if isinstance(member, dict) else {})
                    if changes:
                        self.send("POST", f"{path}/tags", body={"tags": changes})
                result.accepted.append(update.outbox_id)
            except RecordError as exc:
                if exc.status == 404 and self.settings.unknown_members == "skip":
                    self._not_a_member(result, update)
                else:
                    result.failed[update.outbox_id] = f"member: {exc}"
            except RetryableError as exc:  # still failing after retries: the rest waits for the next cycle
                for later, _, _ in work[n:]:
                    result.failed[later.outbox_id] = f"member not sent: {exc}"
                break

    # ------------------------------------------------------------------ batch operations
    def _push_batched(self, work: list[tuple[ProfileUpdate, str, str]], result: PushResult) -> None:
        """Member writes as one batch operation, then the tag changes their answers call for as a
        second (a member must exist before it can be tagged, and a batch's order is not guaranteed).
        An operation missing from the results is left unreported: the core sends it again first."""
        by_id = {f"m{u.outbox_id}": (u, path) for u, _, path in work}
        ops = [
            {
                "method": self._member_method,
                "path": f"/3.0{path}",
                "body": json.dumps(self.member_body(update, email), ensure_ascii=False),
                "operation_id": f"m{update.outbox_id}",
            }
            for update, email, path in work
        ]
        tag_ops: list[dict[str, Any]] = []
        done: list[ProfileUpdate] = []
        for op_id, status, answer in self.run_batch(ops):
            if op_id not in by_id:
                continue
            update, path = by_id[op_id]
            if status < 300:
                changes = (
                    self.tag_changes(update, answer if isinstance(answer, dict) else {}) if self.settings.tags else []
                )
                if changes:
                    tag_ops.append(
                        {
                            "method": "POST",
                            "path": f"/3.0{path}/tags",
                            "body": json.dumps({"tags": changes}, ensure_ascii=False),
                            "operation_id": f"t{update.outbox_id}",
                        }
                    )
                else:
                    done.append(update)
            elif status == 404 and self.settings.unknown_members == "skip":
                self._not_a_member(result, update)
            else:
                result.failed[update.outbox_id] = f"member: {problem_text(status, answer)}"
        by_tag = {f"t{u.outbox_id}": u for u, _, _ in work}
        if tag_ops:
            for op_id, status, answer in self.run_batch(tag_ops):
                if op_id not in by_tag:
                    continue
                if status < 300:
                    done.append(by_tag[op_id])
                else:
                    result.failed[by_tag[op_id].outbox_id] = f"tags: {problem_text(status, answer)}"
        result.accepted.extend(u.outbox_id for u in done)

    def run_batch(self, operations: list[dict[str, Any]]) -> list[tuple[str, int, Any]]:
        """Run ``operations`` as one batch: start it, poll until ``finished``, read the archive.
        ``(operation_id, status_code, parsed response)`` per operation found in it."""
        started = self.send("POST", "/batches", body={"operations": operations}).json()
        batch_id = started.get("id") if isinstance(started, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise RetryableError("POST /batches answered without a batch id", connector=self.name)
        deadline = self.plumbing.clock() + self.settings.batch_timeout_s
        polls = 0
        while True:
            status = self.send("GET", f"/batches/{batch_id}").json()
            polls += 1
            if isinstance(status, dict) and status.get("status") == "finished":
                break
            if self.plumbing.clock() >= deadline:
                raise RetryableError(
                    f"batch {batch_id} not finished after {self.settings.batch_timeout_s:.0f} s: left for the next cycle",
                    connector=self.name,
                )
            self.plumbing.sleep(self.settings.poll_interval_s)
        url = status.get("response_body_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RetryableError(f"batch {batch_id} finished without a response_body_url", connector=self.name)
        found: list[list[tuple[str, int, Any]]] = []

        def read(response: requests.Response) -> None:
            found[:] = [read_archive(response.content, self.name)]

        # a pre-signed link on another host: the API key must not travel with it
        try:
            self.client.request(
                "GET", url, headers={"Authorization": None}, expect_json=False, classify=read, limiter=self.limiter
            )
        except FatalError as exc:  # an expired or refused link: the writes are done, their results lost
            raise RetryableError(
                f"batch {batch_id}: its result archive could not be fetched (HTTP {exc.status}); "
                "its members are sent again next cycle",
                connector=self.name,
                status=exc.status,
            ) from None
        log.info(
            "mailchimp batch done",
            extra={"destination": self.name, "batch": batch_id, "operations": len(operations), "polls": polls},
        )
        return found[0]

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor``: the key is set; ``online``: ``GET /ping`` proves it, the audience
        exists (``GET /lists/{id}``) and has room for the merge fields it lacks. 401/403 raise
        :class:`FatalError`."""
        problems = self._context.missing_secrets(self.name, self.settings.api_key_secret)
        if problems or not online:
            return problems
        self.send("GET", "/ping")
        try:
            self.send("GET", self._list_path(), params={"fields": "id,name"})
        except FatalError as exc:
            if exc.status != 404:
                raise
            return [
                (
                    f"audience {self.settings.audience_id} not found",
                    "check audience_id (Audience > Settings > Audience name and defaults: Audience ID)",
                )
            ]
        existing = self.merge_fields()
        missing = [tag for tag in self.settings.merge_fields.values() if tag not in existing]
        if missing and len(existing) + len(missing) > self.settings.max_merge_fields:
            return [
                (
                    f"audience {self.settings.audience_id} has {len(existing)} merge fields: no room for "
                    f"{', '.join(missing)} (max_merge_fields = {self.settings.max_merge_fields})",
                    "delete unused audience fields in Mailchimp, or map fewer properties in merge_fields",
                )
            ]
        return []

    def close(self) -> None:
        if "client" in vars(self):
            self.client.close()


def problem_summary(response: requests.Response) -> str:
    """``HTTP 400 Invalid Resource: <detail> (merge_fields.X: <message>)`` from Mailchimp's
    problem+json body; emails masked; never the request body. A body that is not one: just the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return problem_text(response.status_code, body)


def problem_text(status: int, problem: Any) -> str:
    if not isinstance(problem, dict):
        return f"HTTP {status}"
    parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
    errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)][:3]
    fields = "; ".join(f"{e.get('field', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    text = f"HTTP {status} " + ": ".join(parts) + (f" ({fields})" if fields else "")
    return mask_email(text.strip())[:500]


def read_archive(data: bytes, connector: str) -> list[tuple[str, int, Any]]:
    """A batch's result archive (``.tar.gz`` of JSON files, each a list of ``{"status_code",
    "operation_id", "response"}``, the response a JSON string): ``(operation_id, status, parsed)``
    each. An archive that does not read is a :class:`RetryableError` (fetched again)."""
    results: list[tuple[str, int, Any]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                handle = tar.extractfile(member)
                entries = json.loads(handle.read()) if handle is not None else []
                for entry in entries if isinstance(entries, list) else []:
                    if not isinstance(entry, dict) or not isinstance(entry.get("operation_id"), str):
                        continue
                    status = entry.get("status_code")
                    try:
                        answer = json.loads(entry.get("response") or "null")
                    except (TypeError, ValueError):
                        answer = None
                    results.append((entry["operation_id"], status if isinstance(status, int) else 500, answer))
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise RetryableError(
            f"the batch result archive does not read ({type(exc).__name__})", connector=connector
        ) from None
    return results
