"""The DuckDB scan of a CSV orders export. The same scan serves ``rfm-sync score`` (aggregated in
DuckDB, no store) and the CSV source (:mod:`connectors.csv.source`: records pulled into the store).

The file is read by DuckDB (fast, streaming, multi-core) with every column as text, then each
row is checked in SQL: a row whose date, amount or identity cannot be read is *quarantined* with
``file:line`` and the reason; the rest proceeds. Times without an offset are in the shop's time
zone. Amounts are exact decimals (4 places). A row without ``order_id`` gets a stable id made
from its content, so re-reading the same export never duplicates orders.

A shop's own order export (``preset = "shopify-export"``, ``"bigcommerce-export"``,
``"woocommerce-export"``) goes through the same scan: a subquery in front of it
(:func:`connectors.csv.presets.fold`) maps the export's columns, reads its times and folds its
line-item rows into their orders; the scan adds only the preset's marks (test, cancelled, a
reason to quarantine the order) to its own checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import duckdb

from .. import validate
from ..base import FatalError
from ..validate import PLACED_RANGE_SQL, control_sql, email_ok_sql, nul_sql, trim_sql
from . import file, presets
from .file import CsvFile
from .file import sql_name as _q
from .file import sql_text as _lit

if TYPE_CHECKING:
    from .source import CsvSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# the columns the scan reads (their names in the file: CsvSettings.columns)
REQUIRED = ("customer_id", "placed_at", "amount")
OPTIONAL = ("order_id", "email", "phone", "status", "currency", "refunded", "updated_at")


@dataclass
class CsvScan:
    """A DuckDB view ``checked`` over the file: one row per data line, with ``problem`` set for bad ones."""

    conn: duckdb.DuckDBPyConnection
    path: Path
    present: set[str]
    source: CsvFile  # the prepared file (file.collect_rejects: the lines it skipped)


# the validating scan's reader: every field as text, short rows padded, long rows kept (and flagged);
# a line DuckDB cannot read (longer than max_line_bytes) is skipped and recorded (file.collect_rejects)
TOLERANT = "null_padding=true, strict_mode=false" + file.rejects_options()
# DuckDB's parallel reader cannot pad short rows in a file with a newline inside quotes (it raises);
# such a file is read again with one thread (see ``serial_on_error``)
SERIAL = ", parallel=false"


def _reader(source: CsvFile, settings: CsvSettings, options: str, types: dict[str, str] | None = None) -> str:
    """``read_csv`` of the prepared file with its header's columns (DuckDB's sniffer off: see
    connectors/csv/file.py): all text, or ``types`` for the named ones. The tolerant reader (no
    ``types``) declares one column more, which a row with more fields than the header fills."""
    columns = file.columns_sql(source, types, extra=types is None)
    return (
        f"read_csv({_lit(str(source.file))}, header=true, auto_detect=false, columns={columns}, "
        f"delim={_lit(settings.delimiter)}, quote='\"', escape='\"', max_line_size={settings.max_line_bytes}, "
        f"{options})"
    )


def _open(
    conn: duckdb.DuckDBPyConnection, path: Path, settings: CsvSettings, zone: ZoneInfo, folded: str | None = None
) -> tuple[CsvFile, list[str], set[str], dict[str, str]]:
    """Set the shop's time zone; prepare the file (file.prepare: encoding, header, memory);
    return it, its column names (``folded``: a preset's subquery over it, whose columns count), which
    of ours (REQUIRED + OPTIONAL) it has, and our name → its column name. A missing required column
    is fatal (with a hint when the delimiter looks wrong)."""
    conn.execute(f"SET TimeZone = {_lit(zone.key)}")
    source = file.prepare(conn, path, settings)
    header = source.header if folded is None else _header(conn, path, settings, folded)
    names = settings.columns.model_dump()
    missing = _missing(header, names)
    if missing:
        raise FatalError(
            f"{path}: missing required column(s): {', '.join(missing)}; found {header}"
            f"{file.missing_columns_hint(header, settings)}",
            connector=settings.name,
        )
    twice = sorted(c for c in source.repeated if c in names.values() and folded is None)
    if twice:
        raise FatalError(
            f"{path}: the header names column(s) {', '.join(map(repr, twice))} more than once; which "
            "one holds the values cannot be told: rename or remove the other",
            connector=settings.name,
        )
    return source, header, {k for k in REQUIRED + OPTIONAL if names[k] in header}, names


def _header(conn: duckdb.DuckDBPyConnection, path: Path, settings: CsvSettings, reader: str) -> list[str]:
    """The file's column names; a :class:`FatalError` when it is not a file or not readable as CSV."""
    if not path.is_file():
        raise FatalError(
            f"{path}: no such file" if not path.exists() else f"{path}: not a file", connector=settings.name
        )
    try:
        conn.execute(f"SELECT * FROM {reader} LIMIT 0").fetchall()
    except duckdb.Error as exc:
        raise FatalError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})", connector=settings.name) from None
    return [d[0] for d in conn.description]


