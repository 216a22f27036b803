"""Readiness for ``/healthz``: ready when the last successful cycle is recent enough.

Not ready (503) before the first success, when the last success is older than ``max_age``, and on a
standby daemon (another one holds the store's lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..store import utcnow


@dataclass
class Health:
    max_age: timedelta
    clock: Callable[[], datetime] = utcnow
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    standby: str | None = None  # why this daemon is not running cycles

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def succeeded(self, at: datetime | None = None) -> None:
        with self._lock:
            self.last_success = at or self.clock()

    def failed(self, error: str) -> None:
        with self._lock:
            self.last_failure, self.last_error = self.clock(), error[:300]

    def check(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self.clock()
            body: dict[str, Any] = {
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "last_failure": self.last_failure.isoformat() if self.last_failure else None,
                "max_age_seconds": int(self.max_age.total_seconds()),
            }
            if self.standby:
                body.update(status="standby", reason=self.standby)
                return False, body
            if self.last_success is None:
                if self.last_failure is not None:  # not "starting": it tried and failed
                    body.update(status="failing", reason="no successful cycle yet", last_error=self.last_error)
                else:
                    body.update(status="starting", reason="no successful cycle yet")
                return False, body
            if now - self.last_success > self.max_age:
                body.update(
                    status="stale",
                    reason=f"last successful cycle is older than {self.max_age}",
                    last_error=self.last_error,
                )
                return False, body
            if self.last_failure is not None and self.last_failure > self.last_success:
                # still ready (a destination outage must not take the webhook listener out of service),
                # but the newest cycle was partial or failed, and the body says why
                body.update(status="degraded", last_error=self.last_error)
                return True, body
            body["status"] = "ok"
            return True, body
