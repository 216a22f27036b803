"""The store: one database (SQLite file by default), migrated on open, written in transactions.

The library raises; callers decide what to print. Every write that belongs together happens in
one ``with store.begin() as conn:`` block, so a crash leaves either the old or the new state.

:class:`Store` opens, migrates and closes the database and begins transactions; the queries are
functions of one module per part of the store, each taking the store (reads, and writes that
are a transaction of their own) or a connection (writes that join the caller's transaction):

* :mod:`.orders` — orders, customers' contacts, source cursors, quarantined rows; the scoring input;
* :mod:`.runs` — the run records;
* :mod:`.state` — customer state and frozen cut points (the diff's bulk reads and writes);
* :mod:`.outbox` — the durable outbox and what each destination was last sent;
* :mod:`.history` — every change of a customer's group (written by the diff and by a back-test);
* :mod:`.webhooks` — received webhook events;
* :mod:`.lock` — the single-writer lock.

The tables are in :mod:`.schema`, frozen migrations in ``migrations/versions``, operator-facing
errors in :mod:`.errors`. Heavy modules are imported where they are used: importing the store
loads SQLAlchemy, opening one alembic, and pandas comes only with the bulk reads and writes that
need it (``rfm-sync status`` never loads it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against Alembic's head). A store already
# there opens without importing Alembic; one anywhere else (older, newer, new) goes through Alembic, so a
# stale value only makes opening slower, never wrong.
HEAD_REVISION = "0007"
# PostgreSQL advisory lock key held while migrating (any fixed bigint; these bytes spell "rfm-sync")
MIGRATE_LOCK_KEY = int.from_bytes(b"rfm-sync", "big") & 0x7FFF_FFFF_FFFF_FFFF


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def make_url(url: str, base_dir: Path) -> str:
    """Make a relative ``sqlite:///file`` path relative to ``base_dir`` (the config's folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str, base_dir: Path | None = None) -> Store:
        """Open (creating and migrating as needed). Ordinary faults — an unwritable folder, a file
        that is not a store or is damaged, a store of a newer rfm-sync, a full disk — raise
        :class:`~rfm_sync.store.errors.StoreError` with what to do."""
        from .errors import describe, where_of

        url = make_url(url, base_dir or Path.cwd())
        where = where_of(url)
        try:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
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

    def at_head(self) -> bool:
        """The store's schema is at :data:`HEAD_REVISION` (read without Alembic: it costs 0.2 s to import)."""
        try:
            with self.engine.connect() as conn:
                versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        except sa.exc.DBAPIError:  # no such table yet: a new store
            return False
        return versions == [HEAD_REVISION]

    def migrate(self) -> None:
        if self.at_head():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

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
        lines = [
            line
            for row in rows
            for line in str(row).splitlines()
            if line.strip() and not line.startswith("*** in database")
        ]
        return [] if lines == ["ok"] else lines[:limit]
