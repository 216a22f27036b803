"""The store: one database (SQLite file by default), migrated on open, written in transactions.

The library raises; callers decide what to print. Every write that belongs together happens in
one ``with store.begin() as conn:`` block, so a crash leaves either the old or the new state.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection, Engine

from .schema import (MONEY_SCALE, UtcDateTime, calibrations, customer_state, customers, destination_state, locks,
                     metadata, orders, outbox, quarantine, runs, source_cursors)

__all__ = ["Store", "MONEY_SCALE", "metadata", "orders", "customers", "customer_state", "runs",
           "calibrations", "source_cursors", "outbox", "destination_state", "quarantine", "locks", "utcnow"]

MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock key held while migrating (any fixed bigint; these bytes spell "rfm-sync")
MIGRATE_LOCK_KEY = int.from_bytes(b"rfm-sync", "big") & 0x7FFF_FFFF_FFFF_FFFF


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # the wait first: switching a new file to WAL needs a moment's exclusive lock, and a process
    # opening the store meanwhile must wait for it, not fail with "database is locked"
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a committed transaction survives a crash
    cur.execute("PRAGMA foreign_keys=ON")
    # 64 MB page cache (default 2 MB): the diff writes up to a million state and outbox rows into
    # indexed tables in one transaction, and a small cache re-reads index pages for every row
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


def _sqlite_time(moment: datetime) -> str:
    """An aware datetime in the text form SQLAlchemy stores in SQLite (naive UTC, microseconds)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _utc_series(values: pd.Series) -> pd.Series:
    """Aware datetimes, or SQLite's naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, as a UTC series."""
    if len(values) and isinstance(values.iloc[0], str):
        return pd.to_datetime(values, format="%Y-%m-%d %H:%M:%S.%f", utc=True)
    return pd.to_datetime(values, utc=True)


