"""One HTTP client per connector: a requests session, timeouts, one retry policy, a rate limiter.

Every connector talks HTTP through :class:`HttpClient`. It

* sends every request with a (connect, read) timeout;
* classifies each response: 429 and 5xx and connection errors are :class:`RetryableError`
  (with ``Retry-After`` honoured), other 4xx are :class:`FatalError` naming the status and a
  hint (401/403: credentials or scope), 2xx is returned;
* retries retryable errors with tenacity: exponential backoff with jitter, never shorter than the
  server's ``Retry-After``, bounded in attempts and total time;
* waits on a client-side :class:`RateLimiter` (token buckets) before each request.

Connectors may pass ``classify`` to turn a 200 that carries an error (GraphQL ``errors``,
Graph API ``error``) into the same exceptions, so one retry policy covers both.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay

from .base import FatalError, RetryableError

log = logging.getLogger(__name__)

Classifier = Callable[[requests.Response], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    max_elapsed_s: float = 300.0
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0


class RateLimiter:
    """Token buckets: ``RateLimiter([(10, 1.0), (150, 60.0)])`` allows a burst of 10 per second
    and 150 per minute. ``acquire()`` blocks until every bucket has a token. Thread-safe."""

    def __init__(self, limits: list[tuple[int, float]], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._limits = [(cap, cap / period) for cap, period in limits]
        self._clock, self._sleep = clock, sleep
        now = clock()
        self._tokens = [float(cap) for cap, _ in self._limits]
        self._stamp = now
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                elapsed, self._stamp = now - self._stamp, now
                waits = []
                for i, (cap, rate) in enumerate(self._limits):
                    self._tokens[i] = min(cap, self._tokens[i] + elapsed * rate)
                    # a hair's tolerance: float error must not leave a bucket at 0.9999… forever
                    waits.append(0.0 if self._tokens[i] >= 1 - 1e-9 else (1 - self._tokens[i]) / rate)
                wait = max(waits, default=0.0)
                if wait <= 0:
                    for i in range(len(self._tokens)):
                        self._tokens[i] = max(0.0, self._tokens[i] - 1)
                    return
            self._sleep(wait)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_HINTS = {
    401: "the credentials were rejected: check the secret this connector names",
    403: "the credentials lack a permission/scope this call needs",
    404: "not found: check the base URL, store id or audience id",
}


def classify_status(response: requests.Response, connector: str) -> None:
    """Raise the error class that fits the HTTP status; return for 2xx/3xx."""
    status = response.status_code
    if status < 400:
        return
    what = f"{response.request.method} {_path(response.url)} returned HTTP {status}"
    if status == 429 or status >= 500:
        raise RetryableError(what, retry_after=parse_retry_after(response.headers.get("Retry-After")),
                             connector=connector, status=status)
    hint = _HINTS.get(status)
    raise FatalError(f"{what}: {hint}" if hint else what, connector=connector, status=status)


def _path(url: str) -> str:
    # never echo query strings (they may hold tokens or emails)
    return url.split("?", 1)[0]


class HttpClient:
    def __init__(self, *, connector: str, base_url: str, headers: dict[str, str] | None = None,
                 timeout: tuple[float, float] = (10.0, 60.0), policy: RetryPolicy | None = None,
                 limiter: RateLimiter | None = None, sleep: Callable[[float], None] = time.sleep):
        self.connector = connector
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.limiter = limiter
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers.update(headers or {})
        self.retries = 0  # how many retries this client made (for metrics and tests)

    def __repr__(self) -> str:  # headers hold credentials: never show them
        return f"HttpClient(connector={self.connector!r}, base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, classify: Classifier | None = None,
                limiter: RateLimiter | None = None, prepare: Callable[[], dict[str, Any]] | None = None,
                **kwargs: Any) -> requests.Response:
        """Send with retries; return a 2xx response or raise RetryableError/FatalError.

        ``prepare``, if given, is called before *each* attempt and its keyword arguments (e.g.
        ``params`` or ``json``) override ``kwargs``: a retry can then ask for a smaller page."""
        kwargs.setdefault("timeout", self.timeout)
        bucket = limiter or self.limiter

        def once() -> requests.Response:
            if bucket is not None:
                bucket.acquire()
            attempt_kwargs = {**kwargs, **prepare()} if prepare is not None else kwargs
            try:
                response = self.session.request(method, self.url(path), **attempt_kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise RetryableError(f"{method} {_path(self.url(path))} failed: {type(exc).__name__}",
                                     connector=self.connector) from None
            classify_status(response, self.connector)
            if classify is not None:
                classify(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self.policy.attempts) | stop_after_delay(self.policy.max_elapsed_s),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        return retrying(once)

    def _wait(self, state: RetryCallState) -> float:
        p = self.policy
        backoff = min(p.max_delay_s, p.base_delay_s * 2 ** (state.attempt_number - 1))
        backoff = random.uniform(backoff / 2, backoff)  # jitter
        exc = state.outcome.exception() if state.outcome else None
        server = getattr(exc, "retry_after", None)
        return max(backoff, server) if server is not None else backoff

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("retrying after error", extra={"connector": self.connector, "error": str(exc),
                                               "attempt": state.attempt_number})

    def close(self) -> None:
        self.session.close()
