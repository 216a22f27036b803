"""A fake Graph API for Custom Audience membership (via ``responses``: no socket, no internet).

``POST /{version}/{audience_id}/users`` adds and ``DELETE`` removes the rows of a form field
``payload`` = ``{"schema": "EMAIL" | ["EMAIL", "PHONE"], "data": [...]}``. The fake insists that
every value is a lower-case SHA-256 hex digest (or "" for a missing key in a multi-key row), so a
raw email or phone fails the test. Answers carry ``audience_id``, ``session_id``, ``num_received``,
``num_invalid_entries`` and ``invalid_entry_samples`` like the real endpoint.

Errors are queued with ``fail_next`` as Graph error bodies, e.g. ``(400, 17)`` for "user request
limit reached", ``(401, 190)`` for an expired token; ``too_small`` names audiences that refuse removals.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from types import SimpleNamespace
from urllib.parse import parse_qs

import responses

BASE_URL = "http://127.0.0.1:8766"
TOKEN = "EAAB-test-token-not-real"
_HASH = re.compile(r"^[0-9a-f]{64}$")
MESSAGES = {
    4: "Application request limit reached", 17: "User request limit reached",
    80003: "There have been too many calls to this ad-account", 80004: "Too many calls to this ad-account",
    190: "Error validating access token: Session has expired", 200: "Permissions error",
}


class FakeMeta:
    def __init__(self, *, base_url: str = BASE_URL, token: str = TOKEN, version: str = "v25.0"):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.version = version
        self.members: dict[str, set[tuple[str, ...]]] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, audience_id, rows) of answered calls
        self.order: list[str] = []  # "remove:<id>" / "add:<id>" in the order received
        self.fail_next: list[tuple[int, int]] = []
        self.too_small: set[str] = set()
        self.drop_rows = 0  # report this many fewer rows received than sent, once
        self.invalid_next = 0  # report this many invalid entries, once
        self.injected: Counter[int] = Counter()
        self.audiences: dict[str, int] = {"111": 200, "222": 200}  # id -> operation_status code

    def install(self, rsps: responses.RequestsMock) -> "FakeMeta":
        pattern = re.compile(re.escape(self.base_url) + r"/(v\d+\.\d+)/([^/]+)/users$")
        for method in ("POST", "DELETE"):
            rsps.add_callback(method, pattern, callback=self._users)
        rsps.add_callback("GET", re.compile(re.escape(self.base_url) + r"/v\d+\.\d+/(\d+)(\?.*)?$"),
                          callback=self._audience)
        return self

    def dispatch(self, method: str, url: str, headers: dict[str, str], body: bytes | None):
        """Answer one request as ``install`` would, without ``responses`` (for a real socket server):
        ``(status, headers, body)``, or None when no route matches."""
        request = SimpleNamespace(method=method, url=url, headers=headers, body=body)
        base = re.escape(self.base_url)
        if method in ("POST", "DELETE") and re.match(base + r"/(v\d+\.\d+)/([^/]+)/users$", url):
            return self._users(request)
        if method == "GET" and re.match(base + r"/v\d+\.\d+/(\d+)(\?.*)?$", url):
            return self._audience(request)
        return None

    def _audience(self, request):
        audience_id = re.search(r"/v\d+\.\d+/(\d+)", request.url).group(1)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, 190)
        if audience_id not in self.audiences:
            return 400, {}, json.dumps({"error": {"message": f"Unsupported get request. Object with ID "
                                                              f"'{audience_id}' does not exist", "code": 100}})
        return 200, {}, json.dumps({"id": audience_id, "name": "aud",
                                    "operation_status": {"code": self.audiences[audience_id], "description": ""}})

    def _users(self, request):
        version, audience_id = re.search(r"/(v\d+\.\d+)/([^/]+)/users$", request.url.split("?")[0]).groups()
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, 190)
        if "access_token" in request.url:
            raise AssertionError("the access token must not travel in the URL")
        if self.fail_next:
            status, code = self.fail_next.pop(0)
            self.injected[code] += 1
            return self._error(status, code)
        assert version == self.version, f"unexpected Graph API version {version}"
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        payload = json.loads(parse_qs(body)["payload"][0])
        schema = payload["schema"]
        keys = [schema] if isinstance(schema, str) else list(schema)
        assert set(keys) <= {"EMAIL", "PHONE"}, keys
        rows = [tuple([r]) if isinstance(schema, str) else tuple(r) for r in payload["data"]]
        assert len(rows) <= 10_000, "Meta takes at most 10,000 rows per request"
        for r in rows:
            assert len(r) == len(keys) and all(v == "" or _HASH.match(v) for v in r), "unhashed value sent"
            assert any(r), "a row with no identifier"
        action = "add" if request.method == "POST" else "remove"
        if action == "remove" and audience_id in self.too_small:
            return 400, {}, json.dumps({"error": {"message": "Custom audience is too small to remove users",
                                                  "type": "OAuthException", "code": 2650,
                                                  "error_subcode": 1870049, "fbtrace_id": "Afake"}})
        self.calls.append((request.method, audience_id, len(rows)))
        self.order.append(f"{action}:{audience_id}")
        members = self.members.setdefault(audience_id, set())
        for r in rows:
            email = r[keys.index("EMAIL")] if "EMAIL" in keys else ""
            key = ("email", email) if email else ("phone", r[keys.index("PHONE")])
            (members.add if action == "add" else members.discard)(key)
        received = len(rows) - self.drop_rows
        invalid, self.drop_rows, self.invalid_next = self.invalid_next, 0, 0
        return 200, {"Content-Type": "application/json"}, json.dumps({
            "audience_id": audience_id, "session_id": "1234", "num_received": received,
            "num_invalid_entries": invalid, "invalid_entry_samples": {}})

    def _error(self, status: int, code: int) -> tuple[int, dict[str, str], str]:
        return status, {"Content-Type": "application/json"}, json.dumps({"error": {
            "message": MESSAGES.get(code, "Unknown error"), "type": "OAuthException", "code": code,
            "fbtrace_id": "Afake"}})

    def writes(self) -> int:
        return len(self.calls)

    def audience(self, audience_id: str) -> set[tuple[str, str]]:
        return set(self.members.get(audience_id, set()))
