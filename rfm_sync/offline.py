"""``rfm-sync score``: score an orders CSV with no store — DuckDB aggregates, the engine scores.

The heavy part (reading and aggregating millions of orders) runs in DuckDB on all cores; the
engine then works on one row per customer. Bad rows are written to ``<out>.quarantine.csv``
with their line and reason, and so are the rows read but skipped (a negative amount on an order
that would count, see ``connectors/validate.py``); the rest is scored.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from connectors.csv.file import collect_rejects
from connectors.csv.scan import (
    first_currency_sql,
    needs_trim_sql,
    order_hash_sql,
    qualifying_sql,
    scan,
    serial_on_error,
    trim_customer_keys,
    typed_rows_sql,
)
from connectors.csv.source import CsvSettings
from connectors.validate import control_sql

from . import atomic, currency, engine
from .config import Config, shop_rates

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# the columns of the scores CSV: these, then fm_score (classic11) and the scheme's label columns
OUTPUT_COLUMNS = ["customer_id", *engine.FIGURE_COLUMNS, "rfm_group"]


@dataclass
class OfflineResult:
    out: Path
    customers: int
    quarantined: int
    quarantine_file: Path | None
    result: engine.ScoreResult
    skipped: int = 0  # rows read but not counted, listed in the quarantine file with their reason


def _with_progress(
    conn: duckdb.DuckDBPyConnection, fn: Callable[[], pd.DataFrame], progress: Callable[[float], None] | None
) -> pd.DataFrame:
    if progress is None:
        return fn()
    values: list[pd.DataFrame] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            values.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

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
    if errors:
        raise errors[0]
    progress(100.0)
    return values[0]


def _fetch(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> pd.DataFrame:
    """A query's result as a frame, by way of Arrow rather than ``.df()``: text stays Arrow-backed
    instead of becoming Python objects first (docs/engine.md, "What the measurements decided")."""
    return conn.sql(sql, params=params).to_arrow_table().to_pandas()


def _window_columns(windows: dict[str, datetime], amount: str) -> tuple[list[str], dict[str, object]]:
    """Per window: the count and sum of ``amount`` (NULL for a row that does not count) from its start."""
    params: dict[str, object] = {}
    cols = []
    for i, (suffix, start) in enumerate(windows.items()):
        params[f"ws{i}"] = start
        cols.append(f"count({amount}) FILTER (WHERE placed_at >= $ws{i}) AS frequency{suffix}")
        cols.append(f"COALESCE(sum({amount}) FILTER (WHERE placed_at >= $ws{i}), 0)::BIGINT AS monetary_e4{suffix}")
    return cols, params


def _aggregate_sql(source: str, windows: dict[str, datetime]) -> tuple[str, dict[str, object]]:
    cols, params = _window_columns(windows, "amount_e4")  # never NULL in these qualifying rows
    sql = f"""
        SELECT customer_key, min(placed_at) AS first_order_at, max(placed_at) AS last_order_at, count(*) AS orders,
               {", ".join(cols)}
        FROM ({source}) q
        WHERE placed_at < $end
        GROUP BY customer_key"""
    return sql, params


def _repeats(lists) -> int:
    """How many order-id hashes equal another in the same list (a chunked Arrow array of lists, one
    per value of the hash's top two bits, so equal hashes share a list): 0 when no order id
    repeats. Equal ids always hash equal, so no repeat is missed; a rare collision only sends the
    file to the validating scan, which compares the ids themselves. The lists are sorted on every
    core (numpy releases the GIL while it sorts)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    parts = []
    for chunk in lists.chunks:  # each list is a slice of the chunk's values (a NULL list is an empty one)
        values, offsets = chunk.values.to_numpy(zero_copy_only=False), chunk.offsets.to_numpy()
        parts += [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def repeats(part: np.ndarray) -> int:
        part = np.sort(part)
        return int(np.count_nonzero(part[1:] == part[:-1]))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return sum(pool.map(repeats, parts))


@dataclass(frozen=True)
class _Read:
    """What either way of aggregating a file is given: the file and how to read it, the config,
    the windows (column suffix → first instant) and their common end, and the DuckDB connection."""

    path: Path
    settings: CsvSettings
    config: Config
    windows: dict[str, datetime]
    end: datetime
    conn: duckdb.DuckDBPyConnection


def _fast_aggregates(read: _Read) -> pd.DataFrame | None:
    """The per-customer aggregates from the typed read (:func:`typed_rows_sql`) and, from the same
    pass, whether an order id repeats. ``None`` when the file needs the validating path: a row the
    reader cannot read, a row without customer/time/amount (either stops the pass where it is
    found), or a repeated order id (the later line must win).

    The checked rows fan out (a streaming CTE: nothing is stored) to the aggregation and to four
    lists of order-id hashes (grouped by the hash's top two bits: DuckDB's ``list()`` costs per
    group it keeps), which come back in the same result and are checked for repeats by sorting them
    in numpy — cheaper than a DISTINCT hash table over every id in the pass, or than reading the
    file a second time.

    A shop's own export (``settings.preset``) always takes the validating scan, which folds its
    line-item rows into their orders (connectors/csv/presets.py); the typed read knows no preset."""
    path, settings, zone, conn = read.path, read.settings, read.config.shop.zone, read.conn
    if settings.preset:
        return None
    # one currency per sum: the shop's, or without one the first row's; a row in another sends the
    # file to the validating scan (which converts, quarantines or stops on mixed currencies)
    expected = read.config.shop.currency or first_currency_sql(path, settings, zone, conn)
    rows, has_ids = typed_rows_sql(path, settings, zone, conn, expected)
    cols, params = _window_columns(read.windows, "q_amount")
    params["end"] = read.end
    # the only filter is the row check: a bad row stops the pass (error() raises), like a row the
    # reader cannot parse. Values of non-qualifying rows become NULL, which min/max/count/sum skip;
    # a WHERE on them (or on the hashes) could be pushed below the check and let a bad row slip through
    checked = f"""SELECT customer_key, order_hash, placed_at,
                         CASE WHEN q THEN placed_at END AS q_time, CASE WHEN q THEN amount_e4 END AS q_amount
                  FROM (SELECT *, qualifies AND placed_at < $end AS q FROM ({rows})
                        WHERE CASE WHEN bad THEN error('a row without customer, time or amount') ELSE true END)"""
    aggregate = f"""
        SELECT false AS hash_list, customer_key, min(q_time) AS first_order_at, max(q_time) AS last_order_at,
               count(q_time) AS orders, {", ".join(cols)}
        FROM checked_rows
        GROUP BY customer_key
        HAVING CASE WHEN count(q_time) > 0 THEN true
                    ELSE {needs_trim_sql("customer_key")} OR {control_sql("customer_key")} END"""  # see trim_customer_keys
    # one plan with or without order ids (the CTE alone is no slower than a subquery)
    hash_lists = (
        """UNION ALL BY NAME
              SELECT true AS hash_list, list(order_hash) FILTER (WHERE order_hash IS NOT NULL) AS order_hashes
              FROM checked_rows GROUP BY order_hash >> 62"""
        if has_ids
        else ""
    )
    sql = f"WITH checked_rows AS MATERIALIZED ({checked}) {aggregate} {hash_lists}"
    try:
        table = conn.sql(sql, params=params).to_arrow_table()
    except (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.OutOfMemoryException) as exc:
        log.debug("%s: typed read stopped (%s); using the validating scan", path, str(exc).splitlines()[0])
        return None
    customers, lists = _split(table)
    if has_ids and _repeats(lists):
        return None
    customers = trim_customer_keys(conn, customers)
    return None if customers is None else customers.to_pandas()


def _split(table: pa.Table) -> tuple[pa.Table, pa.ChunkedArray | None]:
    """The result's customer rows (a table) and its hash lists (an array of lists). The union's two
    parts come in separate batches, which are taken as they are: filtering the whole table, or
    taking the list rows out of it, would copy every hash."""
    import pyarrow as pa
    import pyarrow.compute as pc

    customers, lists = [], []
    for batch in table.to_batches():
        flags = batch.column("hash_list")
        if not pc.any(flags).as_py():
            customers.append(batch)
        elif pc.all(flags).as_py():
            lists.append(batch)
        else:
            customers.append(batch.filter(pc.invert(flags)))
            lists.append(batch.filter(flags))
    extra: list[str] = [c for c in ("hash_list", "order_hashes") if c in table.column_names]
    hashes = None
    if "order_hashes" in extra:
        hashes = pa.chunked_array(
            [b.column("order_hashes") for b in lists], type=table.schema.field("order_hashes").type
        )
    return pa.Table.from_batches(customers, schema=table.schema).drop_columns(extra), hashes


def _validated_aggregates(read: _Read) -> tuple[pd.DataFrame, int, int]:
    """The validating scan: every row checked, bad ones counted (and later listed with their line),
    repeated order ids resolved (the newest line wins). Returns the aggregates, the bad-row count
    and the count of rows skipped with a reason (``skip_reason``). A line DuckDB could not read (longer
    than ``max_line_bytes``) counts as bad, listed from the table ``rejected_rows``."""
    return serial_on_error(lambda parallel: _validate(read, parallel), read.path, read.settings)


def _validate(read: _Read, parallel: bool) -> tuple[pd.DataFrame, int, int]:
    path, settings, conn = read.path, read.settings, read.conn
    checked = scan(path, settings, read.config.shop.zone, conn, parallel=parallel)
    _price(conn, path, shop_rates(read.config))
    order_hash = order_hash_sql("order_id") if "order_id" in checked.present else "NULL::UBIGINT"
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE parsed_orders AS
        SELECT customer_key, {order_hash} AS order_hash, placed_at, CAST(amount * 10000 AS BIGINT) AS amount_e4,
               COALESCE(amount > 0 AND NOT is_test AND NOT is_cancelled, false) AS qualifies,
               problem IS NOT NULL AS bad, skip_reason IS NOT NULL AS skipped
        FROM priced""")
    dupes, bad, skipped = conn.execute(
        "SELECT count(order_hash) FILTER (WHERE NOT bad) - count(DISTINCT order_hash) FILTER (WHERE NOT bad), "
        "count(*) FILTER (WHERE bad), count(*) FILTER (WHERE skipped) FROM parsed_orders"
    ).fetchall()[0]
    source = (
        qualifying_sql(checked, "priced")
        if dupes
        else "SELECT customer_key, placed_at, amount_e4 FROM parsed_orders WHERE qualifies AND NOT bad"
    )
    sql, params = _aggregate_sql(source, read.windows)
    frame = _fetch(conn, sql, {**params, "end": read.end})
    return frame, bad + len(collect_rejects(conn, checked.source, settings)), skipped


def _price(conn: duckdb.DuckDBPyConnection, path: Path, rates: currency.Rates) -> None:
    """The view ``priced``: ``checked`` with amounts in the shop currency (exact, as
    :func:`rfm_sync.currency.convert`) and a row in a currency without a rate quarantined
    ("currency JPY has no rate to EUR"). Without ``[shop] currency`` amounts stay as they are and
    good rows in more than one currency raise :class:`currency.MixedCurrencies`."""
    if rates.currency is None:
        conn.execute("CREATE OR REPLACE TEMP VIEW priced AS SELECT * FROM checked")
        codes = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT currency FROM checked WHERE problem IS NULL "
                "AND currency IS NOT NULL ORDER BY 1 LIMIT 10"
            ).fetchall()
        ]
        if len(codes) > 1:
            raise currency.MixedCurrencies(currency.mixed_message(path.name, codes))
        return
    currency.register_rates_sql(conn, rates)
    shop = "'" + rates.currency + "'"  # three capital letters (validated)
    foreign = f"(c.currency IS NOT NULL AND c.currency <> {shop})"
    rate = "COALESCE(d.rate_e10, f.rate_e10)"
    converted = currency.convert_e4_sql("CAST(c.amount * 10000 AS BIGINT)", rate)
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW priced AS
        SELECT c.* REPLACE (
                 CASE WHEN {foreign} THEN CAST(CAST({converted} AS DECIMAL(18,0)) * 0.0001 AS DECIMAL(18,4))
                      ELSE c.amount END AS amount,
                 COALESCE(c.problem, CASE WHEN {foreign} AND {rate} IS NULL
                                          THEN 'currency ' || c.currency || ' has no rate to ' || {shop} END) AS problem)
        FROM checked c
        LEFT JOIN fixed_rates f ON f.currency = c.currency
        ASOF LEFT JOIN daily_rates d ON d.currency = c.currency AND CAST(c.placed_at AS DATE) >= d.day""")


@dataclass
class Aggregates:
    frame: pd.DataFrame  # one row per customer with a qualifying order (see ``store.orders.aggregate``)
    conn: duckdb.DuckDBPyConnection  # the scan's connection (``checked``, ``priced`` exist when ``bad``)
    bad: int  # rows the validating scan quarantines
    fast: bool  # True when the typed fast read sufficed
    skipped: int = 0  # rows read but skipped with a reason (``skip_reason``; the fast read has none)


def aggregate_csv(
    path: Path,
    settings: CsvSettings,
    config: Config,
    as_of: date,
    progress: Callable[[float], None] | None = None,
    validate_all: bool = False,
) -> Aggregates:
    """Per-customer aggregates (see ``store.orders.aggregate``) of the CSV's qualifying orders.

    First the fast typed read; a file it cannot vouch for (bad rows, repeated order ids) goes
    through the validating scan instead, which gives the same aggregates for the good rows and
    lists the bad ones. ``validate_all`` skips the fast read (the tests compare the two).
    """
    zone = config.shop.zone
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")
    window_start, end = engine.window_bounds(as_of, config.rfm.window_days, zone)
    windows = {
        "": window_start,
        **{f"_{name}": engine.window_bounds(as_of, days, zone)[0] for name, days in engine.windows(config.rfm).items()},
    }
    read = _Read(path, settings, config, windows, end, conn)
    bad = skipped = 0
    fast = False

    def work() -> pd.DataFrame:
        nonlocal bad, skipped, fast
        frame = None if validate_all else _fast_aggregates(read)
        fast = frame is not None
        if frame is None:
            frame, bad, skipped = _validated_aggregates(read)
        return frame

    frame = _with_progress(conn, work, progress)
    for col in ("first_order_at", "last_order_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in frame.columns[3:]:
        frame[col] = frame[col].astype("int64")
    return Aggregates(frame=frame, conn=conn, bad=bad, fast=fast, skipped=skipped)


class OutputRefused(Exception):
    """An output path names the input file: writing it would destroy the export being scored."""


def quarantine_path(out: Path) -> Path:
    return out.with_name(out.name + ".quarantine.csv")


def check_outputs(orders: Path, out: Path) -> None:
    """Refuse an ``out`` (or its quarantine file) that is the orders file — by name, through a
    symlink or as a hard link of it."""
    for target, what in (
        (out, "--out"),
        (quarantine_path(out), f"the quarantine file of --out ({out.name}.quarantine.csv)"),
    ):
        try:
            same = os.path.samefile(target, orders)
        except OSError:  # the target does not exist (yet): it cannot be the orders file
            same = False
        if same or target.resolve() == orders.resolve():
            raise OutputRefused(
                f"{target}: {what} is the orders file {orders}; writing it would replace the "
                f"export with the scores; choose another --out"
            )


def score_csv(
    path: Path,
    out: Path,
    config: Config,
    as_of: date,
    settings: CsvSettings | None = None,
    progress: Callable[[float], None] | None = None,
) -> OfflineResult:
    """Score ``path`` into ``out`` (and ``out.quarantine.csv`` when rows are bad). Both are written to
    temporary files first and renamed into place only when both are complete: a run that fails
    leaves the previous outputs as they were."""
    check_outputs(path, out)
    settings = settings or CsvSettings(name="csv", path=str(path))
    aggregates = aggregate_csv(path, settings, config, as_of, progress)
    conn = aggregates.conn
    result = engine.score_customers(aggregates.frame, as_of, config.rfm, zone=config.shop.zone)
    frame = result.frame
    table = pd.DataFrame(
        {
            "customer_id": frame["customer_key"],
            "recency_days": frame["recency_days"],
            "frequency": frame["frequency"],
            "monetary_e4": frame["monetary_e4"],
            "r_score": frame["r_score"],
            "f_score": frame["f_score"],
            "m_score": frame["m_score"],
            "rfm_score": frame["rfm_score"],
            "rfm_group": frame["rfm_group"],
        }
    )
    for column in ["fm_score"] + list(result.labels.values()):
        if column in frame.columns:
            table[column] = frame[column]
    out.parent.mkdir(parents=True, exist_ok=True)
    bad = (
        conn.execute(
            "SELECT line, COALESCE(problem, skip_reason) AS problem FROM priced "
            "WHERE problem IS NOT NULL OR skip_reason IS NOT NULL "
            "UNION ALL SELECT line, problem FROM rejected_rows ORDER BY line"
        ).df()
        if aggregates.bad or aggregates.skipped
        else pd.DataFrame(columns=["line", "problem"])
    )
    # the quarantine file belongs with its scores: one left by an earlier run of this --out is replaced
    # by this run's (header only when no row is bad), so it never lists rows of another file
    qfile = quarantine_path(out) if len(bad) or quarantine_path(out).exists() else None
    temps: list[Path] = []
    try:
        temps.append(atomic.temp_beside(out))
        write_scores(conn, table, temps[0])
        if qfile is not None:
            temps.append(atomic.temp_beside(qfile))
            bad.insert(0, "file", str(path))
            bad.rename(columns={"problem": "reason"}).to_csv(temps[1], index=False)
            atomic.commit(temps[1], qfile)
        atomic.commit(temps[0], out)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    conn.close()
    return OfflineResult(
        out=out,
        customers=len(table),
        quarantined=aggregates.bad,
        quarantine_file=qfile,
        result=result,
        skipped=aggregates.skipped,
    )


def write_scores(conn: duckdb.DuckDBPyConnection, table: pd.DataFrame, out: Path) -> None:
    """Sorted by customer id, money as exact decimals (2 places, or 4 where needed), written by DuckDB."""
    import pyarrow as pa

    # an Arrow table: DuckDB reads it column by column without touching Python objects; categoricals
    # (groups, labels, scores) become dictionary columns, written as their text
    conn.register("scores_frame", pa.Table.from_pandas(table, preserve_index=False))
    rest = [c for c in table.columns if c not in ("customer_id", "recency_days", "frequency", "monetary_e4")]
    # exact decimal products (DECIMAL(18,0) × 0.01 is a DECIMAL(18,2)), printed by DuckDB: cheaper
    # than assembling the text from quotient and remainder. A sum of 10^14 or more (in the
    # currency) does not fit DECIMAL(18,0), and the cast raises rather than print a wrong figure
    money = """CASE WHEN monetary_e4 % 100 = 0 THEN CAST(CAST(monetary_e4 // 100 AS DECIMAL(18,0)) * 0.01 AS VARCHAR)
                    ELSE CAST(CAST(monetary_e4 AS DECIMAL(18,0)) * 0.0001 AS VARCHAR) END"""
    target = str(out).replace("'", "''")
    conn.execute(f"""COPY (SELECT customer_id, recency_days, frequency, {money} AS monetary,
                                  {", ".join(rest)}
                           FROM scores_frame ORDER BY customer_id)
                     TO '{target}' (HEADER, DELIMITER ',')""")
    conn.unregister("scores_frame")
