"""The one retry policy: 429/5xx and every transport failure (reset, timeout, cut-off or undecodable body,
malformed JSON) retried honouring Retry-After, bounded; other 4xx and malformed requests fatal."""

from __future__ import annotations

import json
import socket

import pytest
import requests
import responses

from connectors.base import FatalError, RetryableError
from connectors.http import HttpClient, RateLimiter, RetryPolicy
from tests.fakes.shopify_fake import RESET, LocalServer


def client(sleeps):
    return HttpClient(
        connector="shop",
        base_url="https://api.example.test",
        headers={"X-Token": "s3cret"},
        policy=RetryPolicy(attempts=4, base_delay_s=0.1),
        sleep=sleeps.append,
    )


@responses.activate
def test_retries_429_and_5xx_honouring_retry_after():
    url = "https://api.example.test/things"
    responses.get(url, status=429, headers={"Retry-After": "7"})
    responses.get(url, status=503)
    responses.get(url, body=requests.ConnectionError("reset"))
    responses.get(url, json={"ok": True})
    sleeps = []
    c = client(sleeps)
    assert c.request("GET", "/things").json() == {"ok": True}
    assert len(sleeps) == 3 and sleeps[0] >= 7
    assert c.retries == 3


@responses.activate
def test_gives_up_after_the_attempts():
    responses.get("https://api.example.test/x", status=500)
    sleeps = []
    with pytest.raises(RetryableError):
        client(sleeps).request("GET", "/x")
    assert len(responses.calls) == 4


@responses.activate
@pytest.mark.parametrize(
    "status,hint", [(401, "credentials were rejected"), (403, "permission/scope"), (400, "HTTP 400")]
)
def test_other_4xx_are_fatal_with_a_clear_message_and_no_secret(status, hint):
    responses.get("https://api.example.test/x", status=status, body="customer jane@example.com")
    with pytest.raises(FatalError) as info:
        client([]).request("GET", "/x", params={"token": "s3cret"})
    message = str(info.value)
    assert hint in message and "s3cret" not in message and "jane" not in message
    assert len(responses.calls) == 1
    assert "s3cret" not in repr(client([]))


def test_rate_limiter_never_exceeds_its_buckets():
    now = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    limiter = RateLimiter([(10, 1.0), (30, 60.0)], clock=lambda: now[0], sleep=sleep)
    stamps = []
    for _ in range(60):
        limiter.acquire()
        stamps.append(now[0])
    # a token bucket allows its burst plus its rate: at most cap + rate × window in any window
    for t in stamps:
        assert sum(1 for s in stamps if t <= s < t + 1.0) <= 10 + 10
        assert sum(1 for s in stamps if t <= s < t + 60.0) <= 30 + 30
    assert stamps[29] < 3 and stamps[-1] >= 59  # the burst of 30 goes at once, the next 30 at 0.5/s


# --------------------------------------------------------------------------- transport failures
# A real socket on 127.0.0.1: the server announces a body and closes the connection half way,
# so requests/urllib3 see exactly what a dropped connection or a proxy timeout produces.
BODY = json.dumps({"ok": True, "items": list(range(200))}).encode()


