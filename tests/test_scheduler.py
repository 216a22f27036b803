"""The schedule under a controlled clock: jobs fire at the configured times, missed runs coalesce,
a job never overlaps itself.

APScheduler 3.x reads the time with ``datetime.now`` in its scheduler and executor modules; the
``clock`` fixture replaces that name there with a class whose ``now`` returns the test's time, and
:class:`ManualScheduler` runs one scheduling round per ``tick()`` instead of in a thread.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler

from rfm_sync.config import parse_config
from rfm_sync.daemon.scheduler import Jobs, add_jobs, next_runs

UTC = UTC


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    c = Clock(datetime(2026, 1, 12, 0, 0, tzinfo=UTC))  # a Monday

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return c.now.astimezone(tz) if tz else c.now.replace(tzinfo=None)

    import apscheduler.executors.base as executors_base
    import apscheduler.schedulers.base as schedulers_base

    monkeypatch.setattr(schedulers_base, "datetime", FakeDatetime)
    monkeypatch.setattr(executors_base, "datetime", FakeDatetime)
    return c


class ManualScheduler(BaseScheduler):
    def wakeup(self):
        pass

    def shutdown(self, wait=True):
        super().shutdown(wait)

    def tick(self):
        self._process_jobs()


def recorder(clock: Clock, calls: dict[str, list[datetime]], name: str):
    def job():
        calls.setdefault(name, []).append(clock.now)

    return job


def make(clock, config_toml: dict, *, executor=None, jobs: Jobs | None = None):
    config = parse_config(config_toml)
    calls: dict[str, list[datetime]] = {}
    sched = ManualScheduler(timezone=UTC, executors={"default": executor or {"type": "debug"}})
    jobs = jobs or Jobs(
        incremental=recorder(clock, calls, "incremental"),
        full=recorder(clock, calls, "full"),
        recalibrate=recorder(clock, calls, "recalibrate"),
        webhooks=recorder(clock, calls, "webhooks"),
    )
    sched.start()
    add_jobs(sched, config, jobs, now=clock.now)
    return sched, calls


def run_for(sched, clock, minutes: int, step_minutes: int = 1) -> None:
    for _ in range(minutes // step_minutes):
        sched.tick()
        clock.advance(minutes=step_minutes)
    sched.tick()


def test_jobs_fire_at_configured_times(clock):
    sched, calls = make(
        clock,
        {
            "shop": {"timezone": "Europe/Berlin"},
            "schedule": {"incremental_every_minutes": 15, "full_at": "03:00", "recalibrate_cron": "30 4 * * mon"},
        },
    )
    run_for(sched, clock, 24 * 60)  # Monday 00:00 UTC .. Tuesday 00:00 UTC
    berlin = ZoneInfo("Europe/Berlin")
    incremental = calls["incremental"]
    assert incremental[0] == datetime(2026, 1, 12, 0, 0, tzinfo=UTC)  # run_at_start
    assert len(incremental) == 24 * 4 + 1
    assert all(b - a == timedelta(minutes=15) for a, b in zip(incremental, incremental[1:]))
    assert [t.astimezone(berlin).strftime("%H:%M") for t in calls["full"]] == ["03:00"]  # 02:00 UTC in winter
    assert calls["full"] == [datetime(2026, 1, 12, 2, 0, tzinfo=UTC)]
    assert calls["recalibrate"] == [datetime(2026, 1, 12, 3, 30, tzinfo=UTC)]  # Monday 04:30 Berlin
    assert "webhooks" not in calls  # [webhooks] is off by default


def test_run_at_start_off_and_jobs_switched_off(clock):
    sched, calls = make(
        clock,
        {"schedule": {"incremental_every_minutes": 60, "run_at_start": False, "full_at": "", "recalibrate_cron": ""}},
    )
    assert {j.id for j in sched.get_jobs()} == {"incremental"}
    run_for(sched, clock, 59)
    assert "incremental" not in calls
    run_for(sched, clock, 2)
    assert calls["incremental"] == [datetime(2026, 1, 12, 1, 0, tzinfo=UTC)]


def test_missed_runs_are_coalesced_into_one(clock):
    sched, calls = make(clock, {"schedule": {"incremental_every_minutes": 15, "misfire_grace_seconds": 3600}})
    sched.tick()
    assert len(calls["incremental"]) == 1
    clock.advance(hours=2, minutes=5)  # the machine slept: 8 runs missed
    sched.tick()
    assert len(calls["incremental"]) == 2  # one catch-up run, not eight
    clock.advance(minutes=10)  # back on the original grid (02:15)
    sched.tick()
    assert calls["incremental"][-1] == datetime(2026, 1, 12, 2, 15, tzinfo=UTC)
    assert len(calls["incremental"]) == 3


def test_a_run_later_than_the_grace_time_is_skipped(clock):
    sched, calls = make(
        clock,
        {
            "schedule": {
                "incremental_every_minutes": 15,
                "misfire_grace_seconds": 60,
                "full_at": "",
                "recalibrate_cron": "",
            }
        },
    )
    sched.tick()
    clock.advance(minutes=20)  # the 00:15 run is 5 minutes late: beyond the 60 s grace
    sched.tick()
    assert len(calls["incremental"]) == 1
    clock.advance(minutes=10)  # 00:30 on time
    sched.tick()
    assert calls["incremental"][-1] == datetime(2026, 1, 12, 0, 30, tzinfo=UTC)


def test_a_job_never_overlaps_itself(clock):
    release = threading.Event()
    running, peak, started = [0], [0], []
    lock = threading.Lock()

    def slow_cycle():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(clock.now)
        release.wait(10)
        with lock:
            running[0] -= 1

    noop = lambda: None  # noqa: E731
    executor = ThreadPoolExecutor(4)
    sched, _ = make(
        clock,
        {"schedule": {"incremental_every_minutes": 15, "full_at": "", "recalibrate_cron": ""}},
        executor=executor,
        jobs=Jobs(incremental=slow_cycle, full=noop, recalibrate=noop),
    )
    sched.tick()
    for _ in range(4):  # four more due times pass while the first run is still busy
        clock.advance(minutes=15)
        sched.tick()
    release.set()
    sched.shutdown(wait=True)
    assert peak[0] == 1
    assert len(started) == 1


def test_next_runs_for_doctor(clock):
    config = parse_config({"shop": {"timezone": "America/New_York"}, "schedule": {"full_at": "03:00"}})
    runs = next_runs(config, clock.now)
    assert runs["full"] == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # 03:00 EST
    assert runs["incremental"] == clock.now + timedelta(minutes=15)


@pytest.mark.parametrize(
    "section,problem",
    [
        ({"schedule": {"full_at": "3am"}}, "schedule.full_at"),
        ({"schedule": {"recalibrate_cron": "every monday"}}, "schedule.recalibrate_cron"),
        ({"schedule": {"incremental_every_minutes": 0}}, "schedule.incremental_every_minutes"),
        ({"daemon": {"heartbeat_seconds": 60, "lock_expire_seconds": 90}}, "daemon"),
        ({"webhooks": {"enabeld": True}}, "webhooks.enabeld: unknown key"),
    ],
)
def test_bad_daemon_settings_are_named(section, problem):
    from rfm_sync.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(section)
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_webhook_job_waits_process_every_seconds_when_run_at_start_is_off(clock):
    sched, calls = make(
        clock,
        {
            "schedule": {"incremental_every_minutes": 60, "run_at_start": False, "full_at": "", "recalibrate_cron": ""},
            "webhooks": {"enabled": True, "process_every_seconds": 10},
        },
    )
    assert sched.get_job("webhooks").next_run_time == clock.now + timedelta(seconds=10)
    assert sched.get_job("incremental").next_run_time == clock.now + timedelta(minutes=60)
    sched.tick()
    assert "webhooks" not in calls
    clock.advance(seconds=10)
    sched.tick()
    clock.advance(seconds=10)
    sched.tick()
    assert calls["webhooks"] == [
        datetime(2026, 1, 12, 0, 0, 10, tzinfo=UTC),
        datetime(2026, 1, 12, 0, 0, 20, tzinfo=UTC),
    ]
    assert "incremental" not in calls


def test_webhook_job_runs_at_start_with_run_at_start(clock):
    sched, calls = make(
        clock,
        {
            "schedule": {"full_at": "", "recalibrate_cron": ""},
            "webhooks": {"enabled": True, "process_every_seconds": 30},
        },
    )
    sched.tick()
    clock.advance(seconds=30)
    sched.tick()
    assert calls["webhooks"] == [datetime(2026, 1, 12, 0, 0, tzinfo=UTC), datetime(2026, 1, 12, 0, 0, 30, tzinfo=UTC)]


def test_next_runs_names_the_webhook_interval(clock):
    config = parse_config({"webhooks": {"enabled": True, "process_every_seconds": 10}})
    assert next_runs(config, clock.now)["webhooks"] == clock.now + timedelta(seconds=10)