def _missing(header: list[str], names: dict[str, str]) -> list[str]:
    return [f"{k} (column {names[k]!r})" for k in REQUIRED if names[k] not in header]


def check_file(path: Path, settings: CsvSettings) -> list[tuple[str, str]]:
    """For ``rfm-sync doctor``: (problem, fix) pairs saying why this export could not be read —
    missing, not a file, unreadable, not CSV, a required column the header lacks, or a column
    mapped in ``[sources.columns]`` that is not there. Reads the header only."""
    table = "this source's `path` (relative to the config file's folder)"
    if not path.exists():
        return [(f"{path}: no such file", f"check {table}, or put the export there")]
    if not path.is_file():
        return [(f"{path}: not a file", f"point {table} at the CSV file itself")]
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return [(f"{path}: cannot be read ({exc.strerror or exc})", "give this user read permission on the file")]
    unreadable = (
        f"check that it is a CSV export with a header row, and its delimiter ({settings.delimiter!r}: "
        "`delimiter` in the table)"
    )
    conn = duckdb.connect()
    try:
        source = file.prepare(conn, path, settings)  # encoding, the header's length and width
        reader = _reader(source, settings, TOLERANT)
        if settings.preset:  # the preset finds the shop's own columns (or says which it missed)
            try:
                reader, folded = presets.fold(conn, path, settings, reader)
                _header(conn, path, folded, reader)
            except FatalError as exc:
                return [
                    (
                        Exception.__str__(exc),
                        f"check that the file is the export preset {settings.preset!r} "
                        "reads (or remove the preset), or name its columns under "
                        f"[sources.columns]; else {unreadable}",
                    )
                ]
            return []
        header = source.header
    except FatalError as exc:
        return [(Exception.__str__(exc), unreadable)]
    finally:
        conn.close()
    names = settings.columns.model_dump()
    problems = []
    missing = _missing(header, names)
    if missing:
        problems.append(
            (
                f"{path}: missing required column(s): {', '.join(missing)}; the header has "
                f"{', '.join(map(repr, header))}{file.missing_columns_hint(header, settings)}",
                'name the file\'s columns under [sources.columns], e.g. customer_id = "Customer ID"',
            )
        )
    # an optional column mapped by hand but absent is read as missing in every row: surely a typo
    absent = [
        f"{k} = {names[k]!r}" for k in OPTIONAL if k in settings.columns.model_fields_set and names[k] not in header
    ]
    if absent:
        problems.append(
            (
                f"{path}: [sources.columns] maps {', '.join(absent)}, but the header has no such column",
                "correct the column name, or remove the mapping",
            )
        )
    return problems


