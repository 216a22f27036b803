"""`rfm-sync score` reads a clean CSV with DuckDB's typed reader and checks every other file with
the validating scan. The two must agree on every file the fast read accepts, and the fast read
must hand over every file it cannot vouch for (bad rows, repeated order ids, odd values)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.csv.scan import _trimmed
from connectors.csv.source import CsvSettings
from rfm_sync.config import parse_config
from rfm_sync.offline import aggregate_csv

AS_OF = date(2026, 6, 30)


def both(path: Path, config=None, csv_settings: CsvSettings | None = None):
    config = config or parse_config({"rfm": {"scheme": "thresholds"}})  # thresholds: three extra windows
    csv_settings = csv_settings or CsvSettings(name="csv", path=str(path))
    fast = aggregate_csv(path, csv_settings, config, AS_OF)
    slow = aggregate_csv(path, csv_settings, config, AS_OF, validate_all=True)
    fast.conn.close()
    slow.conn.close()
    assert not slow.fast
    return fast, slow


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a = a.sort_values("customer_key").reset_index(drop=True)
    b = b.sort_values("customer_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=len(a) > 0)  # an empty frame's text dtype may differ


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


HOSTILE_BUT_CLEAN = """\
order_id,customer_id,email,placed_at,amount,refunded,status,currency
 1 , 00042 ,A@Example.com, 2026-06-30 10:00:00 , 12.345678 ,,paid, eur
2,,Guest@Example.COM,2026-03-29 02:30:00,5,0.50, PAID ,EUR
3,,guest@example.com,2026-10-25 02:30:00+01:00,1e2,,Cancelled,EUR
4,"a,b","x@y.z",2026-06-29T23:59:59.999999Z,"7.10",1.10,paid,
5,"multi line",,2026-01-01,0.0001,,"test
",
6,c9,,2025-07-01T00:00:00+14:00,99999999.9999,0,,
7,c9,,2024-07-01 00:00:00,-3,,refunded,
8,c10,,2026-07-01 00:00:00,10,,paid,
"""


def test_a_hostile_but_clean_file_takes_the_fast_read_and_agrees(tmp_path):
    """Spaces around values, guests by email in mixed case, DST gaps and folds in the shop's zone,
    offsets, fractional seconds, date-only times, exponents, quoted commas and newlines (a newline
    inside an id is a control character: see the list below), statuses in any case, refunds, a
    future order, a negative amount on a refunded order: the fast read takes it and gives the
    validating scan's result."""
    config = parse_config({"shop": {"timezone": "Europe/Berlin"}, "rfm": {"scheme": "thresholds"}})
    fast, slow = both(write(tmp_path, HOSTILE_BUT_CLEAN), config)
    assert fast.fast and fast.bad == 0
    same(fast.frame, slow.frame)
    keys = set(fast.frame["customer_key"])
    assert "00042" in keys and "email:guest@example.com" in keys and "a,b" in keys
    assert "c10" not in keys  # its only order is after the as-of day


@pytest.mark.slow  # 26 files, two reads each
@pytest.mark.parametrize(
    "row, why",
    [
        ("9,c1,,not a date,5,,paid,", "a date the reader cannot parse"),
        ("9,c1,,2026-01-01,five,,paid,", "an amount that is not a number"),
        ("9,c1,,2026-01-01,5,x,paid,", "a refund that is not a number"),
        ("9,c1,,2026-01-01,5,,paid,,extra", "more fields than the header"),
        ("9,c1,,2026-01-01", "fewer fields than the header"),
        ("9,,,2026-01-01,5,,paid,", "no customer id and no email"),
        ("9,c1,,,5,,paid,", "an empty date"),
        (",c1,,,5,,paid,", "an empty date on a row without an order id"),
        ("9,c1,,2026-01-01,,,paid,", "an empty amount"),
        ("9,c1,,2026-01-01,100000000,,paid,", "an amount too large for the fast read's 64-bit money"),
        ("1,c1,,2026-01-01,5,,paid,", "an order id seen before (the later line must win)"),
        (" 1 ,c1,,2026-01-01,5,,paid,", "an order id seen before, with spaces"),
        ('9," ",late@example.com,2026-01-01,5,,paid,', "a customer id of only spaces (the row is the email's)"),
        ('9,"\u00a0",,2026-01-01,5,,paid,', "a customer id of only a Unicode space, and no email"),
        ('9," ",,2026-01-01,5,,cancelled,', "a customer id of only spaces, no email, on an order that does not count"),
        ('9,"multi\nline",,2026-01-01,5,,paid,', "a newline inside a customer id"),
        ('9,"a\x00b",,2026-01-01,5,,cancelled,', "a NUL inside a customer id, on an order that does not count"),
        ("9\x002,c1,,2026-01-01,5,,paid,", "a NUL inside an order id"),
        ("9,\tc\x001\t\x00,,2026-01-01,5,,paid,", "a NUL inside a customer id with tabs and a NUL around it"),
        ("9,,not-an-email,2026-01-01,5,,paid,", "a guest whose email is not an address"),
        ('9,,"a@b.c\nd",2026-01-01,5,,paid,', "a guest whose email holds a newline"),
        ("9,c1,,0001-01-01,5,,paid,", "a placeholder date long ago"),
        ("9,c1,,9999-12-31,5,,cancelled,", "a placeholder date far ahead, on an order that does not count"),
        ("9,c1,,2026-01-01,-5,,paid,", "a negative amount on an order that would count"),
        ("9,c1,,2026-01-01,5,6,paid,", "a refund larger than the order"),
        (
            "9,c1,,2026-01-01,5,,paid,\n10,c2,,2026-01-01,5,,paid,\n9,c3,,2026-01-02,5,,paid,",
            "one order id with two customers",
        ),
    ],
)
def test_files_the_fast_read_cannot_vouch_for_go_through_the_validating_scan(tmp_path, row, why):
    path = write(tmp_path, HOSTILE_BUT_CLEAN + row + "\n")
    fast, slow = both(path)
    assert not fast.fast, why
    assert fast.bad == slow.bad and fast.skipped == slow.skipped
    same(fast.frame, slow.frame)


