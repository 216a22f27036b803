"""The CSV file as DuckDB is given it: encoding, header, line numbers, over-long lines, memory.

One bad line must not sink a file, and no file may sink the machine. What this module does, and
why, before :mod:`connectors.csv.scan` builds its SQL over the file:

* **Encoding.** DuckDB reads UTF-8 itself (a UTF-8 byte-order mark is skipped). Its built-in
  ``latin-1`` refuses the bytes 0x80–0x9F, which Windows-1252 (what Excel writes: €, smart
  quotes) uses, and other encodings need an extension downloaded at run time, which a machine
  without internet cannot do. So any other ``encoding`` is transcoded by Python's codecs in one
  streaming pass (1 MiB at a time) to a temporary UTF-8 file, which DuckDB reads instead and which
  is removed with the connection. Newlines are kept, so line numbers are the original file's. A
  byte that is not valid in the encoding stops the read with one message naming the file, the
  line and the byte, and a hint (a file that is not UTF-8 but reads as Windows-1252 is named as
  such).
* **Header.** The header is read here, bounded (at most ``max_line_bytes``), and handed to DuckDB
  as explicit columns with its sniffer off: the sniffer reads a 20,480-row sample, so one 10 MB
  field there failed the whole file, and a header of 700,000 columns made it report 18.8 GiB of
  memory used. A header longer than ``max_line_bytes`` or with more than :data:`MAX_COLUMNS`
  columns is fatal (one message); a header of one column that contains ``;``, a tab or ``|`` is
  probably another delimiter, and the missing-column message says ``delimiter = ";"``. Column
  names follow DuckDB's sniffer (an empty name is ``column<i>``, a repeated one ``name_1``), and
  one more column is declared so that a row with more fields than the header is still seen (the
  scan quarantines it).
* **Over-long lines.** The validating read skips a line longer than ``max_line_bytes`` (DuckDB's
  ``ignore_errors`` with ``store_rejects``) instead of failing; :func:`collect_rejects` turns each
  skipped line into a quarantined row (its line from the byte offset DuckDB records), so nothing
  is dropped silently.
* **Line numbers.** DuckDB numbers records, not lines: a newline inside a quoted field, or a blank
  line (which it skips), moves every later record one line down. :func:`numbered_sql` gives each
  record the physical line it starts on: one streaming pass (numpy) finds the record ends (a
  newline outside quotes); where the quoting is irregular (a quote inside an unquoted field) Python's
  csv module, which splits such records as DuckDB does, counts them instead. Only the records where
  the offset changes are kept (usually none) and joined back by record number.
* **Memory.** Each connection that reads a file gets ``memory_limit`` (``[[sources]] memory_limit``,
  default 2 GB, instead of DuckDB's 80% of the machine); a read that needs more ends with a
  message saying which setting to raise.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import logging
import os
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import FatalError

if TYPE_CHECKING:  # duckdb is imported where used: loading a config must not pay for it
    import duckdb
    import numpy as np
    import numpy.typing as npt

    from .source import CsvSettings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# a header of more columns than this is not an orders export (DuckDB's sniffer took every byte of
# memory it was allowed on 700,000); with explicit columns 10,000 cost DuckDB ~40 MB more
MAX_COLUMNS = 10_000
# the names of the tables DuckDB stores the skipped lines of the validating read in
REJECTS, REJECT_SCANS = "rfm_csv_rejects", "rfm_csv_reject_scans"
_UTF8 = ("utf-8", "utf-8-sig")
_OTHER_DELIMITERS = (";", "\t", "|", ",")
# where a setting goes, in every hint
WHERE = "in the csv [[sources]] table (for `rfm-sync score`: of the config given with -c)"


def normalize_encoding(value: str) -> str:
    """Python's name for ``value`` ("UTF8" → "utf-8", "windows-1252" → "cp1252", "latin1" →
    "iso8859-1"); ValueError for an encoding Python does not know."""
    try:
        return codecs.lookup(value).name
    except LookupError:
        raise ValueError(f'unknown encoding {value!r} (examples: "utf-8", "cp1252", "latin-1", "utf-16")') from None


def delimiter_text(delimiter: str) -> str:
    """The delimiter as it is written in TOML: ``";"``, ``"\\t"``."""
    return '"\\t"' if delimiter == "\t" else '"' + delimiter.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class CsvFile:
    """What DuckDB reads for one source file on one connection."""

    path: Path  # the file as configured (named in every message)
    file: Path  # the UTF-8 file DuckDB reads: ``path`` itself, or a transcoded temporary copy
    header: list[str]  # DuckDB's column names, in order
    extra: str  # the name of one more column: a row with more fields than the header fills it
    settings_key: tuple[str, str, int]  # (encoding, delimiter, max_line_bytes) it was prepared with
    # names the header holds more than once (the later ones renamed ``name_1``, ...): which is meant
    # cannot be told, so a mapped column among them is refused (scan._open)
    repeated: frozenset[str] = frozenset()
    line_sql: str | None = None  # the line numbers (see numbered_sql), once the file is surveyed

    @property
    def transcoded(self) -> bool:
        return self.file != self.path


# per connection: the files prepared for it (a transcoded copy lives as long as its connection)
_prepared: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[Path, CsvFile]] = weakref.WeakKeyDictionary()


def prepare(conn: duckdb.DuckDBPyConnection, path: Path, settings: CsvSettings) -> CsvFile:
    """The file ready for DuckDB on ``conn``: its memory limit set, the file transcoded to UTF-8
    when it is in another encoding (once per connection), its header read. FatalError for a
    missing file, an invalid byte, a header too long or too wide."""
    key = (settings.encoding, settings.delimiter, settings.max_line_bytes)
    files = _prepared.setdefault(conn, {})
    known = files.get(path)
    if known is not None and known.settings_key == key and known.file.exists():
        return known
    conn.execute(f"SET memory_limit = '{settings.memory_limit}'")
    if not path.is_file():
        raise FatalError(f"{path}: no such file", connector=settings.name)
    readable = path
    try:
        if settings.encoding not in _UTF8:
            readable = _transcode(path, settings)
            weakref.finalize(conn, _remove, readable)
        header, repeated = _header(path, readable, settings)
    except OSError as exc:  # unreadable, or no room for the UTF-8 copy: the source's fault, one line
        where = f"{exc.filename}: " if exc.filename and str(exc.filename) != str(path) else ""
        raise FatalError(f"{path}: cannot read it ({where}{exc.strerror or exc})", connector=settings.name) from None
    extra, n = f"column{len(header)}", len(header)
    while extra in header:
        n += 1
        extra = f"column{n}"
    files[path] = CsvFile(path=path, file=readable, header=header, repeated=repeated, extra=extra, settings_key=key)
    return files[path]


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# ------------------------------------------------------------------ encoding
def _transcode(path: Path, settings: CsvSettings) -> Path:
    """``path`` decoded from ``settings.encoding`` into a temporary UTF-8 file, streaming."""
    fd, name = tempfile.mkstemp(prefix="rfm-sync-", suffix=".utf8.csv")
    target = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            for _, text in _decoded(path, settings):
                out.write(text)
    except BaseException:
        _remove(target)
        raise
    return target


def _decoded(path: Path, settings: CsvSettings, encoding: str | None = None) -> Iterator[tuple[bytes, str]]:
    """The file's bytes and text, block by block; FatalError at the first byte ``encoding`` (default: the
    configured one) cannot decode, with its line and exact byte offset."""
    decoder = codecs.getincrementaldecoder(encoding or settings.encoding)(errors="strict")
    lines, offset = 1, 0  # offset: of the block's first byte
    ascii_so_far = True  # no other character before (for the hint: a damaged line, or another encoding?)
    with path.open("rb") as source:
        while True:
            block = source.read(CHUNK)
            pending = decoder.getstate()[0]  # bytes of the block before, not decoded yet
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                data = pending + block
                good = data[: exc.start].decode(encoding or settings.encoding, errors="replace")
                raise _not_encoded(
                    path,
                    settings,
                    lines + good.count("\n"),
                    offset - len(pending) + exc.start,
                    data[exc.start : exc.end],
                    encoding,
                    ascii_so_far and good.isascii(),
                ) from None
            lines += text.count("\n")
            ascii_so_far = ascii_so_far and text.isascii()
            offset += len(block)
            if not block:
                return
            yield block, text


def _not_encoded(
    path: Path,
    settings: CsvSettings,
    line: int,
    offset: int,
    bad: bytes,
    encoding: str | None = None,
    first_other: bool = True,
) -> FatalError:
    """``first_other``: no character but ASCII came before the bad byte (else the file is in the
    encoding up to there, and this line is more likely damaged than the file in another encoding)."""
    byte = bad[:1].hex().upper() or "?"
    encoding = encoding or settings.encoding
    hint = _encoding_hint(path, encoding, offset)
    if not first_other:
        hint = (
            f"the lines before it hold {encoding} text, so this line may be damaged: fix it; or, if the "
            f"whole file is in another encoding, {hint[0].lower()}{hint[1:]}"
        )
    return FatalError(
        f"{path}: line {line} is not valid {encoding} (byte {offset:,}: 0x{byte}); {hint}", connector=settings.name
    )


def _encoding_hint(path: Path, encoding: str, offset: int) -> str:
    """What to set: the encoding the bytes around ``offset`` read as, where it is a common one."""
    with path.open("rb") as fh:
        start = fh.read(4)
        fh.seek(max(0, offset - 4096))
        around = fh.read(8192)
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and encoding != "utf-16":
        return f'it starts with a UTF-16 byte-order mark: set encoding = "utf-16" {WHERE}'
    if encoding in _UTF8:
        try:
            around.decode("cp1252")
            return (
                f'it reads as Windows-1252 (what Excel saves as "CSV"): set encoding = "cp1252" {WHERE}, '
                'or save the file as "CSV UTF-8"'
            )
        except UnicodeDecodeError:
            pass
    if encoding == "cp1252":
        return (
            "bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D are not Windows-1252: if the file is ISO-8859-1, "
            f'set encoding = "latin-1" {WHERE}'
        )
    return f'set encoding {WHERE} to the encoding the file was saved in (e.g. "cp1252", "latin-1", "utf-16")'


# ------------------------------------------------------------------ header
def _header(path: Path, readable: Path, settings: CsvSettings) -> tuple[list[str], frozenset[str]]:
    """The first record's fields as DuckDB column names, read from at most ``max_line_bytes``, and
    the names that appear more than once."""
    limit = settings.max_line_bytes
    with readable.open("rb") as fh:
        head = fh.read(limit + 1)
    if not head.strip():
        raise FatalError(
            f"{path}: the file is empty (not even a header line): is the export complete?", connector=settings.name
        )
    end = _first_record_end(head, settings.delimiter)
    if end is None and len(head) > limit:
        raise FatalError(
            f"{path}: line 1 (the header) is longer than max_line_bytes = {limit:,} bytes: is this an "
            f"orders export?{_delimiter_hint(head[:4096].decode('utf-8', 'replace'), settings)}",
            connector=settings.name,
        )
    record = head[:end] if end is not None else head
    if record.startswith(codecs.BOM_UTF8):
        record = record[len(codecs.BOM_UTF8) :]
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError as exc:  # only a UTF-8 file gets here (a transcoded one is valid)
        raise _not_encoded(
            path, settings, 1 + record[: exc.start].count(b"\n"), exc.start, record[exc.start : exc.end]
        ) from None
    with _field_limit(limit):
        fields = next(
            csv.reader(
                [text.rstrip("\r\n")], delimiter=settings.delimiter, quotechar='"', doublequote=True, strict=False
            ),
            [],
        )
    if len(fields) > MAX_COLUMNS:
        raise FatalError(
            f"{path}: line 1 (the header) has {len(fields):,} columns (at most {MAX_COLUMNS:,}): is this "
            f"an orders export?",
            connector=settings.name,
        )
    names: list[str] = []
    repeated: set[str] = set()
    for i, name in enumerate(fields):
        name = name or f"column{i}"
        base, n = name, 0
        while name in names:
            repeated.add(base)
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names, frozenset(repeated)


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """The csv module's field size limit (process-wide) set to ``limit`` for a while."""
    before = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _first_record_end(data: bytes, delimiter: str) -> int | None:
    """The index just past the first newline outside quotes in ``data``, or None."""
    quoted = False
    start = 0
    while True:
        nl = data.find(b"\n", start)
        if nl < 0:
            return None
        quoted ^= data.count(b'"', start, nl) % 2 == 1
        if not quoted:
            return nl + 1
        start = nl + 1


