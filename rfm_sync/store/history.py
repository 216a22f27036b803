"""Group history: every change of a customer's group, one row a change.

The diff appends a row for each customer whose group it changed — from a group, to a group, a first
assignment (``from_group`` None) or a clearing (``to_group`` None) — in the transaction that writes
the new state, so the history and the state never disagree after a crash. A row is a change, not a
run: a shop of a million customers of whom two thousand move a day grows by two thousand rows a day.

``as_of`` is the day the run scored as of (the shop's day): from that day on the customer is in
``to_group``. So "which group was this customer in on day D" is one query — the newest row with
``as_of <= D`` (:func:`groups_on`) — and a cohort's later groups are a sorted join
(:mod:`rfm_sync.outcomes`). Rows are kept per ``scheme``: groups of two schemes are not comparable.

Rows with ``run_id`` None were reconstructed by a back-test (:mod:`rfm_sync.backtest`) for days
before the first recorded run; :func:`replace_backtest` swaps them as a whole, and never touches the
rows real runs wrote.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import Store
from ._sql import CHUNK, executemany, is_sqlite, map_unique, plain_rows, sqlite_time
from .schema import group_history

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["customer_key", "as_of", "from_group", "to_group"]


def record(
    conn: Connection,
    moves: pd.DataFrame,
    *,
    scheme: str,
    as_of: date,
    changed_at: datetime,
    run_id: int | None,
) -> int:
    """Append the group changes among ``moves`` (columns customer_key, before, after, and held_out when
    there is a hold-out): the rows whose ``before`` and ``after`` differ, a missing one against a group
    included. Returns how many were written (on SQLite one executemany per chunk of plain tuples, as
    the diff's other writes)."""
    import pandas as pd

    before, after = moves["before"].astype(object), moves["after"].astype(object)
    missing_before, missing_after = before.isna(), after.isna()
    moved = (missing_before != missing_after) | (~missing_before & (before != after))
    frame = pd.DataFrame(
        {
            "scheme": scheme,
            "customer_key": moves["customer_key"].astype(object)[moved].to_numpy(),
            "as_of": as_of.isoformat() if is_sqlite(conn) else as_of,
            "from_group": before[moved].where(~missing_before[moved], None).to_numpy(),
            "to_group": after[moved].where(~missing_after[moved], None).to_numpy(),
            "changed_at": sqlite_time(changed_at) if is_sqlite(conn) else changed_at,
            "run_id": run_id,
            "held_out": moves["held_out"].astype(object)[moved].to_numpy() if "held_out" in moves else None,
        },
        dtype=object,
    )
    if frame.empty:
        return 0
    # in key order: the index on (scheme, customer_key, as_of) then grows at its end instead of at random
    # places (a first cycle writes a row per customer: about a third faster on SQLite)
    frame = frame.sort_values("customer_key", kind="stable", ignore_index=True)
    if is_sqlite(conn):
        names = ", ".join(frame.columns)
        executemany(conn, f"INSERT INTO group_history ({names}) VALUES ({', '.join('?' * len(frame.columns))})", frame)
    else:
        # the column labels are the table's column names (strings); pandas-stubs type a record's keys as Hashable
        records = cast(list[dict[str, Any]], frame.to_dict("records"))
        for i in range(0, len(records), CHUNK):
            conn.execute(group_history.insert(), records[i : i + CHUNK])
    return len(frame)


def load(store: Store, scheme: str, keys: list[str] | None = None) -> pd.DataFrame:
    """The history of ``scheme`` (:data:`COLUMNS` plus ``id``, ``run_id`` and ``held_out``), in the order it happened:
    by customer, day, then the order rows were written. ``keys``: only these customers."""
    import pandas as pd

    c = group_history.c
    query = sa.select(c.id, c.customer_key, c.as_of, c.from_group, c.to_group, c.run_id, c.held_out).where(
        c.scheme == scheme
    )
    if keys is not None:
        query = query.where(c.customer_key.in_(keys))
    with store.engine.connect() as conn:  # plain rows: no per-row result processing for a million of them
        _, rows = plain_rows(conn, query.order_by(c.customer_key, c.as_of, c.id))
    frame = pd.DataFrame(rows, columns=["id", *COLUMNS, "run_id", "held_out"], dtype=object)
    if len(frame):  # a day is SQLite's text or the driver's date; each distinct one converted once
        frame["as_of"] = map_unique(frame["as_of"], _as_date)
    return frame


def groups_on(store: Store, scheme: str, day: date, keys: list[str] | None = None) -> dict[str, str | None]:
    """customer_key → the group the customer was in on ``day`` (None: cleared on or before it), for
    every customer with a history up to that day. One query: the newest row per customer."""
    c = group_history.c
    newest = sa.func.row_number().over(partition_by=c.customer_key, order_by=(c.as_of.desc(), c.id.desc()))
    inner = sa.select(c.customer_key, c.to_group, newest.label("n")).where(c.scheme == scheme, c.as_of <= day)
    if keys is not None:
        inner = inner.where(c.customer_key.in_(keys))
    sub = inner.subquery()
    with store.engine.connect() as conn:
        _, rows = plain_rows(conn, sa.select(sub.c.customer_key, sub.c.to_group).where(sub.c.n == 1))
    return {key: group for key, group in rows}


def first_recorded_day(store: Store, scheme: str) -> date | None:
    """The earliest day a real run recorded for ``scheme`` (back-test rows aside)."""
    c = group_history.c
    with store.engine.connect() as conn:
        day = conn.execute(sa.select(sa.func.min(c.as_of)).where(c.scheme == scheme, c.run_id.is_not(None))).scalar()
    return _as_date(day)


def replace_backtest(store: Store, scheme: str, days: list[tuple[date, pd.DataFrame]], changed_at: datetime) -> int:
    """Replace every back-test row of ``scheme`` by the changes of ``days`` (each day and its moves, as
    :func:`record` takes them) in one transaction; the rows of real runs stay. Returns how many were written."""
    c = group_history.c
    with store.begin() as conn:
        conn.execute(group_history.delete().where(c.scheme == scheme, c.run_id.is_(None)))
        return sum(
            record(conn, moves, scheme=scheme, as_of=day, changed_at=changed_at, run_id=None) for day, moves in days
        )


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def known_until(store: Store, scheme: str) -> date | None:
    """The last day the groups of ``scheme`` are known for: the newest run that scored (the diff
    records its cut points) or the newest history row (a back-test's last day), whichever is later."""
    from .schema import runs

    c = group_history.c
    with store.engine.connect() as conn:
        run_day = conn.execute(
            sa.select(sa.func.max(runs.c.as_of)).where(runs.c.scheme == scheme, runs.c.cut_points.is_not(None))
        ).scalar()
        row_day = conn.execute(sa.select(sa.func.max(c.as_of)).where(c.scheme == scheme)).scalar()
    days = [d for d in (_as_date(run_day), _as_date(row_day)) if d is not None]
    return max(days) if days else None
