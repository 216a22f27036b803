"""What the store modules share: the dialect's upsert, SQLite's time text, and moving whole columns.

The diff and the scoring read and write every customer of a shop at once (a million rows at the
benchmark size). On SQLite these helpers go through the raw driver — plain tuples, times left as
the stored text and converted once per distinct value — and write with one ``executemany`` per
chunk; other databases go through SQLAlchemy Core with the same rows.

pandas and numpy are imported inside the functions that use them, so opening the store and the
queries of ``rfm-sync status`` do not load them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sqlalchemy.dialects import postgresql, sqlite

    from . import Store

CHUNK = 50_000  # rows per executemany, and customer keys per IN list of a bulk read


def insert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of ``table`` in the connection's dialect, which has ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy stores for an aware datetime in SQLite (naive UTC with microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_time(value: Any) -> datetime | None:
    """A stored time (aware datetime, or SQLite's naive UTC text) as an aware UTC datetime."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: a missing value in a frame
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def plain_rows(conn: Connection, query: sa.Select) -> tuple[list[str], list[tuple]]:
    """The column names and rows of ``query`` as plain tuples. On SQLite by the raw driver in the
    same transaction: no per-row result processing, so times stay the stored text (a datetime
    parameter is bound as that text)."""
    if is_sqlite(conn):
        compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        driver = conn.connection.driver_connection
        assert driver is not None, "the connection is open: this runs inside its transaction"
        cursor = driver.execute(
            str(compiled),
            tuple(
                sqlite_time(params[name]) if isinstance(params[name], datetime) else params[name]
                for name in compiled.positiontup or ()
            ),
        )
        return [d[0] for d in cursor.description], cursor.fetchall()
    result = conn.execute(query)
    return list(result.keys()), [tuple(r) for r in result]


def select_frame(store: Store, table: sa.Table, columns: list[str], keys: Iterable[str] | None) -> pd.DataFrame:
    """``columns`` of ``table`` as an object-typed frame (times as stored); ``keys``: only these customers."""
    import pandas as pd

    cols = [table.c[c] for c in columns]
    out = []
    with store.engine.connect() as conn:
        chunks = [None] if keys is None else [list(keys)[i : i + CHUNK] for i in range(0, len(list(keys)), CHUNK)]
        for chunk in chunks:
            query = sa.select(*cols)
            if chunk is not None:
                query = query.where(table.c.customer_key.in_(chunk))
            out.append(pd.DataFrame(plain_rows(conn, query)[1], columns=columns, dtype=object))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns, dtype=object)


def map_unique(values: pd.Series, fn: Callable[[Any], Any]) -> np.ndarray:
    """``fn`` applied once per distinct value (None/NaN → ``fn(None)``), as an object array: times
    and groups repeat (a few run timestamps across millions of rows)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    table = np.array([fn(v) for v in uniques] + [fn(None)], dtype=object)
    return table[codes]


def executemany(conn: Connection, sql: str, frame: pd.DataFrame) -> None:
    """Run ``sql`` (``?`` placeholders, SQLite) for every row of ``frame``, one chunk at a time."""
    columns = []
    for name in frame.columns:  # Python values per column; missing values (NaN/NaT) as None
        col = frame[name]
        values = col.astype(object).tolist()
        if col.hasnans:
            values = [None if v is None or v != v else v for v in values]
        columns.append(values)
    for i in range(0, len(frame), CHUNK):
        conn.exec_driver_sql(sql, list(zip(*(c[i : i + CHUNK] for c in columns))))