class Script:
    """Answers each request with the next scripted reply (the last one repeats); counts them."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.calls = 0
        self.server = LocalServer(self.handle)

    def handle(self, method, path, query, headers, body):
        self.calls += 1
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def script():
    made = []

    def make(*replies):
        made.append(Script(*replies))
        return made[-1]

    yield make
    for s in made:
        s.server.close()


def local(url, sleeps, **policy):
    return HttpClient(
        connector="shop",
        base_url=url,
        policy=RetryPolicy(**{"attempts": 4, "base_delay_s": 0.1, **policy}),
        sleep=sleeps.append,
    )


JSON = {"Content-Type": "application/json"}
CUT = (200, JSON, BODY, len(BODY) // 2)
CUT_CHUNKED = (200, {**JSON, "Transfer-Encoding": "chunked"}, BODY, len(BODY) // 2)
OK = (200, JSON, BODY)


@pytest.mark.parametrize("cut", [CUT, CUT_CHUNKED], ids=["content-length", "chunked"])
def test_a_body_cut_off_half_way_is_retried(script, cut):
    s = script(cut, OK)
    sleeps = []
    c = local(s.server.url, sleeps)
    assert c.request("GET", "/orders").json()["items"][-1] == 199
    assert s.calls == 2 and c.retries == 1 and len(sleeps) == 1


def test_a_persistent_cut_off_is_a_retryable_error_after_the_attempts_not_a_traceback(script):
    s = script(CUT)
    with pytest.raises(RetryableError, match=r"cut off.*gave up after 4 attempts") as info:
        local(s.server.url, []).request("GET", "/orders", params={"token": "s3cret"})
    assert s.calls == 4 and "s3cret" not in str(info.value)


def test_a_hook_reading_a_cut_off_body_is_covered_too(script):
    s = script(CUT, OK)
    c = local(s.server.url, [])
    seen = []
    c.session.hooks["response"].append(lambda r, *a, **k: seen.append(len(r.content)))
    assert c.request("GET", "/orders").status_code == 200 and seen == [len(BODY)] and s.calls == 2


@pytest.mark.parametrize("bad", [b'{"ok": tru', b"<html>502 Bad Gateway</html>"])
def test_a_2xx_json_body_that_does_not_parse_is_retried(script, bad):
    s = script((200, JSON, bad), OK)
    assert local(s.server.url, []).request("GET", "/orders").json()["ok"] is True and s.calls == 2
    s2 = script((200, {"Content-Type": "application/vnd.api+json"}, bad))
    with pytest.raises(RetryableError, match="not valid JSON"):
        local(s2.server.url, []).request("GET", "/orders")
    assert s2.calls == 4


def test_json_is_checked_only_where_expected(script):
    s = script((200, {"Content-Type": "text/plain"}, b"not json"), (200, JSON, b""))
    c = local(s.server.url, [])
    assert c.request("GET", "/a").text == "not json"  # not declared JSON: the caller decides
    assert c.request("GET", "/b").content == b""  # an empty body is not malformed JSON
    s2 = script((200, {"Content-Type": "text/plain"}, b"not json"))
    with pytest.raises(RetryableError, match="not valid JSON"):
        local(s2.server.url, [], attempts=2).request("GET", "/c", expect_json=True)


def test_a_body_that_does_not_decompress_is_retried(script):
    s = script((200, {**JSON, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage-not-gzip"), OK)
    assert local(s.server.url, []).request("GET", "/orders").json()["ok"] is True and s.calls == 2


def test_connection_reset_is_retried(script):
    s = script(RESET, RESET, OK)
    assert local(s.server.url, []).request("GET", "/orders").json()["ok"] is True and s.calls == 3


def test_non_idempotent_calls_are_not_resent_once_they_may_have_arrived(script):
    for reply in (CUT, (503, {}, b"busy"), RESET):
        s = script(reply, OK)
        with pytest.raises(RetryableError):
            local(s.server.url, []).request("POST", "/segments", json={"name": "x"}, idempotent=False)
        assert s.calls == 1, reply
    s = script((429, {"Retry-After": "2"}, b""), OK)  # a 429 did nothing: safe to send again
    assert local(s.server.url, []).request("POST", "/segments", idempotent=False).status_code == 200
    assert s.calls == 2


def test_a_refused_connection_is_retried_even_for_non_idempotent_calls():
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sleeps = []
    with pytest.raises(RetryableError, match="connection failed"):
        local(url, sleeps).request("POST", "/segments", idempotent=False)
    assert len(sleeps) == 3


def test_other_requests_errors_are_fatal_not_a_traceback():
    with pytest.raises(FatalError, match="base URL"):
        HttpClient(connector="shop", base_url="htp:/nowhere").request("GET", "/x")


@responses.activate
def test_a_server_asking_for_a_longer_pause_than_the_bound_is_not_waited_for():
    responses.get("https://api.example.test/x", status=429, headers={"Retry-After": "3600"})
    sleeps = []
    with pytest.raises(RetryableError) as info:
        client(sleeps).request("GET", "/x")
    assert sleeps == [] and info.value.retry_after == 3600 and len(responses.calls) == 1
