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

# the columns of the scores CSV: these, then fm_score (classic11) and the scheme's label columns
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


def _aggregate_sql(source: str, windows: dict[str, object]) -> tuple[str, dict[str, object]]:
    params: dict[str, object] = {}
    cols = []
    for i, (suffix, start) in enumerate(windows.items()):
        params[f"ws{i}"] = start
        cols.append(f"count(*) FILTER (WHERE placed_at >= $ws{i}) AS frequency{suffix}")
        cols.append(f"COALESCE(sum(amount_e4) FILTER (WHERE placed_at >= $ws{i}), 0)::BIGINT AS monetary_e4{suffix}")
    sql = f"""
        SELECT customer_key, min(placed_at) AS first_order_at, max(placed_at) AS last_order_at, count(*) AS orders,
               {', '.join(cols)}
        FROM ({source}) q
        WHERE placed_at < $end
        GROUP BY customer_key"""
    return sql, params


def aggregate_csv(path: Path, settings: CsvSettings, config: Config, as_of: date,
                  progress: Callable[[float], None] | None = None) -> tuple[pd.DataFrame, duckdb.DuckDBPyConnection]:
    """Per-customer aggregates (see ``Store.aggregate``) of the CSV's qualifying orders.

    One parallel pass parses the file into a compact temporary table ``parsed_orders`` (key, order
    id, time, amount ×10⁴, qualifies, bad); the bad-row count, the duplicate check and the
    aggregation then read that table. Only when order ids repeat does it fall back to the
    de-duplicating query (the newest line of an order wins), which re-reads the file.
    """
    zone = config.shop.zone
    checked = scan(path, settings, zone)
    conn = checked.conn
    conn.execute("SET enable_progress_bar = false")
    window_start, end = engine.window_bounds(as_of, config.rfm.window_days, zone)
    windows = {"": window_start, **{f"_{name}": engine.window_bounds(as_of, days, zone)[0]
                                    for name, days in engine.windows(config.rfm).items()}}
    # a 64-bit hash stands in for the order id: equal ids always have equal hashes, so a repeat is never
    # missed; a (rare) collision only sends the file down the exact de-duplicating path below
    order_id = ("CASE WHEN order_id IS NULL THEN NULL ELSE hash(order_id) END AS order_hash"  # hash(NULL) is not NULL
                if "order_id" in checked.present else "NULL::UBIGINT AS order_hash")

    def work() -> pd.DataFrame:
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE parsed_orders AS
            SELECT customer_key, {order_id}, placed_at, CAST(amount * 10000 AS BIGINT) AS amount_e4,
                   COALESCE(amount > 0 AND NOT is_test AND NOT is_cancelled, false) AS qualifies,
                   problem IS NOT NULL AS bad
            FROM checked""")
        dupes = conn.execute("SELECT count(order_hash) - count(DISTINCT order_hash) FROM parsed_orders "
                             "WHERE NOT bad").fetchone()[0]
        source = qualifying_sql(checked) if dupes else \
            "SELECT customer_key, placed_at, amount_e4 FROM parsed_orders WHERE qualifies AND NOT bad"
        sql, params = _aggregate_sql(source, windows)
        return conn.execute(sql, {**params, "end": end}).df()

    frame = _with_progress(conn, work, progress)
    for col in ("first_order_at", "last_order_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in frame.columns[3:]:
        frame[col] = frame[col].astype("int64")
    return frame, conn


def score_csv(path: Path, out: Path, config: Config, as_of: date, settings: CsvSettings | None = None,
              progress: Callable[[float], None] | None = None) -> OfflineResult:
    settings = settings or CsvSettings(name="csv", path=str(path))
    aggregates, conn = aggregate_csv(path, settings, config, as_of, progress)
    result = engine.score_customers(aggregates, as_of, scheme=config.rfm.scheme,
                                    recency_bounds=config.rfm.recency_bounds, zone=config.shop.zone,
                                    options=config.rfm)
    frame = result.frame
    table = pd.DataFrame({
        "customer_id": frame["customer_key"],
        "recency_days": frame["recency_days"],
        "frequency": frame["frequency"],
        "monetary_e4": frame["monetary_e4"],
        "r_score": frame["r_score"], "f_score": frame["f_score"], "m_score": frame["m_score"],
        "rfm_score": frame["rfm_score"], "rfm_group": frame["rfm_group"],
    })
    for column in ["fm_score"] + list(result.labels.values()):
        if column in frame.columns:
            table[column] = frame[column]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_scores(conn, table, out)
    bad_count = conn.execute("SELECT count(*) FROM parsed_orders WHERE bad").fetchone()[0]
    bad = conn.execute("SELECT line, problem FROM checked WHERE problem IS NOT NULL ORDER BY line").df() \
        if bad_count else pd.DataFrame(columns=["line", "problem"])
    qfile = None
    if len(bad):
        qfile = out.with_name(out.name + ".quarantine.csv")
        bad.insert(0, "file", str(path))
        bad.rename(columns={"problem": "reason"}).to_csv(qfile, index=False)
    conn.close()
    return OfflineResult(out=out, customers=len(table), quarantined=len(bad), quarantine_file=qfile, result=result)


def write_scores(conn: duckdb.DuckDBPyConnection, table: pd.DataFrame, out: Path) -> None:
    """Sorted by customer id, money as exact decimals (2 places, or 4 where needed), written by DuckDB."""
    import pyarrow as pa

    for col in table.columns:  # categoricals (groups, labels, scores) as plain text
        if isinstance(table[col].dtype, pd.CategoricalDtype):
            table[col] = table[col].astype(str)
    # an Arrow table: DuckDB reads it column by column without touching Python objects
    conn.register("scores_frame", pa.Table.from_pandas(table, preserve_index=False))
    rest = [c for c in table.columns if c not in ("customer_id", "recency_days", "frequency", "monetary_e4")]
    money = """CAST(monetary_e4 // 10000 AS VARCHAR) || '.' ||
               CASE WHEN monetary_e4 % 100 = 0 THEN lpad(CAST(monetary_e4 % 10000 // 100 AS VARCHAR), 2, '0')
                    ELSE lpad(CAST(monetary_e4 % 10000 AS VARCHAR), 4, '0') END"""
    target = str(out).replace("'", "''")
    conn.execute(f"""COPY (SELECT customer_id, recency_days, frequency, {money} AS monetary,
                                  {', '.join(rest)}
                           FROM scores_frame ORDER BY customer_id)
                     TO '{target}' (HEADER, DELIMITER ',')""")
    conn.unregister("scores_frame")
