"""``rfm-sync score``: score an orders CSV with no store — DuckDB aggregates, the engine scores.

The heavy part (reading and aggregating millions of orders) runs in DuckDB on all cores; the
engine then works on one row per customer. Bad rows are written to ``<out>.quarantine.csv``
with their line and reason; the rest is scored.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from connectors.csv_source import CsvSettings, qualifying_sql, scan

from . import engine
from .config import Config

OUTPUT_COLUMNS = ["customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score",
                  "rfm_score", "rfm_group"]


@dataclass
class OfflineResult:
    out: Path
    customers: int
    quarantined: int
    quarantine_file: Path | None
    result: engine.ScoreResult


def _with_progress(conn: duckdb.DuckDBPyConnection, fn: Callable[[], pd.DataFrame],
                   progress: Callable[[float], None] | None) -> pd.DataFrame:
    if progress is None:
        return fn()
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
        try:
            pct = conn.query_progress()
        except duckdb.Error:
            pct = -1
        if pct >= 0:
            progress(pct)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    progress(100.0)
    return box["value"]  # type: ignore[return-value]


def aggregate_csv(path: Path, settings: CsvSettings, config: Config, as_of: date,
                  progress: Callable[[float], None] | None = None) -> tuple[pd.DataFrame, duckdb.DuckDBPyConnection]:
    zone = config.shop.zone
    checked = scan(path, settings, zone)
    window_start, end = engine.window_bounds(as_of, config.rfm.window_days, zone)
    sql = f"""
        SELECT customer_key,
               max(placed_at) AS last_order_at,
               count(*) FILTER (WHERE placed_at >= $ws) AS frequency,
               COALESCE(sum(amount_e4) FILTER (WHERE placed_at >= $ws), 0)::BIGINT AS monetary_e4
        FROM ({qualifying_sql(checked)}) q
        WHERE placed_at < $end
        GROUP BY customer_key"""
    conn = checked.conn
    frame = _with_progress(conn, lambda: conn.execute(sql, {"ws": window_start, "end": end}).df(), progress)
    frame["last_order_at"] = pd.to_datetime(frame["last_order_at"], utc=True)
    return frame, conn


def score_csv(path: Path, out: Path, config: Config, as_of: date, settings: CsvSettings | None = None,
              progress: Callable[[float], None] | None = None) -> OfflineResult:
    settings = settings or CsvSettings(name="csv", path=str(path))
    aggregates, conn = aggregate_csv(path, settings, config, as_of, progress)
    result = engine.score_customers(aggregates, as_of, scheme=config.rfm.scheme,
                                    recency_bounds=config.rfm.recency_bounds, zone=config.shop.zone)
    frame = result.frame.sort_values("customer_key", kind="stable")
    table = pd.DataFrame({
        "customer_id": frame["customer_key"],
        "recency_days": frame["recency_days"],
        "frequency": frame["frequency"],
        "monetary": format_money(frame["monetary_e4"]),
        "r_score": frame["r_score"], "f_score": frame["f_score"], "m_score": frame["m_score"],
        "rfm_score": frame["rfm_score"], "rfm_group": frame["rfm_group"],
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    bad = conn.execute("SELECT line, problem FROM checked WHERE problem IS NOT NULL ORDER BY line").df()
    qfile = None
    if len(bad):
        qfile = out.with_name(out.name + ".quarantine.csv")
        bad.insert(0, "file", str(path))
        bad.rename(columns={"problem": "reason"}).to_csv(qfile, index=False)
    conn.close()
    return OfflineResult(out=out, customers=len(table), quarantined=len(bad), quarantine_file=qfile, result=result)


def format_money(amount_e4: pd.Series) -> pd.Series:
    """Exact decimal strings from integer ×10⁴ amounts: 2 decimals, or 4 where needed (never floats)."""
    v = amount_e4.astype("int64")
    major, minor = (v // 10_000).astype(str), v % 10_000
    two = major + "." + (minor // 100).astype(str).str.zfill(2)
    four = major + "." + minor.astype(str).str.zfill(4)
    return two.where(minor % 100 == 0, four)
