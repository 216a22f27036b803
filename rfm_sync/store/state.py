"""Customer state (each customer's group, scores and last property snapshot) and frozen cut points.

The diff reads and writes every customer of a shop at once, so state moves as whole columns
(:mod:`._sql`): reads come back as DataFrames with times left as the database's text (SQLite) and
parsed only for the few distinct values; writes are one ``executemany`` per chunk of pre-built
tuples. :func:`sqlite_time`, :func:`parse_time` and :func:`map_unique` are that time format and that
conversion, for the diff that builds the rows (:mod:`rfm_sync.diffing`).

Frozen cut points (``calibrations``) are kept here too: they are state of the scoring, read before
each score and written in the diff's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import Store, utcnow
from ._sql import CHUNK, executemany, insert, is_sqlite, map_unique, parse_time, select_frame, sqlite_time
from .schema import calibrations, customer_state

if TYPE_CHECKING:
    import pandas as pd

STATE_COLUMNS = [
    "customer_key",
    "current_group",
    "previous_group",
    "group_changed_at",
    "rfm_score",
    "properties",
    "labels",
    "run_id",
]


def load_state_frame(store: Store, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """customer_state as a DataFrame (``group_changed_at`` as stored); ``keys``: only these customers."""
    return select_frame(store, customer_state, STATE_COLUMNS[:-1], None if keys is None else list(keys))


def previous_scores(store: Store) -> pd.Series:
    """customer_key → last rfm_score (for the hysteresis margin)."""
    import pandas as pd

    frame = select_frame(store, customer_state, ["customer_key", "rfm_score"], None)
    return pd.Series(frame["rfm_score"].to_numpy(), index=frame["customer_key"].to_numpy(), dtype=object)


def write_state(conn: Connection, rows: pd.DataFrame) -> None:
    """Insert or replace customer_state rows (columns :data:`STATE_COLUMNS`, times as aware datetimes or text)."""
    if rows.empty:
        return
    if is_sqlite(conn):
        sql = (
            f"INSERT INTO customer_state ({', '.join(STATE_COLUMNS)}) VALUES ({', '.join('?' * len(STATE_COLUMNS))}) "
            f"ON CONFLICT (customer_key) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:])
        )
        frame = rows[STATE_COLUMNS].copy()
        frame["group_changed_at"] = map_unique(
            frame["group_changed_at"], lambda v: sqlite_time(v) if isinstance(v, datetime) else v
        )
        executemany(conn, sql, frame)
        return
    stmt = insert(conn, customer_state)
    stmt = stmt.on_conflict_do_update(
        index_elements=["customer_key"], set_={c: stmt.excluded[c] for c in STATE_COLUMNS[1:]}
    )
    # the labels are STATE_COLUMNS, strings; pandas-stubs types a record's keys as Hashable
    records = cast(list[dict[str, Any]], rows[STATE_COLUMNS].to_dict("records"))
    for r in records:
        r["group_changed_at"] = parse_time(r["group_changed_at"])
    for i in range(0, len(records), CHUNK):
        conn.execute(stmt, records[i : i + CHUNK])


def delete_state(conn: Connection, keys: list[str]) -> None:
    for i in range(0, len(keys), 5000):
        conn.execute(customer_state.delete().where(customer_state.c.customer_key.in_(keys[i : i + 5000])))


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
    q = sa.select(calibrations).where(calibrations.c.scheme == scheme).order_by(calibrations.c.id.desc()).limit(20)
    with store.engine.connect() as conn:
        for row in conn.execute(q).mappings():
            data = json.loads(row["cut_points"])
            if data.get("window_days") == window_days:
                return {
                    "id": row["id"],
                    "as_of": row["as_of"],
                    "computed_at": row["computed_at"],
                    "cut_points": data["points"],
                    "run_id": row["run_id"],
                    "population": stored_population(data),
                }
    return None


def add_calibration(
    conn: Connection,
    scheme: str,
    window_days: int,
    as_of: date,
    cut_points: dict[str, Any],
    run_id: int | None,
    population: int,
) -> None:
    """Freeze these cut points, computed over ``population`` customers (kept in the JSON, no migration).
    Never over no customers: the caller decides what is worth freezing; this refuses the one certain mistake."""
    if population <= 0:
        raise ValueError("a calibration over no customers is never stored")
    conn.execute(
        calibrations.insert().values(
            scheme=scheme,
            as_of=as_of,
            computed_at=utcnow(),
            run_id=run_id,
            cut_points=json.dumps(
                {"window_days": window_days, "points": cut_points, "population": population}, sort_keys=True
            ),
        )
    )


def is_due(
    calibration: dict[str, Any] | None,
    as_of: date,
    recalibrate_days: int,
    *,
    population: int | None = None,
    population_change: Any = None,
) -> bool:
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
