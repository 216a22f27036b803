"""The durable outbox: one row per (destination, changed customer snapshot).

Rows are written in the same transaction as the customer state they describe, drained oldest
first, and marked ``sent`` only after the destination accepted them. Only the newest pending
snapshot of a customer is sent: older pending ones are marked ``superseded`` first, so a stale
value is never pushed after a newer one.
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from . import Store, outbox, utcnow


def enqueue(conn: sa.Connection, rows: Any) -> None:
    """Add pending rows: a list of dicts, or a DataFrame (the diff's bulk path, one executemany per chunk)."""
    if not isinstance(rows, list):
        from .state_queries import enqueue as enqueue_frame

        enqueue_frame(conn, rows)
        return
    if rows:
        now = utcnow()
        conn.execute(outbox.insert(), [{**r, "status": "pending", "attempts": 0, "created_at": now} for r in rows])


def supersede(store: Store, destination: str) -> int:
    newer = sa.alias(outbox, "newer")
    exists_newer = sa.exists().where(newer.c.destination == outbox.c.destination,
                                     newer.c.customer_key == outbox.c.customer_key,
                                     newer.c.status == "pending", newer.c.id > outbox.c.id)
    with store.begin() as conn:
        return conn.execute(outbox.update().where(outbox.c.destination == destination, outbox.c.status == "pending",
                                                  exists_newer).values(status="superseded")).rowcount


def next_batch(store: Store, destination: str, after_id: int, limit: int) -> list[dict[str, Any]]:
    q = (sa.select(outbox.c.id, outbox.c.customer_key, outbox.c.run_id, outbox.c.payload, outbox.c.attempts)
         .where(outbox.c.destination == destination, outbox.c.status == "pending", outbox.c.id > after_id)
         .order_by(outbox.c.id).limit(limit))
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def mark_sent(store: Store, ids: list[int]) -> None:
    if not ids:
        return
    now = utcnow()
    with store.begin() as conn:
        for start in range(0, len(ids), 5000):
            conn.execute(outbox.update().where(outbox.c.id.in_(ids[start:start + 5000]), outbox.c.status == "pending")
                         .values(status="sent", sent_at=now, last_error=None))


def mark_failed(store: Store, failures: dict[int, str], max_attempts: int) -> int:
    """Record an attempt and its error; rows that reached ``max_attempts`` become ``dead``."""
    dead = 0
    with store.begin() as conn:
        for oid, error in failures.items():
            attempts = conn.execute(sa.select(outbox.c.attempts).where(outbox.c.id == oid)).scalar_one() + 1
            status = "dead" if attempts >= max_attempts else "pending"
            dead += status == "dead"
            conn.execute(outbox.update().where(outbox.c.id == oid).values(attempts=attempts, last_error=error[:500],
                                                                          status=status))
    return dead


def backlog(store: Store) -> dict[str, dict[str, int]]:
    q = sa.select(outbox.c.destination, outbox.c.status, sa.func.count()).group_by(outbox.c.destination,
                                                                                  outbox.c.status)
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for dest, status, n in conn.execute(q):
            out.setdefault(dest, {})[status] = n
    return out


def pending_count(store: Store, destination: str) -> int:
    q = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.destination == destination,
                                                             outbox.c.status == "pending")
    with store.engine.connect() as conn:
        return conn.execute(q).scalar_one()
