"""Verified webhooks, kept durably until processed; their ids recognise replays.

The listener records an event (after verifying its signature) and answers at once; the daemon
later turns pending events into a rescore of the affected customers and marks them done in a
transaction of its own. A crash in between leaves them pending, so nothing acknowledged is lost.

An event's life: ``pending`` → ``done`` (body dropped), or ``failed`` with its reason (the body is
kept so ``rfm-sync webhooks retry`` can put it back to ``pending``), or ``dropped`` by hand (body
dropped). A pending event that hit a temporary error counts an attempt and waits (``next_attempt_at``,
doubling from a minute up to an hour); after ``max_attempts`` it is failed. Rows stay after they are
done or dropped so a replay of the same (source, event id) is still recognised; ``prune`` forgets
done and dropped ones after ``[webhooks] keep_events_days``. Failed events wait for a human.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from . import Store, utcnow
from .schema import webhook_events

STATUSES = ("pending", "done", "failed", "dropped")
ERROR_CHARS = 300  # a reason is a short line: exception type and message, never the body
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class WebhookEvent:
    id: int
    source: str
    topic: str
    headers: dict[str, str]
    body: bytes
    attempts: int = 0


@dataclass(frozen=True)
class EventSummary:
    """What ``rfm-sync webhooks list`` shows: no body, no headers (they may carry customer data)."""

    id: int
    source: str
    topic: str
    status: str
    received_at: datetime
    processed_at: datetime | None
    attempts: int
    error: str | None


def short_reason(text: str) -> str:
    return text[:ERROR_CHARS]


def retry_delay(attempts: int) -> timedelta:
    """How long a pending event waits after its ``attempts``-th failed try."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


def record(store: Store, source: str, event_id: str, topic: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Store a verified event; False when this (source, event id) was already received (a replay)."""
    row = {
        "source": source,
        "event_id": event_id[:200],
        "topic": topic[:100],
        "headers": json.dumps(dict(headers)),
        "body": body,
        "status": "pending",
        "received_at": utcnow(),
        "attempts": 0,
    }
    try:
        with store.begin() as conn:
            conn.execute(webhook_events.insert(), row)
    except sa.exc.IntegrityError:
        return False
    return True


def pending(store: Store, limit: int = 500, now: datetime | None = None) -> list[WebhookEvent]:
    """Pending events due now (a retry waits until its ``next_attempt_at``), oldest first."""
    c, now = webhook_events.c, now or utcnow()
    q = (
        sa.select(c.id, c.source, c.topic, c.headers, c.body, c.attempts)
        .where(c.status == "pending", sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now))
        .order_by(c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [
            WebhookEvent(id=i, source=s, topic=t, headers=json.loads(h), body=bytes(b or b""), attempts=n or 0)
            for i, s, t, h, b, n in conn.execute(q)
        ]


def finish(store: Store, done: list[int], failed: Mapping[int, str] | None = None) -> None:
    """Mark events processed: ``done`` ones lose their body (the ids stay for replay detection);
    ``failed`` ones keep it, with their reason, for ``retry``."""
    now, c = utcnow(), webhook_events.c
    with store.begin() as conn:
        if done:
            conn.execute(
                webhook_events.update()
                .where(c.id.in_(done))
                .values(status="done", processed_at=now, body=None, error=None, next_attempt_at=None)
            )
        for event, error in (failed or {}).items():
            conn.execute(
                webhook_events.update()
                .where(c.id == event)
                .values(status="failed", processed_at=now, error=short_reason(error), next_attempt_at=None)
            )


def postpone(store: Store, errors: Mapping[int, str], *, max_attempts: int, now: datetime | None = None) -> list[int]:
    """Count a failed try of each event: it stays pending until ``retry_delay`` has passed, or is
    marked failed once it has had ``max_attempts`` tries. Returns the ids marked failed."""
    c, now = webhook_events.c, now or utcnow()
    given_up: list[int] = []
    if not errors:
        return given_up
    with store.begin() as conn:
        query = sa.select(c.id, c.attempts).where(c.id.in_(list(errors)), c.status == "pending")
        tried = {i: n for i, n in conn.execute(query)}
        for event, error in errors.items():
            if event not in tried:
                continue
            attempts = (tried[event] or 0) + 1
            values = {"attempts": attempts, "error": short_reason(error)}
            if attempts >= max_attempts:
                values.update(status="failed", processed_at=now, next_attempt_at=None)
                given_up.append(event)
            else:
                values["next_attempt_at"] = now + retry_delay(attempts)
            conn.execute(webhook_events.update().where(c.id == event).values(**values))
    return given_up


def listing(store: Store, status: str | None = None, limit: int = 50) -> list[EventSummary]:
    """The newest events (of one status), newest first."""
    c = webhook_events.c
    q = sa.select(c.id, c.source, c.topic, c.status, c.received_at, c.processed_at, c.attempts, c.error)
    if status is not None:
        q = q.where(c.status == status)
    with store.engine.connect() as conn:
        return [EventSummary(*row) for row in conn.execute(q.order_by(c.id.desc()).limit(limit))]


def _chosen(ids: Iterable[int] | None, all_failed: bool) -> sa.ColumnElement[bool]:
    c = webhook_events.c
    return c.status == "failed" if all_failed else c.id.in_(list(ids or ()))


def retry(store: Store, ids: Iterable[int] | None = None, *, all_failed: bool = False) -> dict[int, str]:
    """Put failed events (those listed, or every failed one) back to pending with no attempts
    counted. Returns each chosen event's outcome: ``retried`` or why not."""
    c, out = webhook_events.c, {}
    with store.begin() as conn:
        rows = conn.execute(sa.select(c.id, c.status, c.body.is_not(None)).where(_chosen(ids, all_failed))).all()
        for event, status, has_body in rows:
            if status != "failed":
                out[event] = f"is {status}, not failed"
            elif not has_body:
                out[event] = "its body was not kept; the next pull picks the order up"
            else:
                out[event] = "retried"
        again = [e for e, outcome in out.items() if outcome == "retried"]
        if again:
            conn.execute(
                webhook_events.update()
                .where(c.id.in_(again))
                .values(status="pending", attempts=0, next_attempt_at=None, error=None, processed_at=None)
            )
    return out


def drop(store: Store, ids: Iterable[int] | None = None, *, all_failed: bool = False) -> dict[int, str]:
    """Set pending or failed events aside for good: ``dropped``, body forgotten, row kept (a replay
    of the same event is still recognised). Returns each chosen event's outcome."""
    c, out, now = webhook_events.c, {}, utcnow()
    with store.begin() as conn:
        for event, status in conn.execute(sa.select(c.id, c.status).where(_chosen(ids, all_failed))).all():
            out[event] = "dropped" if status in ("pending", "failed") else f"is {status}, not pending or failed"
        gone = [e for e, outcome in out.items() if outcome == "dropped"]
        if gone:
            conn.execute(
                webhook_events.update()
                .where(c.id.in_(gone))
                .values(status="dropped", body=None, processed_at=now, next_attempt_at=None)
            )
    return out


def prune(store: Store, before: datetime) -> int:
    """Forget done and dropped events received before ``before`` (failed ones wait for a human)."""
    c = webhook_events.c
    with store.begin() as conn:
        return conn.execute(
            webhook_events.delete().where(c.status.in_(("done", "dropped")), c.received_at < before)
        ).rowcount


def counts(store: Store) -> dict[str, int]:
    c = webhook_events.c
    with store.engine.connect() as conn:
        return {status: n for status, n in conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status))}
