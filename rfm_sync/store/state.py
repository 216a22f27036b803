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
from decimal import Decimal
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
def stored_population(data: dict[str, Any]) -> int | None:
    """How many customers a stored calibration was computed over: its ``population``; for one stored
    before populations were recorded, 0 when every cut point list is empty (quantiles of nothing),
    else None (unknown: its cut points are used, no population rule applies)."""
    if data.get("population") is not None:
        return int(data["population"])
    points = data.get("points")
    if isinstance(points, dict) and points and all(not v for v in points.values()):
        return 0
    return None


def current_calibration(store: Store, scheme: str, window_days: int) -> dict[str, Any] | None:
    """The newest calibration of this scheme and window:
    ``{"id", "as_of", "computed_at", "cut_points", "run_id", "population"}`` (population: see
    :func:`stored_population`)."""
    q = (sa.select(calibrations).where(calibrations.c.scheme == scheme).order_by(calibrations.c.id.desc()).limit(20))
    with store.engine.connect() as conn:
        for row in conn.execute(q).mappings():
            data = json.loads(row["cut_points"])
            if data.get("window_days") == window_days:
                return {"id": row["id"], "as_of": row["as_of"], "computed_at": row["computed_at"],
                        "cut_points": data["points"], "run_id": row["run_id"], "population": stored_population(data)}
    return None


def add_calibration(conn: Connection, scheme: str, window_days: int, as_of: date, cut_points: dict[str, Any],
                    run_id: int | None, population: int) -> None:
    """Freeze these cut points, computed over ``population`` customers (kept in the JSON, no migration).
    Never over no customers: the caller decides what is worth freezing; this refuses the one certain mistake."""
    if population <= 0:
        raise ValueError("a calibration over no customers is never stored")
    conn.execute(calibrations.insert().values(
        scheme=scheme, as_of=as_of, computed_at=utcnow(), run_id=run_id,
        cut_points=json.dumps({"window_days": window_days, "points": cut_points, "population": population},
                              sort_keys=True)))


def is_due(calibration: dict[str, Any] | None, as_of: date, recalibrate_days: int, *,
           population: int | None = None, population_change: Any = None) -> bool:
    """Recalibrate when there is none, when it is ``recalibrate_days`` old, when scoring an earlier day,
    when it was computed over no customers, or when ``population`` (customers now) differs from the
    calibration's by more than ``population_change`` (a fraction: |now / then - 1| > change).
    A calibration of unknown population is judged by its age alone."""
    if calibration is None:
        return True
    age = (as_of - calibration["as_of"]).days
    if age >= recalibrate_days or age < 0:
        return True
    then = calibration.get("population")
    if then is None:  # a calibration dict not from current_calibration: infer from its cut points
        then = stored_population({"points": calibration.get("cut_points")})
    if then is None:
        return False
    if then <= 0:
        return True
    if population is None or population_change is None:
        return False
    return abs(Decimal(population) - then) > Decimal(str(population_change)) * then