def _delimiter_hint(header: str, settings: CsvSettings) -> str:
    for other in _OTHER_DELIMITERS:
        if other != settings.delimiter and other in header:
            return f"; the header contains {delimiter_text(other)}: set delimiter = {delimiter_text(other)} {WHERE}"
    return ""


def missing_columns_hint(header: list[str], settings: CsvSettings) -> str:
    """A delimiter hint for a header without the required columns: read as one column, it holds another delimiter."""
    return _delimiter_hint(header[0], settings) if len(header) == 1 else ""


# ------------------------------------------------------------------ reading
def columns_sql(csv_file: CsvFile, types: dict[str, str] | None = None, extra: bool = False) -> str:
    """DuckDB's ``columns={...}``: every header column as text unless ``types`` names it, and the
    one column more for a row with too many fields when ``extra``."""
    names = csv_file.header + ([csv_file.extra] if extra else [])
    return "{" + ", ".join(f"{sql_text(c)}: {sql_text((types or {}).get(c, 'VARCHAR'))}" for c in names) + "}"


def sql_name(name: str) -> str:
    """A column name quoted for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def sql_text(value: str) -> str:
    """A text literal for DuckDB SQL."""
    return "'" + value.replace("'", "''") + "'"


def rejects_options() -> str:
    return f", ignore_errors=true, store_rejects=true, rejects_table='{REJECTS}', rejects_scan='{REJECT_SCANS}'"


def clear_rejects(conn: duckdb.DuckDBPyConnection) -> None:
    """Forget the lines an earlier read skipped (a failed parallel attempt, another file)."""
    conn.execute(f"DROP TABLE IF EXISTS {REJECTS}")
    conn.execute(f"DROP TABLE IF EXISTS {REJECT_SCANS}")


@dataclass
class Rejected:
    line: int
    reason: str
    raw: str


def collect_rejects(conn: duckdb.DuckDBPyConnection, csv_file: CsvFile, settings: CsvSettings) -> list[Rejected]:
    """The lines the validating read skipped (once it has read the whole file), each with its
    physical line and reason, in line order; also kept as the temp table ``rejected_rows``
    (``line, problem``) for SQL. An invalid UTF-8 byte is fatal here too (see :func:`survey`)."""
    import duckdb

    try:
        rows = conn.execute(f"""SELECT byte_position, any_value(error_type), any_value(error_message),
                                       any_value(left(csv_line, 200))
                                FROM {REJECTS} GROUP BY byte_position ORDER BY byte_position""").fetchall()
    except duckdb.CatalogException:  # nothing was skipped: DuckDB made no table
        rows = []
    lines = _lines_at(csv_file.file, [r[0] for r in rows])
    out = []
    for (_position, kind, message, raw), line in zip(rows, lines):
        if kind == "LINE SIZE OVER MAXIMUM":
            reason = f"the line is longer than max_line_bytes = {settings.max_line_bytes:,} bytes (not read)"
        else:
            reason = f"the line cannot be read ({kind.lower()}: {str(message).splitlines()[0]})"
        out.append(Rejected(line=line, reason=reason, raw=raw or ""))
    conn.execute("CREATE OR REPLACE TEMP TABLE rejected_rows (line BIGINT, problem VARCHAR)")
    if out:
        conn.executemany("INSERT INTO rejected_rows VALUES (?, ?)", [(r.line, r.reason) for r in out])
    return out


def _lines_at(path: Path, positions: list[int]) -> list[int]:
    """The line (1-based) of each byte position (sorted), counting newlines in one bounded pass.
    DuckDB's ``byte_position`` is where the skipped line starts (its own line count does not count
    the lines it skipped)."""
    out: list[int] = []
    if not positions:
        return out
    lines, offset = 1, 0
    with path.open("rb") as fh:
        for position in positions:
            while offset < position:
                block = fh.read(min(CHUNK, position - offset))
                if not block:
                    break
                lines += block.count(b"\n")
                offset += len(block)
            out.append(lines)
    return out


# ------------------------------------------------------------------ line numbers
def numbered_sql(conn: duckdb.DuckDBPyConnection, csv_file: CsvFile, settings: CsvSettings, reader: str) -> str:
    """``SELECT <line> AS line, * FROM reader``: each record with the physical line it starts on.

    Surveys the file once per connection (see :func:`survey`), which also stops a UTF-8 file with
    an invalid byte. Without drift (the usual case) the line is ``row_number() + 1``. Otherwise the
    drift is a step function of the record number: up to :data:`MAX_CASE_STEPS` steps it is a
    binary tree of CASEs (about ten comparisons a row for a thousand steps; an ASOF join of a
    million records took 50% longer and 300 MB more), beyond that an ASOF join with a table of them."""
    if csv_file.line_sql is None:
        drift = survey(csv_file, settings)
        if len(drift) <= MAX_CASE_STEPS:
            csv_file.line_sql = (
                "SELECT row_number() OVER () + 1 AS line, * FROM {reader}"
                if not drift
                else (
                    "SELECT rfm_record + 1 + "
                    + _steps_sql(drift, 0, len(drift), 0)
                    + " AS line, * EXCLUDE (rfm_record) "
                    "FROM (SELECT row_number() OVER () AS rfm_record, * FROM {reader})"
                )
            )
        else:
            import pyarrow as pa

            conn.register(
                "rfm_line_drift_data", pa.table({"record": [r for r, _ in drift], "drift": [d for _, d in drift]})
            )
            conn.execute("CREATE OR REPLACE TEMP TABLE rfm_line_drift AS SELECT * FROM rfm_line_drift_data")
            conn.unregister("rfm_line_drift_data")
            csv_file.line_sql = """SELECT r.rfm_record + 1 + COALESCE(d.drift, 0) AS line, r.* EXCLUDE (rfm_record)
               FROM (SELECT row_number() OVER () AS rfm_record, * FROM {reader}) r
               ASOF LEFT JOIN rfm_line_drift d ON r.rfm_record >= d.record"""
    return csv_file.line_sql.format(reader=reader)


MAX_CASE_STEPS = 4096


def _steps_sql(steps: list[tuple[int, int]], lo: int, hi: int, before: int) -> str:
    """The drift of record ``rfm_record`` among ``steps[lo:hi]`` (``before``: the drift below them)."""
    if lo == hi:
        return str(before)
    mid = (lo + hi) // 2
    record, drift = steps[mid]
    below = _steps_sql(steps, lo, mid, before)
    above = _steps_sql(steps, mid + 1, hi, drift)
    return f"(CASE WHEN rfm_record < {record} THEN {below} ELSE {above} END)"


def survey(csv_file: CsvFile, settings: CsvSettings) -> list[tuple[int, int]]:
    """One streaming pass over the UTF-8 file: ``[(record, drift), ...]`` where ``record`` (the
    1-based data record) starts on line ``record + 1 + drift``, listing only the records where the
    drift changes. A UTF-8 source is checked for invalid bytes on the way (FatalError)."""
    lines = _Lines(settings.delimiter)
    newlines = 0
    if csv_file.transcoded:  # checked as it was written
        blocks: Iterator[bytes] = _raw_blocks(csv_file.file)
    else:
        blocks = (block for block, _ in _decoded(csv_file.path, settings, "utf-8"))
    for block in blocks:
        if lines.regular:
            lines.feed(block)
        newlines += block.count(b"\n")
    if lines.regular and newlines:
        return lines.finish()
    return _csv_module_drift(csv_file, settings)


def _raw_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            yield block


class _Lines:
    """The record ends of a file with regular quoting, block by block (numpy): a newline is a record
    end where the quotes before it are balanced. Regular: every quote that opens a field follows a
    delimiter, a newline or the start, and every quote that closes one is followed by a delimiter,
    a newline, the end or another quote (``""``). Otherwise ``regular`` turns False and the csv
    module counts (DuckDB treats a quote inside an unquoted field as text)."""

    def __init__(self, delimiter: str):
        self.regular = len(delimiter.encode("utf-8")) == 1 and delimiter != '"'
        self.delim = delimiter.encode("utf-8")[0] if self.regular else 0
        self.offset = 0  # of the block
        self.newlines = 0  # before the block
        self.quotes = 0  # parity of the quotes before the block
        self.prev = 10  # the byte before the block (a newline: the start)
        self.check_next = False  # the block before ended with a closing quote
        self.last_end: int | None = None  # position of the last record end (a newline), None before the header's
        self.last_end_line = 0  # that newline's 0-based index among all newlines
        self.records = 0  # data records so far (blank lines excluded)
        self.drift = 0
        self.changes: list[tuple[int, int]] = []
        self.tail = b""  # the last two bytes read (to tell a blank last record)

    def feed(self, block: bytes) -> None:
        import numpy as np

        a = np.frombuffer(block, dtype=np.uint8)
        ok = (self.delim, 10, 13, 34)
        if self.check_next and a[0] not in ok:
            self.regular = False
            return
        quotes = np.flatnonzero(a == 34)
        if len(quotes):
            opening = ((self.quotes + np.arange(len(quotes))) & 1) == 0
            before = np.where(quotes > 0, a[np.maximum(quotes - 1, 0)], self.prev)
            after_pos = quotes + 1
            inside = after_pos < len(a)
            after = np.where(inside, a[np.minimum(after_pos, len(a) - 1)], 34)
            first = (self.offset == 0) & (quotes == 0)
            bom = (self.offset == 0) & (quotes == 3) & block.startswith(codecs.BOM_UTF8)
            bad_open = opening & ~np.isin(before, ok) & ~first & ~bom
            bad_close = ~opening & ~np.isin(after, ok)
            if bad_open.any() or bad_close.any():
                self.regular = False
                return
            self.check_next = bool(not opening[-1] and quotes[-1] == len(a) - 1)
        else:
            self.check_next = False
        newlines = np.flatnonzero(a == 10)
        if len(newlines):
            balanced = ((self.quotes + np.searchsorted(quotes, newlines)) & 1) == 0
            self._ends(newlines[balanced], np.flatnonzero(balanced) + self.newlines, a)
        self.quotes = (self.quotes + len(quotes)) & 1
        self.newlines += len(newlines)
        self.prev = int(a[-1])
        self.tail = (self.tail + block[-2:])[-2:]
        self.offset += len(block)

    def _ends(self, ends: npt.NDArray[np.intp], lines: npt.NDArray[np.intp], a: npt.NDArray[np.uint8]) -> None:
        """Records end at the block's positions ``ends`` (newlines; ``lines``: their 0-based index
        among all newlines). A record is the bytes after the previous end up to this one; an empty
        one (``\\n`` or ``\\r\\n`` alone) is a blank line, which DuckDB skips."""
        import numpy as np

        if not len(ends):
            return
        if self.last_end is None:  # the first end is the header's
            self.last_end, self.last_end_line = int(ends[0]) + self.offset, int(lines[0])
            ends, lines = ends[1:], lines[1:]
            if not len(ends):
                return
        starts = np.concatenate(([self.last_end - self.offset], ends[:-1]))
        start_lines = np.concatenate(([self.last_end_line], lines[:-1])) + 2
        before = np.where(ends > 0, a[np.maximum(ends - 1, 0)], self.prev)
        length = ends - starts
        kept = (length > 2) | ((length == 2) & (before != 13))
        start_lines = start_lines[kept]
        numbers = self.records + np.arange(1, len(start_lines) + 1)
        drift = start_lines - numbers - 1
        changed = np.flatnonzero(np.diff(np.concatenate(([self.drift], drift))) != 0)
        self.changes += list(zip(numbers[changed].tolist(), drift[changed].tolist()))
        if len(drift):
            self.records, self.drift = int(numbers[-1]), int(drift[-1])
        self.last_end, self.last_end_line = int(ends[-1]) + self.offset, int(lines[-1])

    def _record(self, start_line: int) -> None:
        self.records += 1
        drift = start_line - self.records - 1
        if drift != self.drift:
            self.changes.append((self.records, drift))
            self.drift = drift

    def finish(self) -> list[tuple[int, int]]:
        """The drift changes, with the last record (no newline after it) counted."""
        if self.last_end is not None:
            trailing = self.offset - self.last_end - 1
            if trailing > 1 or (trailing == 1 and self.tail[-1:] != b"\r"):
                self._record(self.last_end_line + 2)
        return self.changes


def _csv_module_drift(csv_file: CsvFile, settings: CsvSettings) -> list[tuple[int, int]]:
    """The drift changes as Python's csv module splits the records (irregular quoting, or a file
    whose lines end with a bare carriage return). A record it cannot split (a field longer than
    ``max_line_bytes``: an unclosed quote) ends the count, with a warning: numbers after it keep
    the drift found so far and may be off."""
    changes: list[tuple[int, int]] = []
    records, drift = 0, 0
    with csv_file.file.open("r", encoding="utf-8-sig", newline="") as fh, _field_limit(settings.max_line_bytes):
        reader = csv.reader(fh, delimiter=settings.delimiter, quotechar='"', doublequote=True, strict=False)
        try:
            next(reader, None)  # the header
            start = reader.line_num + 1
            for row in reader:
                if row:
                    records += 1
                    if start - records - 1 != drift:
                        drift = start - records - 1
                        changes.append((records, drift))
                start = reader.line_num + 1
        except csv.Error as exc:
            log.warning("%s: line numbers after line %s may be off (%s)", csv_file.path, start, exc)
    return changes


def read_error(path: Path, settings: CsvSettings, exc: duckdb.Error) -> FatalError:
    """One line for a read DuckDB gave up on: out of memory names ``memory_limit``; a line too long
    names ``max_line_bytes``; anything else is DuckDB's first line."""
    import duckdb

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, duckdb.OutOfMemoryException):
        return FatalError(
            f'{path}: reading it needed more than memory_limit = "{settings.memory_limit}" '
            f"({first}); raise memory_limit {WHERE}",
            connector=settings.name,
        )
    if "Maximum line size" in str(exc):
        return FatalError(
            f"{path}: a line is longer than max_line_bytes = {settings.max_line_bytes:,} bytes; "
            f"raise max_line_bytes {WHERE} if it is real",
            connector=settings.name,
        )
    return FatalError(f"{path}: cannot read as CSV ({first})", connector=settings.name)
