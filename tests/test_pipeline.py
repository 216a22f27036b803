"""The cycle end to end on a CSV source and a file sink: diff-only pushes, previous groups, quarantine."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from connectors.file.destination import read_state
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store.orders import upsert_orders
from rfm_sync.store.schema import orders, quarantine
from tests.configs import config_toml

AS_OF = date(2026, 6, 30)


def config_text(url: str, metrics: str) -> str:
    return config_toml(url, f"[properties]\ninclude_metrics = {metrics}")


def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat() + "T12:00:00Z"


def base_rows():
    rows = []
    # 30 customers with 1..3 orders and spends spread out, so cut points are not degenerate
    for i in range(30):
        for k in range(1 + i % 3):
            rows.append(
                [f"o{i}-{k}", f"c{i:02d}", f"c{i}@example.com", day(5 + 40 * (i % 7) + k), f"{10 + 7 * i}.50", "paid"]
            )
    return rows


def write_orders(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "customer_id", "email", "placed_at", "amount", "status"])
        w.writerows(rows)


def make(tmp_path, url, rows, metrics="false", clock=None):
    """A pipeline on the CSV and file sink, with its store at ``url`` (the ``store_url`` fixture)."""
    write_orders(tmp_path / "orders.csv", rows)
    (tmp_path / "config.toml").write_text(config_text(metrics=metrics, url=url))
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    kwargs = {"clock": clock} if clock else {}
    return config, store, Pipeline(config, store, **kwargs)


def sink_lines(tmp_path):
    return [json.loads(line) for line in (tmp_path / "profiles.jsonl").read_text().splitlines()]


def test_second_run_with_no_new_orders_pushes_nothing(tmp_path, store_url):
    config, store, pipeline = make(tmp_path, store_url, base_rows(), metrics="true")
    first = pipeline.run_cycle(AS_OF)
    assert first.scored == 30 and first.changed == 30 and first.pushed == {"sink": 30}
    lines_before = len(sink_lines(tmp_path))
    second = Pipeline(config, store).run_cycle(AS_OF)
    assert second.changed == 0 and second.pushed == {"sink": 0}
    assert len(sink_lines(tmp_path)) == lines_before


def test_a_changed_order_changes_exactly_that_customer(tmp_path, store_url):
    rows = base_rows()
    config, store, pipeline = make(tmp_path, store_url, rows, metrics="true")
    pipeline.run_cycle(AS_OF)
    before = read_state(tmp_path / "profiles.jsonl")
    # the biggest spender's order grows: cut points (interpolated lower down) do not move
    target = max(range(len(rows)), key=lambda i: float(rows[i][4]))
    rows[target][4] = "999.99"
    write_orders(tmp_path / "orders.csv", rows)
    report = Pipeline(config, store).run_cycle(AS_OF)
    assert report.read == {"shop": len(rows)}  # the export changed, so it was re-read
    assert report.pulled == {"shop": 1}  # ... and one order in it changed in the store
    assert report.changed == 1
    after = read_state(tmp_path / "profiles.jsonl")
    changed = [k for k in after if after[k] != before[k]]
    assert changed == [rows[target][1]]
    assert after[rows[target][1]]["RFM spend"] > before[rows[target][1]]["RFM spend"]


def test_unchanged_export_is_not_read_again(tmp_path, store_url):
    config, store, pipeline = make(tmp_path, store_url, base_rows())
    assert pipeline.run_cycle(AS_OF).pulled == {"shop": len(base_rows())}
    assert Pipeline(config, store).run_cycle(AS_OF).pulled == {"shop": 0}


@pytest.mark.slow
def test_previous_group_is_the_last_different_group(tmp_path, store_url):
    now = [datetime(2026, 7, 1, 3, tzinfo=UTC)]
    config, store, pipeline = make(tmp_path, store_url, base_rows(), clock=lambda: now[0])
    pipeline.run_cycle(AS_OF - timedelta(days=200))
    first = read_state(tmp_path / "profiles.jsonl")
    assert all("Previous RFM group" not in p for p in first.values())  # unset until it first changes
    now[0] = datetime(2026, 7, 2, 3, tzinfo=UTC)
    pipeline.run_cycle(AS_OF)
    second = read_state(tmp_path / "profiles.jsonl")
    assert set(second) > set(first)  # customers whose first order came later are new
    moved = [k for k in first if second[k]["Current RFM group"] != first[k]["Current RFM group"]]
    assert moved
    for k in moved:
        assert second[k]["Previous RFM group"] == first[k]["Current RFM group"]
        assert second[k]["RFM group last changed"] == "2026-07-02T03:00:00Z"
    stayed = [k for k in first if k not in moved]
    for k in stayed:
        assert second[k]["RFM group last changed"] == first[k]["RFM group last changed"]
    # a third run as of the same day changes nothing and keeps Previous as it was
    now[0] = datetime(2026, 7, 3, 3, tzinfo=UTC)
    pipeline.run_cycle(AS_OF)
    assert read_state(tmp_path / "profiles.jsonl") == second


@pytest.mark.slow
def test_customer_with_no_qualifying_order_left_is_cleared(tmp_path, store_url):
    rows = base_rows()
    config, store, pipeline = make(tmp_path, store_url, rows)
    pipeline.run_cycle(AS_OF)
    for row in rows:
        if row[1] == "c00":
            row[5] = "cancelled"
    write_orders(tmp_path / "orders.csv", rows)
    report = Pipeline(config, store).run_cycle(AS_OF)
    assert report.cleared == 1
    last = sink_lines(tmp_path)[-1]
    assert last["customer_key"] == "c00"
    assert last["properties"]["Current RFM group"] is None
    assert last["transition"]["to"] is None


def test_orders_are_upserted_not_duplicated_and_amounts_exact(tmp_path, store_url):
    rows = base_rows() + [["dup", "c01", "", day(3), "0.10", "paid"], ["dup", "c01", "", day(3), "0.20", "paid"]]
    config, store, pipeline = make(tmp_path, store_url, rows)
    pipeline.run_cycle(AS_OF)
    with store.engine.connect() as conn:
        got = conn.execute(sa.select(orders.c.amount_e4).where(orders.c.order_id == "dup")).scalars().all()
        total = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar()
    assert got == [2000]  # one row, the later line wins, 0.20 × 10⁴ exactly
    assert total == len(base_rows()) + 1


def test_bad_rows_are_quarantined_with_place_and_the_rest_proceeds(tmp_path, store_url):
    rows = base_rows()
    rows.insert(3, ["bad1", "c99", "", "not a date", "5.00", "paid"])
    rows.insert(7, ["bad2", "c98", "", day(2), "five", "paid"])
    config, store, pipeline = make(tmp_path, store_url, rows)
    report = pipeline.run_cycle(AS_OF)
    assert report.scored == 30
    assert [(q["location"], q["reason"].split(":")[0]) for q in report.quarantined] == [
        ("orders.csv:5", "placed_at is not a date/time"),
        ("orders.csv:9", "amount is not a number"),
    ]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar() == 2


@pytest.mark.slow
def test_guest_orders_are_keyed_by_email(tmp_path, store_url):
    rows = base_rows() + [["g1", "", "Guest@Example.com ", day(1), "12.00", "paid"]]
    config, store, pipeline = make(tmp_path, store_url, rows)
    pipeline.run_cycle(AS_OF)
    state = read_state(tmp_path / "profiles.jsonl")
    assert "email:guest@example.com" in state


@pytest.mark.slow
def test_a_newline_inside_quotes_and_a_short_row_are_both_read(tmp_path, store_url):
    """DuckDB's parallel reader cannot pad a short row in a file that also has a newline inside
    quotes; the CSV source then reads the file with one thread instead of failing the pull."""
    rows = base_rows()
    rows[0][5] = "paid\n(by phone)"  # written quoted by the csv module
    rows.insert(5, ["short1", "c97", "", day(3)])  # no amount, no status
    config, store, pipeline = make(tmp_path, store_url, rows)
    report = pipeline.run_cycle(AS_OF)
    assert report.scored == 30 and not report.errors
    assert [q["reason"] for q in report.quarantined] == ["amount is empty"]
    with store.engine.connect() as conn:
        status = conn.execute(sa.select(orders.c.status).where(orders.c.order_id == rows[0][0])).scalar_one()
    assert status == "paid\n(by phone)"


def test_orders_pulled_counts_what_the_store_took_not_what_was_read(tmp_path, store_url):
    """An order counts when it is new or its stored row changed; the same row again, or an older
    version of it (a smaller ``updated_at``), is not rewritten and not counted."""
    from decimal import Decimal

    from connectors.base import Order
    from rfm_sync.pipeline import order_row

    store = Store.open(store_url)
    now = datetime(2026, 7, 1, tzinfo=UTC)

    def row(oid, amount, updated):
        order = Order(
            source="shop",
            order_id=oid,
            customer_id="c1",
            placed_at=datetime(2026, 6, 1, tzinfo=UTC),
            amount=Decimal(amount),
            updated_at=datetime(2026, 6, updated, tzinfo=UTC),
        )
        return order_row(order, "c1", now)

    try:
        with store.begin() as conn:
            assert upsert_orders(conn, [row("o1", "10", 2), row("o2", "20", 2)]) == 2
        with store.begin() as conn:  # o1 again as it is, o2 edited, o3 new
            assert upsert_orders(conn, [row("o1", "10", 2), row("o2", "25", 3), row("o3", "5", 3)]) == 2
        with store.begin() as conn:  # an older version of o2 is refused, and not counted
            assert upsert_orders(conn, [row("o2", "20", 2)]) == 0
        with store.engine.connect() as conn:
            amounts = dict(conn.execute(sa.select(orders.c.order_id, orders.c.amount_e4)).all())
        assert amounts == {"o1": 100_000, "o2": 250_000, "o3": 50_000}
    finally:
        store.close()


@pytest.mark.slow
def test_a_reread_export_with_one_edit_and_many_bad_rows_is_not_mostly_quarantined(tmp_path, store_url):
    """The quarantine share compares bad rows with the rows read, not with the few that changed."""
    rows = base_rows()
    config, store, pipeline = make(tmp_path, store_url, rows)
    pipeline.run_cycle(AS_OF)
    rows[0][4] = "11.50"
    rows += [[f"bad{i}", f"c{i:02d}", "", "not a date", "1", "paid"] for i in range(5)]
    write_orders(tmp_path / "orders.csv", rows)
    report = Pipeline(config, store).run_cycle(AS_OF)
    assert report.pulled == {"shop": 1} and len(report.quarantined) == 5
    assert "quarantine" not in report.errors  # 5 of 65 rows read, not 5 of 6