def _trimmed(names: dict[str, str], present: set[str], key: str) -> str:
    """Our column ``key`` as trimmed text, empty as NULL (NULL when the file lacks it).

    Trimmed of whitespace, control characters and Unicode spaces (``validate.TRIM_CHARS``). TRIM
    copies every value it is given, which cost a fifth of the typed read; it runs only on a value
    that may need it: a character up to U+0020 at either end, or any non-ASCII character. The
    result is ``validate.trim``'s for every value."""
    if key not in present:
        return "NULL"
    return f"NULLIF({cheap_trim_sql(_q(names[key]))}, '')"


def cheap_trim_sql(column: str) -> str:
    """``trim_sql(column)``, run only where :func:`needs_trim_sql` says it may change the text:
    TRIM with a set of characters costs about 2 µs a value (a CASE evaluates it only for the rows
    it selects; an AND in a FILTER evaluated it for every row)."""
    return f"CASE WHEN {needs_trim_sql(column)} THEN {trim_sql(column)} ELSE {column} END"


def needs_trim_sql(column: str) -> str:
    """True for a text that trimming may change: a character up to U+0020 (a space or a control
    character) at either end, or any non-ASCII character. ``c < '!'`` compares bytes: it holds
    exactly when the first byte is below ``!`` (or the text is empty)."""
    return f"({column} < '!' OR right({column}, 1) < '!' OR strlen({column}) <> length({column}))"


def _sql_list(statuses: list[str]) -> str:
    """Lower-cased string literals for ``IN (...)``; ``NULL`` (matches nothing) when there are none."""
    return ", ".join(_lit(s.lower()) for s in statuses) or "NULL"


def order_hash_sql(order_id: str) -> str:
    """A 64-bit hash of the order-id expression, NULL where the id is (``hash(NULL)`` is not NULL).
    It stands in for the id in the repeat checks: equal ids always hash equal, so no repeat is
    missed; a rare collision only sends a file down the exact, de-duplicating path."""
    return f"CASE WHEN {order_id} IS NULL THEN NULL ELSE hash({order_id}) END"


def serial_on_error(run: Callable[[bool], T], path: Path | None = None, settings: CsvSettings | None = None) -> T:
    """``run(parallel=True)``; if DuckDB raises, ``run(parallel=False)``. See :data:`SERIAL`. When
    that raises too, the file is really unreadable: with ``path`` and ``settings`` the error
    becomes one FatalError line (file.read_error: memory, line size), else it propagates."""
    try:
        return run(True)
    except duckdb.Error as exc:
        log.debug("parallel CSV read failed (%s); reading with one thread", str(exc).splitlines()[0])
    try:
        return run(False)
    except duckdb.Error as exc:
        if path is None or settings is None:
            raise
        raise file.read_error(path, settings, exc) from None