@pytest.mark.slow
def test_customer_ids_that_differ_only_by_spaces_merge_on_the_fast_read(tmp_path):
    """The typed read groups by the id as written and trims the keys afterwards: the customers
    " 00042 ", "00042" and "00042\u00a0" are one, on both reads."""
    text = HOSTILE_BUT_CLEAN + "11,00042,,2026-06-01,4,,paid,\n12,00042\u00a0,,2026-06-02,6,,paid,\n"
    fast, slow = both(write(tmp_path, text))
    assert fast.fast
    same(fast.frame, slow.frame)
    row = fast.frame.set_index("customer_key").loc["00042"]
    assert row["orders"] == 3 and row["monetary_e4"] == 123_457 + 100_000  # 12.3457 + 4 + 6


@pytest.mark.slow
def test_rows_without_an_order_id_keep_the_fast_read_and_a_repeat_among_the_others_does_not(tmp_path):
    """Rows with no order id are not repeats of each other (the validating scan keys them by line);
    the repeat check sees only the ids that are there."""
    text = HOSTILE_BUT_CLEAN + ",c20,,2026-06-01,4,,paid,\n,c20,,2026-06-01,4,,paid,\n"
    fast, slow = both(write(tmp_path, text))
    assert fast.fast
    same(fast.frame, slow.frame)
    assert fast.frame.set_index("customer_key").loc["c20", "orders"] == 2
    fast, slow = both(write(tmp_path, text + "8,c21,,2026-06-02,1,,paid,\n", "repeat.csv"))
    assert not fast.fast  # id 8 is on line 9 already
    same(fast.frame, slow.frame)


TRIM_CASES = [
    "a",
    " a",
    "a ",
    "  a  b  ",
    "",
    " ",
    "   ",
    "\u00a0a",
    "a\u00a0",
    "\u3000a\u3000",
    "\u2009x",
    "é",
    " é ",
    "\u00e9\u00a0",
    "\ta\t",
    "a\n",
    "\x00a\x1f",
    "\x0b\x0ca\r\n",
    "a\x00",
    "\x7fa",
    "a b\t",
    "\t\u00a0a\u3000\n",
    "\U0001f600",
    " \U0001f600",
    "a\u200bb",
    "\u200b",
]


def test_the_cheap_trim_gives_trims_result_for_every_value():
    """``_trimmed`` trims only a value with a character up to U+0020 at an end or a non-ASCII
    character; the result must equal a full trim (``validate.trim``) for ASCII and Unicode spaces,
    tabs, newlines, NUL and other control characters, and other text."""
    from connectors.validate import trim

    conn = duckdb.connect()
    conn.execute("CREATE TABLE t(v VARCHAR)")
    conn.executemany("INSERT INTO t VALUES (?)", [[v] for v in TRIM_CASES] + [[None]])
    cheap = _trimmed({"customer_id": "v"}, {"customer_id"}, "customer_id")
    rows = conn.execute(f"SELECT v, {cheap} FROM t").fetchall()
    assert len(rows) == len(TRIM_CASES) + 1
    for value, got in rows:
        assert got == trim(value), repr(value)
    assert conn.execute(f"SELECT {cheap} FROM t WHERE v = '\u00a0a'").fetchone()[0] == "a"  # not a no-op


