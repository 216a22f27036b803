"""A named lock row in the store, so only one daemon per store runs cycles.

The holder (``host:pid``) refreshes ``heartbeat_at`` regularly. A lock whose heartbeat is older than
``expire_seconds`` belongs to a dead holder and may be taken over. Every change is one conditional
statement, so two daemons racing for the lock cannot both win.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa

from . import Store, locks, utcnow


@dataclass(frozen=True)
class LockInfo:
    name: str
    holder: str
    acquired_at: datetime
    heartbeat_at: datetime


class StoreLock:
    def __init__(self, store: Store, holder: str, *, name: str = "daemon", expire_seconds: float = 300,
                 clock: Callable[[], datetime] = utcnow):
        self.store, self.holder, self.name = store, holder, name
        self.expire = timedelta(seconds=expire_seconds)
        self.clock = clock

    def __repr__(self) -> str:
        return f"StoreLock(name={self.name!r}, holder={self.holder!r})"

    def acquire(self) -> LockInfo | None:
        """Take (or keep) the lock. Returns None on success, else who holds it."""
        now = self.clock()
        c = locks.c
        with self.store.begin() as conn:
            if conn.execute(locks.update().where(c.name == self.name, c.holder == self.holder)
                            .values(heartbeat_at=now)).rowcount:
                return None
            if conn.execute(locks.update().where(c.name == self.name, c.heartbeat_at < now - self.expire)
                            .values(holder=self.holder, acquired_at=now, heartbeat_at=now)).rowcount:
                return None
        try:
            with self.store.begin() as conn:
                conn.execute(locks.insert().values(name=self.name, holder=self.holder, acquired_at=now,
                                                   heartbeat_at=now))
            return None
        except sa.exc.IntegrityError:
            pass
        current = self.current()
        if current is None:  # released in between: try once more
            return self.acquire()
        return current

    def heartbeat(self) -> bool:
        """Refresh the lock; False if it is no longer ours (expired and taken over)."""
        c = locks.c
        with self.store.begin() as conn:
            return bool(conn.execute(locks.update().where(c.name == self.name, c.holder == self.holder)
                                     .values(heartbeat_at=self.clock())).rowcount)

    def release(self) -> None:
        c = locks.c
        with self.store.begin() as conn:
            conn.execute(locks.delete().where(c.name == self.name, c.holder == self.holder))

    def current(self) -> LockInfo | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(locks).where(locks.c.name == self.name)).mappings().first()
        return LockInfo(**row) if row else None
