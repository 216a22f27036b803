"""The durable outbox: one row per (destination, changed customer snapshot).

A row is ``pending``, then ``sending`` while a destination has it and no acknowledgement is
recorded, then ``sent`` (or back to ``pending`` with its error, or ``dead``, or ``superseded``).

Rows are written in the same transaction as the customer state they describe, drained oldest
first, and marked ``sent`` only after the destination accepted them. Only the newest pending
snapshot of a customer is sent: older pending ones are marked ``superseded`` first, so a stale
value is never pushed after a newer one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import sqlalchemy as sa

from . import Store, utcnow
from ._sql import CHUNK, executemany, insert, is_sqlite, sqlite_time
from .schema import destination_state, outbox

STATUSES = ("pending", "sending", "sent", "superseded", "dead")  # every status a row can have
COLUMNS = ["destination", "customer_key", "run_id", "payload"]  # what a new row is given (payload: JSON text)


def enqueue(conn: sa.Connection, rows: Any) -> None:
    """Add pending rows: a list of dicts, or a DataFrame of :data:`COLUMNS` (the diff's bulk path:
    on SQLite one executemany per chunk of plain tuples)."""
    now = utcnow()
    if not isinstance(rows, list):
        if rows.empty:
            return
        if is_sqlite(conn):
            frame = rows[COLUMNS].copy()
            frame["status"], frame["attempts"], frame["created_at"] = "pending", 0, sqlite_time(now)
            executemany(
                conn,
                f"INSERT INTO outbox ({', '.join(frame.columns)}) VALUES ({', '.join('?' * len(frame.columns))})",
                frame,
            )
            return
        rows = rows[COLUMNS].to_dict("records")
    records = [{**r, "status": "pending", "attempts": 0, "created_at": now} for r in rows]
    for i in range(0, len(records), CHUNK):
        conn.execute(outbox.insert(), records[i : i + CHUNK])


def supersede(store: Store, destination: str) -> int:
    """Mark every pending snapshot that has a newer pending one for the same customer ``superseded``.

    A group change carried only by a superseded row is not lost: it is folded into the newest row
    (from the first pending change's origin to the latest group), so a flow that waits for the change
    still fires. A round trip (A → B → A) while the destination was unreachable leaves no change.
    """
    pending = sa.and_(outbox.c.destination == destination, outbox.c.status == "pending")
    with store.begin() as conn:
        keys = (
            conn.execute(
                sa.select(outbox.c.customer_key)
                .where(pending)
                .group_by(outbox.c.customer_key)
                .having(sa.func.count() > 1)
            )
            .scalars()
            .all()
        )
        superseded = 0
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                sa.select(outbox.c.id, outbox.c.customer_key, outbox.c.payload, outbox.c.attempts)
                .where(pending, outbox.c.customer_key.in_(keys[start : start + 500]))
                .order_by(outbox.c.id)
            ).all()
            by_key: dict[str, list[Any]] = {}
            for row in rows:
                by_key.setdefault(row.customer_key, []).append(row)
            for key, group in by_key.items():
                # a row the destination was already handed (and answered with a failure for it) may have
                # partly arrived — its event, say: it stays as it is, is sent again first, and only the
                # rows after it are folded
                tried = [i for i, r in enumerate(group[:-1]) if r.attempts]
                group = group[tried[-1] + 1 :] if tried else group
                if len(group) < 2:
                    continue
                payloads = [json.loads(r.payload) for r in group]
                merged = fold_transitions(key, payloads)
                if merged is not payloads[-1]:
                    conn.execute(
                        outbox.update()
                        .where(outbox.c.id == group[-1].id)
                        .values(payload=json.dumps(merged, sort_keys=True))
                    )
                conn.execute(
                    outbox.update().where(outbox.c.id.in_([r.id for r in group[:-1]])).values(status="superseded")
                )
                superseded += len(group) - 1
    return superseded


def fold_transitions(key: str, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest payload, with the group changes of the older ones folded into its transition."""
    newest = payloads[-1]
    changes = [p for p in payloads if p.get("transition")]
    if not changes or (len(changes) == 1 and changes[0] is newest):
        return newest
    first, last = changes[0], changes[-1]
    before, after = first["transition"], last["transition"]
    merged = dict(newest)
    if before.get("from") == after.get("to") and (before.get("labels_before") or {}) == (
        after.get("labels_after") or {}
    ):
        merged.update(transition=None, event_id=None, first_assignment=False)
        return merged
    merged["transition"] = {**after, "from": before.get("from"), "labels_before": before.get("labels_before")}
    merged["first_assignment"] = bool(first.get("first_assignment"))
    seed = "|".join([key, str(before.get("from")), str(after.get("to"))] + [str(p.get("event_id")) for p in changes])
    merged["event_id"] = hashlib.sha256(seed.encode()).hexdigest()[:32]
    return merged


def next_batch(
    store: Store, destination: str, after_id: int, limit: int, status: str = "pending"
) -> list[dict[str, Any]]:
    """The next ``limit`` rows of ``destination`` with this ``status`` and an id above ``after_id``.
    ``status="sending"``: rows handed to the destination whose acknowledgement was never recorded."""
    q = (
        sa.select(outbox.c.id, outbox.c.customer_key, outbox.c.run_id, outbox.c.payload, outbox.c.attempts)
        .where(outbox.c.destination == destination, outbox.c.status == status, outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    loads = orjson.loads
    return [{"id": r[0], "customer_key": r[1], "run_id": r[2], "payload": loads(r[3]), "attempts": r[4]} for r in rows]


def mark_sent(store: Store, ids: list[int], memory: list[dict[str, Any]] | None = None) -> None:
    """Acknowledge these rows, and record what their destination now holds (``memory``: rows of
    ``destination_state``) in the same transaction."""
    if not ids:
        return
    now = utcnow()
    with store.begin() as conn:
        for start in range(0, len(ids), 5000):
            conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(ids[start : start + 5000]), outbox.c.status.in_(("pending", "sending")))
                .values(status="sent", sent_at=now, last_error=None)
            )
        remember(conn, memory or [], now)


def mark_batch_sent(
    store: Store, destination: str, after_id: int, last_id: int, memory: list[dict[str, Any]] | None = None
) -> None:
    """Acknowledge a whole batch from :func:`next_batch` (every row was accepted): its rows, ``sending``
    since :func:`mark_sending`, become ``sent``. One range update instead of an id list (see
    :func:`_move`); ``memory`` as in :func:`mark_sent`."""
    now = utcnow()
    with store.begin() as conn:
        _move(conn, destination, after_id, last_id, "sending", status="sent", sent_at=now, last_error=None)
        remember(conn, memory or [], now)


def mark_sending(store: Store, destination: str, after_id: int, last_id: int) -> None:
    """Before a batch from :func:`next_batch` goes out: its rows (the pending rows with
    ``after_id < id <= last_id``) become ``sending``. A crash before the acknowledgement leaves them
    so; the next push sends exactly them again, unchanged, before anything newer, because the
    destination may already have them (an event re-sent with its own id is recorded once).
    A ``sending`` row is never superseded or folded into a newer one."""
    with store.begin() as conn:
        _move(conn, destination, after_id, last_id, "pending", status="sending")


def mark_unsent(store: Store, destination: str, after_id: int, last_id: int) -> None:
    """The batch marked by :func:`mark_sending` was refused before anything was handed over
    (:class:`~connectors.base.NotSentError`): its rows are pending again."""
    with store.begin() as conn:
        _move(conn, destination, after_id, last_id, "sending", status="pending")


def _move(conn: sa.Connection, destination: str, after_id: int, last_id: int, from_status: str, **values: Any) -> None:
    """Set ``values`` on the rows of ``destination`` in ``from_status`` with ``after_id < id <= last_id``
    (a batch from :func:`next_batch`: new rows always get higher ids, so the range is exactly it)."""
    conn.execute(
        outbox.update()
        .where(
            outbox.c.destination == destination,
            outbox.c.status == from_status,
            outbox.c.id > after_id,
            outbox.c.id <= last_id,
        )
        .values(**values)
    )


def remember(conn: sa.Connection, rows: list[dict[str, Any]], now: Any) -> None:
    """Upsert ``destination_state`` rows (destination, customer_key, rfm_group, previous_group,
    group_changed_at, labels, outbox_id)."""
    if not rows:
        return
    stmt = insert(conn, destination_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["destination", "customer_key"],
        set_={
            c: stmt.excluded[c]
            for c in ("rfm_group", "previous_group", "group_changed_at", "labels", "outbox_id", "sent_at")
        },
    )
    for start in range(0, len(rows), 5000):
        conn.execute(stmt, [{**r, "sent_at": now} for r in rows[start : start + 5000]])


def memory(store: Store, destination: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """customer_key → the ``destination_state`` row of these customers (those that have one)."""
    d = destination_state.c
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(keys), 5000):
            q = sa.select(d.customer_key, d.rfm_group, d.previous_group, d.group_changed_at, d.labels).where(
                d.destination == destination, d.customer_key.in_(keys[start : start + 5000])
            )
            out.update((r.customer_key, r._asdict()) for r in conn.execute(q))
    return out


def mark_failed(store: Store, failures: dict[int, str], max_attempts: int) -> int:
    """Record an attempt and its error; rows that reached ``max_attempts`` become ``dead``."""
    dead = 0
    with store.begin() as conn:
        for oid, error in failures.items():
            attempts = conn.execute(sa.select(outbox.c.attempts).where(outbox.c.id == oid)).scalar_one() + 1
            status = "dead" if attempts >= max_attempts else "pending"
            dead += status == "dead"
            conn.execute(
                outbox.update()
                .where(outbox.c.id == oid)
                .values(attempts=attempts, last_error=error[:500], status=status)
            )
    return dead


def backlog(store: Store) -> dict[str, dict[str, int]]:
    q = sa.select(outbox.c.destination, outbox.c.status, sa.func.count()).group_by(
        outbox.c.destination, outbox.c.status
    )
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for dest, status, n in conn.execute(q):
            out.setdefault(dest, {})[status] = n
    return out


def pending_count(store: Store, destination: str) -> int:
    q = (
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(outbox.c.destination == destination, outbox.c.status == "pending")
    )
    with store.engine.connect() as conn:
        return conn.execute(q).scalar_one()
