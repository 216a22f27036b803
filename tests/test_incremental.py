"""Pipeline.run_incremental: a same-day cycle rescores only the customers its pull read (and those an order
left), and ends exactly where a whole rescore with the same cut points would."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import Order, Page
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store.schema import customer_state
from tests.configs import config_toml

AS_OF = date(2026, 6, 30)


class ListSource:
    """A source that gives the orders put in ``pending`` once, as a shop's "updated since" pull does."""

    name = "shop"

    def __init__(self, orders: list[Order]):
        self.pending = list(orders)

    def pull(self, context):
        given, self.pending = self.pending, []
        if given:
            yield Page(records=given, cursor=str(len(given)))

    def check(self, online=True):
        return []


def order(order_id: str, customer: str, days_ago: int, amount: int, cancelled: bool = False) -> Order:
    moment = datetime.combine(AS_OF - timedelta(days=days_ago), datetime.min.time(), UTC) + timedelta(hours=12)
    return Order(
        source="shop",
        order_id=order_id,
        customer_id=customer,
        placed_at=moment,
        updated_at=moment + timedelta(minutes=1 if not cancelled else 2),
        amount=Decimal(amount),
        is_cancelled=cancelled,
    )


def shop(n: int = 40) -> list[Order]:
    return [
        order(f"o{c}-{k}", f"c{c}", 3 + (c * 37 + k * 11) % 300, 5 + (c * 13 + k * 7) % 200)
        for c in range(n)
        for k in range(1 + c % 4)
    ]


def make(tmp_path, orders: list[Order]):
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///s.sqlite", destinations=()))
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    source = ListSource(orders)
    return store, source, Pipeline(config, store, sources=[source], destinations=[])


def state(store) -> dict[str, tuple[str, str]]:
    c = customer_state.c
    with store.engine.connect() as conn:
        return {k: (g, s) for k, g, s in conn.execute(sa.select(c.customer_key, c.current_group, c.rfm_score))}


def whole_rescore(pipeline, cut_points) -> dict[str, tuple[str, str]]:
    frame = pipeline.score(AS_OF, cut_points=cut_points).frame
    return dict(zip(frame["customer_key"], zip(frame["rfm_group"].astype(object), frame["rfm_score"].astype(object))))


change = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 45), st.integers(0, 200), st.integers(1, 400)),  # c45: a new customer
    st.tuples(st.just("cancel"), st.integers(0, 39), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("move"), st.integers(0, 39), st.integers(0, 3), st.integers(0, 39)),  # to another customer
    st.tuples(st.just("amount"), st.integers(0, 39), st.integers(0, 3), st.integers(1, 900)),
)


@pytest.mark.slow  # a store and two cycles per example
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(change, min_size=1, max_size=6))
def test_an_incremental_cycle_ends_where_a_whole_rescore_would(tmp_path_factory, changes):
    tmp_path = tmp_path_factory.mktemp("inc")
    orders = shop()
    store, source, pipeline = make(tmp_path, orders)
    full = pipeline.run_cycle(AS_OF)
    by_id = {o.order_id: o for o in orders}
    sent = []
    for i, (kind, c, k, value) in enumerate(changes):
        existing = by_id.get(f"o{c}-{k}")
        if kind == "new":
            sent.append(order(f"n{i}", f"c{c}", k, value))
        elif existing is not None and kind == "cancel":
            sent.append(replace(existing, is_cancelled=True, updated_at=existing.updated_at + timedelta(hours=1)))
        elif existing is not None and kind == "move":
            sent.append(replace(existing, customer_id=f"c{value}", updated_at=existing.updated_at + timedelta(hours=1)))
        elif existing is not None and kind == "amount":
            sent.append(replace(existing, amount=Decimal(value), updated_at=existing.updated_at + timedelta(hours=1)))
    source.pending = sent
    report = Pipeline(pipeline.config, store, sources=[source], destinations=[]).run_incremental(AS_OF)
    touched = {o.customer_id for o in sent} | {by_id[o.order_id].customer_id for o in sent if o.order_id in by_id}
    assert report.scored <= len(touched)  # only the touched customers were scored ...
    assert state(store) == whole_rescore(pipeline, full.cut_points)  # ... and nobody is off


def test_the_first_cycle_of_a_day_is_a_whole_cycle(tmp_path):
    store, source, pipeline = make(tmp_path, shop())
    first = pipeline.run_incremental(AS_OF)  # no run yet: everyone
    assert first.scored == 40
    source.pending = [order("late", "c1", 0, 50)]
    same_day = pipeline.run_incremental(AS_OF)
    assert same_day.scored == 1 and same_day.group_counts == _counts(state(store))  # the counts follow the move
    next_day = pipeline.run_incremental(AS_OF + timedelta(days=1))  # recency moved for everyone
    assert next_day.scored == 40


def _counts(groups: dict[str, tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for group, _ in groups.values():
        out[group] = out.get(group, 0) + 1
    return out
