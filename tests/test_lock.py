"""The store lock: one holder at a time, a dead holder's lock expires, heartbeats keep it alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rfm_sync.store import Store
from rfm_sync.store.lock import StoreLock


def test_one_holder_and_expiry(store_url):
    store = Store.open(store_url)
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    clock = lambda: now[0]  # noqa: E731
    a = StoreLock(store, "host-a:1", expire_seconds=60, clock=clock)
    b = StoreLock(store, "host-b:2", expire_seconds=60, clock=clock)
    assert a.acquire() is None
    held = b.acquire()
    assert held.holder == "host-a:1" and held.acquired_at == now[0]
    now[0] += timedelta(seconds=50)
    assert a.heartbeat()
    now[0] += timedelta(seconds=50)  # 50 s after the heartbeat: still alive
    assert b.acquire().holder == "host-a:1"
    now[0] += timedelta(seconds=11)  # a is silent for 61 s: dead
    assert b.acquire() is None
    assert not a.heartbeat()  # a learns it lost the lock
    assert a.acquire().holder == "host-b:2"
    b.release()
    assert a.acquire() is None
    a.release()
    assert a.current() is None
    store.close()
