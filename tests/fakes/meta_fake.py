"""A fake Graph API for Custom Audience membership (via ``responses``: no socket, no internet).

``POST /{version}/{audience_id}/users`` adds and ``DELETE`` removes the rows of a form field
``payload`` = ``{"schema": "EMAIL" | ["EMAIL", "PHONE"], "data": [...]}``. The fake insists that
every value is a lower-case SHA-256 hex digest (or "" for a missing key in a multi-key row), so a
raw email or phone fails the test. Answers carry ``audience_id``, ``session_id``, ``num_received``,
``num_invalid_entries`` and ``invalid_entry_samples`` like the real endpoint.

Errors are queued with ``fail_next`` as Graph error bodies, e.g. ``(400, 17)`` for "user request
limit reached", ``(401, 190)`` for an expired token; ``too_small`` names audiences that refuse removals.
Throttling is reported as Meta does, in the body's code and in a usage header: a third element
gives the wait — ``(400, 80003, 5)``: ``X-Business-Use-Case-Usage`` with
``estimated_time_to_regain_access: 5`` (minutes); ``(400, 613, 120)``: ``X-Ad-Account-Usage`` with
``reset_time_duration: 120`` (seconds); code 4 comes with ``X-App-Usage``, which has no time.

Versions in ``retired`` answer error 2635, as Meta does after a version's expiry. With
``app_secret`` set (an app with "Require App Secret") every call needs ``appsecret_proof`` =
HMAC-SHA256(app secret, token) in the form body or query, else error 100. ``cut_next`` does the
work and cuts the answer half way (``Content-Length`` promises more: urllib3's IncompleteRead);
``malformed_next`` answers with the first half only, as a complete but malformed body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import responses

BASE_URL = "http://127.0.0.1:8766"
TOKEN = "EAAB-test-token-not-real"
_HASH = re.compile(r"^[0-9a-f]{64}$")
MESSAGES = {
    4: "Application request limit reached",
    17: "User request limit reached",
    80003: "There have been too many calls to this ad-account",
    80004: "Too many calls to this ad-account",
    190: "Error validating access token: Session has expired",
    200: "Permissions error",
    613: "Calls to this api have exceeded the rate limit.",
    2635: "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: v27.0.",
}
JSON = {"Content-Type": "application/json; charset=UTF-8"}


class FakeMeta:
    def __init__(
        self,
        *,
        base_url: str = BASE_URL,
        token: str = TOKEN,
        versions: frozenset[str] = frozenset({"v25.0", "v26.0", "v27.0"}),
        retired: frozenset[str] = frozenset({"v22.0", "v23.0", "v24.0"}),
        app_secret: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.versions, self.retired = set(versions), set(retired)
        self.app_secret = app_secret
        self.versions_seen: Counter[str] = Counter()
        self.cut_next = 0
        self.malformed_next = 0
        self.cuts = 0
        self.members: dict[str, set[tuple[str, ...]]] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, audience_id, rows) of answered calls
        self.order: list[str] = []  # "remove:<id>" / "add:<id>" in the order received
        self.fail_next: list[tuple[int, ...]] = []  # (status, code[, wait]) — see the module docstring
        self.too_small: set[str] = set()
        self.drop_rows = 0  # report this many fewer rows received than sent, once
        self.invalid_next = 0  # report this many invalid entries, once
        self.injected: Counter[int] = Counter()
        self.audiences: dict[str, int] = {"111": 200, "222": 200}  # id -> operation_status code

    def install(self, rsps: responses.RequestsMock) -> FakeMeta:
        pattern = re.compile(re.escape(self.base_url) + r"/(v\d+\.\d+)/([^/]+)/users$")
        for method in ("POST", "DELETE"):
            rsps.add_callback(method, pattern, callback=self._users)
        rsps.add_callback(
            "GET", re.compile(re.escape(self.base_url) + r"/v\d+\.\d+/(\d+)(\?.*)?$"), callback=self._audience
        )
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
        version, audience_id = re.search(r"/(v\d+\.\d+)/(\d+)", request.url).groups()
        refused = self._refuse(request, version)
        if refused:
            return refused
        if audience_id not in self.audiences:
            return (
                400,
                JSON,
                json.dumps(
                    {
                        "error": {
                            "message": f"Unsupported get request. Object with ID '{audience_id}' does not exist",
                            "code": 100,
                        }
                    }
                ),
            )
        return self._maybe_cut(
            (
                200,
                JSON,
                json.dumps(
                    {
                        "id": audience_id,
                        "name": "aud",
                        "operation_status": {"code": self.audiences[audience_id], "description": ""},
                    }
                ),
            )
        )

    def _refuse(self, request, version: str):
        """The checks every call passes first: token, version, appsecret_proof."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, 190)
        if "access_token" in request.url:
            raise AssertionError("the access token must not travel in the URL")
        self.versions_seen[version] += 1
        if version in self.retired:
            return self._error(400, 2635)
        assert version in self.versions, f"unexpected Graph API version {version}"
        if self.app_secret is not None:
            body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
            given = (
                parse_qs(body).get("appsecret_proof")
                or parse_qs(urlsplit(request.url).query).get("appsecret_proof")
                or [None]
            )[0]
            wanted = hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()
            if given is None:
                return (
                    400,
                    JSON,
                    json.dumps(
                        {
                            "error": {
                                "message": "API calls from the server require an appsecret_proof argument",
                                "type": "GraphMethodException",
                                "code": 100,
                                "fbtrace_id": "Afake",
                            }
                        }
                    ),
                )
            if given != wanted:
                return (
                    400,
                    JSON,
                    json.dumps(
                        {
                            "error": {
                                "message": "Invalid appsecret_proof provided in the API argument",
                                "type": "GraphMethodException",
                                "code": 100,
                                "fbtrace_id": "Afake",
                            }
                        }
                    ),
                )
        return None

    def _maybe_cut(self, reply):
        status, headers, body = reply
        data = body.encode()
        if self.malformed_next:
            self.malformed_next -= 1
            self.cuts += 1
            return status, headers, data[: len(data) // 2]
        if self.cut_next:
            self.cut_next -= 1
            self.cuts += 1
            return status, {**headers, "Content-Length": str(len(data))}, data[: len(data) // 2]
        return reply

    def _users(self, request):
        version, audience_id = re.search(r"/(v\d+\.\d+)/([^/]+)/users$", request.url.split("?")[0]).groups()
        refused = self._refuse(request, version)
        if refused:
            return refused
        if self.fail_next:
            status, code, *wait = self.fail_next.pop(0)
            self.injected[code] += 1
            return self._error(status, code, wait[0] if wait else 0)
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        payload = json.loads(parse_qs(body)["payload"][0])
        schema = payload["schema"]
        keys = [schema] if isinstance(schema, str) else list(schema)
        assert set(keys) <= {"EMAIL", "PHONE"}, keys
        rows = [(r,) if isinstance(schema, str) else tuple(r) for r in payload["data"]]
        assert len(rows) <= 10_000, "Meta takes at most 10,000 rows per request"
        for r in rows:
            assert len(r) == len(keys) and all(v == "" or _HASH.match(v) for v in r), "unhashed value sent"
            assert any(r), "a row with no identifier"
        action = "add" if request.method == "POST" else "remove"
        if action == "remove" and audience_id in self.too_small:
            return (
                400,
                JSON,
                json.dumps(
                    {
                        "error": {
                            "message": "Custom audience is too small to remove users",
                            "type": "OAuthException",
                            "code": 2650,
                            "error_subcode": 1870049,
                            "fbtrace_id": "Afake",
                        }
                    }
                ),
            )
        self.calls.append((request.method, audience_id, len(rows)))
        self.order.append(f"{action}:{audience_id}")
        members = self.members.setdefault(audience_id, set())
        for r in rows:
            email = r[keys.index("EMAIL")] if "EMAIL" in keys else ""
            key = ("email", email) if email else ("phone", r[keys.index("PHONE")])
            (members.add if action == "add" else members.discard)(key)
        received = len(rows) - self.drop_rows
        invalid, self.drop_rows, self.invalid_next = self.invalid_next, 0, 0
        return self._maybe_cut(
            (
                200,
                {**JSON, **self._usage(4, 0)},
                json.dumps(
                    {
                        "audience_id": audience_id,
                        "session_id": "1234",
                        "num_received": received,
                        "num_invalid_entries": invalid,
                        "invalid_entry_samples": {},
                    }
                ),
            )
        )

    @staticmethod
    def _usage(call_count: int, wait: int, code: int = 80003) -> dict[str, str]:
        """The usage header Meta sends for this kind of limit (see the module docstring)."""
        if code == 4:
            return {"X-App-Usage": json.dumps({"call_count": call_count, "total_cputime": 10, "total_time": 12})}
        if code in (17, 613):
            return {
                "X-Ad-Account-Usage": json.dumps(
                    {
                        "acc_id_util_pct": call_count,
                        "reset_time_duration": wait,
                        "ads_api_access_tier": "standard_access",
                    }
                )
            }
        buc_type = "custom_audience" if code == 80003 else "ads_management"
        return {
            "X-Business-Use-Case-Usage": json.dumps(
                {
                    "1234567890": [
                        {
                            "type": buc_type,
                            "call_count": call_count,
                            "total_cputime": 10,
                            "total_time": 12,
                            "estimated_time_to_regain_access": wait,
                            "ads_api_access_tier": "standard_access",
                        }
                    ]
                }
            )
        }

    def _error(self, status: int, code: int, wait: int = 0) -> tuple[int, dict[str, str], str]:
        throttled = code in (4, 17, 613) or 80000 <= code <= 80014
        headers = {**JSON, **(self._usage(100, wait, code) if throttled else {})}
        return (
            status,
            headers,
            json.dumps(
                {
                    "error": {
                        "message": MESSAGES.get(code, "Unknown error"),
                        "type": "OAuthException",
                        "code": code,
                        "fbtrace_id": "Afake",
                    }
                }
            ),
        )

    def writes(self) -> int:
        return len(self.calls)

    def audience(self, audience_id: str) -> set[tuple[str, str]]:
        return set(self.members.get(audience_id, set()))
