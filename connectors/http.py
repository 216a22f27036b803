"""One HTTP client per connector: a requests session, timeouts, one retry policy, a rate limiter.

Every connector talks HTTP through :class:`HttpClient`. It

* sends every request with a (connect, read) timeout;
* classifies each response: 429 and 5xx are :class:`RetryableError` (with ``Retry-After``
  honoured), other 4xx are :class:`FatalError` naming the status and a hint (401/403: credentials
  or scope), 2xx is returned;
* classifies every transport-level failure as :class:`RetryableError`: no connection, a connection
  reset, a connect or read timeout, a body cut off before its ``Content-Length`` or last chunk
  (``ChunkedEncodingError``), a body that does not decompress (``ContentDecodingError``), and a
  2xx body that does not parse as JSON where JSON was expected (see ``expect_json``). Any other
  ``requests`` error (a malformed URL, a redirect loop) is a :class:`FatalError`, so nothing but a
  connector error ever leaves :meth:`HttpClient.request` and one broken response fails at most
  that source's or destination's step of the cycle, never the whole run;
* retries retryable errors with tenacity: exponential backoff with jitter, never shorter than the
  server's ``Retry-After``, bounded in attempts and total time. A server that asks to wait longer
  than ``RetryPolicy.max_server_wait_s`` is not waited for: the error is raised at once and the
  next cycle tries again. After the last attempt the :class:`RetryableError` is raised, saying how
  many attempts were made;
* waits on a client-side :class:`Limiter` before each attempt: a :class:`RateLimiter` (token
  buckets), or a connector's own (BigCommerce's quota, read from its response headers).

What is retried. Every call is retried by default (``idempotent=True``), POSTs included, because
every write rfm-sync makes is idempotent: Klaviyo's profile import and bulk import are upserts of
the full snapshot, its events are de-duplicated by ``unique_id``, Meta's audience ``POST``/``DELETE``
set membership, and Shopify's and BigCommerce's calls are reads, apart from Shopify's bulk-run
mutation (if it is repeated, a second export may start; the source resumes the one it recorded) and
Klaviyo's segment creation (``idempotent=False``: connectors/klaviyo/segments.py lists the segments
again before it repeats a POST). A call that creates something that has no natural key
passes ``idempotent=False``: then only failures where the request certainly did not reach the
server (connect timeout, connection refused, no DNS) and 429s are retried here; a 5xx, a reset,
a read timeout or a cut-off answer is raised at once as :class:`RetryableError`, and the caller
decides (e.g. looks the object up before creating it again).

JSON. With ``expect_json=None`` (the default) a non-empty 2xx body whose ``Content-Type`` is JSON
(``application/json``, ``*+json``) is parsed once inside the retry, so a caller's later
``response.json()`` cannot fail; ``True`` requires JSON whatever the header says, ``False`` skips
the check. Streamed responses (``stream=True``) are not read here: their reader handles cut-offs.

Connectors may pass ``classify`` to turn a 200 that carries an error (GraphQL ``errors``,
Graph API ``error``) into the same exceptions, so one retry policy covers both.

Building one. Every connector on HTTP takes the same keyword arguments besides its settings and
context (:class:`PlumbingArgs`: ``sleep``, ``clock`` and ``policy``, which tests replace with a fake
clock and fewer attempts) and keeps them as a :class:`Plumbing`, which builds its client (10 s to
connect, the read timeout its settings name, its hooks on every response) and its rate limiters.
:func:`refusals_explained` turns a 401/403 into one message naming the token and the scopes.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Protocol, TypedDict, TypeVar, Unpack

import requests
import urllib3.exceptions
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from .base import ConnectorContext, ConnectorSettings, FatalError, RetryableError

log = logging.getLogger(__name__)

Classifier = Callable[[requests.Response], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    max_elapsed_s: float = 300.0
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    max_server_wait_s: float = 900.0  # a server asking for a longer pause is not waited for


# Failures of the transport, not of the request: the same call may well succeed when sent again.
# requests wraps urllib3's and http.client's errors; the raw ones are listed in case one leaks.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,  # refused, reset, DNS, SSL, proxy; includes ConnectTimeout
    requests.Timeout,  # ReadTimeout
    requests.exceptions.ChunkedEncodingError,  # body cut off (IncompleteRead, bad chunk)
    requests.exceptions.ContentDecodingError,  # gzip/deflate body that does not decompress
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)


class Limiter(Protocol):
    """What :class:`HttpClient` waits on before each attempt: ``acquire()`` returns once the
    request may be sent (it may sleep). Implemented by :class:`RateLimiter` (Klaviyo, Meta) and
    BigCommerce's ``QuotaLimiter``."""

    def acquire(self) -> None: ...


