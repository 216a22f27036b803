"""The one retry policy: 429/5xx/connection errors retried honouring Retry-After; other 4xx fatal."""
from __future__ import annotations

import pytest
import requests
import responses

from connectors.base import FatalError, RetryableError
from connectors.http import HttpClient, RateLimiter, RetryPolicy


def client(sleeps):
    return HttpClient(connector="shop", base_url="https://api.example.test", headers={"X-Token": "s3cret"},
                      policy=RetryPolicy(attempts=4, base_delay_s=0.1), sleep=sleeps.append)


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
@pytest.mark.parametrize("status,hint", [(401, "credentials were rejected"), (403, "permission/scope"), (400, "HTTP 400")])
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
