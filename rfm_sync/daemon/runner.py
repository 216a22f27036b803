"""``rfm-sync daemon``: the scheduled pipeline in the foreground, one per store.

* **Single instance.** Cycles run only while this process holds the store's writer lock
  (:mod:`rfm_sync.store.lock`, holder ``host:pid``, refreshed every ``heartbeat_seconds``) — the
  lock ``rfm-sync run`` and ``recalibrate`` take too. Otherwise it stands by, says who holds the
  lock and since when, serves ``/healthz`` as 503 ``standby``, and takes over when the holder lets
  go or its heartbeat is older than ``lock_expire_seconds``. Every batch pushed first confirms the
  lock is still ours, so a daemon that stalled and was taken over stops sending.
* **One cycle at a time.** Scheduled cycles, recalibration and webhook rescoring share one mutex. A
  scheduled job that finds another scheduled job running is skipped (the next run catches up); one
  that finds a webhook rescore running waits for it, since a rescore is short and a skipped daily
  cycle would be lost for a day.
* **Webhooks wait for no interval.** An event wakes the webhook job at once. One that arrives while
  the job (or a cycle) runs is not refused: it marks the job due, and the job is woken again as soon
  as the mutex is free, so no event waits ``process_every_seconds`` behind a busy job.
* **Graceful stop.** SIGTERM/SIGINT stop the scheduler and ask the running cycle to stop at the next
  page or batch boundary (sources and destinations are wrapped to raise
  :class:`~rfm_sync.stop.StopRequested` instead of doing further work). Unpushed rows stay in the
  outbox and are sent by the next cycle; the run is recorded ``stopped``, which is no failure: not
  logged as a warning, not ``partial``, and ``/healthz`` stays as it was. After
  ``shutdown_timeout_seconds`` a cycle still running is abandoned — safe for the same reason — and
  :meth:`Daemon.run` returns anyway.
* **Reload.** SIGHUP, or a change of the config file, loads the config again; an invalid one is
  logged with its problems and the running config is kept.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from apscheduler.jobstores.base import JobLookupError

from connectors.base import (
    AMOUNT_OUT_OF_RANGE,
    MAX_AMOUNT,
    ConnectorError,
    ConnectorSettings,
    Order,
    RetryableError,
    WebhookSource,
)

from ..config import Config, ConfigError, load_config
from ..pipeline import Pipeline, build_destinations, build_sources, customer_key, order_row
from ..stop import StopRequested
from ..store import Store, utcnow
from ..store import webhooks as webhook_store
from ..store.lock import WRITER, FencedDestination, LockInfo, LockLost, StoreLock, this_process
from . import logs, scheduler
from .health import Health
from .metrics import Metrics
from .webhooks import Listener, Routes

log = logging.getLogger(__name__)


def reason(exc: BaseException) -> str:
    """A failed event's reason, kept with it: the exception's type and message, on one short line."""
    text = " ".join(str(exc).split())
    return webhook_store.short_reason(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def loggable(exc: BaseException) -> str:
    """What the log says about an error: a connector's message is written to be safe (no secrets,
    no bodies); of any other exception only the type (its message may quote the payload)."""
    return reason(exc) if isinstance(exc, ConnectorError) else type(exc).__name__


class _Stoppable:
    """Delegates to a connector, but refuses new work once ``stop`` is set (:mod:`rfm_sync.stop`)."""

    Settings: ClassVar[type[ConnectorSettings]]  # the wrapped connector's, through __getattr__

    def __init__(self, inner: Any, stop: threading.Event):
        self._inner, self._stop = inner, stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def _check(self) -> None:
        if self._stop.is_set():
            raise StopRequested(f"{self._inner.name}: stopping; the rest is left for the next cycle")


class StoppableSource(_Stoppable):
    def pull(self, context: Any) -> Iterator[Any]:
        for page in self._inner.pull(context):
            self._check()
            yield page


class StoppableDestination(_Stoppable):
    def push(self, updates: list[Any]) -> Any:
        self._check()
        return self._inner.push(updates)


def max_age(config: Config) -> timedelta:
    minutes = config.daemon.unhealthy_after_minutes or 2 * config.schedule.incremental_every_minutes + 5
    return timedelta(minutes=minutes)


class Daemon:
    def __init__(self, config_path: str | Path, *, holder: str | None = None):
        self.config_path = Path(config_path)
        self.config = load_config(self.config_path)
        self.holder = holder or this_process()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.wake = threading.Event()
        self.cycle_lock = threading.Lock()
        self.running_job: str | None = None  # which job holds cycle_lock
        self.cycle_waiting = threading.Event()  # a scheduled job waits for a webhook rescore to end
        self.webhooks_due = threading.Event()  # events arrived that no running webhook job has read yet
        self._wake_lock = threading.Lock()  # orders webhooks_due against the job's start and end
        self.metrics = Metrics()
        self.health = Health(max_age=max_age(self.config))
        self.abandoned = False
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.raw_connectors: list[Any] = []
        self.listener: Listener | None = None
        self.routes: Routes | None = None
        self.scheduler = scheduler.make_scheduler()
        self.lock: StoreLock | None = None
        self.has_lock = False
        self._told: LockInfo | None = None
        self._deferred: str | None = None  # a reload waiting for the running cycle
        self._mtime = self._config_mtime()

    # ------------------------------------------------------------------ building
    def _config_mtime(self) -> int | None:
        try:
            return self.config_path.stat().st_mtime_ns
        except OSError:
            return None

    def _build(self, config: Config) -> tuple[Pipeline, list[Any], dict[str, Any]]:
        assert self.store is not None, "start() opens the store before the first build"
        sources, destinations = build_sources(config), build_destinations(config)
        pipeline = Pipeline(
            config,
            self.store,
            sources=[StoppableSource(s, self.stop_event) for s in sources],
            destinations=[
                StoppableDestination(FencedDestination(d, self._confirm_lock), self.stop_event) for d in destinations
            ],
        )
        hooks = {s.name: s for s in sources if isinstance(s, WebhookSource)}
        return pipeline, [*sources, *destinations], hooks

    def _jobs(self) -> scheduler.Jobs:
        return scheduler.Jobs(
            incremental=self._guarded("incremental", lambda: self._cycle("incremental")),
            full=self._guarded("full", lambda: self._cycle("full")),
            recalibrate=self._guarded("recalibrate", self._recalibrate),
            webhooks=self._guarded("webhooks", self._process_webhooks),
        )

    def _schedule(self) -> None:
        ids = scheduler.add_jobs(self.scheduler, self.config, self._jobs(), now=utcnow())
        log.info(
            "jobs scheduled",
            extra={"jobs": {j.id: j.next_run_time.isoformat() for j in self.scheduler.get_jobs() if j.id in ids}},
        )

    # ------------------------------------------------------------------ jobs
    def _guarded(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if self.stop_event.is_set() or not self.has_lock:
                return
            if not self._enter(name):
                log.log(
                    logging.DEBUG if name == "webhooks" else logging.INFO,
                    "job skipped: another cycle is running",
                    extra={"job": name},
                )
                return
            try:
                fn()
            except Exception as exc:  # a job must never kill the scheduler thread
                log.exception("job failed", extra={"job": name, "error": f"{type(exc).__name__}: {exc}"})
                self.health.failed(f"{name}: {type(exc).__name__}")
            finally:
                self._leave()

        return run

    def _enter(self, name: str) -> bool:
        """Take the cycle mutex for job ``name``; False when the job is to be skipped.

        A webhook job never waits (its events stay due and the job is woken when the mutex is
        free) and gives way to a scheduled job waiting for it. A scheduled job waits for a
        running webhook rescore, but not for another scheduled job.
        """
        if name == "webhooks":
            if self.cycle_waiting.is_set() or not self.cycle_lock.acquire(blocking=False):
                return False
        elif not self.cycle_lock.acquire(blocking=False):
            if self.running_job != "webhooks":
                return False
            self.cycle_waiting.set()
            try:
                while not self.cycle_lock.acquire(timeout=0.5):
                    if self.stop_event.is_set() or self.running_job not in ("webhooks", None):
                        return False
            finally:
                self.cycle_waiting.clear()
        with self._wake_lock:
            self.running_job = name
            if name == "webhooks":
                self.webhooks_due.clear()  # the job reads every pending event from here on
        return True

    def _leave(self) -> None:
        with self._wake_lock:
            self.running_job = None
            self.cycle_lock.release()
            again = self.webhooks_due.is_set()
        if again:  # events arrived while the mutex was held
            self._wake_webhooks()

    def _cycle(self, job: str) -> None:
        assert self.pipeline is not None
        started = time.perf_counter()
        try:
            # the incremental job rescores only what its pull changed, once the day has a scored run
            report = self.pipeline.run_incremental() if job == "incremental" else self.pipeline.run_cycle()
        except Exception as exc:
            self.metrics.observe_cycle(job, None, time.perf_counter() - started, "failed")
            self.health.failed(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.metrics.observe_retries(self.raw_connectors)
        seconds = time.perf_counter() - started
        status = report.status
        self.metrics.observe_cycle(job, report, seconds, status)
        if status != "stopped" or report.group_counts:  # a cycle stopped before its diff counted no groups
            self.metrics.set_groups(report.group_counts)
        if status == "ok":
            self.health.succeeded()
            self.metrics.last_success.set(time.time())
        elif status == "partial":
            self.health.failed("; ".join(report.errors))
        log.info(
            "cycle done",
            extra={
                "job": job,
                "run": report.run_id,
                "status": status,
                "seconds": round(seconds, 3),
                **report.counts(),
                "errors": report.errors,
                "durations": report.durations,
            },
        )

    def _recalibrate(self) -> None:
        from ..calibration import recalibrate

        assert self.store is not None, "start() opens the store before any job runs"
        as_of = self.config.today()
        result = recalibrate(self.config, self.store, as_of)
        if result.get("frozen") is False and result.get("population") is not None:  # too few customers
            log.warning(
                "cut points not frozen: too few customers with an order in the window; every cycle "
                "computes its own until the shop has more",
                extra={
                    "as_of": as_of.isoformat(),
                    "customers": result["population"],
                    "min_calibration_customers": self.config.rfm.min_calibration_customers,
                },
            )
            return
        log.info(
            "cut points recalibrated; the next cycle scores with them",
            extra={"as_of": as_of.isoformat(), "cut_points": result.get("cut_points")},
        )

    def _process_webhooks(self) -> None:
        """Turn the pending events into one rescore of their customers.

        Each event is read on its own: one that cannot be read (whatever the exception) is marked
        failed with its reason, and the rest proceed. A temporary error (the order could not be
        fetched) leaves the event pending and counts an attempt; so does a failed rescore (tried
        again event by event, so that one order that breaks it does not hold back the others).
        """
        assert self.store is not None and self.pipeline is not None and self.routes is not None
        events = webhook_store.pending(self.store)
        if not events:
            return
        parsed: dict[int, list[Order]] = {}
        failed: dict[int, str] = {}
        later: dict[int, str] = {}
        for event in events:
            try:
                parsed[event.id] = self._orders_of(event)
            except RetryableError as exc:
                later[event.id] = reason(exc)
                log.warning(
                    "webhook event kept for later",
                    extra={"event": event.id, "source": event.source, "attempt": event.attempts + 1, "error": str(exc)},
                )
            except Exception as exc:  # noqa: BLE001 - any unreadable event is set aside, never the batch
                failed[event.id] = reason(exc)
                log.warning(
                    "webhook event failed", extra={"event": event.id, "source": event.source, "error": loggable(exc)}
                )
        started = time.perf_counter()
        done, reports = self._rescore(parsed, later)
        webhook_store.finish(self.store, done, failed)
        given_up = webhook_store.postpone(self.store, later, max_attempts=self.config.webhooks.max_attempts)
        if given_up:
            log.error(
                "webhook events failed after max_attempts tries; see `rfm-sync webhooks list --status failed`",
                extra={"events": given_up, "max_attempts": self.config.webhooks.max_attempts},
            )
        seconds = time.perf_counter() - started
        for report in reports:
            self.metrics.observe_cycle("webhooks", report, seconds / len(reports), report.status)
        webhook_store.prune(self.store, utcnow() - timedelta(days=self.config.webhooks.keep_events_days))
        log.info(
            "webhook events processed",
            extra={
                "events": len(done),
                "failed": len(failed) + len(given_up),
                "later": len(later) - len(given_up),
                "orders": sum(len(parsed[e]) for e in done),
                "changed": sum(r.changed for r in reports),
            },
        )

    def _orders_of(self, event: webhook_store.WebhookEvent) -> list[Order]:
        """The orders of one event, each checked to fit the store; raises when it cannot be read."""
        assert self.routes is not None
        source = self.routes.sources.get(event.source)
        if source is None:
            raise LookupError(f"no webhook-capable source named {event.source!r} any more")
        found = list(source.orders_from_webhook(event.topic, event.headers, event.body))
        merge_by, now = self.config.identity.merge_by, utcnow()
        for order in found:
            if not isinstance(order, Order):
                raise TypeError(f"the source gave a {type(order).__name__}, not an Order")
            if not order.amount.is_finite() or abs(order.amount) >= MAX_AMOUNT:
                raise ValueError(f"order {order.order_id}: {AMOUNT_OUT_OF_RANGE}")
            order_row(order, customer_key(order, merge_by), now)  # what the store will be given
        return found

    def _rescore(self, parsed: dict[int, list[Order]], later: dict[int, str]) -> tuple[list[int], list[Any]]:
        """Rescore the customers of the parsed events: all in one run, or, if that fails, event by
        event. Returns the events done and the reports; events whose rescore failed go to ``later``."""
        done = [e for e, found in parsed.items() if not found]  # nothing to rescore (e.g. another topic)
        waiting = {e: found for e, found in parsed.items() if found}
        if not waiting:
            return done, []
        if len(waiting) > 1:
            try:
                report = self._rescore_one([o for found in waiting.values() for o in found], list(waiting))
                return done + list(waiting), [report]
            except Exception:  # noqa: BLE001 - logged; now one event at a time
                pass
        reports = []
        for event, found in waiting.items():
            try:
                reports.append(self._rescore_one(found, [event]))
                done.append(event)
            except Exception as exc:  # noqa: BLE001 - the event stays pending; the next try may succeed
                later[event] = f"rescore failed: {reason(exc)}"
        return done, reports

    def _rescore_one(self, orders: list[Order], events: list[int]) -> Any:
        assert self.pipeline is not None
        try:
            return self.pipeline.rescore_orders(orders)
        except Exception as exc:
            log.error(
                "webhook rescore failed; its events are kept for a later try",
                extra={"events": events, "error": loggable(exc)},
            )
            self.health.failed(f"webhooks: rescore failed: {type(exc).__name__}")
            raise

    def _webhook_arrived(self) -> None:
        """Run the webhooks job now rather than at its next interval (a burst coalesces into one run).

        While a job holds the cycle mutex the event only marks the webhook job due: the job that
        holds it wakes the webhook job when it lets go (:meth:`_leave`), so the scheduler is never
        asked for a run it would refuse.
        """
        with self._wake_lock:
            self.webhooks_due.set()
            if self.running_job is not None:
                return
        self._wake_webhooks()

    def _wake_webhooks(self) -> None:
        if self.has_lock and not self.stop_event.is_set():
            try:
                self.scheduler.modify_job("webhooks", next_run_time=utcnow())
            except JobLookupError:
                pass

    # ------------------------------------------------------------------ lock
    def _confirm_lock(self) -> None:
        """Before a batch is pushed: the lock must still be ours (the cycle runs in another thread)."""
        if self.lock is not None and not self.lock.heartbeat():
            raise LockLost("lost the store lock to another process; the rest is left to it", connector="store lock")

    def _hold_lock(self) -> None:
        assert self.lock is not None
        if self.has_lock:
            if self.lock.heartbeat():
                return
            log.error(
                "lost the store lock (our heartbeat was too late and another process took over); standing by",
                extra={"holder": self.holder},
            )
            self.has_lock = False
            self.scheduler.remove_all_jobs()
        other = self.lock.acquire()
        if other is None:
            self.has_lock, self._told, self.health.standby = True, None, None
            log.info("store lock acquired; running cycles", extra={"holder": self.holder})
            self._schedule()
            return
        self.health.standby = f"lock held by {other.holder} since {other.acquired_at.isoformat()}"
        if self._told is None or self._told.holder != other.holder:
            log.warning(
                "another process holds the store lock (a daemon, run or recalibrate); standing by (no cycles)",
                extra={
                    "holder": other.holder,
                    "since": other.acquired_at.isoformat(),
                    "heartbeat_at": other.heartbeat_at.isoformat(),
                },
            )
            self._told = other

    # ------------------------------------------------------------------ reload
    def reload(self, why: str) -> bool:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error(
                "config reload rejected; keeping the running config", extra={"why": why, "problems": exc.problems}
            )
            return False
        if config.store.url != self.config.store.url:
            log.error(
                "config reload rejected: store.url changed; restart the daemon to switch stores", extra={"why": why}
            )
            return False
        try:
            pipeline, raw, hooks = self._build(config)
        except Exception as exc:
            log.error(
                "config reload rejected: cannot build connectors; keeping the running config",
                extra={"why": why, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        if not self.cycle_lock.acquire(timeout=2):  # keep heartbeating while a long cycle runs
            if self._deferred is None:
                log.info("config reload waits for the running cycle to end", extra={"why": why})
            self._deferred = why
            return False
        try:
            self._deferred = None
            old_http = self.config.daemon.model_dump(include={"http_enabled", "http_host", "http_port"})
            self.config, self.pipeline, self.raw_connectors = config, pipeline, raw
            self.metrics.destinations = [d.name for d in config.destinations]
            self.health.max_age = max_age(config)
            logs.configure(config.logging.level, config.logging.format)
            self._update_routes(hooks)
            if self.has_lock:
                self._schedule()
        finally:
            self.cycle_lock.release()
        if old_http != config.daemon.model_dump(include={"http_enabled", "http_host", "http_port"}):
            self._stop_listener()
            self._start_listener()
        log.info("config reloaded", extra={"why": why})
        return True

    def _update_routes(self, hooks: dict[str, Any]) -> None:
        assert self.routes is not None
        self.routes.sources = hooks
        self.routes.webhooks_enabled = self.config.webhooks.enabled
        self.routes.max_body_bytes = self.config.webhooks.max_body_bytes

    def _start_listener(self) -> None:
        d = self.config.daemon
        if not d.http_enabled:
            return
        assert self.routes is not None
        self.listener = Listener(d.http_host, d.http_port, self.routes).start()
        log.info(
            "listening",
            extra={"host": d.http_host, "port": self.listener.port, "webhooks": self.config.webhooks.enabled},
        )

    def _stop_listener(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    # ------------------------------------------------------------------ life cycle
    def request_stop(self, *_: Any) -> None:
        self.stop_event.set()
        self.wake.set()

    def request_reload(self, *_: Any) -> None:
        self.reload_event.set()
        self.wake.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self.request_reload)

    def start(self) -> None:
        """Open the store, build the pipeline, start the listener and the (empty) scheduler."""
        logs.configure(self.config.logging.level, self.config.logging.format)
        self.store = Store.open(self.config.store.url, self.config.base_dir)
        self.metrics.store = self.store
        self.metrics.destinations = [d.name for d in self.config.destinations]
        self.pipeline, self.raw_connectors, hooks = self._build(self.config)
        last = self.pipeline.last_scored_run()
        if last is not None:
            self.metrics.set_groups(last["group_counts"] or {})
        last = self.pipeline.last_scored_run(stopped=False)  # a stopped run says nothing of health
        if last is not None and last["status"] == "ok" and last.get("finished_at"):
            self.health.succeeded(last["finished_at"])
            self.metrics.last_success.set(last["finished_at"].timestamp())
        self.routes = Routes(store=self.store, metrics=self.metrics, health=self.health, on_event=self._webhook_arrived)
        self._update_routes(hooks)
        self._start_listener()
        self.lock = StoreLock(
            self.store, self.holder, name=WRITER, expire_seconds=self.config.daemon.lock_expire_seconds
        )
        self.scheduler.start()
        log.info("daemon started", extra={"holder": self.holder, "config": str(self.config_path)})

    def run(self) -> int:
        """Run until stopped; returns the exit status (0 after a graceful stop)."""
        self.start()
        last_beat = 0.0
        while not self.stop_event.is_set():
            if time.monotonic() - last_beat >= (
                self.config.daemon.heartbeat_seconds if self.has_lock else min(self.config.daemon.heartbeat_seconds, 5)
            ):
                try:
                    self._hold_lock()
                except Exception as exc:  # the store may be briefly unavailable
                    log.error("store lock check failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                last_beat = time.monotonic()
            if self.config.daemon.watch_config and self._config_mtime() != self._mtime:
                self._mtime = self._config_mtime()
                self.reload("config file changed")
            if self.reload_event.is_set():
                self.reload_event.clear()
                self._mtime = self._config_mtime()
                self.reload("SIGHUP")
            elif self._deferred is not None and not self.cycle_lock.locked():
                self.reload(self._deferred)
            self.wake.wait(0.5)
            self.wake.clear()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("stopping: no new cycles; the running one stops at the next batch boundary")
        self.stop_event.set()
        self.scheduler.shutdown(wait=False)
        finished = self.cycle_lock.acquire(timeout=self.config.daemon.shutdown_timeout_seconds)
        if not finished:
            self.abandoned = True
            log.warning(
                "cycle still running at the shutdown timeout: abandoning it; unacknowledged outbox "
                "rows are sent by the next cycle",
                extra={"timeout": self.config.daemon.shutdown_timeout_seconds},
            )
        self._stop_listener()
        if self.has_lock and self.lock is not None:
            try:
                self.lock.release()
            except Exception as exc:
                log.warning("could not release the store lock", extra={"error": type(exc).__name__})
            self.has_lock = False
        if finished and self.store is not None:
            self.store.close()
        log.info("stopped", extra={"abandoned": self.abandoned})
