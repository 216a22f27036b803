"""One currency per sum: orders in another currency are converted with the user's rates or
quarantined with a reason, offline (`rfm-sync score`) and into the store; Shopify and BigCommerce
orders paid in another currency are stored in the shop's currency."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.csv.source import CsvSettings
from rfm_sync.cli import main
from rfm_sync.config import ConfigError, load_config, parse_config
from rfm_sync.currency import MixedCurrencies
from rfm_sync.offline import aggregate_csv, score_csv
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.store import Store
from rfm_sync.store.schema import orders, quarantine
from tests.configs import config_toml

AS_OF = date(2026, 6, 30)
# customer a: 100 EUR and 1,000 JPY; b: 12,345.6789 JPY; c: 50 with no currency (= the shop's)
MIXED = """\
order_id,customer_id,placed_at,amount,currency
1,a,2026-06-01T10:00:00Z,100.00,EUR
2,a,2026-06-02T10:00:00Z,1000,JPY
3,b,2026-06-03T10:00:00Z,12345.6789, jpy
4,c,2026-06-03T10:00:00Z,50,
"""


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def monetary(tmp_path: Path, shop: dict, *, validate_all: bool) -> tuple[dict[str, int], int]:
    path = write(tmp_path, MIXED)
    agg = aggregate_csv(
        path, CsvSettings(name="csv", path=str(path)), parse_config({"shop": shop}), AS_OF, validate_all=validate_all
    )
    agg.conn.close()
    return dict(zip(agg.frame["customer_key"], agg.frame["monetary_e4"])), agg.bad


# ---------------------------------------------------------------------------------------- offline
def test_without_a_rate_the_other_currency_is_quarantined_with_its_reason_and_the_rest_scored(tmp_path):
    path = write(tmp_path, MIXED)
    out = tmp_path / "scores.csv"
    result = score_csv(path, out, parse_config({"shop": {"currency": "EUR"}}), AS_OF)
    assert result.quarantined == 2
    with result.quarantine_file.open() as fh:
        bad = [(r["line"], r["reason"]) for r in csv.DictReader(fh)]
    assert bad == [("3", "currency JPY has no rate to EUR"), ("4", "currency JPY has no rate to EUR")]
    with out.open() as fh:
        scores = {r["customer_id"]: (r["frequency"], r["monetary"]) for r in csv.DictReader(fh)}
    assert scores == {"a": ("1", "100.00"), "c": ("1", "50.00")}  # 1,000 JPY never counts as 1,000 EUR


@pytest.mark.parametrize("validate_all", [False, True])
def test_with_a_rate_other_currencies_are_converted_exactly(tmp_path, validate_all):
    """1,000 JPY × 0.0061 = 6.1 EUR; 12,345.6789 JPY × 0.0061 = 75.30864129 → 75.3086 (half-even, 4 places)."""
    sums, bad = monetary(tmp_path, {"currency": "EUR", "rates": {"JPY": "0.0061"}}, validate_all=validate_all)
    assert bad == 0
    assert sums == {"a": 1_000_000 + 61_000, "b": 753_086, "c": 500_000}


def test_the_fast_read_hands_a_file_with_another_currency_to_the_validating_scan_and_they_agree(tmp_path):
    path = write(tmp_path, MIXED)
    config = parse_config({"shop": {"currency": "EUR", "rates": {"JPY": "0.0061"}}})
    fast = aggregate_csv(path, CsvSettings(name="csv", path=str(path)), config, AS_OF)
    assert not fast.fast
    one_currency = write(tmp_path, MIXED.replace("JPY", "EUR").replace("jpy", "eur"), "eur.csv")
    assert aggregate_csv(one_currency, CsvSettings(name="csv", path=str(one_currency)), config, AS_OF).fast


@pytest.mark.slow
def test_half_even_rounding_of_a_converted_amount(tmp_path):
    """0.0001 × 0.5 = 0.00005: half-way, to the even 0.0000 (so the order does not qualify);
    0.0003 × 0.5 = 0.00015 → 0.0002."""
    text = "order_id,customer_id,placed_at,amount,currency\n1,a,2026-06-01,0.0001,XXX\n2,b,2026-06-01,0.0003,XXX\n"
    path = write(tmp_path, text)
    config = parse_config({"shop": {"currency": "EUR", "rates": {"XXX": "0.5"}}})
    for validate_all in (False, True):
        agg = aggregate_csv(path, CsvSettings(name="csv", path=str(path)), config, AS_OF, validate_all=validate_all)
        assert dict(zip(agg.frame["customer_key"], agg.frame["monetary_e4"])) == {"b": 2}


def test_mixed_currencies_without_a_shop_currency_stop_with_one_line(tmp_path):
    path = write(tmp_path, MIXED)
    with pytest.raises(MixedCurrencies, match=r"2 currencies \(EUR, JPY\) and no \[shop\] currency"):
        score_csv(path, tmp_path / "out.csv", parse_config({}), AS_OF)
    result = CliRunner().invoke(
        main, ["score", "--orders", str(path), "--out", str(tmp_path / "o.csv"), "--as-of", "2026-06-30", "--quiet"]
    )
    assert result.exit_code == 1
    assert "orders in 2 currencies (EUR, JPY)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists()


def test_daily_rates_use_the_local_date_or_the_latest_earlier_one(tmp_path):
    """The shop is in Tokyo: 2026-06-01 23:30 UTC is 2 June there, which has its own rate; an order
    on 5 June uses 3 June's (the latest earlier); one before the file's first day uses [shop.rates]."""
    (tmp_path / "rates.csv").write_text(
        "date,currency,rate\n2026-06-01,USD,0.5\n2026-06-02,USD,0.25\n2026-06-03,USD,2\n"
    )
    text = (
        "order_id,customer_id,placed_at,amount,currency\n1,a,2026-06-01T23:30:00Z,100,USD\n"
        "2,b,2026-06-05T12:00:00Z,100,USD\n3,c,2026-05-01T12:00:00Z,100,USD\n"
    )
    path = write(tmp_path, text)
    (tmp_path / "config.toml").write_text(
        '[shop]\ntimezone = "Asia/Tokyo"\ncurrency = "EUR"\nrates_file = "rates.csv"\n[shop.rates]\nUSD = 0.9\n'
    )
    config = load_config(tmp_path / "config.toml")
    for validate_all in (False, True):
        agg = aggregate_csv(path, CsvSettings(name="csv", path=str(path)), config, AS_OF, validate_all=validate_all)
        assert dict(zip(agg.frame["customer_key"], agg.frame["monetary_e4"])) == {
            "a": 250_000,
            "b": 2_000_000,
            "c": 900_000,
        }


@pytest.mark.parametrize(
    "shop, match",
    [
        ({"currency": "eur"}, "shop.currency: 'eur' is not an ISO 4217 currency code"),
        ({"rates": {"JPY": "0.0061"}}, "rates need \\[shop\\] currency"),
        ({"currency": "EUR", "rates": {"JPY": "-1"}}, "shop.rates: JPY: rate '-1' must be a positive number"),
        ({"currency": "EUR", "rates": {"JPY": "abc"}}, "shop.rates: JPY: rate 'abc' is not a number"),
        ({"currency": "EUR", "rates": {"EUR": "1"}}, "EUR is the shop currency itself"),
        ({"currency": "EUR", "rates_file": "missing.csv"}, "shop.rates_file: .*missing.csv: cannot read"),
    ],
)
def test_currency_settings_are_validated(shop, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"shop": shop})


# ---------------------------------------------------------------------------------------- the store
def config_text(shop: str) -> str:
    return config_toml("sqlite:///state.sqlite", f"[shop]\n{shop}", destinations=())


def run_pull(tmp_path: Path, shop: str, text: str = MIXED):
    write(tmp_path, text)
    (tmp_path / "config.toml").write_text(config_text(shop=shop))
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    pipeline = Pipeline(config, store, destinations=[])
    report = CycleReport(run_id=0, as_of=AS_OF)
    pipeline.pull(None, report)
    with store.engine.connect() as conn:
        rows = {
            r.order_id: (r.amount_e4, r.currency, r.original_currency, r.original_amount_e4, r.qualifies)
            for r in conn.execute(sa.select(orders))
        }
        bad = [(r.location, r.reason) for r in conn.execute(sa.select(quarantine))]
    return pipeline, report, rows, bad


def test_pulled_orders_are_stored_in_the_shop_currency_and_keep_their_own(tmp_path):
    pipeline, report, rows, bad = run_pull(tmp_path, 'currency = "EUR"\n[shop.rates]\nJPY = "0.0061"')
    assert report.errors == {} and bad == []
    assert rows == {
        "1": (1_000_000, "EUR", None, None, True),
        "2": (61_000, "EUR", "JPY", 10_000_000, True),  # 1,000 JPY = 6.1 EUR
        "3": (753_086, "EUR", "JPY", 123_456_789, True),  # 12,345.6789 JPY = 75.3086 EUR
        "4": (500_000, "EUR", None, None, True),
    }  # no currency: the shop's
    result = pipeline.score(AS_OF)
    assert dict(zip(result.frame["customer_key"], result.frame["monetary_e4"])) == {
        "a": 1_061_000,
        "b": 753_086,
        "c": 500_000,
    }


def test_a_pulled_order_without_a_rate_is_quarantined_not_stored(tmp_path):
    pipeline, report, rows, bad = run_pull(tmp_path, 'currency = "EUR"')
    assert sorted(rows) == ["1", "4"]
    assert bad == [("order 2", "currency JPY has no rate to EUR"), ("order 3", "currency JPY has no rate to EUR")]
    assert len(report.quarantined) == 2


def test_a_pull_in_a_second_currency_without_a_shop_currency_stops_before_storing_it(tmp_path):
    pipeline, report, rows, _ = run_pull(tmp_path, "")
    assert "orders in 2 currencies (EUR, JPY) and no [shop] currency" in report.errors["shop"]
    assert rows == {}  # the page is not stored: the store never holds two currencies


def test_orders_stored_in_another_currency_before_shop_currency_was_set_stop_scoring(tmp_path):
    one = MIXED.replace("JPY", "USD").replace("jpy", "usd").replace("EUR", "USD")
    pipeline, report, rows, _ = run_pull(tmp_path, "", one)
    assert report.errors == {} and {v[1] for v in rows.values()} == {"USD", None}  # order 4 has none
    (tmp_path / "config.toml").write_text(config_text(shop='currency = "EUR"\n[shop.rates]\nUSD = "0.9"'))
    later = Pipeline(load_config(tmp_path / "config.toml"), pipeline.store, destinations=[])
    with pytest.raises(MixedCurrencies, match="orders stored in USD .* while \\[shop\\] currency is EUR"):
        later.score(AS_OF)


# ---------------------------------------------------------------------------------------- shops
def test_shopify_orders_paid_in_another_currency_are_stored_in_shop_money(tmp_path):
    from tests.fakes.shopify_fake import FakeClock, ShopifyFake
    from tests.test_shopify import pull_into_store, source

    clock = FakeClock()
    shop = ShopifyFake(clock=clock)
    try:
        shop.add_orders(40)
        for order in list(shop.orders.values())[::3]:
            order.presentment_currency, order.presentment_rate = "JPY", Decimal("163.9")
        src = source(shop.url, clock)
        store, report = pull_into_store(tmp_path, src, clock)
        assert report.errors == {}
        with store.engine.connect() as conn:
            got = {r.order_id: (r.amount_e4, r.currency) for r in conn.execute(sa.select(orders))}
        assert got == {str(o.id): (int(o.total * 10_000), "EUR") for o in shop.orders.values()}
    finally:
        shop.close()


def test_bigcommerce_order_in_a_transactional_currency_is_stored_in_the_store_default(tmp_path):
    """The spec: total_inc_tax is in the transactional currency (default_currency_code); with
    Multi-Currency the order says the store's default currency and the rate from it."""
    from connectors.bigcommerce.parse import order_from_json

    base = {
        "id": 7,
        "customer_id": 3,
        "date_created": "Wed, 05 Dec 2018 20:16:55 +0000",
        "status_id": 10,
        "total_inc_tax": "1639.0000",
        "refunded_amount": "0.0000",
        "currency_code": "JPY",
        "default_currency_code": "JPY",
        "store_default_currency_code": "USD",
        "store_default_to_transactional_exchange_rate": "163.9000000000",
        "billing_address": {},
    }
    order = order_from_json("bc", base)
    assert (order.amount, order.currency) == (Decimal("10.0000"), "USD")
    odd = order_from_json("bc", {**base, "total_inc_tax": "1000", "store_default_to_transactional_exchange_rate": "3"})
    assert odd.amount == Decimal("333.3333")  # 1000 / 3, half-even to 4 places
    plain = order_from_json("bc", {**base, "store_default_currency_code": ""})  # no Multi-Currency
    assert (plain.amount, plain.currency) == (Decimal("1639.0000"), "JPY")


def test_bigcommerce_multi_currency_store_pulls_into_store_default_amounts(tmp_path):
    from tests.fakes.bigcommerce_fake import BigCommerceFake
    from tests.fakes.shopify_fake import FakeClock
    from tests.store_helpers import stored
    from tests.test_bigcommerce import pull_into_store, source

    template = {"billing_address": {}, "status": "Completed"}
    clock = FakeClock()
    shop = BigCommerceFake(
        clock=clock, template=template, multi_currency={"EUR": Decimal("0.9216"), "JPY": Decimal("149.5")}
    )
    try:
        shop.add_orders(200)
        assert {o["default_currency_code"] for o in shop.orders.values()} == {"USD", "EUR", "JPY"}
        store, report = pull_into_store(tmp_path, source(shop.url, clock), clock)
        assert report.errors == {}
        assert stored(store, "bc") == shop.expected()
        with store.engine.connect() as conn:
            assert {r.currency for r in conn.execute(sa.select(orders.c.currency))} == {"USD"}
    finally:
        shop.close()