@pytest.mark.slow
def test_mapped_columns_another_delimiter_and_no_optional_columns(tmp_path):
    path = write(tmp_path, "Kunde;Datum;Betrag\nk1;2026-06-01;10,5\nk1;2026-06-02;3\nk2;2026-05-01;7\n")
    mapped = CsvSettings(
        name="csv",
        path=str(path),
        delimiter=";",
        columns={"customer_id": "Kunde", "placed_at": "Datum", "amount": "Betrag"},
    )
    fast, slow = both(path, csv_settings=mapped)
    assert not fast.fast  # "10,5" is not a number for either read: quarantined by the validating scan
    assert slow.bad == 1
    same(fast.frame, slow.frame)
    path = write(tmp_path, "Kunde;Datum;Betrag\nk1;2026-06-01;10.5\nk1;2026-06-02;3\nk2;2026-05-01;7\n", "b.csv")
    fast, slow = both(path, csv_settings=mapped.model_copy(update={"path": str(path)}))
    assert fast.fast
    same(fast.frame, slow.frame)
    assert fast.frame.set_index("customer_key").loc["k1", "monetary_e4"] == 135_000


CELLS = {
    "order_id": st.sampled_from(["1", "2", "3", " 4", "5 ", "", "o-6", "7", "1\t", "\x002", "8\x009", "3\x1b"]),
    "customer_id": st.sampled_from(
        ["a", " a", "A", "b", "", " ", "007", "c d", "é", "é\u00a0", "a\t", "\x0ba\r", "\t", "a\x00b", "b\x00", "a\x7f"]
    ),
    "email": st.sampled_from(["", "x@y.z", "X@Y.Z", " x@y.z ", "q@r.s", "x@y.z\t", "not-an-email", "x@y\x00.z", "x@y"]),
    "placed_at": st.sampled_from(
        [
            "2026-06-30",
            "2026-06-30 23:59:59",
            "2026-07-01T00:00:00Z",
            "2026-03-29 02:30:00",
            "2026-10-25 02:30:00",
            " 2026-01-01 ",
            "2025-06-30T12:00:00+05:30",
            "2024-07-01",
            "2026-02-30",
            "",
            "yesterday",
            "0001-01-01",
            "9999-12-31",
            "1970-01-01",
        ]
    ),
    "amount": st.sampled_from(
        ["1", "0", "-1", "0.00005", "12.34", " 5 ", "1e1", "99999999.9999", "100000000", "", "abc", "3.14159"]
    ),
    "refunded": st.sampled_from(["", "0", "1", "0.5", "12.34", "x"]),
    "status": st.sampled_from(["", "paid", "PAID", " cancelled ", "test", "Refunded", "pending"]),
}


@pytest.mark.slow  # 60 generated files
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries(CELLS), min_size=1, max_size=12))
def test_any_file_scores_the_same_through_either_read(tmp_path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CELLS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    config = parse_config({"shop": {"timezone": "Europe/Berlin"}, "rfm": {"scheme": "thresholds"}})
    fast, slow = both(write(tmp_path, buffer.getvalue()), config)
    assert fast.bad == slow.bad and fast.skipped == slow.skipped
    if slow.bad or slow.skipped:
        assert not fast.fast
    same(fast.frame, slow.frame)


def _result(batches):
    """A typed pass's result as DuckDB returns it: customer rows and hash-list rows in batches."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("hash_list", pa.bool_()),
            ("customer_key", pa.string()),
            ("orders", pa.int64()),
            ("order_hashes", pa.list_(pa.uint64())),
        ]
    )

    def row(kind: str, item) -> dict:
        if kind == "lists":
            return {"hash_list": True, "customer_key": None, "orders": None, "order_hashes": item}
        return {"hash_list": False, "customer_key": item, "orders": 1, "order_hashes": None}

    record_batches = []
    for parts in batches:
        rows = [row(kind, item) for kind, items in parts for item in items]
        record_batches.append(pa.RecordBatch.from_pylist(rows, schema=schema))
    return pa.Table.from_batches(record_batches, schema=schema)


def test_the_result_splits_into_customers_and_hash_lists_however_its_batches_mix():
    """Large results bring the two parts in batches of their own, small ones in one batch: both
    come apart whole, and a repeat is found only where a list holds the same hash twice."""
    from rfm_sync.offline import _repeats, _split

    table = _result(
        [
            [("customers", ["a", "b"])],
            [("customers", ["c"]), ("lists", [[1, 2], None])],
            [("lists", [[3, 4], []])],
            [("customers", ["d"])],
        ]
    )
    customers, lists = _split(table)
    assert customers.column_names == ["customer_key", "orders"]
    assert customers["customer_key"].to_pylist() == ["a", "b", "c", "d"]
    assert lists.to_pylist() == [[1, 2], None, [3, 4], []]
    assert _repeats(lists) == 0
    _, lists = _split(_result([[("customers", ["a"]), ("lists", [[5, 7, 5]])], [("lists", [[6]])]]))
    assert _repeats(lists) == 1
