"""The typed config sections of the daemon: ``[schedule]``, ``[daemon]``, ``[webhooks]``, ``[logging]``.

Each key is documented in ``config.example.toml``. Times of day are in the ``[shop]`` time zone.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleConfig(_Section):
    # pull + score + push every N minutes
    incremental_every_minutes: int = Field(15, gt=0)
    # full rescore and push once a day at this local time ("HH:MM"); "" turns it off
    full_at: str = "03:00"
    # threshold (cut point) recalibration, a crontab line in the shop's time zone; "" leaves it to
    # [rfm] recalibrate_days alone (cycles recalibrate when the frozen cut points are that old)
    recalibrate_cron: str = "30 3 1 * *"
    # a run that could not start on time (machine asleep, daemon busy) still runs if it is at most
    # this late; several missed runs of one job are coalesced into one
    misfire_grace_seconds: int = Field(3600, gt=0)
    # run one incremental cycle as soon as the daemon holds the lock
    run_at_start: bool = True

    @field_validator("full_at")
    @classmethod
    def _time_of_day(cls, v: str) -> str:
        if v and not _HHMM.match(v):
            raise ValueError(f"expected a time of day 'HH:MM' (24h) or \"\", got {v!r}")
        return v

    @field_validator("recalibrate_cron")
    @classmethod
    def _crontab(cls, v: str) -> str:
        if v:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a crontab line (minute hour day month weekday): {exc}") from None
        return v

    @property
    def full_time(self) -> tuple[int, int] | None:
        if not self.full_at:
            return None
        hour, minute = self.full_at.split(":")
        return int(hour), int(minute)


class DaemonConfig(_Section):
    # the HTTP listener for /healthz and /metrics (and /webhooks/<source> when [webhooks] is enabled)
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(8787, ge=0, le=65535)
    # single instance: the lock row is refreshed every heartbeat; a holder silent for longer than
    # lock_expire_seconds is taken for dead and its lock may be taken over
    heartbeat_seconds: int = Field(30, gt=0)
    lock_expire_seconds: int = Field(300, gt=0)
    # on SIGTERM/SIGINT: wait at most this long for the running cycle to reach a batch boundary
    shutdown_timeout_seconds: float = Field(20.0, gt=0)
    # reload the config when the file changes (SIGHUP always reloads)
    watch_config: bool = True
    # /healthz answers 503 when the last successful cycle is older than this; 0 = twice the
    # incremental interval plus 5 minutes
    unhealthy_after_minutes: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _heartbeat_shorter(self) -> DaemonConfig:
        if self.heartbeat_seconds * 2 > self.lock_expire_seconds:
            raise ValueError(
                f"lock_expire_seconds ({self.lock_expire_seconds}) must be at least twice "
                f"heartbeat_seconds ({self.heartbeat_seconds})"
            )
        return self


class WebhooksConfig(_Section):
    # accept order webhooks at POST /webhooks/<source name> on the [daemon] listener
    enabled: bool = False
    # larger request bodies are refused with 413 before they are read
    max_body_bytes: int = Field(1_048_576, gt=0)
    # events are processed as they arrive; this interval catches those that arrived during a cycle
    process_every_seconds: int = Field(10, gt=0)
    # processed events are kept this long to recognise replays, then deleted
    keep_events_days: int = Field(7, gt=0)
    # tries of an event that hits a temporary error (or whose rescore fails) before it is failed
    max_attempts: int = Field(8, gt=0)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: JSON lines when stderr is not a terminal, readable text otherwise
    format: Literal["auto", "json", "text"] = "auto"
