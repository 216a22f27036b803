"""The daemon's HTTP listener: ``/healthz``, ``/metrics`` and, when enabled, ``POST /webhooks/<source>``.

Built on the standard library's :class:`~http.server.ThreadingHTTPServer`: three routes, a trickle of
requests (webhooks, a scrape every few seconds, a health probe), and no new dependency to keep
patched. TLS belongs to the reverse proxy in front (Shopify and BigCommerce require HTTPS).

A webhook is handled in this order, and answered within milliseconds:

1. the route must name a configured source that implements ``WebhookSource`` (else 404);
2. the body must declare its length, at most ``max_body_bytes`` (411 / 413, the body is not read);
3. ``source.verify_webhook(headers, raw body)`` must say yes (else 401, nothing stored);
4. the event is recorded durably, keyed by ``X-Shopify-Event-Id`` (else the SHA-256 of the body):
   a replay answers 200 ``duplicate`` and changes nothing;
5. 200 ``queued``. The daemon's ``webhooks`` job later parses the orders and rescores their customers
   (an event it cannot read is marked failed there, not here: a verified event is always stored).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from ..store import webhooks as webhook_store

log = logging.getLogger(__name__)

EVENT_ID_HEADERS = ("x-shopify-event-id", "x-shopify-webhook-id")
# headers kept with a stored event for orders_from_webhook; never signatures or credentials
KEPT_HEADER_PREFIXES = ("x-shopify-", "x-bc-")
CREDENTIAL_HEADER = re.compile(r"hmac|signature|secret|auth|token|key", re.I)


@dataclass
class Routes:
    """What the listener serves; the daemon swaps fields on a config reload."""

    store: Any
    metrics: Any
    health: Any
    sources: dict[str, Any] = field(default_factory=dict)  # webhook-capable sources by name
    webhooks_enabled: bool = False
    max_body_bytes: int = 1_048_576
    on_event: Callable[[], None] = lambda: None  # called after an event is queued


def event_id(headers: Mapping[str, str], body: bytes) -> str:
    for name in EVENT_ID_HEADERS:
        if headers.get(name):
            return headers[name]
    return "sha256:" + hashlib.sha256(body).hexdigest()


def topic_of(headers: Mapping[str, str], body: bytes) -> str:
    if headers.get("x-shopify-topic"):
        return headers["x-shopify-topic"]
    try:  # BigCommerce puts it in the payload: {"scope": "store/order/updated", "data": {...}}
        scope = json.loads(body).get("scope")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deep
        scope = None  # the event is still recorded; the webhooks job sets an unreadable one aside
    return scope if isinstance(scope, str) else ""


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if (k.startswith(KEPT_HEADER_PREFIXES) or k == "content-type") and not CREDENTIAL_HEADER.search(k)
    }


class _Handler(BaseHTTPRequestHandler):
    server_version = "rfm-sync"
    sys_version = ""
    timeout = 10  # seconds per socket read: a slow sender cannot hold a thread for long
    routes: Routes  # set on the subclass made by Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http " + format % args)

    def _send(self, status: int, body: dict[str, Any] | bytes, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status >= 400 and self.command == "POST":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok, body = self.routes.health.check()
            self._send(200 if ok else 503, body)
        elif path == "/metrics":
            self._send(200, self.routes.metrics.render(), CONTENT_TYPE_LATEST)
        else:
            self._send(404, {"error": "not found"})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        routes = self.routes
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "webhooks" or not routes.webhooks_enabled:
            self._send(404, {"error": "not found"})
            return
        name = parts[1]
        source = routes.sources.get(name)
        if source is None:
            self._send(404, {"error": "not found"})
            return
        outcome = self._webhook(name, source)
        routes.metrics.webhooks.labels(name, outcome).inc()

    def _webhook(self, name: str, source: Any) -> str:
        routes = self.routes
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._send(411, {"error": "Content-Length required"})
            return "no_length"
        length = int(length_text)
        if length > routes.max_body_bytes:
            self._send(413, {"error": f"body larger than {routes.max_body_bytes} bytes"})
            return "too_large"
        body = self.rfile.read(length)
        if len(body) != length:
            self._send(400, {"error": "body shorter than Content-Length"})
            return "truncated"
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            verified = bool(source.verify_webhook(headers, body))
        except Exception as exc:  # a verifier that raises has not verified anything
            log.warning("webhook verification raised", extra={"source": name, "error": type(exc).__name__})
            verified = False
        if not verified:
            log.warning("webhook rejected: bad or missing signature", extra={"source": name})
            self._send(401, {"error": "invalid signature"})
            return "unauthorized"
        try:
            fresh = webhook_store.record(
                routes.store, name, event_id(headers, body), topic_of(headers, body), kept_headers(headers), body
            )
        except Exception as exc:
            log.error("webhook not stored", extra={"source": name, "error": type(exc).__name__})
            self._send(503, {"error": "try again"})  # the shop retries
            return "error"
        self._send(200, {"status": "queued" if fresh else "duplicate"})
        if fresh:
            routes.on_event()
        return "queued" if fresh else "duplicate"


class Listener:
    """A ThreadingHTTPServer on its own thread. ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, host: str, port: int, routes: Routes):
        handler = type("Handler", (_Handler,), {"routes": routes})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.5}, name="http", daemon=True
        )

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
