"""Stable groups through the real pipeline and store: frozen cut points, recalibration, hysteresis, labels."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connectors.base import Order
from rfm_sync import engine
from rfm_sync.config import parse_config
from rfm_sync.pipeline import Pipeline, order_row, update_from_row
from rfm_sync.store import Store, utcnow
from rfm_sync.store import outbox as ob
from rfm_sync.store.orders import aggregate, upsert_customers, upsert_orders
from rfm_sync.store.runs import recent_runs
from rfm_sync.store.schema import calibrations, customer_state, outbox

D = date(2026, 3, 1)


def make(tmp_path, **rfm):
    config = parse_config({"rfm": rfm, "store": {"url": f"sqlite:///{tmp_path / 'rfm.sqlite'}"}})
    store = Store.open(config.store.url)
    sink = FakeDestination()
    return config, store, Pipeline(config, store, sources=[], destinations=[sink]), sink


class FakeDestination:
    name, batch_size = "fake", 10_000

    def __init__(self):
        self.updates = []

    def push(self, updates):
        from connectors.base import PushResult

        self.updates.extend(updates)
        return PushResult(accepted=[u.outbox_id for u in updates])


def add_orders(store, rows):
    """rows: (customer, order id, day, amount)"""
    now = utcnow()
    with store.begin() as conn:
        upsert_orders(
            conn,
            [
                order_row(
                    Order(
                        source="t",
                        order_id=oid,
                        customer_id=key,
                        placed_at=datetime.combine(day, time(12), UTC),
                        amount=Decimal(str(amount)),
                    ),
                    key,
                    now,
                )
                for key, oid, day, amount in rows
            ],
        )
        upsert_customers(
            conn,
            [
                {"customer_key": key, "email": f"{key}@x.test", "phone": None, "updated_at": now}
                for key in {r[0] for r in rows}
            ],
        )


def groups(store):
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.current_group)).all())


def old_shop():
    # 101 customers: last order 10·k days before D (k = 0..100), k % 7 + 1 orders of 10·(k % 13 + 1).
    # With 101 values the classic11 quintiles fall exactly on values (multiples of 10 days), so one more
    # day of waiting moves nobody across a recency cut point: any move is the cut points' doing.
    rows = []
    for k in range(101):
        for j in range(k % 7 + 1):
            rows.append((f"old{k:03d}", f"o{k}-{j}", D - timedelta(days=10 * k + 30 * j), 10 * (k % 13 + 1)))
    return rows


@pytest.mark.slow
def test_frozen_cut_points_keep_untouched_customers_through_a_promo_spike_and_recalibration_moves_them(tmp_path):
    # the spike quadruples this small shop, which would make the calibration due by its population
    # (tests/test_calibration.py); here only its age may, to show what freezing protects
    config, store, pipeline, sink = make(
        tmp_path, scheme="classic11", recalibrate_days=30, window_days=2000, recalibrate_population_change=5
    )
    add_orders(store, old_shop())
    first = pipeline.run_cycle(D, pull=False)
    before = groups(store)
    # promo day: 300 new customers buy once, big baskets
    add_orders(store, [(f"promo{i:03d}", f"p{i}", D + timedelta(days=1), 500) for i in range(300)])
    second = pipeline.run_cycle(D + timedelta(days=1), pull=False)
    after = groups(store)
    assert second.cut_points == first.cut_points  # frozen
    assert {k: after[k] for k in before} == before  # not one untouched customer moved
    assert not [u for u in sink.updates[len(before) :] if u.customer_key.startswith("old")]
    # had the quantiles been recomputed, the spike would have moved many of them
    rfm = config.rfm
    start, end = engine.window_bounds(D + timedelta(days=1), rfm.window_days, config.shop.zone)
    fresh = engine.score_customers(aggregate(store, end, start), D + timedelta(days=1), rfm, zone=config.shop.zone)
    moved = [k for k, g in zip(fresh.frame["customer_key"], fresh.frame["rfm_group"]) if k in before and before[k] != g]
    assert len(moved) >= 20
    # 30 days later the calibration is due: new cut points, and customers move to where they belong
    due = D + timedelta(days=31)
    third = pipeline.run_cycle(due, pull=False)
    assert third.cut_points != first.cut_points and third.calibrated_on == due
    start, end = engine.window_bounds(due, rfm.window_days, config.shop.zone)
    expected = engine.score_customers(aggregate(store, end, start), due, rfm, zone=config.shop.zone)
    assert groups(store) == dict(zip(expected.frame["customer_key"], expected.frame["rfm_group"].astype(str)))
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(calibrations)).scalar_one() == 2
    assert recent_runs(store, 1)[0]["stats"]["calibrated_on"] == due.isoformat()


@pytest.mark.slow
def test_recalibrate_command_freezes_new_cut_points_for_the_next_run(tmp_path):
    from rfm_sync.calibration import recalibrate

    config, store, pipeline, _ = make(tmp_path, scheme="classic11", window_days=2000)
    add_orders(store, old_shop())
    first = pipeline.run_cycle(D, pull=False)
    add_orders(store, [(f"promo{i:03d}", f"p{i}", D + timedelta(days=1), 500) for i in range(300)])
    new = recalibrate(config, store, D + timedelta(days=1))
    assert new["previous"]["cut_points"] == first.cut_points and new["cut_points"] != first.cut_points
    second = pipeline.run_cycle(D + timedelta(days=2), pull=False)
    assert second.cut_points == new["cut_points"] and second.calibrated_on == D + timedelta(days=1)


def test_scheme_without_quantiles_stores_no_calibration(tmp_path):
    config, store, pipeline, _ = make(tmp_path, scheme="thresholds")
    add_orders(store, old_shop())
    report = pipeline.run_cycle(D, pull=False)
    assert report.cut_points == {} and report.calibrated_on is None


@pytest.mark.slow
def test_hysteresis_keeps_a_customer_until_the_value_clears_the_boundary_by_the_margin(tmp_path):
    # klaviyo recency bounds 30/60: R = 3 up to 30 days, 2 up to 60, else 1; margin 10% of the bound
    config, store, pipeline, _ = make(tmp_path, scheme="klaviyo", recency_bounds=[30, 60], hysteresis=0.1)
    add_orders(store, [("x", "x1", D, 10), ("y", "y1", D, 10)] + [(f"f{i}", f"f{i}", D, 10) for i in range(5)])
    pipeline.run_cycle(D, pull=False)

    def r_of(key):
        return int(_state(store)[key]["rfm_score"][0])

    assert r_of("x") == 3
    pipeline.run_cycle(D + timedelta(days=32), pull=False)  # 32 days: past 30, not past 33
    assert r_of("x") == 3
    pipeline.run_cycle(D + timedelta(days=34), pull=False)  # past 30 by more than 10%
    assert r_of("x") == 2
    add_orders(store, [("x", "x2", D + timedelta(days=35), 10)])
    pipeline.run_cycle(D + timedelta(days=35), pull=False)  # 0 days: moves back up at once
    assert r_of("x") == 3
    assert r_of("y") == 2  # y bought nothing since D: it crossed by the margin at day 34 like x did


def _state(store):
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(customer_state)).mappings().all()
    return {r["customer_key"]: dict(r) for r in rows}


def test_labels_are_stored_and_a_label_change_is_a_transition(tmp_path):
    config, store, pipeline, sink = make(
        tmp_path,
        scheme="thresholds",
        segments=[{"name": "Premium", "when": {"monetary": "premium"}}],
        fallback_segment="Others",
    )
    add_orders(store, [("a", "a1", D, 20), ("b", "b1", D, 20)])
    pipeline.run_cycle(D, pull=False)
    state = _state(store)
    assert json.loads(state["a"]["labels"]) == {"frequency": "occasional", "monetary": "saver", "recency": "short"}
    props = json.loads(state["a"]["properties"])
    assert (
        props["RFM frequency"] == "occasional" and props["RFM monetary"] == "saver" and props["RFM recency"] == "short"
    )
    add_orders(store, [("a", "a2", D + timedelta(days=1), 20)])  # 2 orders: regular; group stays "Others"
    n = len(sink.updates)
    pipeline.run_cycle(D + timedelta(days=1), pull=False)
    update = next(u for u in sink.updates[n:] if u.customer_key == "a")
    assert update.transition.from_group == update.transition.to_group == "Others"
    assert update.transition.labels_before["frequency"] == "occasional"
    assert update.transition.labels_after["frequency"] == "regular"
    assert update.event_id
    assert not [u for u in sink.updates[n:] if u.customer_key == "b"]  # b: one day older, still "short"


@pytest.mark.parametrize(("include_metrics", "holdout_percent"), [(False, 0), (True, 0), (False, 30)])
def test_vectorised_snapshots_equal_the_reference_property_builder(tmp_path, include_metrics, holdout_percent):
    from rfm_sync.properties import build_properties

    config, store, pipeline, _ = make(tmp_path, scheme="classic11")
    config.properties.include_metrics = include_metrics
    config.properties.holdout_percent = holdout_percent
    add_orders(store, old_shop() + [("cents", "c1", D, "12.3456"), ("cents", "c2", D, "0.5")])
    report = pipeline.run_cycle(D, pull=False)
    result = pipeline.score(D)
    state = _state(store)
    for row in result.frame.itertuples(index=False):
        s = state[row.customer_key]
        changed = datetime.fromisoformat(str(s["group_changed_at"]))
        expected = json.dumps(build_properties(config.properties, row, s["previous_group"], changed), sort_keys=True)
        assert s["properties"] == expected
    assert report.scored == len(state)
    with store.engine.connect() as conn:
        payload = json.loads(conn.execute(sa.select(outbox.c.payload).limit(1)).scalar_one())
    assert payload["first_assignment"] is True and payload["transition"]["from"] is None
    rows = ob.next_batch(store, "fake", 0, 5)
    assert all(update_from_row(r).properties for r in rows)
