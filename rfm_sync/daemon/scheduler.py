"""The daemon's jobs on an APScheduler 3.x scheduler, from ``[schedule]`` (and ``[webhooks]``).

* ``incremental`` — pull, score, diff, push every ``incremental_every_minutes``;
* ``full`` — the same cycle daily at ``full_at`` (shop time): every cycle rescores all customers, so
  this is the run that guarantees a fresh, complete scoring at a quiet hour each day even if the
  interval is long;
* ``recalibrate`` — threshold recalibration on the ``recalibrate_cron`` cadence (shop time);
* ``webhooks`` — turn received webhook events into a rescore of their customers, every
  ``process_every_seconds``. With ``run_at_start = false`` its first run is one such interval
  after start (not one incremental interval: events received meanwhile must not wait that long).

Every job has ``coalesce=True`` (runs missed while the process was asleep or busy collapse into one),
``misfire_grace_time`` from the config, and ``max_instances=1`` (a job never overlaps itself) — except
the webhook job, which is woken again by the job ending (the daemon's cycle mutex keeps its work from
overlapping), so its second instance must be allowed to start while the first returns. A wake-up the
scheduler refuses all the same (both instances live) loses nothing — the running one is woken again when
it ends — so APScheduler's warning for it is dropped. The callables themselves are the daemon's; this
module only decides *when*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..config import Config

Job = Callable[[], None]


@dataclass(frozen=True)
class Jobs:
    incremental: Job
    full: Job
    recalibrate: Job
    webhooks: Job | None = None


class _RefusedWebhookWakeUp(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances" for the webhook job."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = "maximum number of running instances" in str(record.msg)
        return not (refused and isinstance(record.args, tuple) and str(record.args[0]).startswith("webhooks "))


_SCHEDULER_LOG = logging.getLogger("apscheduler.scheduler")
_SCHEDULER_LOG.addFilter(_RefusedWebhookWakeUp())


def make_scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(4)}, logger=_SCHEDULER_LOG)


def triggers(config: Config, first_run: datetime, webhooks_first_run: datetime | None = None) -> dict[str, BaseTrigger]:
    """When each job fires. ``first_run``: the first incremental run; ``webhooks_first_run``: the
    first webhook run (default ``first_run``)."""
    sched, zone = config.schedule, config.shop.zone
    out: dict[str, BaseTrigger] = {
        "incremental": IntervalTrigger(minutes=sched.incremental_every_minutes, start_date=first_run, timezone=UTC),
    }
    if sched.full_time is not None:
        hour, minute = sched.full_time
        out["full"] = CronTrigger(hour=hour, minute=minute, timezone=zone)
    if sched.recalibrate_cron:
        out["recalibrate"] = CronTrigger.from_crontab(sched.recalibrate_cron, timezone=zone)
    if config.webhooks.enabled:
        out["webhooks"] = IntervalTrigger(
            seconds=config.webhooks.process_every_seconds,
            start_date=webhooks_first_run or first_run,
            timezone=UTC,
        )
    return out


def first_runs(config: Config, now: datetime) -> tuple[datetime, datetime]:
    """The first incremental and the first webhook run: ``now`` with ``run_at_start``, else one
    interval of each job later (the webhook job does not wait for the incremental interval)."""
    if config.schedule.run_at_start:
        return now, now
    return (
        now + timedelta(minutes=config.schedule.incremental_every_minutes),
        now + timedelta(seconds=config.webhooks.process_every_seconds),
    )


def add_jobs(scheduler: BaseScheduler, config: Config, jobs: Jobs, *, now: datetime) -> list[str]:
    """Replace the scheduler's jobs with those the config asks for; returns their ids."""
    sched = config.schedule
    first, webhooks_first = first_runs(config, now)
    scheduler.remove_all_jobs()
    added = []
    for job_id, trigger in triggers(config, first, webhooks_first).items():
        func = getattr(jobs, job_id)
        if func is None:
            continue
        start = webhooks_first if job_id == "webhooks" else first
        extra = {"next_run_time": start} if isinstance(trigger, IntervalTrigger) else {}
        scheduler.add_job(
            func,
            trigger,
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=2 if job_id == "webhooks" else 1,
            misfire_grace_time=sched.misfire_grace_seconds,
            replace_existing=True,
            **extra,
        )
        added.append(job_id)
    return added


def next_runs(config: Config, now: datetime) -> dict[str, datetime]:
    """The next fire time of each scheduled job after ``now`` (for `doctor` and logs)."""
    out = {}
    later = now + timedelta(minutes=config.schedule.incremental_every_minutes)
    for job_id, trigger in triggers(
        config, later, now + timedelta(seconds=config.webhooks.process_every_seconds)
    ).items():
        moment = trigger.get_next_fire_time(None, now)
        if moment is not None:
            out[job_id] = moment
    return out
