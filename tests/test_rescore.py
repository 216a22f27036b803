"""Pipeline.rescore_orders: webhook orders rescore only their customers, with the last run's cut points."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connectors.base import Order
from connectors.file.destination import read_state
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store.runs import recent_runs
from rfm_sync.store.schema import outbox
from tests.configs import config_toml

AS_OF = date(2026, 6, 30)


def orders_csv() -> str:
    rows = ["order_id,customer_id,placed_at,amount", "o-old,c0,2025-03-01T10:00:00Z,15.00"]
    for c in range(1, 31):
        for k in range(1 + c % 3):
            rows.append(f"o{c}-{k},c{c},2026-0{1 + (c + k) % 6}-1{k}T10:00:00Z,{c * 3 + k}.00")
    return "\n".join(rows) + "\n"


def setup(tmp_path, write_config, write_csv, url):
    write_csv(orders_csv())
    config = load_config(write_config(config_toml(url)))
    store = Store.open(config.store.url, config.base_dir)
    pipeline = Pipeline(config, store)
    return pipeline, store


def webhook_order(order_id: str, customer: str, amount: str) -> Order:
    moment = datetime(2026, 6, 29, 9, 0, tzinfo=UTC)
    return Order(
        source="shop",
        order_id=order_id,
        customer_id=customer,
        placed_at=moment,
        updated_at=moment,
        amount=Decimal(amount),
        email=f"{customer}@example.com",
    )


@pytest.mark.slow
def test_only_the_affected_customer_is_rescored_and_pushed(tmp_path, write_config, write_csv, store_url):
    pipeline, store = setup(tmp_path, write_config, write_csv, store_url)
    full = pipeline.run_cycle(AS_OF)
    assert full.group_counts and read_state(tmp_path / "profiles.jsonl")["c0"]["Current RFM group"] == "Inactive"
    rows_before = (tmp_path / "profiles.jsonl").read_text().count("\n")

    report = pipeline.rescore_orders([webhook_order("w1", "c0", "500.00")], AS_OF)

    assert report.scored == 1 and report.changed == 1 and report.pushed == {"sink": 1}
    lines = (tmp_path / "profiles.jsonl").read_text().splitlines()
    assert len(lines) == rows_before + 1
    last = json.loads(lines[-1])
    assert last["customer_key"] == "c0" and last["transition"]["from"] == "Inactive"
    new_group = last["transition"]["to"]
    assert new_group != "Inactive"
    # the cut points are the full run's, and the recorded group counts follow the move
    runs = recent_runs(store, 2)
    assert runs[0]["cut_points"] == runs[1]["cut_points"] == full.cut_points
    assert runs[0]["stats"]["calibrated_on"] == runs[1]["stats"]["calibrated_on"] == AS_OF.isoformat()
    expected = dict(full.group_counts)
    expected["Inactive"] -= 1
    expected[new_group] = expected.get(new_group, 0) + 1
    assert runs[0]["group_counts"] == {g: n for g, n in expected.items() if n}
    store.close()


@pytest.mark.slow
def test_a_cancelled_order_clears_only_that_customer(tmp_path, write_config, write_csv, store_url):
    pipeline, store = setup(tmp_path, write_config, write_csv, store_url)
    pipeline.run_cycle(AS_OF)
    cancelled = Order(
        source="shop",
        order_id="o-old",
        customer_id="c0",
        placed_at=datetime(2025, 3, 1, 10, tzinfo=UTC),
        updated_at=datetime(2026, 6, 29, tzinfo=UTC),
        amount=Decimal("15.00"),
        is_cancelled=True,
    )
    report = pipeline.rescore_orders([cancelled], AS_OF)
    assert report.cleared == 1 and report.changed == 0
    state = read_state(tmp_path / "profiles.jsonl")
    assert state["c0"]["Current RFM group"] is None
    assert sum(1 for p in state.values() if p["Current RFM group"]) == 30
    store.close()


def test_without_a_previous_run_it_falls_back_to_a_full_score(tmp_path, write_config, write_csv, store_url):
    pipeline, store = setup(tmp_path, write_config, write_csv, store_url)
    report = pipeline.rescore_orders([webhook_order("w1", "new", "20.00")], AS_OF)
    assert report.scored == 1  # only the webhook order is stored: nothing was pulled yet
    assert report.cut_points  # calibrated on the whole store, like any full cycle
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 1
    store.close()


def test_an_order_moved_to_another_customer_rescores_the_one_it_left(tmp_path, write_config, write_csv, store_url):
    """A webhook for an order now belonging to another customer (Shopify merges customers, an order is
    reassigned) changes both: the customer it left loses it at once, not at the next full cycle."""
    pipeline, store = setup(tmp_path, write_config, write_csv, store_url)
    pipeline.run_cycle(AS_OF)
    assert "c3" in read_state(tmp_path / "profiles.jsonl")  # c3 has one order, o3-0
    moved = webhook_order("o3-0", "c4", "9.00")  # o3-0 was c3's
    report = pipeline.rescore_orders([moved], AS_OF)
    assert report.scored == 1 and report.cleared == 1  # c4 rescored, c3 left with no order: cleared
    state = read_state(tmp_path / "profiles.jsonl")
    assert state["c3"]["Current RFM group"] is None
