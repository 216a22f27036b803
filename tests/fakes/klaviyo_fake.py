"""A fake Klaviyo API (via ``responses``: no socket, no internet) modelling what rfm-sync relies on.

* profiles keyed by email (else external id, else phone), with custom ``properties``;
  ``meta.patch_properties.unset`` removes keys; bulk import ignores null values, as Klaviyo does;
* bulk import jobs: ``queued`` → ``processing`` → ``complete`` over successive polls, partial
  failures (profiles whose email is in ``reject``, or malformed) listed by the paginated
  ``/import-errors`` endpoint with ``source.pointer`` and ``original_payload``;
* events de-duplicated by (profile, metric, ``unique_id``), like Klaviyo;
* segments listed 10 per page (``links.next``) and created by ``POST /api/segments``;
* metrics: made by the first event of a name, as Klaviyo does (or by :meth:`FakeKlaviyo.add_metric`,
  for an integration's "Placed Order"), listed 200 per page;
* templates (``POST``, ``GET`` 10 per page, ``filter=equals(name,...)``);
* flows: ``POST /api/flows`` checks the definition as Klaviyo does (one trigger whose segment or
  metric exists, actions with a ``temporary_id`` each, links and ``entry_action_id`` naming them,
  trigger splits on the trigger's metric, known template ids) and answers a JSON:API 400 otherwise;
  it stores the definition with real ids in place of the temporary ones, as a draft. ``GET /api/flows``
  lists them 50 per page, filtered by name (``equals``, ``contains``, ``starts-with``, ``ends-with``)
  or status like the real API;
* scopes: with ``scopes`` set, a call whose scope the key lacks answers 403 ``permission_denied``;
* chaos: with probability ``failure_rate`` a call answers 429 with ``Retry-After`` (nothing done)
  or a 5xx — half of those *after* doing the work, as when a response is lost on the way back;
  ``cut_next`` / ``malformed_next`` / ``lost_next`` do the work and then cut the answer half way /
  truncate it / answer 503 (``cut_only`` limits them to one route).

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
from urllib.parse import parse_qs, urlencode, urlsplit

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
        self.metrics: list[dict[str, Any]] = []
        self.templates: list[dict[str, Any]] = []
        self.flows: list[dict[str, Any]] = []  # stored as Klaviyo keeps them: real ids, status, definition
        self.scopes: set[str] | None = None  # the API key's scopes; None: all of them
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
        self.lost_next = 0  # ... or answer 503, as when the answer is lost on the way back
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
            ("GET", r"/api/metrics/?(\?.*)?$", self._list_metrics),
            ("GET", r"/api/templates/?(\?.*)?$", self._list_templates),
            ("POST", r"/api/templates/?$", self._create_template),
            ("GET", r"/api/flows/?(\?.*)?$", self._list_flows),
            ("POST", r"/api/flows/?(\?.*)?$", self._create_flow),
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
            scope = SCOPES.get(route)
            if self.scopes is not None and scope is not None and scope not in self.scopes:
                return _json(
                    403,
                    {
                        "errors": [
                            {
                                "status": 403,
                                "code": "permission_denied",
                                "title": "You do not have permission to perform this action.",
                                "detail": f"This API key is missing required scopes: {scope}",
                            }
                        ]
                    },
                )
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
        if self.lost_next:
            self.lost_next -= 1
            self.cuts += 1
            return 503, {}, "upstream unavailable"
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
        if not any(m["attributes"]["name"] == metric for m in self.metrics):  # the first event makes the metric
            self.add_metric(metric, integration="API")
        return 202, {}, ""

    # ------------------------------------------------------------------ metrics
    def add_metric(self, name: str, *, integration: str = "Shopify") -> str:
        metric_id = f"M{len(self.metrics) + 1}"
        self.metrics.append(
            {
                "type": "metric",
                "id": metric_id,
                "attributes": {"name": name, "integration": {"name": integration, "category": integration}},
                "links": {"self": f"{self.base_url}/api/metrics/{metric_id}"},
            }
        )
        return metric_id

    def _list_metrics(self, request, *_):
        return self._page(request, self.metrics, "/api/metrics", 200)

    def _page(self, request, items: list[dict[str, Any]], path: str, size: int):
        """One page of ``items`` at ``page[cursor]`` (an offset here), with ``links.next`` while more follow."""
        query = parse_qs(urlsplit(request.url).query)
        start = int(query.get("page[cursor]", ["0"])[0])
        links = {"self": request.url}
        if start + size < len(items):  # the next link keeps the request's filter, fields and size
            more = {k: v[0] for k, v in query.items() if k != "page[cursor]"} | {"page[cursor]": str(start + size)}
            links["next"] = f"{self.base_url}{path}?{urlencode(more)}"
        return _json(200, {"data": items[start : start + size], "links": links})

    # ------------------------------------------------------------------ templates
    def _list_templates(self, request, *_):
        query = parse_qs(urlsplit(request.url).query)
        try:
            keep = _name_filter(query.get("filter", [""])[0], fields=("name",))
        except ValueError as exc:
            return _invalid(str(exc), parameter="filter")
        return self._page(request, [t for t in self.templates if keep(t["attributes"])], "/api/templates", 10)

    def _create_template(self, request):
        attrs = json.loads(request.body)["data"]["attributes"]
        template = {
            "type": "template",
            "id": f"T{len(self.templates) + 1}",
            "attributes": {"name": attrs["name"], "editor_type": attrs["editor_type"], "html": attrs.get("html")},
            "links": {"self": ""},
        }
        self.templates.append(template)
        return _json(201, {"data": template})

    # ------------------------------------------------------------------ flows
    def _list_flows(self, request, *_):
        query = parse_qs(urlsplit(request.url).query)
        size = int(query.get("page[size]", ["50"])[0])
        if not 1 <= size <= 50:
            return _invalid("page[size] must be between 1 and 50", parameter="page[size]")
        try:
            keep = _name_filter(query.get("filter", [""])[0], fields=("name", "status"))
        except ValueError as exc:
            return _invalid(str(exc), parameter="filter")
        return self._page(
            request, [self._flow_resource(f) for f in self.flows if keep(f["attributes"])], "/api/flows", size
        )

    def _flow_resource(self, flow: dict[str, Any], *, definition: bool = False) -> dict[str, Any]:
        attributes = {k: v for k, v in flow["attributes"].items() if definition or k != "definition"}
        return {
            "type": "flow",
            "id": flow["id"],
            "attributes": attributes,
            "links": {"self": f"{self.base_url}/api/flows/{flow['id']}"},
        }

    def _create_flow(self, request, *_):
        attrs = json.loads(request.body)["data"]["attributes"]
        problem = self._flow_problem(attrs["definition"])
        if problem:
            detail, pointer = problem
            return _invalid(detail, pointer=f"/data/attributes/definition{pointer}")
        flow_id = f"F{len(self.flows) + 1}"
        definition = json.loads(json.dumps(attrs["definition"]))
        real = {a["temporary_id"]: f"{flow_id}-{n}" for n, a in enumerate(definition["actions"], 1)}
        for action in definition["actions"]:
            action["id"] = real[action.pop("temporary_id")]
            links = action.get("links") or {}
            for name, target in links.items():
                links[name] = real.get(target) if target else None
        definition["entry_action_id"] = real[definition["entry_action_id"]]
        trigger = definition["triggers"][0]["type"]
        flow = {
            "id": flow_id,
            "attributes": {
                "name": attrs["name"],
                "status": "draft",  # a flow made through the API is a draft until the merchant turns it live
                "archived": False,
                "created": "2026-11-25T12:00:00+00:00",
                "updated": "2026-11-25T12:00:00+00:00",
                "trigger_type": "Metric" if trigger == "metric" else "Added to List",
                "definition": definition,
            },
        }
        self.flows.append(flow)
        wanted = parse_qs(urlsplit(request.url).query).get("additional-fields[flow]", [""])[0]
        return _json(201, {"data": self._flow_resource(flow, definition="definition" in wanted)})

    def _flow_problem(self, definition: dict[str, Any]) -> tuple[str, str] | None:
        """What Klaviyo would refuse in a flow definition: (detail, JSON pointer below the definition)."""
        triggers = definition.get("triggers") or []
        if len(triggers) != 1:
            return "A flow must have exactly one trigger.", "/triggers"
        trigger = triggers[0]
        known = {"segment": {s["id"] for s in self.segments}, "metric": {m["id"] for m in self.metrics}}
        if trigger.get("id") not in known.get(trigger.get("type"), set()):
            return f"The {trigger.get('type')} {trigger.get('id')!r} does not exist.", "/triggers/0/id"
        actions = definition.get("actions") or []
        ids = [a.get("temporary_id") for a in actions]
        for n, action in enumerate(actions):
            if action.get("id") is not None or not action.get("temporary_id"):
                return "New actions need a temporary_id (and no id).", f"/actions/{n}"
        if len(set(ids)) != len(ids):
            return "temporary_id values must be unique.", "/actions"
        if definition.get("entry_action_id") not in ids:
            return "entry_action_id names no action of this flow.", "/entry_action_id"
        templates = {t["id"] for t in self.templates}
        for n, action in enumerate(actions):
            links = action.get("links")
            splits = action["type"] in ("conditional-split", "trigger-split")
            if splits and (not isinstance(links, dict) or not {"next_if_true", "next_if_false"} <= set(links)):
                return "A split needs next_if_true and next_if_false.", f"/actions/{n}/links"
            for name, target in (links or {}).items():
                if target is not None and target not in ids:
                    return f"links.{name} names no action of this flow.", f"/actions/{n}/links/{name}"
            data = action.get("data") or {}
            if action["type"] == "trigger-split":
                conditions = [c for g in data["trigger_filter"]["condition_groups"] for c in g["conditions"]]
                if trigger["type"] != "metric" or data["trigger_id"] != trigger["id"]:
                    return "A trigger split must split on the flow's metric trigger.", f"/actions/{n}/data/trigger_id"
                if any(c.get("metric_id") != trigger["id"] for c in conditions):
                    return "Trigger split conditions must use the trigger's metric.", f"/actions/{n}/data"
            template = (data.get("message") or {}).get("template_id")
            if action["type"] == "send-email" and template is not None and template not in templates:
                return f"Template {template!r} does not exist.", f"/actions/{n}/data/message/template_id"
        return None

    def flow_named(self, name: str) -> dict[str, Any] | None:
        """The stored flow of that name (what the merchant sees in Klaviyo's editor), with its definition."""
        return next((f for f in self.flows if f["attributes"]["name"] == name), None)

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


# the scope each modelled call needs (checked only when a test sets ``FakeKlaviyo.scopes``)
SCOPES = {
    "GET /api/segments": "segments:read",
    "POST /api/segments": "segments:write",
    "GET /api/metrics": "metrics:read",
    "GET /api/templates": "templates:read",
    "POST /api/templates": "templates:write",
    "GET /api/flows": "flows:read",
    "POST /api/flows": "flows:write",
}

_FILTER = re.compile(r"""^(equals|contains|starts-with|ends-with)\((\w+),\s*(?:"([^"]*)"|'([^']*)')\)$""")
_TESTS = {
    "equals": lambda have, want: have == want,
    "contains": lambda have, want: want in have,
    "starts-with": lambda have, want: have.startswith(want),
    "ends-with": lambda have, want: have.endswith(want),
}


def _name_filter(text: str, *, fields: tuple[str, ...]):
    """A predicate on a resource's attributes for Klaviyo's ``filter`` syntax, the subset modelled:
    one ``op(field,"value")`` on a string field; anything else is refused, as Klaviyo refuses it."""
    if not text:
        return lambda attributes: True
    found = _FILTER.match(text.strip())
    if not found or found.group(2) not in fields:
        raise ValueError(f"Invalid filter provided: {text}")
    op, name, value = found.group(1), found.group(2), found.group(3) if found.group(3) is not None else found.group(4)
    if name != "name" and op != "equals":
        raise ValueError(f"Invalid filter provided: {text}")
    return lambda attributes: isinstance(attributes.get(name), str) and _TESTS[op](attributes[name], value)


def _invalid(detail: str, *, pointer: str | None = None, parameter: str | None = None):
    error: dict[str, Any] = {"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.", "detail": detail}
    error["source"] = {"pointer": pointer} if pointer else {"parameter": parameter}
    return _json(400, {"errors": [error]})


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


@pytest.fixture(name="fake")
def validated_fake(request):
    """The fake API as the ``fake`` fixture; afterwards every request the test sent is validated against
    the spec (when present). Test modules import it, as :func:`klaviyo_spec`."""
    spec = request.getfixturevalue("klaviyo_spec") if SPEC.is_file() else None
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeKlaviyo().install(rsps)
        yield fake
    if spec is not None and fake.requests:
        validate_all(spec, fake.requests)


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
