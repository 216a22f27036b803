"""A fake Klaviyo API (via ``responses``: no socket, no internet) modelling what rfm-sync relies on.

* profiles keyed by email (else external id, else phone), with custom ``properties``;
  ``meta.patch_properties.unset`` removes keys; bulk import ignores null values, as Klaviyo does;
* bulk import jobs: ``queued`` → ``processing`` → ``complete`` over successive polls, partial
  failures (profiles whose email is in ``reject``, or malformed) listed by the paginated
  ``/import-errors`` endpoint with ``source.pointer`` and ``original_payload``;
* events de-duplicated by (profile, metric, ``unique_id``), like Klaviyo;
* segments listed 10 per page (``links.next``) and created by ``POST /api/segments``;
* chaos: with probability ``failure_rate`` a call answers 429 with ``Retry-After`` (nothing done)
  or a 5xx — half of those *after* doing the work, as when a response is lost on the way back;
  ``cut_next`` / ``malformed_next`` do the work and then cut the answer half way / truncate it.

Every request is recorded (method, url, headers, body) so tests can validate bodies against the spec.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

BASE_URL = "http://127.0.0.1:8765"
API_KEY = "pk_test_0123456789abcdef"
SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "klaviyo" / "stable.json"
SPEC_SERVER = "https://a.klaviyo.com"


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


class FakeKlaviyo:
    def __init__(
        self,
        *,
        base_url: str = BASE_URL,
        api_key: str = API_KEY,
        failure_rate: float = 0.0,
        seed: int = 7,
        polls_until_complete: int = 2,
        retry_after: str = "3",
        record_bodies: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.polls_until_complete = polls_until_complete
        self.retry_after = retry_after
        self.record_bodies = record_bodies
        self.profiles: dict[str, dict[str, Any]] = {}
        self.identities: dict[str, dict[str, str]] = {}
        self.events: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.segments: list[dict[str, Any]] = []
        self.reject: set[str] = set()  # emails the bulk import and profile-import refuse
        self.requests: list[Recorded] = []
        self.calls: Counter[str] = Counter()  # "POST /api/profile-import" -> count (answered calls)
        self.injected: Counter[int] = Counter()  # status -> how many failures were injected
        self.revisions: set[str] = set()
        self.job_max_profiles = 10_000  # Klaviyo's documented maximum per bulk import job
        self.fail_next: list[int] = []  # statuses to answer the next calls with (429 carries Retry-After)
        self.cut_next = 0  # do the work of this many calls, then cut their answer half way
        self.cut_only: str | None = None  # ... only calls of this route ("POST /api/segments"), if set
        self.malformed_next = 0  # ... or answer with truncated JSON whose length matches
        self.cuts = 0
        # chaos (tests/chaos): the next jobs end ``cancelled`` having imported nothing; the next job
        # fails this many of its profiles (listed as import errors, not imported)
        self.cancel_next_jobs = 0
        self.fail_in_next_job = 0
        self.event_log: list[dict[str, Any]] = []  # every accepted event POST, duplicates included

    # ------------------------------------------------------------------ wiring
    def install(self, rsps: responses.RequestsMock) -> FakeKlaviyo:
        base = re.escape(self.base_url)
        for method, pattern, handler in self.route_table():
            rsps.add_callback(method, re.compile(base + pattern), callback=self._wrap(handler))
        return self

    def route_table(self) -> list[tuple[str, str, Any]]:
        """(method, path pattern relative to ``base_url``, handler) of every modelled endpoint."""
        return [
            ("POST", r"/api/profile-bulk-import-jobs/?$", self._create_job),
            ("GET", r"/api/profile-bulk-import-jobs/([^/?]+)/import-errors", self._import_errors),
            ("GET", r"/api/profile-bulk-import-jobs/?(\?.*)?$", self._list_jobs),
            ("GET", r"/api/profile-bulk-import-jobs/([^/?]+)/?(\?.*)?$", self._get_job),
            ("POST", r"/api/profile-import/?$", self._profile_import),
            ("POST", r"/api/events/?$", self._create_event),
            ("GET", r"/api/segments/?(\?.*)?$", self._list_segments),
            ("POST", r"/api/segments/?$", self._create_segment),
        ]

    def dispatch(self, method: str, url: str, headers: dict[str, str], body: bytes | None):
        """Answer one request as ``install`` would, without ``responses`` (for a real socket server):
        ``(status, headers, body)``, or None when no route matches."""
        base = re.escape(self.base_url)
        request = _Request(method, url, headers, body)
        for route_method, pattern, handler in self.route_table():
            if route_method == method and re.match(base + pattern, url):
                return self._wrap(handler)(request)
        return None

    def _wrap(self, handler):
        def callback(request):
            self.requests.append(
                Recorded(
                    request.method,
                    request.url,
                    dict(request.headers),
                    _bytes(request.body) if self.record_bodies else None,
                )
            )
            if request.headers.get("Authorization") != f"Klaviyo-API-Key {self.api_key}":
                return _json(401, {"errors": [{"code": "not_authenticated", "title": "Authentication failed"}]})
            if not request.headers.get("revision"):
                return _json(400, {"errors": [{"code": "invalid", "title": "missing revision header"}]})
            self.revisions.add(request.headers["revision"])
            route = f"{request.method} {_route(request.url)}"
            if self.fail_next:
                status = self.fail_next.pop(0)
                self.injected[status] += 1
                headers = {"Retry-After": self.retry_after} if status == 429 else {}
                return status, headers, json.dumps({"errors": [{"code": "error", "title": "injected"}]})
            roll = self.rng.random() if self.failure_rate else 1.0
            if roll < self.failure_rate / 2:
                self.injected[429] += 1
                return (
                    429,
                    {"Retry-After": self.retry_after, "Content-Type": "application/json"},
                    json.dumps({"errors": [{"code": "throttled", "title": "Request was throttled."}]}),
                )
            if roll < self.failure_rate:
                self.injected[503] += 1
                if roll < self.failure_rate * 0.75:  # the work was done, the answer got lost
                    handler(request, *_groups(request.url))
                return 503, {}, "upstream unavailable"
            self.calls[route] += 1
            reply = handler(request, *_groups(request.url))
            return reply if self.cut_only not in (None, route) else self._maybe_cut(reply)

        return callback

    def _maybe_cut(self, reply: tuple[int, dict[str, str], Any]) -> tuple[int, dict[str, str], Any]:
        """The work is done; the answer is lost half way: ``Content-Length`` announces the whole
        body and only half arrives (urllib3 raises IncompleteRead, as on a dropped connection), or
        the half arrives as a complete, malformed body."""
        status, headers, body = reply
        data = _bytes(body) or b""
        if not data or not (self.cut_next or self.malformed_next):
            return reply
        self.cuts += 1
        if self.malformed_next:
            self.malformed_next -= 1
            return status, headers, data[: len(data) // 2]
        self.cut_next -= 1
        return status, {**headers, "Content-Length": str(len(data))}, data[: len(data) // 2]

    # ------------------------------------------------------------------ profiles
    def _key(self, attrs: dict[str, Any]) -> str | None:
        if attrs.get("email"):
            return "email:" + attrs["email"].strip().lower()
        if attrs.get("external_id"):
            return "external_id:" + attrs["external_id"]
        if attrs.get("phone_number"):
            return "phone:" + attrs["phone_number"]
        return None

    def _problem(self, attrs: dict[str, Any]) -> str | None:
        email = attrs.get("email")
        if email is not None and ("@" not in email or email.strip().lower() in self.reject):
            return "Invalid email address"
        return None if self._key(attrs) else "A profile needs an identifier"

    def _upsert(self, resource: dict[str, Any], *, ignore_nulls: bool) -> str:
        attrs = resource["attributes"]
        key = self._key(attrs)
        assert key is not None
        props = self.profiles.setdefault(key, {})
        if "external_id" in attrs or "phone_number" in attrs:
            self.identities[key] = {k: attrs[k] for k in ("email", "external_id", "phone_number") if attrs.get(k)}
        given = attrs.get("properties") or {}
        props.update({k: v for k, v in given.items() if v is not None} if ignore_nulls else given)
        unset = (((resource.get("meta") or {}).get("patch_properties") or {}).get("unset")) or []
        for name in [unset] if isinstance(unset, str) else unset:
            props.pop(name, None)
        return key

    def _create_job(self, request):
        body = json.loads(request.body)
        profiles = body["data"]["attributes"]["profiles"]["data"]
        if len(profiles) > self.job_max_profiles:  # Klaviyo: at most 10,000 profiles per job; a JSON:API 400
            return _json(
                400,
                {
                    "errors": [
                        {
                            "id": "3f1c9a2e",
                            "status": 400,
                            "code": "invalid",
                            "title": "Invalid input.",
                            "detail": f"A bulk import job accepts at most {self.job_max_profiles} profiles; got {len(profiles)}.",
                            "source": {"pointer": "/data/attributes/profiles/data"},
                            "meta": {},
                        }
                    ]
                },
            )
        job_id = f"job{len(self.jobs) + 1}"
        if self.cancel_next_jobs:
            self.cancel_next_jobs -= 1
            self.jobs[job_id] = {
                "status": "cancelled",
                "polls": 0,
                "total": len(profiles),
                "errors": [],
                "cancelled": True,
            }
            return _json(202, {"data": self._job_resource(job_id)})
        refused = set(self.rng.sample(range(len(profiles)), min(self.fail_in_next_job, len(profiles))))
        self.fail_in_next_job = 0
        errors = []
        for index, resource in enumerate(profiles):
            problem = self._problem(resource["attributes"]) or (
                "Temporarily unable to process this profile" if index in refused else None
            )
            if problem:
                errors.append(
                    {
                        "type": "import-error",
                        "id": f"{job_id}-e{index}",
                        "attributes": {
                            "code": "invalid",
                            "title": "Invalid input",
                            "detail": problem,
                            "source": {"pointer": f"/data/attributes/profiles/data/{index}"},
                            "original_payload": resource["attributes"],
                        },
                    }
                )
            else:
                self._upsert(resource, ignore_nulls=True)
        self.jobs[job_id] = {"status": "queued", "polls": 0, "total": len(profiles), "errors": errors}
        return _json(202, {"data": self._job_resource(job_id)})

    def _job_resource(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        done = job["status"] == "complete"
        return {
            "type": "profile-bulk-import-job",
            "id": job_id,
            "attributes": {
                "status": job["status"],
                "created_at": "2026-11-25T12:00:00+00:00",
                "total_count": job["total"],
                "completed_count": job["total"] - len(job["errors"]) if done else 0,
                "failed_count": len(job["errors"]) if done else 0,
            },
        }

    def _list_jobs(self, request, *_):
        return _json(
            200, {"data": [self._job_resource(j) for j in list(self.jobs)[:1]], "links": {"self": request.url}}
        )

    def _get_job(self, request, job_id, *_):
        job = self.jobs.get(job_id)
        if job is None:
            return _json(404, {"errors": [{"code": "not_found", "title": "Not found"}]})
        job["polls"] += 1
        if job.get("cancelled"):
            pass
        elif job["polls"] >= self.polls_until_complete:
            job["status"] = "complete"
        elif job["polls"] >= 1:
            job["status"] = "processing"
        return _json(200, {"data": self._job_resource(job_id)})

    def _import_errors(self, request, job_id, *_):
        job = self.jobs[job_id]
        query = parse_qs(urlsplit(request.url).query)
        size = int(query.get("page[size]", ["20"])[0])
        start = int(query.get("page[cursor]", ["0"])[0])
        page = job["errors"][start : start + size]
        links: dict[str, str] = {"self": request.url}
        if start + size < len(job["errors"]):
            links["next"] = (
                f"{self.base_url}/api/profile-bulk-import-jobs/{job_id}/import-errors"
                f"?page%5Bsize%5D={size}&page%5Bcursor%5D={start + size}"
            )
        return _json(200, {"data": page, "links": links})

    def _profile_import(self, request):
        resource = json.loads(request.body)["data"]
        problem = self._problem(resource["attributes"])
        if problem:
            return _json(
                400,
                {
                    "errors": [
                        {
                            "code": "invalid",
                            "title": "Invalid input",
                            "detail": problem,
                            "source": {"pointer": "/data/attributes/email"},
                        }
                    ]
                },
            )
        key = self._upsert(resource, ignore_nulls=False)
        return _json(200, {"data": {"type": "profile", "id": key, "attributes": {}}})

    # ------------------------------------------------------------------ events
    def _create_event(self, request):
        attrs = json.loads(request.body)["data"]["attributes"]
        key = self._key(attrs["profile"]["data"]["attributes"])
        metric = attrs["metric"]["data"]["attributes"]["name"]
        dedup = (key, metric, attrs.get("unique_id") or attrs.get("time"))
        self.event_log.append({"key": key, "unique_id": attrs.get("unique_id"), "time": attrs.get("time")})
        self.events.setdefault(dedup, attrs)
        return 202, {}, ""

    # ------------------------------------------------------------------ segments
    def _list_segments(self, request, *_):
        query = parse_qs(urlsplit(request.url).query)
        start = int(query.get("page[cursor]", ["0"])[0])
        page = self.segments[start : start + 10]
        links = {"self": request.url}
        if start + 10 < len(self.segments):
            links["next"] = f"{self.base_url}/api/segments?page%5Bcursor%5D={start + 10}"
        return _json(200, {"data": page, "links": links})

    def _create_segment(self, request):
        data = json.loads(request.body)["data"]
        segment = {
            "type": "segment",
            "id": f"seg{len(self.segments) + 1}",
            "attributes": {"name": data["attributes"]["name"], "definition": data["attributes"]["definition"]},
        }
        self.segments.append(segment)
        return _json(201, {"data": segment})

    # ------------------------------------------------------------------ test helpers
    def writes(self) -> int:
        return sum(n for route, n in self.calls.items() if route.startswith("POST"))

    def properties(self, email: str) -> dict[str, Any] | None:
        return self.profiles.get("email:" + email.strip().lower())


@dataclass
class _Request:
    """The parts of a ``requests.PreparedRequest`` the handlers read."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def _bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    return body if isinstance(body, bytes) else str(body).encode("utf-8")