class RateLimiter:
    """Token buckets: ``RateLimiter([(10, 1.0), (150, 60.0)])`` allows a burst of 10 per second
    and 150 per minute. ``acquire()`` blocks until every bucket has a token. Thread-safe."""

    def __init__(
        self,
        limits: list[tuple[int, float]],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
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
        raise RetryableError(
            what, retry_after=parse_retry_after(response.headers.get("Retry-After")), connector=connector, status=status
        )
    hint = _HINTS.get(status)
    raise FatalError(f"{what}: {hint}" if hint else what, connector=connector, status=status)


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly did not reach the server (safe to send again, any method)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the response was cut off before its end (ChunkedEncodingError)"
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return "the response body could not be decompressed (ContentDecodingError)"
    if isinstance(exc, requests.Timeout):
        return f"no answer in time ({type(exc).__name__})"
    return f"the connection failed ({type(exc).__name__})"


def _json_expected(response: requests.Response, expect_json: bool | None) -> bool:
    if expect_json is not None:
        return expect_json
    kind = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class _NotRetriedHere(RetryableError):
    """A retryable failure of a non-idempotent call: raised to the caller without a retry."""


def _path(url: str) -> str:
    # never echo query strings (they may hold tokens or emails)
    return url.split("?", 1)[0]


class HttpClient:
    def __init__(
        self,
        *,
        connector: str,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        policy: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
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

    def authorise(self, header: str, reveal: Callable[[], str]) -> None:
        """Send the credential ``reveal()`` returns in ``header`` from now on. Only the first call
        reveals it, so a connector reads its secret when it first talks to the service, not when the
        config loads, and a missing secret fails that call with a clear error."""
        if header not in self.session.headers:
            self.session.headers[header] = reveal()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        classify: Classifier | None = None,
        limiter: Limiter | None = None,
        prepare: Callable[[], dict[str, Any]] | None = None,
        idempotent: bool = True,
        expect_json: bool | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return a 2xx response or raise RetryableError/FatalError (never
        anything else from the transport).

        ``prepare``, if given, is called before *each* attempt and its keyword arguments (e.g.
        ``params`` or ``json``) override ``kwargs``: a retry can then ask for a smaller page.
        ``idempotent`` and ``expect_json``: see the module docstring."""
        kwargs.setdefault("timeout", self.timeout)
        bucket = limiter or self.limiter
        where = f"{method} {_path(self.url(path))}"

        def once() -> requests.Response:
            if bucket is not None:
                bucket.acquire()
            attempt_kwargs = {**kwargs, **prepare()} if prepare is not None else kwargs
            try:
                response = self.session.request(method, self.url(path), **attempt_kwargs)
                classify_status(response, self.connector)
                if (
                    not attempt_kwargs.get("stream")
                    and _json_expected(response, expect_json)
                    and response.content.strip()
                ):
                    try:
                        response.json()
                    except ValueError:
                        raise RetryableError(
                            f"{where} returned a body that is not valid JSON",
                            connector=self.connector,
                            status=response.status_code,
                        ) from None
                if classify is not None:
                    classify(response)
                return response
            except TRANSPORT_ERRORS as exc:  # hooks and classify may read the body: cover them too
                cls = RetryableError if idempotent or _never_sent(exc) else _NotRetriedHere
                raise cls(f"{where} failed: {_describe(exc)}", connector=self.connector) from None
            except requests.RequestException as exc:  # InvalidURL, MissingSchema, TooManyRedirects, ...
                raise FatalError(
                    f"{where} could not be sent ({type(exc).__name__}): check the base URL", connector=self.connector
                ) from None
            except RetryableError as exc:
                if idempotent or exc.status == 429:
                    raise
                raise _NotRetriedHere(
                    str(exc.args[0]), connector=self.connector, status=exc.status, retry_after=exc.retry_after
                ) from None

        attempts_stop = stop_after_attempt(self.policy.attempts) | stop_after_delay(self.policy.max_elapsed_s)

        def stop(state: RetryCallState) -> bool:
            return attempts_stop(state) or self._server_wait_too_long(state)

        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, RetryableError) and not isinstance(exc, _NotRetriedHere)
            ),
            stop=stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return retrying(once)
        except RetryableError as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            if tries > 1 and exc.args:
                exc.args = (f"{exc.args[0]} (gave up after {tries} attempts)", *exc.args[1:])
            raise

    def _server_wait_too_long(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        server = getattr(exc, "retry_after", None)
        return server is not None and server > self.policy.max_server_wait_s

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
        log.info(
            "retrying after error",
            extra={"connector": self.connector, "error": str(exc), "attempt": state.attempt_number},
        )

    def close(self) -> None:
        self.session.close()


# ----------------------------------------------------------------------------- building one
class PlumbingArgs(TypedDict, total=False):
    """The keyword arguments of every connector on HTTP: ``KlaviyoDestination(settings, context,
    sleep=clock.sleep, clock=clock)``. Unset, :class:`Plumbing`'s defaults apply (real time)."""

    sleep: Callable[[float], None]
    clock: Callable[[], float]
    policy: RetryPolicy | None


@dataclass(frozen=True)
class Plumbing:
    """How one connector waits and retries; builds its :class:`HttpClient` and rate limiters."""

    connector: str
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    policy: RetryPolicy | None = None  # None: RetryPolicy()

    def client(
        self,
        base_url: str,
        *,
        read_timeout_s: float,
        headers: dict[str, str],
        hooks: Sequence[Callable[..., Any]] = (),
        limiter: Limiter | None = None,
        policy: RetryPolicy | None = None,
    ) -> HttpClient:
        """The connector's client: 10 s to connect, ``read_timeout_s`` to answer; ``hooks`` see every
        response (in order); ``policy`` replaces this plumbing's."""
        client = HttpClient(
            connector=self.connector,
            base_url=base_url,
            headers=headers,
            timeout=(10.0, read_timeout_s),
            policy=policy or self.policy,
            limiter=limiter,
            sleep=self.sleep,
        )
        client.session.hooks["response"].extend(hooks)
        return client

    def rate_limiter(self, limits: list[tuple[int, float]]) -> RateLimiter:
        return RateLimiter(limits, clock=self.clock, sleep=self.sleep)


Settings = TypeVar("Settings", bound=ConnectorSettings)


class HttpConnector(Generic[Settings]):
    """What every connector on HTTP starts with: its settings and name, the context it was built with
    (secrets, dry run, time zone) and its :class:`Plumbing`. A base class for this wiring only — each
    connector's behaviour is its own, and its client and limiters are built from the plumbing."""

    def __init__(self, settings: Settings, context: ConnectorContext, **plumbing: Unpack[PlumbingArgs]):
        self.settings = settings
        self.name = settings.name
        self._context = context
        self.plumbing = Plumbing(self.name, **plumbing)

    def secret(self, name: str) -> str:
        """The value of the secret ``name`` (which a settings key names), for this connector's requests."""
        return self._context.reveal_secret(name, self.name)

    def client_secret(self, name: str) -> str:
        """:meth:`secret`, as the client is built on first use: a dry run is refused here, before any
        secret is read (the config loads without reading one)."""
        self._context.refuse_dry_run(self.name)
        return self.secret(name)


TOKEN_REJECTED = "the access token was rejected (check the secret named by token_secret)"


@contextmanager
def refusals_explained(service: str, *, connector: str, scope_hint: str, on_401: str) -> Iterator[None]:
    """Inside, a 401 or 403 becomes one :class:`FatalError` saying what to do: ``"<service> refused
    the request (HTTP 403): <scope_hint>"``, with ``on_401`` before the hint for a 401 (the token
    itself may be wrong). Any other error passes unchanged."""
    try:
        yield
    except FatalError as exc:
        if exc.status not in (401, 403):
            raise
        why = on_401 if exc.status == 401 else ""
        raise FatalError(
            f"{service} refused the request (HTTP {exc.status}): {why}{scope_hint}",
            connector=connector,
            status=exc.status,
        ) from None