def _typed_aggregates(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("first_order_at", "last_order_at"):
        frame[col] = _utc_series(frame[col])
    for col in frame.columns[3:]:
        frame[col] = frame[col].astype("int64")
    return frame


def make_url(url: str, base_dir: Path) -> str:
    """Make a relative ``sqlite:///file`` path relative to ``base_dir`` (the config's folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix):]).resolve())
    return url


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str, base_dir: Path | None = None) -> "Store":
        """Open (creating and migrating as needed). Ordinary faults — an unwritable folder, a file
        that is not a store or is damaged, a store of a newer rfm-sync, a full disk — raise
        :class:`~rfm_sync.store.errors.StoreError` with what to do."""
        from .errors import describe, where_of

        url = make_url(url, base_dir or Path.cwd())
        where = where_of(url)
        try:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, future=True)
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            store = cls(engine)
            store.migrate()
        except Exception as exc:
            error = describe(exc, where)
            if error is None:
                raise
            raise error from None
        return store

    @property
    def where(self) -> str:
        from .errors import where_of

        return where_of(self.engine.url)

    def __repr__(self) -> str:  # the URL may hold a password
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def migrate(self) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                # Python's sqlite3 runs DDL outside a transaction; take the write lock first, so that
                # processes opening a new store at once migrate one after the other (the rest wait
                # on busy_timeout, then find the schema at head) instead of racing to create tables.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif self.engine.dialect.name == "postgresql":
                # the same on PostgreSQL: a transaction-scoped advisory lock (released at commit), so
                # the second process waits, then finds alembic_version at head instead of failing to
                # create it a second time
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def begin(self):
        return self.engine.begin()

    def close(self) -> None:
        self.engine.dispose()

    def quick_check(self, limit: int = 100) -> list[str] | None:
        """SQLite's ``PRAGMA quick_check``: [] for a sound file, else up to ``limit`` lines naming the
        damage (a store can open and answer queries with damaged pages elsewhere). None for other
        databases (they have no such check). Reads every page, so it takes a moment on a big store;
        a file too damaged for the check to finish raises as the driver does."""
        if self.engine.dialect.name != "sqlite":
            return None
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"PRAGMA quick_check({int(limit)})").scalars().all()
        lines = [line for row in rows for line in str(row).splitlines()
                 if line.strip() and not line.startswith("*** in database")]
        return [] if lines == ["ok"] else lines[:limit]

    # ------------------------------------------------------------------ orders and customers
    def _insert(self, table: sa.Table):
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def upsert_orders(self, conn: Connection, rows: list[dict[str, Any]]) -> int:
        """Insert or update by (source, order_id); an older ``updated_at`` never overwrites a newer one,
        and a row equal to the stored one (``ingested_at`` aside) is left as it is. Returns how many
        orders were inserted or changed: a re-read export with one edited order counts 1, not the file."""
        if not rows:
            return 0
        stmt = self._insert(orders)
        cols = {c.name: stmt.excluded[c.name] for c in orders.columns if c.name not in ("source", "order_id")}
        newer = sa.or_(orders.c.updated_at.is_(None), stmt.excluded.updated_at.is_(None),
                       stmt.excluded.updated_at >= orders.c.updated_at)
        differs = sa.or_(*(orders.c[name].is_distinct_from(value) for name, value in cols.items()
                           if name != "ingested_at"))
        # preserve_rowcount: SQLAlchemy reads the count before it closes the cursor — psycopg's count of
        # an INSERT ... ON CONFLICT is otherwise gone (-1) by the time it is asked
        result = conn.execute(stmt.on_conflict_do_update(index_elements=["source", "order_id"], set_=cols,
                                                         where=sa.and_(newer, differs))
                              .execution_options(preserve_rowcount=True), rows)
        # the driver's count of rows written (sqlite3 and psycopg sum it over executemany); a driver
        # that cannot tell (-1) gets the rows offered, as before
        count = result.rowcount
        return count if count is not None and count >= 0 and self.engine.dialect.supports_sane_multi_rowcount \
            else len(rows)

    def upsert_customers(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = self._insert(customers)
        conn.execute(stmt.on_conflict_do_update(index_elements=["customer_key"], set_={
            "email": sa.func.coalesce(stmt.excluded.email, customers.c.email),
            "phone": sa.func.coalesce(stmt.excluded.phone, customers.c.phone),
            "updated_at": stmt.excluded.updated_at,
        }), rows)

    def add_quarantine(self, conn: Connection, run_id: int | None, rows: list[dict[str, Any]]) -> None:
        if rows:
            now = utcnow()
            conn.execute(quarantine.insert(), [{**r, "run_id": run_id, "created_at": now} for r in rows])

    def order_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()

    # ------------------------------------------------------------------ cursors
    def get_cursor(self, source: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(source_cursors.c.cursor).where(source_cursors.c.source == source)).scalar()

    def set_cursor(self, conn: Connection, source: str, cursor: str | None) -> None:
        stmt = self._insert(source_cursors)
        conn.execute(stmt.on_conflict_do_update(index_elements=["source"], set_={
            "cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at}),
            {"source": source, "cursor": cursor, "updated_at": utcnow()})

    # ------------------------------------------------------------------ runs
    def start_run(self, as_of: date, scheme: str) -> int:
        with self.begin() as conn:
            return conn.execute(runs.insert().values(started_at=utcnow(), as_of=as_of, scheme=scheme,
                                                     status="running")).inserted_primary_key[0]

    def finish_run(self, conn: Connection, run_id: int, *, status: str, stats: dict[str, Any] | None = None,
                   group_counts: dict[str, int] | None = None, cut_points: Any = None,
                   warnings: list[str] | None = None, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
        for key, val in (("stats", stats), ("group_counts", group_counts), ("cut_points", cut_points),
                         ("warnings", warnings)):
            if val is not None:
                values[key] = json.dumps(val, default=str)
        conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("stats", "group_counts", "cut_points", "warnings"):
                item[key] = json.loads(item[key]) if item[key] else None
            out.append(item)
        return out

    # ------------------------------------------------------------------ scoring inputs
    def aggregate(self, end: datetime, window_start: datetime, keys: Iterable[str] | None = None,
                  windows: dict[str, datetime] | None = None) -> pd.DataFrame:
        """Per customer with a qualifying order before ``end``: first and last order time, the
        number of qualifying orders (``orders``, all time), and the count and sum (×10⁴) of
        qualifying orders in ``[window_start, end)`` (``frequency``, ``monetary_e4``) and in each
        named extra window ``[start, end)`` (``frequency_<name>``, ``monetary_e4_<name>``).
        ``keys``: only these customers."""
        starts = {"": window_start, **{f"_{name}": start for name, start in (windows or {}).items()}}
        sums = []
        for i, (suffix, start) in enumerate(starts.items()):
            inside = orders.c.placed_at >= sa.bindparam(f"ws{i}", start, type_=UtcDateTime())
            sums += [sa.func.sum(sa.case((inside, 1), else_=0)).label(f"frequency{suffix}"),
                     sa.func.sum(sa.case((inside, orders.c.amount_e4), else_=0)).label(f"monetary_e4{suffix}")]
        query = (sa.select(
            orders.c.customer_key,
            sa.func.min(orders.c.placed_at).label("first_order_at"),
            sa.func.max(orders.c.placed_at).label("last_order_at"),
            sa.func.count().label("orders"),
            *sums,
        ).where(orders.c.qualifies, orders.c.placed_at < sa.bindparam("end", end, type_=UtcDateTime()))
            .group_by(orders.c.customer_key))
        if keys is not None:
            query = query.where(orders.c.customer_key.in_(list(keys)))
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":  # raw rows: no per-row datetime objects for millions of customers
                compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
                params = compiled.construct_params()
                cursor = conn.connection.driver_connection.execute(str(compiled), tuple(
                    _sqlite_time(params[name]) if isinstance(params[name], datetime) else params[name]
                    for name in compiled.positiontup))
                columns, rows = [d[0] for d in cursor.description], cursor.fetchall()  # plain tuples
            else:
                result = conn.execute(query)
                columns, rows = list(result.keys()), [tuple(r) for r in result]
        return _typed_aggregates(pd.DataFrame(rows, columns=columns))

    def load_state(self) -> dict[str, tuple[str, str | None, datetime, str]]:
        """customer_key -> (current_group, previous_group, group_changed_at, properties JSON)."""
        cols = [customer_state.c.customer_key, customer_state.c.current_group, customer_state.c.previous_group,
                customer_state.c.group_changed_at, customer_state.c.properties]
        with self.engine.connect() as conn:
            return {key: tuple(rest) for key, *rest in conn.execute(sa.select(*cols))}

    def contacts(self, keys: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        keys = list(keys)
        out: dict[str, tuple[str | None, str | None]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 5000):
                chunk = keys[start:start + 5000]
                q = sa.select(customers.c.customer_key, customers.c.email, customers.c.phone).where(
                    customers.c.customer_key.in_(chunk))
                out.update({k: (e, p) for k, e, p in conn.execute(q)})
        return out

    def upsert_state(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = self._insert(customer_state)
        conn.execute(stmt.on_conflict_do_update(index_elements=["customer_key"], set_={
            c.name: stmt.excluded[c.name] for c in customer_state.columns if c.name != "customer_key"}), rows)
