"""The CSV scan classifies every kind of bad row, and reads good ones exactly (blanks trimmed)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from connectors.csv.scan import scan
from connectors.csv.source import CsvSettings


def test_every_kind_of_bad_row_is_named_and_good_rows_read_exactly(write_csv):
    path = write_csv("""
        order_id,customer_id,email,placed_at,amount,refunded,status
        o1,a,,2026-01-02T10:00:00+02:00,10.50,,paid
        o2,,,2026-01-02,1.00,,paid
        o3,,Guest@Example.com, 2026-01-02 ,1.00,,paid
        o4,b,,,1.00,,paid
        o5,c,,yesterday,1.00,,paid
        o6,d,,2026-01-02,,,paid
        o7,e,,2026-01-02,1;00,,paid
        o8,f,,2026-01-02,5.00,two,paid
        o9,g,,2026-01-02,5.00, 1.50 ,paid
        o10,h,,2026-01-02,5.00,,paid,extra
    """)
    conn = scan(path, CsvSettings(name="csv", path=str(path)), ZoneInfo("UTC")).conn
    rows = conn.execute("SELECT line, problem, amount FROM checked ORDER BY line").fetchall()
    assert [(line, problem.split(":")[0]) for line, problem, _ in rows if problem] == [
        (3, "customer_id is empty (and no email to identify a guest)"),
        (5, "placed_at is empty"),
        (6, "placed_at is not a date/time"),
        (7, "amount is empty"),
        (8, "amount is not a number"),
        (9, "refunded is not a number"),
        (11, "more fields than the header"),
    ]
    assert {line: str(amount) for line, problem, amount in rows if not problem} == {
        2: "10.5000",
        4: "1.0000",
        10: "3.5000",
    }