def scan(
    path: Path,
    settings: CsvSettings,
    zone: ZoneInfo,
    conn: duckdb.DuckDBPyConnection | None = None,
    parallel: bool = True,
) -> CsvScan:
    conn = conn or duckdb.connect()
    prepared = file.prepare(conn, path, settings)  # encoding, header, memory (see _open)
    reader = _reader(prepared, settings, TOLERANT + ("" if parallel else SERIAL))
    file.clear_rejects(conn)
    folded = None
    if settings.preset:
        # a shop's own export, as a subquery in our layout: lines numbered (physical lines, see
        # file.numbered_sql), line items folded into their orders, plus the preset's marks
        # (preset_test, preset_cancelled, fold_problem)
        numbered_lines = f"({file.numbered_sql(conn, prepared, settings, reader)})"
        folded, settings = presets.fold(conn, path, settings, numbered_lines, numbered=True)
    _, header, present, names = _open(conn, path, settings, zone, folded)
    mapped = {names[k] for k in present}
    # the one column past the header (a row with more fields fills it); a preset's subquery flags those itself
    extra_cols = [
        c for c in header + ([] if folded else [prepared.extra]) if c not in mapped and c.startswith("column")
    ]
    col = partial(_trimmed, names, present)
    cancelled, tests = _sql_list(settings.cancelled_statuses), _sql_list(settings.test_statuses)
    too_many = " OR ".join(f"{_q(c)} IS NOT NULL" for c in extra_cols) or "false"
    refunded = f"COALESCE(TRY_CAST({col('refunded')} AS DECIMAL(18,4)), 0)"
    content_id = "'row-' || md5(concat_ws('|', customer_id, email_text, placed_at_text, amount_text))"
    if "order_id" in present:
        # the export has order ids: a row missing one is keyed by its content and line (no window needed)
        order_key = f"COALESCE(order_id, {content_id} || '-L' || CAST(line AS VARCHAR))"
    else:
        # no order ids at all: content plus occurrence, so re-reading the same export is idempotent
        order_key = (
            f"{content_id} || '-' || CAST(row_number() OVER (PARTITION BY customer_id, email_text, "
            "placed_at_text, amount_text ORDER BY line) AS VARCHAR)"
        )
    numbered = settings.preset is not None  # the preset's subquery numbers the lines before folding them
    marks = (
        "preset_test, preset_cancelled, fold_problem"
        if numbered
        else "false AS preset_test, false AS preset_cancelled, NULL::VARCHAR AS fold_problem"
    )
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw AS
        {f"SELECT * FROM {folded}" if folded else file.numbered_sql(conn, prepared, settings, reader)}""")
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW parsed AS
        SELECT line,
               {col("customer_id")} AS customer_id,
               LOWER({col("email")}) AS email_text,
               {col("phone")} AS phone,
               {col("order_id")} AS order_id,
               {col("placed_at")} AS placed_at_text,
               {col("amount")} AS amount_text,
               TRY_CAST({col("placed_at")} AS TIMESTAMPTZ) AS placed_at,
               TRY_CAST({col("updated_at")} AS TIMESTAMPTZ) AS updated_at,
               TRY_CAST({col("amount")} AS DECIMAL(18,4)) AS amount_gross,
               {refunded} AS refunded,
               {col("refunded")} IS NOT NULL AND TRY_CAST({col("refunded")} AS DECIMAL(18,4)) IS NULL AS bad_refund,
               LOWER({col("status")}) AS status,
               UPPER({col("currency")}) AS currency,
               ({too_many}) AS too_many,
               {marks}
        FROM raw""")
    # the checks of connectors/validate.py, in its words
    placed_min, placed_end = PLACED_RANGE_SQL
    placed_range = (
        f"'placed_at ' || strftime(placed_at, '%Y-%m-%d') || ' is outside "
        f"{validate.PLACED_MIN.year}..{validate.PLACED_END.year - 1}'"
    )
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW keyed AS
        SELECT *,
               CASE
                 WHEN fold_problem IS NOT NULL THEN fold_problem
                 WHEN too_many THEN 'more fields than the header'
                 WHEN contains(customer_id, chr(10)) THEN 'customer_id holds a line break: a quote opened here and '
                   || 'never closed? (the lines after it were read into this one field)'
                 WHEN {control_sql("customer_id")} THEN 'customer_id contains a control character'
                 WHEN {nul_sql("order_id")} THEN 'order_id contains a NUL character'
                 WHEN customer_id IS NULL AND email_text IS NULL THEN 'customer_id is empty (and no email to identify a guest)'
                 WHEN customer_id IS NULL AND email IS NULL
                   THEN 'customer_id is empty and the {validate.EMAIL_REASON} (no guest to count the order for)'
                 WHEN placed_at_text IS NULL THEN 'placed_at is empty'
                 WHEN placed_at IS NULL THEN 'placed_at is not a date/time: ' || placed_at_text
                 WHEN placed_at < {placed_min} OR placed_at >= {placed_end} THEN {placed_range}
                 WHEN amount_text IS NULL THEN 'amount is empty'
                 WHEN amount_gross IS NULL THEN 'amount is not a number: ' || amount_text
                 WHEN bad_refund THEN 'refunded is not a number'
               END AS first_problem,
               COALESCE(customer_id, 'email:' || email) AS customer_key,
               {order_key} AS order_key,
               amount_gross - refunded AS amount,
               COALESCE(status IN ({tests}), false) OR preset_test AS is_test,
               COALESCE(status IN ({cancelled}), false) OR preset_cancelled AS is_cancelled
        FROM (SELECT *, CASE WHEN {email_ok_sql("email_text")} THEN email_text END AS email FROM parsed)""")
    conflict = "NULL"
    if "order_id" in present:
        # one order id with two customers among the good rows: every good row of that id is
        # quarantined, naming the first line of the smallest and of the largest customer key
        # (which customer is right cannot be told; lines of one id and one customer, as in a
        # line-item export, are fine)
        conflict = """CASE WHEN first_problem IS NULL AND order_id IS NOT NULL AND low[1] <> high[1] THEN
                        'order id ' || order_id || ' appears with different customers on lines '
                        || least(low[2], -high[2]) || ' and ' || greatest(low[2], -high[2]) END"""
        windows = """, min(row(customer_key, line)) FILTER (WHERE first_problem IS NULL) OVER same_id AS low,
                       max(row(customer_key, -line)) FILTER (WHERE first_problem IS NULL) OVER same_id AS high"""
        source = f"(SELECT *{windows} FROM keyed WINDOW same_id AS (PARTITION BY order_id))"
    else:
        source = "keyed"
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW checked AS
        SELECT *,
               -- kept rows the run report lists anyway: not counted, or counted without their email
               CASE WHEN problem IS NULL AND amount < 0 AND NOT is_test AND NOT is_cancelled
                 THEN 'amount is negative (' || amount || '): a refund larger than the order? not counted' END
                 AS skip_reason,
               CASE WHEN problem IS NULL AND email_text IS NOT NULL AND email IS NULL
                 THEN '{validate.EMAIL_NOTICE}' END AS email_problem
        FROM (SELECT *, COALESCE(first_problem, {conflict}) AS problem FROM {source})""")
    return CsvScan(conn=conn, path=path, present=present, source=prepared)


