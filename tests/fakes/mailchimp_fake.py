"""A fake Mailchimp Marketing API 3.0 (via ``responses``: no socket, no internet) for what rfm-sync uses.

* ``GET /3.0/ping`` and ``GET /3.0/lists/{id}``; every call needs HTTP Basic auth with the API key as
  password (any user name), else 401 "API Key Invalid";
* merge fields: ``GET /lists/{id}/merge-fields`` pages by ``count`` (default 10, at most
  ``max_count``) and ``offset`` with ``total_items``; ``POST`` creates one, refusing a tag that exists,
  a tag that is not 1-10 upper-case letters, digits or underscores, and a field past ``max_fields``
  (Mailchimp's per-audience limit) with a 400;
* members, keyed by the subscriber hash (MD5 of the lower-cased email, checked against the body's
  ``email_address``): ``PUT`` upserts (a new member needs ``status_if_new`` or ``status``), ``PATCH``
  updates or answers 404; a merge tag the audience lacks, a text value over 255 characters or an email
  in ``invalid_emails`` is a 400 with ``errors[]``. A ``status`` sent for an existing member is applied
  (as Mailchimp does) and recorded in ``status_changes``, so a test can insist it never happens;
* tags: ``POST .../members/{hash}/tags`` with ``{"tags": [{"name", "status": "active"|"inactive"}]}``
  answers 204; names longer than 100 characters are a 400; a tag added without ``is_syncing: true``
  starts "Tag added" journeys (recorded in ``journeys_started``), as in Mailchimp;
* batches: ``POST /3.0/batches`` queues the operations (each ``method``, ``path``, ``params``, ``body``
  as a JSON string, ``operation_id``); ``GET /3.0/batches/{id}`` moves ``pending`` -> ``started`` ->
  ``finished`` over ``polls_to_finish`` polls, running the operations when it finishes and publishing
  ``response_body_url``: a ``.tar.gz`` of JSON files, each a list of ``{"status_code", "operation_id",
  "response"}`` (the response as a JSON string), served without auth like Mailchimp's pre-signed
  link; a request for it carrying the API key fails the test; ``archive_faults`` cut it off, truncate
  it or refuse it (403, an expired link) on the next downloads;
* errors are ``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, ``instance``;
* faults: ``fail_next`` (statuses answered before doing anything; 429 says "too many simultaneous
  connections"); ``cut_next`` (work done, body cut off before its ``Content-Length``),
  ``malformed_next`` (work done, half the body as a complete one), ``lost_next`` (work done, then 503),
  ``reset_next`` (work done, then the connection is reset); ``failure_rate``: that share of calls,
  drawn from a seeded RNG, answers 429 before the work, or 503 or a reset after it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import tarfile
import uuid
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

BASE_URL = "http://127.0.0.1:8767"
ARCHIVE_URL = "http://127.0.0.1:8768"  # Mailchimp's archives live on another host (S3)
API_KEY = "0123456789abcdef0123456789abcdef-us21"
LIST_ID = "a1b2c3d4e5"
DEFAULT_FIELDS = ("FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY")
_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
PROBLEM = {"Content-Type": "application/problem+json; charset=utf-8"}
JSON = {"Content-Type": "application/json; charset=utf-8"}


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()  # noqa: S324 - Mailchimp's id


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None):
    body: dict[str, Any] = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return status, dict(PROBLEM), json.dumps(body)


class FakeMailchimp:
    def __init__(self, *, base_url: str = BASE_URL, api_key: str = API_KEY, list_id: str = LIST_ID):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.lists: dict[str, dict[str, Any]] = {}
        self.add_list(list_id)
        self.max_fields = 30
        self.max_count = 1000
        self.invalid_emails: set[str] = set()
        self.journeys_started: list[tuple[str, str]] = []  # (email, tag): "Tag added" triggers that fired
        self.status_changes: list[tuple[str, str, str]] = []  # (email, from, to) sent for existing members
        self.fail_next: list[int] = []
        self.failure_rate = 0.0  # chaos: this share of calls fails (see _wrap)
        self.rng = random.Random(19)
        self.cut_next = self.malformed_next = self.lost_next = self.reset_next = 0
        self.injected: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()  # "PUT /lists/{id}/members/{hash}" style routes answered
        self.writes = 0  # non-GET calls that changed or tried to change something
        self.batches: dict[str, dict[str, Any]] = {}
        self.archives: dict[str, bytes] = {}
        self.polls_to_finish = 2
        self.archive_faults: list[str] = []  # "cut", "malformed" or "missing" for the next archive downloads
        self._next_field_id = 10

    # ------------------------------------------------------------------ state
    def add_list(self, list_id: str) -> None:
        fields = {
            tag: {"merge_id": i + 1, "tag": tag, "name": tag.title(), "type": "text"}
            for i, tag in enumerate(DEFAULT_FIELDS)
        }
        self.lists[list_id] = {"merge_fields": fields, "members": {}}

    def add_member(self, email: str, *, status: str = "subscribed", list_id: str = LIST_ID, tags=()) -> dict:
        member = {
            "email_address": email,
            "status": status,
            "merge_fields": {},
            "tags": [{"id": i, "name": t} for i, t in enumerate(tags)],
        }
        self.lists[list_id]["members"][md5(email)] = member
        return member

    def member(self, email: str, list_id: str = LIST_ID) -> dict[str, Any] | None:
        return self.lists[list_id]["members"].get(md5(email))

    def tags(self, email: str, list_id: str = LIST_ID) -> set[str]:
        m = self.member(email, list_id)
        return {t["name"] for t in m["tags"]} if m else set()

    # ------------------------------------------------------------------ wiring
    def install(self, rsps: responses.RequestsMock) -> FakeMailchimp:
        base = re.escape(self.base_url) + r"/3\.0"
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            rsps.add_callback(method, re.compile(base + r"/.*"), callback=self._wrap)
        rsps.add_callback("GET", re.compile(re.escape(ARCHIVE_URL) + r"/.*"), callback=self._archive)
        return self

    def _wrap(self, request):
        auth = request.headers.get("Authorization", "")
        try:
            _, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            password = ""
        if not auth.startswith("Basic ") or password != self.api_key:
            return problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        if self.fail_next:
            status = self.fail_next.pop(0)
            self.injected[str(status)] += 1
            if status == 429:
                return problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
            return problem(status, "Internal Server Error", "An unexpected internal error has occurred.")
        roll = self.rng.random() if self.failure_rate else 1.0
        if roll < self.failure_rate / 3:  # throttled before doing anything
            self.injected["429"] += 1
            return problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
        path = urlsplit(request.url).path.removeprefix("/3.0")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.url).query).items()}
        body = json.loads(request.body) if request.body else None
        reply = self._route(request.method, path, query, body)
        if roll < self.failure_rate * 2 / 3:  # the work is done, the answer is lost
            self.injected["lost"] += 1
            return problem(503, "Service Unavailable", "upstream unavailable")
        if roll < self.failure_rate:  # the work is done, the connection resets
            self.injected["reset"] += 1
            raise requests.ConnectionError("Connection reset by peer")
        route = re.sub(r"/members/[0-9a-f]{32}", "/members/{hash}", path)
        self.calls[f"{request.method} {route}"] += 1
        if request.method != "GET":
            self.writes += 1
        return self._fault(reply)

    def _fault(self, reply):
        status, headers, data = reply
        raw = data.encode() if isinstance(data, str) else (data or b"")
        if self.reset_next:
            self.reset_next -= 1
            self.injected["reset"] += 1
            raise requests.ConnectionError("Connection reset by peer")
        if self.lost_next:
            self.lost_next -= 1
            self.injected["lost"] += 1
            return problem(503, "Service Unavailable", "upstream unavailable")
        if raw and self.malformed_next:
            self.malformed_next -= 1
            self.injected["malformed"] += 1
            return status, headers, raw[: len(raw) // 2]
        if raw and self.cut_next:
            self.cut_next -= 1
            self.injected["cut"] += 1
            return status, {**headers, "Content-Length": str(len(raw))}, raw[: len(raw) // 2]
        return reply

    def _route(self, method: str, path: str, query: dict[str, str], body: Any):
        if method == "GET" and path == "/ping":
            return 200, JSON, json.dumps({"health_status": "Everything's Chimpy!"})
        if path == "/batches" and method == "POST":
            return self._start_batch(body)
        found = re.fullmatch(r"/batches/([^/]+)", path)
        if found and method == "GET":
            return self._batch_status(found.group(1))
        found = re.fullmatch(r"/lists/([^/]+)(/.*)?", path)
        if not found or found.group(1) not in self.lists:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        audience, rest = self.lists[found.group(1)], found.group(2) or ""
        if rest == "" and method == "GET":
            return 200, JSON, json.dumps({"id": found.group(1), "name": "Shop customers"})
        if rest == "/merge-fields":
            return self._merge_fields(audience, method, query, body)
        member = re.fullmatch(r"/members/([0-9a-f]{32})(/tags)?", rest)
        if member and member.group(2) and method == "POST":
            return self._tags(audience, member.group(1), body)
        if member and method in ("PUT", "PATCH"):
            return self._member(audience, method, member.group(1), body)
        return problem(405, "Method Not Allowed", f"{method} is not allowed here")

    # ------------------------------------------------------------------ handlers
    def _merge_fields(self, audience, method, query, body):
        fields = audience["merge_fields"]
        if method == "GET":
            count = min(int(query.get("count", 10)), self.max_count)
            offset = int(query.get("offset", 0))
            page = list(fields.values())[offset : offset + count]
            return 200, JSON, json.dumps({"merge_fields": page, "total_items": len(fields)})
        if method != "POST":
            return problem(405, "Method Not Allowed", "")
        tag = (body or {}).get("tag", "")
        if not _TAG.match(tag):
            return problem(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "tag", "message": "Merge tags must be 10 characters or fewer, A-Z, 0-9 or _"}],
            )
        if tag in fields:
            return problem(400, "Invalid Resource", f'A Merge Field with the tag "{tag}" already exists for this list.')
        if len(fields) >= self.max_fields:
            return problem(
                400, "Invalid Resource", f"This list already has the maximum of {self.max_fields} merge fields."
            )
        self._next_field_id += 1
        fields[tag] = {
            "merge_id": self._next_field_id,
            "tag": tag,
            "name": body.get("name", tag),
            "type": body.get("type", "text"),
        }
        return 200, JSON, json.dumps(fields[tag])

    def _member(self, audience, method, hash_, body):
        body = body or {}
        members = audience["members"]
        existing = members.get(hash_)
        email = body.get("email_address")
        if email is not None and md5(email) != hash_:
            return problem(400, "Invalid Resource", "The email address does not match the subscriber hash.")
        if existing is None and method == "PATCH":
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        if existing is None and (email is None or not (body.get("status_if_new") or body.get("status"))):
            return problem(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "status", "message": "Schema describes enum, NULL found instead"}],
            )
        if (email or (existing or {}).get("email_address", "")).lower() in self.invalid_emails:
            return problem(
                400, "Invalid Resource", f"{email} looks fake or invalid, please enter a real email address."
            )
        merge = body.get("merge_fields") or {}
        errors = [
            {"field": f"merge_fields.{tag}", "message": "Merge field does not exist"}
            for tag in merge
            if tag not in audience["merge_fields"]
        ]
        errors += [
            {"field": f"merge_fields.{tag}", "message": "Value is longer than 255 characters"}
            for tag, value in merge.items()
            if isinstance(value, str) and len(value) > 255
        ]
        if errors:
            return problem(400, "Invalid Resource", "Your merge fields were invalid.", errors)
        if existing is None:
            existing = members[hash_] = {
                "email_address": email,
                "status": body.get("status") or body["status_if_new"],
                "merge_fields": {},
                "tags": [],
            }
        elif "status" in body:
            self.status_changes.append((existing["email_address"], existing["status"], body["status"]))
            existing["status"] = body["status"]
        existing["merge_fields"].update(merge)
        return 200, JSON, json.dumps(self._member_resource(hash_, existing))

    @staticmethod
    def _member_resource(hash_: str, member: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": hash_,
            "email_address": member["email_address"],
            "status": member["status"],
            "merge_fields": member["merge_fields"],
            "tags_count": len(member["tags"]),
            "tags": member["tags"],
        }

    def _tags(self, audience, hash_, body):
        member = audience["members"].get(hash_)
        if member is None:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        tags = (body or {}).get("tags") or []
        for tag in tags:
            if len(tag.get("name", "")) > 100 or tag.get("status") not in ("active", "inactive"):
                return problem(
                    400,
                    "Invalid Resource",
                    "The resource submitted could not be validated.",
                    [{"field": "tags", "message": "invalid tag"}],
                )
        for tag in tags:
            names = [t["name"] for t in member["tags"]]
            if tag["status"] == "active" and tag["name"] not in names:
                member["tags"].append({"id": len(names) + 1, "name": tag["name"]})
                if not body.get("is_syncing"):  # a "Tag added" journey starts only then
                    self.journeys_started.append((member["email_address"], tag["name"]))
            elif tag["status"] == "inactive":
                member["tags"] = [t for t in member["tags"] if t["name"] != tag["name"]]
        return 204, {}, ""

    # ------------------------------------------------------------------ batches
    def _start_batch(self, body):
        ops = (body or {}).get("operations")
        if not isinstance(ops, list) or not ops:
            return problem(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "operations", "message": "Schema describes array, NULL found instead"}],
            )
        batch_id = uuid.uuid4().hex[:10]
        self.batches[batch_id] = {
            "id": batch_id,
            "status": "pending",
            "operations": ops,
            "polls": 0,
            "total_operations": len(ops),
            "finished_operations": 0,
            "errored_operations": 0,
            "response_body_url": "",
        }
        return 200, JSON, json.dumps(self._batch_resource(batch_id))

    def _batch_resource(self, batch_id: str) -> dict[str, Any]:
        b = self.batches[batch_id]
        return {
            k: b[k]
            for k in (
                "id",
                "status",
                "total_operations",
                "finished_operations",
                "errored_operations",
                "response_body_url",
            )
        }

    def _batch_status(self, batch_id: str):
        b = self.batches.get(batch_id)
        if b is None:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        b["polls"] += 1
        if b["status"] != "finished":
            if b["polls"] >= self.polls_to_finish:
                self._run_batch(batch_id)
            else:
                b["status"] = "started"
        return 200, JSON, json.dumps(self._batch_resource(batch_id))

    def _run_batch(self, batch_id: str) -> None:
        b = self.batches[batch_id]
        results = []
        for op in b["operations"]:
            path = op["path"].removeprefix("/3.0")
            body = json.loads(op["body"]) if op.get("body") else None
            status, _, data = self._route(op["method"], path, op.get("params") or {}, body)
            route = re.sub(r"/members/[0-9a-f]{32}", "/members/{hash}", path)
            self.calls[f"batch {op['method']} {route}"] += 1
            results.append({"status_code": status, "operation_id": op.get("operation_id"), "response": data or ""})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for n in range(0, len(results), 2):  # Mailchimp splits the results over several files
                data = json.dumps(results[n : n + 2]).encode()
                info = tarfile.TarInfo(f"{batch_id}/{n // 2}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        self.archives[batch_id] = buffer.getvalue()
        b.update(
            status="finished",
            finished_operations=len(results),
            errored_operations=sum(r["status_code"] >= 400 for r in results),
            response_body_url=f"{ARCHIVE_URL}/{batch_id}-response.tar.gz",
        )

    def _archive(self, request):
        assert self.api_key not in str(request.headers), "the API key must not go to the archive host"
        assert "Authorization" not in request.headers, "the archive link is pre-signed: no Authorization"
        found = re.search(r"/([^/]+)-response\.tar\.gz$", urlsplit(request.url).path)
        if not found or found.group(1) not in self.archives:
            return 404, {}, "NoSuchKey"
        data = self.archives[found.group(1)]
        fault = self.archive_faults.pop(0) if self.archive_faults else None
        if fault:
            self.injected[f"archive {fault}"] += 1
        if fault == "cut":
            return 200, {"Content-Length": str(len(data))}, data[: len(data) // 2]
        if fault == "malformed":  # a complete body that is not a whole archive
            return 200, {}, data[: len(data) // 2]
        if fault == "missing":  # the link expired
            return 403, {"Content-Type": "application/xml"}, "<Error><Code>AccessDenied</Code></Error>"
        return 200, {"Content-Type": "application/x-gzip"}, data
