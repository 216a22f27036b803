"""Bulk reads and writes for the diff step, and frozen cut points (``calibrations``).

The diff handles every customer of a shop at once (a million rows at the benchmark size), so these
functions move whole columns: reads come back as DataFrames with times left as the database's
text (SQLite) and parsed only for the few distinct values; writes are one ``executemany`` per
chunk of pre-built tuples. On SQLite the raw driver is used (no per-row bind processing); other
databases go through SQLAlchemy Core with the same rows.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import Store, calibrations, customer_state, customers, outbox, utcnow

CHUNK = 50_000
STATE_COLUMNS = ["customer_key", "current_group", "previous_group", "group_changed_at", "rfm_score", "properties",
                 "labels", "run_id"]


def sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy stores for an aware datetime in SQLite (naive UTC with microseconds)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_time(value: Any) -> datetime | None:
    """A stored time (aware datetime, or SQLite's naive UTC text) as an aware UTC datetime."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _select_frame(store: Store, table: sa.Table, columns: list[str], keys: Iterable[str] | None) -> pd.DataFrame:
    cols = [table.c[c] for c in columns]
    out = []
    with store.engine.connect() as conn:
        chunks = [None] if keys is None else [list(keys)[i:i + CHUNK] for i in range(0, len(list(keys)), CHUNK)]
        for chunk in chunks:
            query = sa.select(*cols)
            if chunk is not None:
                query = query.where(table.c.customer_key.in_(chunk))
            if _is_sqlite(conn):  # raw text times: parsed later, once per distinct value
                compiled = query.compile(conn, compile_kwargs={"render_postcompile": True, "literal_binds": False})
                params = compiled.construct_params()
                cursor = conn.connection.driver_connection.execute(  # plain tuples, same transaction
                    str(compiled), tuple(params[p] for p in compiled.positiontup or ()))
                rows = cursor.fetchall()
            else:
                rows = conn.execute(query).all()
            out.append(pd.DataFrame(rows, columns=columns, dtype=object))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns, dtype=object)


def load_state_frame(store: Store, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """customer_state as a DataFrame (``group_changed_at`` as stored); ``keys``: only these customers."""
    return _select_frame(store, customer_state, STATE_COLUMNS[:-1], None if keys is None else list(keys))


def previous_scores(store: Store) -> pd.Series:
    """customer_key → last rfm_score (for the hysteresis margin)."""
    frame = _select_frame(store, customer_state, ["customer_key", "rfm_score"], None)
    return pd.Series(frame["rfm_score"].to_numpy(), index=frame["customer_key"].to_numpy(), dtype=object)


def contacts_frame(store: Store, keys: list[str]) -> pd.DataFrame:
    """customer_key, email, phone for these customers (the whole table when most are asked for)."""
    if not keys:
        return pd.DataFrame(columns=["customer_key", "email", "phone"], dtype=object)
    every = len(keys) > 20_000
    frame = _select_frame(store, customers, ["customer_key", "email", "phone"], None if every else keys)
    return frame[frame["customer_key"].isin(keys)] if every else frame


def write_state(conn: Connection, rows: pd.DataFrame) -> None:
    """Insert or replace customer_state rows (columns :data:`STATE_COLUMNS`, times as aware datetimes or text)."""
    if rows.empty:
        return
    if _is_sqlite(conn):
        sql = (f"INSERT INTO customer_state ({', '.join(STATE_COLUMNS)}) VALUES ({', '.join('?' * len(STATE_COLUMNS))}) "
               f"ON CONFLICT (customer_key) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:]))
        frame = rows[STATE_COLUMNS].copy()
        frame["group_changed_at"] = _map_unique(frame["group_changed_at"],
                                                lambda v: sqlite_time(v) if isinstance(v, datetime) else v)
        _executemany(conn, sql, frame)
        return
    stmt = store_insert(conn, customer_state)
    stmt = stmt.on_conflict_do_update(index_elements=["customer_key"],
                                      set_={c: stmt.excluded[c] for c in STATE_COLUMNS[1:]})
    records = rows[STATE_COLUMNS].to_dict("records")
    for r in records:
        r["group_changed_at"] = parse_time(r["group_changed_at"])
    for i in range(0, len(records), CHUNK):
        conn.execute(stmt, records[i:i + CHUNK])


def delete_state(conn: Connection, keys: list[str]) -> None:
    for i in range(0, len(keys), 5000):
        conn.execute(customer_state.delete().where(customer_state.c.customer_key.in_(keys[i:i + 5000])))


def enqueue(conn: Connection, rows: pd.DataFrame) -> None:
    """Pending outbox rows from a frame of destination, customer_key, run_id, payload (JSON text)."""
    if rows.empty:
        return
    now = utcnow()
    if _is_sqlite(conn):
        frame = rows[["destination", "customer_key", "run_id", "payload"]].copy()
        frame["status"], frame["attempts"], frame["created_at"] = "pending", 0, sqlite_time(now)
        _executemany(conn, "INSERT INTO outbox (destination, customer_key, run_id, payload, status, attempts, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", frame)
        return
    records = [{**r, "status": "pending", "attempts": 0, "created_at": now}
               for r in rows[["destination", "customer_key", "run_id", "payload"]].to_dict("records")]
    for i in range(0, len(records), CHUNK):
        conn.execute(outbox.insert(), records[i:i + CHUNK])


def _map_unique(values: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` once per distinct value (times repeat: a few run timestamps across millions of rows)."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    mapped = pd.Series([fn(v) for v in uniques] + [None], dtype=object)
    return pd.Series(mapped.to_numpy()[codes], index=values.index, dtype=object)


def _executemany(conn: Connection, sql: str, frame: pd.DataFrame) -> None:
    columns = []
    for name in frame.columns:  # Python values per column; missing values (NaN/NaT) as None
        col = frame[name]
        values = col.astype(object).tolist()
        if col.hasnans:
            values = [None if v is None or v != v else v for v in values]
        columns.append(values)
    for i in range(0, len(frame), CHUNK):
        conn.exec_driver_sql(sql, list(zip(*(c[i:i + CHUNK] for c in columns))))


def store_insert(conn: Connection, table: sa.Table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


# ---------------------------------------------------------------------- frozen cut points
def current_calibration(store: Store, scheme: str, window_days: int) -> dict[str, Any] | None:
    """The newest calibration of this scheme and window: ``{"id", "as_of", "computed_at", "cut_points"}``."""
    q = (sa.select(calibrations).where(calibrations.c.scheme == scheme).order_by(calibrations.c.id.desc()).limit(20))
    with store.engine.connect() as conn:
        for row in conn.execute(q).mappings():
            data = json.loads(row["cut_points"])
            if data.get("window_days") == window_days:
                return {"id": row["id"], "as_of": row["as_of"], "computed_at": row["computed_at"],
                        "cut_points": data["points"], "run_id": row["run_id"]}
    return None


def add_calibration(conn: Connection, scheme: str, window_days: int, as_of: date, cut_points: dict[str, Any],
                    run_id: int | None) -> None:
    conn.execute(calibrations.insert().values(
        scheme=scheme, as_of=as_of, computed_at=utcnow(), run_id=run_id,
        cut_points=json.dumps({"window_days": window_days, "points": cut_points}, sort_keys=True)))


def is_due(calibration: dict[str, Any] | None, as_of: date, recalibrate_days: int) -> bool:
    """Recalibrate when there is none, when it is ``recalibrate_days`` old, or when scoring an earlier day."""
    if calibration is None:
        return True
    age = (as_of - calibration["as_of"]).days
    return age >= recalibrate_days or age < 0