def qualifying_sql(scan_: CsvScan, view: str = "checked") -> str:
    """Good, qualifying rows, the newest row per order id (a later line wins). ``view``: ``checked``
    or a view over it with the same columns (``rfm-sync score``'s ``priced``: amounts converted)."""
    dedupe = (
        "QUALIFY row_number() OVER (PARTITION BY order_key ORDER BY line DESC) = 1"
        if "order_id" in scan_.present
        else ""
    )
    return f"""SELECT customer_key, placed_at, CAST(amount * 10000 AS BIGINT) AS amount_e4
               FROM (SELECT * FROM {view} WHERE problem IS NULL {dedupe})
               WHERE amount > 0 AND NOT is_test AND NOT is_cancelled"""


def typed_rows_sql(
    path: Path, settings: CsvSettings, zone: ZoneInfo, conn: duckdb.DuckDBPyConnection, currency: str | None = None
) -> tuple[str, bool]:
    """The fast read of the same file, for files that need no quarantine: DuckDB's reader parses
    ``placed_at`` and the amounts itself and *raises* on any row it cannot read (a bad date, a
    stray field, a short row), so nothing is silently dropped. One row per data line:
    ``customer_key, order_hash, placed_at, amount_e4, qualifies, bad`` (``bad``: no customer (or a
    guest whose email is not an address), no time, no amount, a time outside the sane range, a
    negative amount that would count, a NUL in the order id — rows the scan above
    would quarantine or list as skipped).

    It is valid only when it raises nothing and no row is ``bad``; then, once the aggregates'
    customer keys went through :func:`trim_customer_keys`, every value equals the validating
    scan's (``tests/test_csv_fast_path.py`` checks this on hostile files). Otherwise use
    :func:`scan`. ``order_hash`` is a 64-bit hash of the order id, for the duplicate check; the
    second value says whether the file has order ids at all.

    ``currency``: the one currency a row may name (or none); a row in any other is ``bad`` too,
    so a file with another currency goes to the validating scan, which converts or quarantines.
    """
    if settings.preset:  # a shop's export needs its line items folded: only the validating scan does that
        raise ValueError("typed_rows_sql reads no preset file; use scan()")
    source, header, present, names = _open(conn, path, settings, zone)  # the same columns
    # DECIMAL(12,4) keeps the money arithmetic in 64 bits (twice as fast as 128); an amount of
    # 100,000,000 or more does not fit, the reader raises, and the validating scan takes the file
    typed = {names["placed_at"]: "TIMESTAMPTZ", names["amount"]: "DECIMAL(12,4)"}
    if "refunded" in present:
        typed[names["refunded"]] = "DECIMAL(12,4)"
    reader = _reader(source, settings, "strict_mode=true", typed)
    col = partial(_trimmed, names, present)
    excluded = _sql_list(settings.test_statuses + settings.cancelled_statuses)
    refunded = f"COALESCE({_q(names['refunded'])}, 0)" if "refunded" in present else "0"
    # the customer id as written: the aggregates' keys are trimmed afterwards (trim_customer_keys),
    # once per customer instead of once per row; a guest's email (few rows) is trimmed and lower-cased
    # here (a CASE: COALESCE computed the email of every row)
    cid, email, status = _q(names["customer_id"]), col("email"), col("status")
    # a guest whose email is not an address gets no key (a bad row)
    guest = f"CASE WHEN {email_ok_sql(f'LOWER({email})')} THEN 'email:' || LOWER({email}) END"
    order_id = col("order_id")
    order_hash = order_hash_sql(order_id) if "order_id" in present else "NULL::UBIGINT"
    # a NUL inside an order id (the scan quarantines the row): contains() is a seventh of a regex.
    # It looks at the id as written (testing the trimmed id computed the trim once more): a NUL
    # trimmed away at an end only sends the file to the validating scan
    order_control = nul_sql(_q(names["order_id"])) if "order_id" in present else "false"
    placed, amount = _q(names["placed_at"]), _q(names["amount"])
    placed_min, placed_end = PLACED_RANGE_SQL
    # ``bad`` tests the key, not the two text columns again: a guest's email is then read only for guests
    sql = f"""
        SELECT customer_key, order_hash, placed_at, amount_e4, qualifies,
               customer_key IS NULL OR placed_at IS NULL OR amount_e4 IS NULL
                 OR placed_at < {placed_min} OR placed_at >= {placed_end} OR negative
                 OR COALESCE(order_control, false) OR other_currency AS bad
        FROM (SELECT CASE WHEN {cid} IS NULL OR {cid} = '' THEN {guest} ELSE {cid} END AS customer_key,
                     {order_hash} AS order_hash,
                     {order_control} AS order_control,
                     {placed} AS placed_at,
                     CAST(({amount} - {refunded}) * 10000 AS BIGINT) AS amount_e4,
                     {amount} - {refunded} > 0 AND NOT COALESCE(LOWER({status}) IN ({excluded}), false)
                       AS qualifies,
                     -- a negative amount on an order that would count (listed as skipped); a CASE, so
                     -- the status is read again only for negative amounts (one shared column of the
                     -- status test was computed twice: 0.14 s more CPU for a million rows)
                     CASE WHEN {amount} - {refunded} < 0 THEN NOT COALESCE(LOWER({status}) IN ({excluded}), false)
                          ELSE false END AS negative,
                     {other_currency_sql(names, present, currency)} AS other_currency
              FROM {reader})"""
    return sql, "order_id" in present


