"""What the pull writes and the scoring reads: orders, customers' contacts, source cursors, quarantined rows.

A pulled page's orders, customers, quarantined rows and cursor are written in one transaction by
the caller (``with store.begin() as conn``); the writes here take that connection. Orders are
upserted by (source, order_id), so re-reading a page is harmless. :func:`aggregate` turns the
qualifying orders into the engine's input, one row per customer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import Store, utcnow
from ._sql import CHUNK, insert, plain_rows, select_frame
from .schema import UtcDateTime, customers, orders, quarantine, source_cursors

if TYPE_CHECKING:
    import pandas as pd


def upsert_orders(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert or update by (source, order_id); an older ``updated_at`` never overwrites a newer one,
    and a row equal to the stored one (``ingested_at`` aside) is left as it is. Returns how many
    orders were inserted or changed: a re-read export with one edited order counts 1, not the file."""
    if not rows:
        return 0
    stmt = insert(conn, orders)
    cols = {c.name: stmt.excluded[c.name] for c in orders.columns if c.name not in ("source", "order_id")}
    newer = sa.or_(
        orders.c.updated_at.is_(None),
        stmt.excluded.updated_at.is_(None),
        stmt.excluded.updated_at >= orders.c.updated_at,
    )
    differs = sa.or_(*(orders.c[name].is_distinct_from(value) for name, value in cols.items() if name != "ingested_at"))
    # preserve_rowcount: SQLAlchemy reads the count before it closes the cursor — psycopg's count of
    # an INSERT ... ON CONFLICT is otherwise gone (-1) by the time it is asked
    result = conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["source", "order_id"], set_=cols, where=sa.and_(newer, differs)
        ).execution_options(preserve_rowcount=True),
        rows,
    )
    # the driver's count of rows written (sqlite3 and psycopg sum it over executemany); a driver
    # that cannot tell (-1) gets the rows offered, as before
    count = result.rowcount
    return count if count is not None and count >= 0 and conn.dialect.supports_sane_multi_rowcount else len(rows)


def upsert_customers(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = insert(conn, customers)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["customer_key"],
            set_={
                "email": sa.func.coalesce(stmt.excluded.email, customers.c.email),
                "phone": sa.func.coalesce(stmt.excluded.phone, customers.c.phone),
                "updated_at": stmt.excluded.updated_at,
            },
        ),
        rows,
    )


def add_quarantine(conn: Connection, run_id: int | None, rows: list[dict[str, Any]]) -> None:
    if rows:
        now = utcnow()
        conn.execute(quarantine.insert(), [{**r, "run_id": run_id, "created_at": now} for r in rows])


def order_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()


def contacts_frame(store: Store, keys: list[str]) -> pd.DataFrame:
    """customer_key, email, phone for these customers (the whole table when most are asked for)."""
    import pandas as pd

    if not keys:
        return pd.DataFrame(columns=["customer_key", "email", "phone"], dtype=object)
    every = len(keys) > 20_000
    frame = select_frame(store, customers, ["customer_key", "email", "phone"], None if every else keys)
    return frame[frame["customer_key"].isin(keys)] if every else frame


# ---------------------------------------------------------------------- cursors
def get_cursor(store: Store, source: str) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(source_cursors.c.cursor).where(source_cursors.c.source == source)).scalar()


def set_cursor(conn: Connection, source: str, cursor: str | None) -> None:
    stmt = insert(conn, source_cursors)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["source"], set_={"cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at}
        ),
        {"source": source, "cursor": cursor, "updated_at": utcnow()},
    )


