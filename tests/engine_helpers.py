"""Small builders shared by the tests/test_engine_*.py files."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from rfm_sync import engine
from rfm_sync.rfm_config import RfmConfig

AS_OF = date(2026, 6, 30)
UTC = ZoneInfo("UTC")


def customers(rows: Iterable[tuple], as_of: date = AS_OF, **extra_columns: list[Any]) -> pd.DataFrame:
    """Aggregates from ``(key, days_since_last_order, frequency, spend)`` rows (spend in currency units)."""
    rows = list(rows)
    frame = pd.DataFrame(
        {
            "customer_key": [r[0] for r in rows],
            "last_order_at": pd.to_datetime(
                [datetime.combine(as_of - timedelta(days=r[1]), time(12), UTC) for r in rows], utc=True
            ),
            "frequency": pd.Series([r[2] for r in rows], dtype="int64"),
            "monetary_e4": pd.Series([int(Decimal(str(r[3])) * 10_000) for r in rows], dtype="int64"),
        }
    )
    for name, values in extra_columns.items():
        frame[name] = pd.Series(values, dtype="int64")
    return frame


def score(frame: pd.DataFrame, as_of: date = AS_OF, cut_points=None, previous=None, **options: Any):
    rfm = RfmConfig(**options)
    return engine.score_customers(frame, as_of, rfm, zone=UTC, cut_points=cut_points, previous=previous)


def by_key(result, column: str) -> dict[str, Any]:
    f = result.frame
    return {k: (v if isinstance(v, str) else int(v)) for k, v in zip(f["customer_key"], f[column].astype(object))}