def _route(url: str) -> str:
    path = urlsplit(url).path
    return re.sub(r"/profile-bulk-import-jobs/[^/]+", "/profile-bulk-import-jobs/{id}", path)


def _groups(url: str) -> tuple[str, ...]:
    found = re.search(r"/profile-bulk-import-jobs/([^/?]+)", urlsplit(url).path)
    return (found.group(1),) if found else ()


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/vnd.api+json"}, json.dumps(body)


# ---------------------------------------------------------------------- spec validation
@functools.lru_cache(maxsize=1)
def _load_spec() -> Any:
    from openapi_core import Config, OpenAPI

    # the file fails strict spec validation (an example matches two oneOf branches): load without it
    return OpenAPI.from_file_path(str(SPEC), config=Config(spec_validator_cls=None))


@pytest.fixture(scope="session")
def klaviyo_spec():
    """Klaviyo's OpenAPI spec for the pinned revision. Test modules import this fixture; the load
    (~2-4 s) is cached, so it happens once per test session however many modules use it."""
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is absent: the shared Klaviyo OpenAPI spec is needed to validate request bodies")
    return _load_spec()


def validate_request(spec: Any, method: str, url: str, headers: dict[str, str], body: bytes | None) -> None:
    """Raise openapi-core's error if this request (path, query, headers, body) breaks the spec."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    parts = urlsplit(url)
    target = SPEC_SERVER + parts.path + (f"?{parts.query}" if parts.query else "")
    keep = {k: v for k, v in headers.items() if k.lower() in ("authorization", "revision", "content-type", "accept")}
    prepared = requests.Request(method, target, headers=keep, data=body).prepare()
    spec.validate_request(RequestsOpenAPIRequest(prepared))


def validate_all(spec: Any, recorded: list[Recorded], *, max_profiles: int | None = None) -> int:
    """Validate every recorded request; bulk bodies optionally cut to ``max_profiles`` (speed)."""
    for r in recorded:
        body = r.body
        if body and max_profiles and "profile-bulk-import-jobs" in r.url:
            doc = json.loads(body)
            items = doc["data"]["attributes"]["profiles"]["data"]
            doc["data"]["attributes"]["profiles"]["data"] = items[:max_profiles]
            body = json.dumps(doc).encode()
        validate_request(spec, r.method, r.url, r.headers, body)
    return len(recorded)


# ---------------------------------------------------------------------- time
class FakeClock:
    """Monotonic clock that only moves when someone sleeps: rate limiters and retries cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
