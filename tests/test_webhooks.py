"""The HTTP listener in-process: routes, limits, signature checks, durable de-duplication."""

from __future__ import annotations

import http.client
import json
import socket
from datetime import timedelta
from types import SimpleNamespace

import pytest

from rfm_sync.daemon.health import Health
from rfm_sync.daemon.metrics import Metrics
from rfm_sync.daemon.webhooks import Listener, Routes, event_id, kept_headers, topic_of
from rfm_sync.store import Store
from rfm_sync.store import webhooks as webhook_store
from tests.daemon_fakes import FakeWebhookSettings, FakeWebhookSource, shopify_order, sign

SECRET = "k3y"


@pytest.fixture
def listener(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 's.sqlite'}")
    ctx = SimpleNamespace(
        zone=None,
        base_dir=tmp_path,
        resolve_path=lambda p: tmp_path / p,
        secret=lambda name: SimpleNamespace(reveal=lambda: SECRET),
    )
    source = FakeWebhookSource(FakeWebhookSettings(name="shop", path="orders.csv"), ctx)
    metrics = Metrics()
    routes = Routes(
        store=store,
        metrics=metrics,
        health=Health(max_age=timedelta(minutes=5)),
        sources={"shop": source},
        webhooks_enabled=True,
        max_body_bytes=2048,
    )
    server = Listener("127.0.0.1", 0, routes).start()
    yield SimpleNamespace(port=server.port, routes=routes, store=store, source=source)
    server.stop()
    store.close()


def call(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def signed(body, **extra):
    return {"X-Shopify-Hmac-Sha256": sign(SECRET, body), "X-Shopify-Topic": "orders/updated", **extra}


BODY = shopify_order(1, 7, "a@example.com", "2026-01-01T10:00:00+00:00", "10.00")


@pytest.mark.slow
def test_signed_event_is_queued_once_and_kept_without_its_signature(listener):
    headers = signed(BODY, **{"X-Shopify-Event-Id": "ev-1"})
    assert call(listener.port, "POST", "/webhooks/shop", BODY, headers) == (200, b'{"status": "queued"}')
    assert call(listener.port, "POST", "/webhooks/shop", BODY, headers) == (200, b'{"status": "duplicate"}')
    [event] = webhook_store.pending(listener.store)
    assert (event.source, event.topic, event.body) == ("shop", "orders/updated", BODY)
    assert event.headers["x-shopify-event-id"] == "ev-1" and "x-shopify-hmac-sha256" not in event.headers
    webhook_store.finish(listener.store, [event.id])
    # still a duplicate after processing, and after reopening the store: de-duplication is durable
    reopened = Store.open(str(listener.store.engine.url))
    assert not webhook_store.record(reopened, "shop", "ev-1", "orders/updated", {}, BODY)
    assert webhook_store.pending(reopened) == []
    reopened.close()


@pytest.mark.slow
@pytest.mark.parametrize("headers", [{}, {"X-Shopify-Hmac-Sha256": ""}, {"X-Shopify-Hmac-Sha256": "AAAA"}])
def test_unsigned_or_badly_signed_is_401_and_not_stored(listener, headers):
    assert call(listener.port, "POST", "/webhooks/shop", BODY, headers)[0] == 401
    assert webhook_store.counts(listener.store) == {}


@pytest.mark.slow
def test_a_verifier_that_raises_counts_as_unverified(listener, monkeypatch):
    monkeypatch.setattr(listener.source, "verify_webhook", lambda h, b: 1 / 0)
    assert call(listener.port, "POST", "/webhooks/shop", BODY, signed(BODY))[0] == 401


@pytest.mark.slow
def test_limits_and_unknown_routes(listener):
    port = listener.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("POST", "/webhooks/shop")
    conn.putheader("Content-Length", "999999")
    conn.endheaders()  # the body is never sent: the answer comes from the header alone
    assert conn.getresponse().status == 413
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("POST", "/webhooks/shop")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert call(port, "POST", "/webhooks/other", BODY, signed(BODY))[0] == 404
    assert call(port, "POST", "/webhooks/shop/extra", BODY, signed(BODY))[0] == 404
    assert call(port, "GET", "/webhooks/shop")[0] == 404
    assert call(port, "GET", "/")[0] == 404
    listener.routes.webhooks_enabled = False
    assert call(port, "POST", "/webhooks/shop", BODY, signed(BODY))[0] == 404


@pytest.mark.slow
def test_healthz_and_metrics(listener):
    status, body = call(listener.port, "GET", "/healthz")
    assert status == 503 and json.loads(body)["status"] == "starting"
    listener.routes.health.succeeded()
    assert call(listener.port, "GET", "/healthz")[0] == 200
    listener.routes.health.standby = "lock held by x:1 since ..."
    assert json.loads(call(listener.port, "GET", "/healthz")[1])["status"] == "standby"
    status, body = call(listener.port, "GET", "/metrics")
    assert status == 200 and b"rfm_sync_webhooks_total" in body


def test_event_id_topic_and_headers():
    assert event_id({"x-shopify-event-id": "e"}, b"x") == "e"
    assert event_id({}, b"x") == event_id({}, b"x") != event_id({}, b"y")
    assert topic_of({}, b'{"scope": "store/order/updated", "data": {"id": 5}}') == "store/order/updated"
    assert topic_of({}, b"not json") == ""
    kept = kept_headers(
        {
            "x-shopify-hmac-sha256": "s",
            "x-shopify-shop-domain": "d",
            "authorization": "t",
            "x-rfm-sync-secret": "bc",
            "x-bc-webhook-secret": "bc",
            "content-type": "application/json",
        }
    )
    assert kept == {"x-shopify-shop-domain": "d", "content-type": "application/json"}


@pytest.mark.slow
def test_listener_binds_loopback_only(listener):
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", listener.port), timeout=1).close()


@pytest.mark.slow
def test_a_deeply_nested_or_huge_number_body_is_still_queued(listener):
    # the listener only records; the webhooks job sets the event aside later (see test_daemon_jobs)
    for n, body in enumerate(
        [b"[" * 2000, b'{"scope": ' + b"[" * 1015 + b"]" * 1015 + b"}", b'{"total_price": 1e400, "id": 1}']
    ):
        headers = {"X-Shopify-Hmac-Sha256": sign(SECRET, body), "X-Shopify-Event-Id": f"deep-{n}"}  # no topic header
        assert call(listener.port, "POST", "/webhooks/shop", body, headers) == (200, b'{"status": "queued"}')
    assert webhook_store.counts(listener.store) == {"pending": 3}


def test_topic_of_a_body_too_deep_to_parse_is_empty():
    assert topic_of({}, b"[" * 5000) == ""
    assert topic_of({}, b'{"scope": ' + b"[" * 5000) == ""
    assert topic_of({"x-shopify-topic": "orders/create"}, b"[" * 5000) == "orders/create"
