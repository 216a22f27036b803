"""A named lock row in the store: one writer at a time, for every command that writes.

The holder (``host:pid``) refreshes ``heartbeat_at`` regularly. A lock whose heartbeat is older than
``expire_seconds`` belongs to a dead holder and may be taken over. Every change is one conditional
statement, so two processes racing for the lock cannot both win.

The daemon, ``rfm-sync run`` and ``rfm-sync recalibrate`` all take the same lock (:data:`WRITER`):
the daemon with its own stand-by loop (:mod:`rfm_sync.daemon.runner`), the one-shot commands with
:func:`hold`, which waits a bounded time, heartbeats from a background thread while the command
works, and releases at the end.

**The outbox hands a row to one pusher.** Only the lock holder pushes, and a pusher confirms
before every batch that the lock is still its own (:class:`FencedDestination`, one conditional
``UPDATE``): a holder that stalled past ``expire_seconds`` (a suspended laptop, a stopped
process) and was taken over stops at its next batch instead of sending rows its successor
sends too. A per-row claim column would not close the remaining gap either — a claim must
expire for a crashed pusher's rows to be sent, so a stalled claimer and its successor can
overlap by the same one batch — and would cost a write per row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from connectors.base import RetryableError

from . import Store, utcnow
from .schema import locks

if TYPE_CHECKING:
    from connectors.base import ConnectorSettings

log = logging.getLogger(__name__)

WRITER = "daemon"  # the one lock every writer takes (named so when only the daemon took it)


@dataclass(frozen=True)
class LockInfo:
    name: str
    holder: str
    acquired_at: datetime
    heartbeat_at: datetime


class StoreLock:
    def __init__(
        self,
        store: Store,
        holder: str,
        *,
        name: str = WRITER,
        expire_seconds: float = 300,
        clock: Callable[[], datetime] = utcnow,
    ):
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
            if conn.execute(
                locks.update().where(c.name == self.name, c.holder == self.holder).values(heartbeat_at=now)
            ).rowcount:
                return None
            if conn.execute(
                locks.update()
                .where(c.name == self.name, c.heartbeat_at < now - self.expire)
                .values(holder=self.holder, acquired_at=now, heartbeat_at=now)
            ).rowcount:
                return None
        try:
            with self.store.begin() as conn:
                conn.execute(
                    locks.insert().values(name=self.name, holder=self.holder, acquired_at=now, heartbeat_at=now)
                )
            return None
        except sa.exc.IntegrityError:
            pass
        current = self.current()
        if current is None:  # released in between: try once more
            return self.acquire()
        if holder_is_gone(current.holder):
            with self.store.begin() as conn:  # only if nobody changed it since we looked
                if conn.execute(
                    locks.update()
                    .where(c.name == self.name, c.holder == current.holder, c.heartbeat_at == current.heartbeat_at)
                    .values(holder=self.holder, acquired_at=now, heartbeat_at=now)
                ).rowcount:
                    log.warning(
                        "took over the store lock of a process that is gone",
                        extra={"holder": current.holder, "since": current.acquired_at.isoformat()},
                    )
                    return None
            return self.current() or current
        return current

    def heartbeat(self) -> bool:
        """Refresh the lock; False if it is no longer ours (expired and taken over)."""
        c = locks.c
        with self.store.begin() as conn:
            return bool(
                conn.execute(
                    locks.update().where(c.name == self.name, c.holder == self.holder).values(heartbeat_at=self.clock())
                ).rowcount
            )

    def release(self) -> None:
        c = locks.c
        with self.store.begin() as conn:
            conn.execute(locks.delete().where(c.name == self.name, c.holder == self.holder))

    def current(self) -> LockInfo | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(locks).where(locks.c.name == self.name)).mappings().first()
        return LockInfo(**row) if row else None


def this_process() -> str:
    """The holder name of this process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_gone(holder: str) -> bool:
    """True if ``holder`` (``host:pid``) ran on this host and its process no longer exists (killed,
    crashed): its lock need not wait out ``expire_seconds`` (like git's gc lock). POSIX only; a
    holder on another host, or whose pid is alive (or cannot be checked), counts as alive."""
    host, _, pid = holder.rpartition(":")
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists, as another user
        return False
    return False


