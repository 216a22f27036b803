"""Verified webhooks, kept durably until processed; their ids recognise replays.

The listener records an event (after verifying its signature) and answers at once; the daemon
later turns pending events into a rescore of the affected customers and marks them done in a
transaction of its own. A crash in between leaves them pending, so nothing acknowledged is lost.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import sqlalchemy as sa

from . import Store, utcnow
from .schema import webhook_events


@dataclass(frozen=True)
class WebhookEvent:
    id: int
    source: str
    topic: str
    headers: dict[str, str]
    body: bytes


def record(store: Store, source: str, event_id: str, topic: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Store a verified event; False when this (source, event id) was already received (a replay)."""
    row = {"source": source, "event_id": event_id[:200], "topic": topic[:100], "headers": json.dumps(dict(headers)),
           "body": body, "status": "pending", "received_at": utcnow()}
    try:
        with store.begin() as conn:
            conn.execute(webhook_events.insert(), row)
    except sa.exc.IntegrityError:
        return False
    return True


def pending(store: Store, limit: int = 500) -> list[WebhookEvent]:
    c = webhook_events.c
    q = (sa.select(c.id, c.source, c.topic, c.headers, c.body).where(c.status == "pending")
         .order_by(c.id).limit(limit))
    with store.engine.connect() as conn:
        return [WebhookEvent(id=i, source=s, topic=t, headers=json.loads(h), body=bytes(b or b""))
                for i, s, t, h, b in conn.execute(q)]


def finish(store: Store, done: list[int], failed: Mapping[int, str] | None = None) -> None:
    """Mark events processed (their bodies are dropped; the ids stay for replay detection)."""
    now, c = utcnow(), webhook_events.c
    with store.begin() as conn:
        if done:
            conn.execute(webhook_events.update().where(c.id.in_(done))
                         .values(status="done", processed_at=now, body=None, error=None))
        for event, error in (failed or {}).items():
            conn.execute(webhook_events.update().where(c.id == event)
                         .values(status="failed", processed_at=now, body=None, error=error[:500]))


def prune(store: Store, before: datetime) -> int:
    """Forget processed events received before ``before``."""
    c = webhook_events.c
    with store.begin() as conn:
        return conn.execute(webhook_events.delete().where(c.status != "pending", c.received_at < before)).rowcount


def counts(store: Store) -> dict[str, int]:
    c = webhook_events.c
    with store.engine.connect() as conn:
        return {s: n for s, n in conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status))}