def other_currency_sql(names: dict[str, str], present: set[str], currency: str | None) -> str:
    """True for a row whose currency (trimmed, any case) is set and is not ``currency``. The text as
    written is compared first: in a one-currency file that is the only test a row costs."""
    if "currency" not in present:
        return "false"
    raw, text = _q(names["currency"]), _trimmed(names, present, "currency")
    if currency is None:
        return f"{text} IS NOT NULL"
    return f"CASE WHEN {raw} = {_lit(currency)} THEN false ELSE COALESCE(UPPER({text}) <> {_lit(currency)}, false) END"


def first_currency_sql(
    path: Path, settings: CsvSettings, zone: ZoneInfo, conn: duckdb.DuckDBPyConnection
) -> str | None:
    """The currency (trimmed, upper case) of the file's first data row, or None (none, or no column)."""
    source, _, present, names = _open(conn, path, settings, zone)
    reader = _reader(source, settings, TOLERANT + SERIAL)  # one thread: it reads only the first row
    if "currency" not in present:
        return None
    row = conn.execute(f"SELECT UPPER({_trimmed(names, present, 'currency')}) FROM {reader} LIMIT 1").fetchone()
    return row[0] if row else None


def trim_customer_keys(conn: duckdb.DuckDBPyConnection, aggregates: Any) -> Any:
    """Per-customer aggregates (an Arrow table: ``customer_key``, ``first_order_at``,
    ``last_order_at``, ``orders``, then counts and sums) grouped by :func:`typed_rows_sql`'s
    untrimmed customer ids, with the keys trimmed: customers whose ids differ only by surrounding
    spaces merge, and those left without an order are dropped. The table must hold every customer
    with an order and every key that needs trimming (others without an order may be left out).
    ``None`` when an id is nothing but spaces: its rows belong to their emails, which the
    aggregates no longer have (the validating scan sorts them out). ``None`` as well when an id
    holds a control character inside (the validating scan quarantines its rows): the table must
    then also hold every key with a control character."""
    if _has_control_bytes(aggregates.column("customer_key")):
        # a control character somewhere in a key: after trimming, inside? (few keys get here)
        conn.register("untrimmed_aggregates", aggregates)
        try:
            inside = conn.execute(
                f"SELECT count(*) FILTER (WHERE {control_sql(cheap_trim_sql('customer_key'))}) "
                "FROM untrimmed_aggregates"
            ).fetchall()[0][0]
        finally:
            conn.unregister("untrimmed_aggregates")
        if inside:
            return None
    conn.register("untrimmed_aggregates", aggregates)
    try:
        needs_trim = needs_trim_sql("customer_key")
        untrimmed, blank = conn.execute(
            f"SELECT count(*) FILTER (WHERE {needs_trim}), count(*) FILTER (WHERE CASE WHEN {needs_trim} THEN "
            f"{trim_sql('customer_key')} = '' ELSE false END) FROM untrimmed_aggregates"
        ).fetchall()[0]
        if blank:
            return None
        if not untrimmed:
            return aggregates
        sums = ", ".join(f"sum({_q(c)})::BIGINT AS {_q(c)}" for c in aggregates.column_names[3:])
        return conn.sql(f"""SELECT {cheap_trim_sql("customer_key")} AS customer_key, min(first_order_at) AS first_order_at,
                                   max(last_order_at) AS last_order_at, {sums}
                            FROM untrimmed_aggregates GROUP BY 1 HAVING sum(orders) > 0""").to_arrow_table()
    finally:
        conn.unregister("untrimmed_aggregates")


def _has_control_bytes(keys: Any) -> bool:
    """Whether any text of an Arrow string column holds a byte below 0x20 or 0x7F, read straight
    from its data buffers (a million keys in a few milliseconds; a regular expression over them
    took a tenth of a second). A byte outside the values (a sliced buffer) can only say yes."""
    import numpy as np

    for chunk in keys.chunks:
        data = chunk.buffers()[2]
        if data is not None:
            values = np.frombuffer(data, dtype=np.uint8)
            if np.count_nonzero((values < 0x20) | (values == 0x7F)):
                return True
    return False