class StoreLocked(Exception):
    """Another process holds the store's lock (and did not let go within the wait)."""

    def __init__(self, info: LockInfo, waited: float, expire_seconds: float):
        self.info, self.waited, self.expire_seconds = info, waited, expire_seconds
        waited_text = f" (waited {waited:.0f} s)" if waited else ""
        super().__init__(
            f"the store is locked by {info.holder} since {info.acquired_at.isoformat(timespec='seconds')} "
            f"(last heartbeat {info.heartbeat_at.isoformat(timespec='seconds')}){waited_text}: another "
            f"`rfm-sync run`, `recalibrate` or the daemon is writing to it; retry later or pass --wait SECONDS "
            f"(a holder silent for {expire_seconds:.0f} s is taken for dead and its lock taken over)"
        )


class LockLost(RetryableError):
    """Our lock expired and another process took it: stop writing, leave the rest to it."""


class HeldLock:
    """The lock while :func:`hold` holds it; :meth:`confirm` before work another holder would redo."""

    def __init__(self, lock: StoreLock):
        self.lock = lock
        self.lost = threading.Event()

    def __repr__(self) -> str:
        return f"HeldLock({self.lock!r}, lost={self.lost.is_set()})"

    def confirm(self) -> None:
        """Refresh the lock now; raise :class:`LockLost` if it is no longer ours."""
        if self.lost.is_set() or not self.lock.heartbeat():
            self.lost.set()
            current = self.lock.current()
            raise LockLost(
                f"lost the store lock (our heartbeat was too late) to "
                f"{current.holder if current else 'nobody'}; the rest is left to the holder",
                connector="store lock",
            )


@contextmanager
def hold(
    store: Store,
    holder: str | None = None,
    *,
    wait_seconds: float = 0,
    heartbeat_seconds: float = 30,
    expire_seconds: float = 300,
    on_wait: Callable[[LockInfo], None] | None = None,
    poll_seconds: float = 0.5,
) -> Iterator[HeldLock]:
    """Hold the store's writer lock for the ``with`` block.

    Waits up to ``wait_seconds`` for another holder to let go (``on_wait`` is told who holds it,
    once), else raises :class:`StoreLocked`. While held, a background thread refreshes the lock
    every ``heartbeat_seconds``; released when the block ends, however it ends."""
    lock = StoreLock(store, holder or this_process(), name=WRITER, expire_seconds=expire_seconds)
    started = time.monotonic()
    told = False
    while (other := lock.acquire()) is not None:
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise StoreLocked(other, waited, expire_seconds)
        if on_wait is not None and not told:
            on_wait(other)
            told = True
        time.sleep(min(poll_seconds, wait_seconds - waited))
    held = HeldLock(lock)
    stop = threading.Event()
    beater = threading.Thread(
        target=_beat, args=(held, stop, heartbeat_seconds), name="store-lock-heartbeat", daemon=True
    )
    beater.start()
    try:
        yield held
    finally:
        stop.set()
        beater.join()
        try:
            lock.release()  # conditional on the holder: a no-op when the lock was taken over
        except Exception as exc:  # never hide the block's own error; the lock expires anyway
            log.warning("could not release the store lock", extra={"error": f"{type(exc).__name__}: {exc}"})


def _beat(held: HeldLock, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            if not held.lock.heartbeat():
                held.lost.set()
                log.error(
                    "lost the store lock (our heartbeat was too late and another process took over)",
                    extra={"holder": held.lock.holder},
                )
                return
        except Exception as exc:  # e.g. the store busy with a long write: try again at the next beat
            log.warning("store lock heartbeat failed", extra={"error": f"{type(exc).__name__}: {exc}"})


class FencedDestination:
    """Delegates to a destination, but confirms the lock is still ours before every batch."""

    # a Destination's class variable, answered like every other attribute by the wrapped destination
    # (__getattr__); declared, never set, so the wrapper type-checks as the Destination it stands for
    Settings: ClassVar[type[ConnectorSettings]]

    def __init__(self, inner: Any, confirm: Callable[[], None]):
        self._inner, self._confirm = inner, confirm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def push(self, updates: list[Any]) -> Any:
        self._confirm()
        return self._inner.push(updates)
