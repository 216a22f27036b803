"""The run records: one row per cycle, started before its work and finished with what it did.

A run starts as ``running`` in a transaction of its own, so a crash leaves a trace. The diff
records it ``scored`` in the diff's transaction; the end of the cycle records ``ok``, ``partial``
or ``failed``. ``stats``, ``group_counts``, ``cut_points`` and ``warnings`` are JSON text.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import Store, utcnow
from .schema import runs

JSON_COLUMNS = ("stats", "group_counts", "cut_points", "warnings")


def start_run(store: Store, as_of: date, scheme: str) -> int:
    with store.begin() as conn:
        return conn.execute(
            runs.insert().values(started_at=utcnow(), as_of=as_of, scheme=scheme, status="running")
        ).inserted_primary_key[0]


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    status: str,
    stats: dict[str, Any] | None = None,
    group_counts: dict[str, int] | None = None,
    cut_points: Any = None,
    warnings: list[str] | None = None,
    error: str | None = None,
) -> None:
    """Record the run's end; a JSON column given as None keeps what it holds."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    for key, val in (
        ("stats", stats),
        ("group_counts", group_counts),
        ("cut_points", cut_points),
        ("warnings", warnings),
    ):
        if val is not None:
            values[key] = json.dumps(val, default=str)
    conn.execute(runs.update().where(runs.c.id == run_id).values(**values))


def recent_runs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The newest ``limit`` runs, newest first, JSON columns parsed (None when empty)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        for key in JSON_COLUMNS:
            item[key] = json.loads(item[key]) if item[key] else None
        out.append(item)
    return out