# ---------------------------------------------------------------------- scoring inputs
def aggregate(
    store: Store,
    end: datetime,
    window_start: datetime,
    keys: Iterable[str] | None = None,
    windows: dict[str, datetime] | None = None,
) -> pd.DataFrame:
    """Per customer with a qualifying order before ``end``: first and last order time, the
    number of qualifying orders (``orders``, all time), and the count and sum (×10⁴) of
    qualifying orders in ``[window_start, end)`` (``frequency``, ``monetary_e4``) and in each
    named extra window ``[start, end)`` (``frequency_<name>``, ``monetary_e4_<name>``).
    ``keys``: only these customers."""
    import pandas as pd

    starts = {"": window_start, **{f"_{name}": start for name, start in (windows or {}).items()}}
    sums = []
    for i, (suffix, start) in enumerate(starts.items()):
        inside = orders.c.placed_at >= sa.bindparam(f"ws{i}", start, type_=UtcDateTime())
        sums += [
            sa.func.sum(sa.case((inside, 1), else_=0)).label(f"frequency{suffix}"),
            sa.func.sum(sa.case((inside, orders.c.amount_e4), else_=0)).label(f"monetary_e4{suffix}"),
        ]
    query = (
        sa.select(
            orders.c.customer_key,
            sa.func.min(orders.c.placed_at).label("first_order_at"),
            sa.func.max(orders.c.placed_at).label("last_order_at"),
            sa.func.count().label("orders"),
            *sums,
        )
        .where(orders.c.qualifies, orders.c.placed_at < sa.bindparam("end", end, type_=UtcDateTime()))
        .group_by(orders.c.customer_key)
    )
    if keys is not None:
        query = query.where(orders.c.customer_key.in_(list(keys)))
    with store.engine.connect() as conn:  # plain rows: no per-row datetime objects for millions of customers
        columns, rows = plain_rows(conn, query)
    return _typed_aggregates(pd.DataFrame(rows, columns=columns))


def shared_emails(store: Store) -> int:
    """How many email addresses more than one customer key holds (an account and a guest's orders, say)."""
    c = customers.c
    email = sa.func.lower(sa.func.trim(c.email))
    shared = sa.select(email).where(c.email.is_not(None)).group_by(email).having(sa.func.count() > 1).subquery()
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(shared)).scalar() or 0)


def stored_keys(store: Store, ids: list[tuple[str, str]]) -> set[str]:
    """The customer keys these orders ((source, order_id)) are stored under now: before an order is
    written again, the customer it may be leaving (a reassigned or merged customer's order)."""
    found: set[str] = set()
    with store.engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            query = sa.select(orders.c.customer_key).where(
                sa.tuple_(orders.c.source, orders.c.order_id).in_(ids[i : i + CHUNK])
            )
            found.update(conn.execute(query).scalars())
    return found


def qualifying_orders(store: Store, keys: list[str], since: datetime) -> pd.DataFrame:
    """The qualifying orders of these customers placed at or after ``since``: customer_key, placed_at
    (UTC), amount_e4 (the shop currency's, ×10⁴)."""
    import pandas as pd

    frames = []
    with store.engine.connect() as conn:
        for i in range(0, len(keys), CHUNK):
            query = sa.select(orders.c.customer_key, orders.c.placed_at, orders.c.amount_e4).where(
                orders.c.qualifies,
                orders.c.placed_at >= sa.bindparam("since", since, type_=UtcDateTime()),
                orders.c.customer_key.in_(keys[i : i + CHUNK]),
            )
            columns, rows = plain_rows(conn, query)
            frames.append(pd.DataFrame(rows, columns=columns))
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["customer_key", "placed_at", "amount_e4"])
    )
    frame["placed_at"] = _utc_series(frame["placed_at"])
    frame["amount_e4"] = frame["amount_e4"].astype("int64")
    return frame


def _typed_aggregates(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("first_order_at", "last_order_at"):
        frame[col] = _utc_series(frame[col])
    for col in frame.columns[3:]:
        frame[col] = frame[col].astype("int64")
    return frame


def _utc_series(values: pd.Series) -> pd.Series:
    """Aware datetimes, or SQLite's naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, as a UTC series."""
    import pandas as pd

    if len(values) and isinstance(values.iloc[0], str):
        return pd.to_datetime(values, format="%Y-%m-%d %H:%M:%S.%f", utc=True)
    return pd.to_datetime(values, utc=True)
