"""Frozen cut points must deserve freezing (issue 12, item 1), and "today" is the shop's (item 7).

A calibration over no customers is never stored; one over fewer than ``min_calibration_customers``
is used for its run but not frozen; one whose population has since changed by more than
``recalibrate_population_change`` is due again. ``status`` and ``doctor`` name a small population.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rfm_sync.cli import main
from rfm_sync.config import load_config, parse_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store import state as sq
from rfm_sync.store.schema import calibrations, customer_state
from tests.configs import config_toml, table

D = date(2026, 6, 30)


def shop_rows(customers: int = 150, prefix: str = "c", shift: int = 0, end: date = D):
    """``customers`` customers with 1-5 orders, spends and recencies spread out (every group occurs)."""
    rows = []
    for i in range(customers):
        for k in range(1 + (i + shift) % 5):
            placed = end - timedelta(days=3 + 37 * ((i * 7 + shift) % 19) + 11 * k)
            rows.append(
                [
                    f"{prefix}{i}-{k}",
                    f"{prefix}{i:03d}",
                    f"{prefix}{i}@example.com",
                    placed.isoformat() + "T12:00:00Z",
                    f"{5 + (i * 13 + shift) % 97}.25",
                    "paid",
                ]
            )
    return rows


def write_orders(path, rows):
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "customer_id", "email", "placed_at", "amount", "status"])
        out.writerows(rows)


def write_config(tmp_path, scheme="klaviyo", zone="UTC", url="sqlite:///state.sqlite", **rfm):
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in rfm.items())
    path = tmp_path / "config.toml"
    path.write_text(config_toml(url, table("[shop]", timezone=zone), table("[rfm]", scheme=scheme) + lines))
    return path


def stored_groups(tmp_path) -> dict[str, str]:
    config = load_config(tmp_path / "config.toml")  # the store the config names
    store = Store.open(config.store.url, config.base_dir)
    try:
        with store.engine.connect() as conn:
            return dict(conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.current_group)).all())
    finally:
        store.close()


def offline_groups(tmp_path, config_path, day: date) -> dict[str, str]:
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--orders",
            str(tmp_path / "orders.csv"),
            "--out",
            str(out),
            "--as-of",
            day.isoformat(),
            "-c",
            str(config_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        return {row["customer_id"]: row["rfm_group"] for row in csv.DictReader(fh)}


def calibration_count(tmp_path) -> int:
    config = load_config(tmp_path / "config.toml")  # the store the config names
    store = Store.open(config.store.url, config.base_dir)
    try:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(calibrations)).scalar_one()
    finally:
        store.close()


# ---------------------------------------------------------------------- item 1: the reported scenario
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["klaviyo", "classic11"])
def test_a_first_run_with_a_missing_csv_does_not_freeze_empty_cut_points(tmp_path, scheme, store_url):
    config_path = write_config(tmp_path, scheme, url=store_url)
    runner = CliRunner()
    first = runner.invoke(main, ["run", "--once", "-c", str(config_path), "--as-of", D.isoformat()])
    assert first.exit_code == 1 and "shop" in first.output  # the pull failed: no orders.csv yet
    write_orders(tmp_path / "orders.csv", shop_rows())  # the path is fixed
    second = runner.invoke(
        main, ["run", "--once", "-c", str(config_path), "--as-of", (D + timedelta(days=1)).isoformat()]
    )
    assert second.exit_code == 0, second.output
    online = stored_groups(tmp_path)
    assert online == offline_groups(tmp_path, config_path, D + timedelta(days=1))
    assert "Champions" in online.values() and len(set(online.values())) >= 4
    status = runner.invoke(main, ["status", "-c", str(config_path)])
    assert status.exit_code == 0 and "(no customers)" not in status.output
    assert calibration_count(tmp_path) == 1  # the first run's calibration over no customers was never stored


@pytest.mark.slow
def test_a_first_run_whose_every_row_was_quarantined_does_not_freeze_its_cut_points(tmp_path, store_url):
    config_path = write_config(tmp_path, url=store_url)
    bad = [[r[0], r[1], r[2], "not a date", r[4], r[5]] for r in shop_rows()]
    write_orders(tmp_path / "orders.csv", bad)
    runner = CliRunner()
    first = runner.invoke(main, ["run", "--once", "-c", str(config_path), "--as-of", D.isoformat()])
    assert first.exit_code == 1 and "were quarantined" in first.output, (
        first.output
    )  # partial: pull.max_quarantine_share
    write_orders(tmp_path / "orders.csv", shop_rows())
    assert runner.invoke(main, ["run", "--once", "-c", str(config_path), "--as-of", D.isoformat()]).exit_code == 0
    online = stored_groups(tmp_path)
    assert online == offline_groups(tmp_path, config_path, D)
    assert "Champions" in online.values() and "Loyal" in online.values() and "Needs Attention" in online.values()
    assert calibration_count(tmp_path) == 1  # 150 customers: frozen now


def test_webhook_orders_after_a_run_over_no_customers_are_not_scored_with_its_empty_cut_points(tmp_path, store_url):
    from decimal import Decimal

    from connectors.base import Order

    config = load_config(write_config(tmp_path, url=store_url))
    store = Store.open(config.store.url, config.base_dir)
    pipeline = Pipeline(config, store)
    first = pipeline.run_cycle(D)  # orders.csv missing: the pull fails, no customers
    assert first.errors and first.scored == 0
    rows = shop_rows()
    orders = [
        Order(
            source="shop",
            order_id=r[0],
            customer_id=r[1],
            email=r[2],
            placed_at=datetime.fromisoformat(r[3]),
            amount=Decimal(r[4]),
        )
        for r in rows
    ]
    report = pipeline.rescore_orders(orders, D)
    store.close()
    write_orders(tmp_path / "orders.csv", rows)  # the same orders, scored offline
    assert stored_groups(tmp_path) == offline_groups(tmp_path, tmp_path / "config.toml", D)
    assert report.group_counts.get("Champions")


def make_pipeline(tmp_path, rows, url="sqlite:///state.sqlite", **rfm):
    write_orders(tmp_path / "orders.csv", rows)
    config = load_config(write_config(tmp_path, url=url, **rfm))
    store = Store.open(config.store.url, config.base_dir)
    return config, store, Pipeline(config, store)


@pytest.mark.slow
def test_a_population_that_doubled_since_the_calibration_makes_it_due(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(150), url=store_url)
    first = pipeline.run_cycle(D)
    assert first.calibrated_on == D
    write_orders(tmp_path / "orders.csv", shop_rows(150) + shop_rows(150, prefix="n", shift=3))
    second = pipeline.run_cycle(D + timedelta(days=1))
    assert second.calibrated_on == D + timedelta(days=1) and second.cut_points != first.cut_points
    assert second.group_counts == _offline_counts(tmp_path, D + timedelta(days=1))
    calibration = sq.current_calibration(store, "klaviyo", 730)
    assert calibration["population"] == 300 and calibration["as_of"] == D + timedelta(days=1)


def _offline_counts(tmp_path, day):
    counts: dict[str, int] = {}
    for group in offline_groups(tmp_path, tmp_path / "config.toml", day).values():
        counts[group] = counts.get(group, 0) + 1
    return counts


@pytest.mark.slow
def test_a_small_change_in_population_keeps_the_cut_points_frozen(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(150), url=store_url)
    first = pipeline.run_cycle(D)
    write_orders(tmp_path / "orders.csv", shop_rows(160))  # +6.7 %, under the default 20 %
    second = pipeline.run_cycle(D + timedelta(days=1))
    assert second.calibrated_on == D and second.cut_points == first.cut_points


def test_is_due_when_the_population_grew_or_shrank_past_the_threshold():
    cal = {"as_of": D, "cut_points": {"frequency": ["1"]}, "population": 1000}
    assert not sq.is_due(cal, D, 30, population=1000, population_change=0.2)
    assert not sq.is_due(cal, D, 30, population=1200, population_change=0.2)
    assert sq.is_due(cal, D, 30, population=1201, population_change=0.2)
    assert not sq.is_due(cal, D, 30, population=800, population_change=0.2)
    assert sq.is_due(cal, D, 30, population=799, population_change=0.2)
    # a calibration stored before populations were recorded: used, never a crash
    old = {"as_of": D, "cut_points": {"frequency": ["1"]}}
    assert not sq.is_due(old, D, 30, population=5000, population_change=0.2)
    # ... unless its cut points are all empty: it was computed over no customers (the bug's leftovers)
    empty = {"as_of": D, "cut_points": {"frequency": [], "monetary_e4": []}}
    assert sq.is_due(empty, D, 30, population=10, population_change=0.2)


def test_an_empty_calibration_left_by_an_older_version_is_recomputed(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(150), url=store_url)
    with store.begin() as conn:  # what the old code froze after a pull that found nothing
        conn.execute(
            calibrations.insert().values(
                scheme="klaviyo",
                as_of=D,
                computed_at=datetime.now(UTC),
                run_id=None,
                cut_points=json.dumps({"window_days": 730, "points": {"frequency": [], "monetary_e4": []}}),
            )
        )
    report = pipeline.run_cycle(D + timedelta(days=1))
    assert report.calibrated_on == D + timedelta(days=1) and report.cut_points["frequency"]
    assert report.group_counts.get("Champions")


@pytest.mark.slow
def test_a_small_population_is_scored_with_its_own_cut_points_but_not_frozen(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(30), url=store_url)
    first = pipeline.run_cycle(D)
    assert first.cut_points["frequency"] and first.calibrated_on == D and first.group_counts.get("Champions")
    assert sq.current_calibration(store, "klaviyo", 730) is None
    write_orders(tmp_path / "orders.csv", shop_rows(30) + shop_rows(5, prefix="n"))
    second = pipeline.run_cycle(D + timedelta(days=1))
    assert second.calibrated_on == D + timedelta(days=1)  # computed again, for this run
    assert second.group_counts == _offline_counts(tmp_path, D + timedelta(days=1))
    store.close()
    status = CliRunner().invoke(main, ["status", "-c", str(tmp_path / "config.toml")])
    assert status.exit_code == 0, status.output
    said = " ".join(status.output.split())  # the console wraps long lines
    assert "only 35 customers" in said and "[rfm] min_calibration_customers = 100" in said
    doctor = CliRunner().invoke(main, ["doctor", "-c", str(tmp_path / "config.toml")])
    said = " ".join(doctor.output.split())
    assert "only 35 customers" in said and "[rfm] min_calibration_customers = 100" in said
    assert doctor.exit_code == 0  # a warning, not a problem


def test_min_calibration_customers_is_configurable(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(30), url=store_url, min_calibration_customers=20)
    pipeline.run_cycle(D)
    assert sq.current_calibration(store, "klaviyo", 730)["population"] == 30


def test_recalibrate_over_no_customers_refuses_to_freeze(tmp_path, store_url):
    config_path = write_config(tmp_path, url=store_url)
    write_orders(tmp_path / "orders.csv", [])
    result = CliRunner().invoke(main, ["recalibrate", "-c", str(config_path), "--as-of", D.isoformat()])
    assert result.exit_code == 1
    assert "no customers" in result.output and "not frozen" in result.output
    assert calibration_count(tmp_path) == 0


def test_recalibrate_over_a_small_population_does_not_freeze(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, shop_rows(30), url=store_url)
    pipeline.run_cycle(D)
    store.close()
    result = CliRunner().invoke(main, ["recalibrate", "-c", str(tmp_path / "config.toml"), "--as-of", D.isoformat()])
    assert result.exit_code == 1
    assert "30 customers" in result.output and "min_calibration_customers = 100" in result.output
    assert calibration_count(tmp_path) == 0


def test_recalibrate_stores_the_population(tmp_path, store_url):
    from rfm_sync.calibration import recalibrate

    config, store, pipeline = make_pipeline(tmp_path, shop_rows(150), url=store_url)
    pipeline.run_cycle(D)
    result = recalibrate(config, store, D + timedelta(days=1))
    assert result["frozen"] and result["population"] == 150
    assert sq.current_calibration(store, "klaviyo", 730)["population"] == 150


@pytest.mark.parametrize(
    "rfm, message",
    [
        ({"recalibrate_population_change": 0}, "rfm.recalibrate_population_change: Input should be greater than 0"),
        ({"recalibrate_population_change": -0.5}, "rfm.recalibrate_population_change: Input should be greater than 0"),
        ({"min_calibration_customers": 0}, "rfm.min_calibration_customers: Input should be greater than or equal to 1"),
    ],
)
def test_calibration_settings_are_validated(rfm, message):
    from rfm_sync.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"rfm": rfm})
    assert message in str(err.value)


# ---------------------------------------------------------------------- item 7: today is the shop's
@pytest.fixture
def machine_far_west(monkeypatch):
    """The machine's clock zone is UTC-12: its date is always a day or two behind Kiritimati's (UTC+14)."""
    monkeypatch.setenv("TZ", "Etc/GMT+12")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def kiritimati_today() -> date:
    return datetime.now(ZoneInfo("Pacific/Kiritimati")).date()


def test_score_without_as_of_takes_today_in_the_shop_zone(tmp_path, machine_far_west):
    config_path = write_config(tmp_path, zone="Pacific/Kiritimati")
    write_orders(tmp_path / "orders.csv", [["o1", "c1", "c1@example.com", "2020-01-01T12:00:00Z", "10", "paid"]])
    before = kiritimati_today()
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--orders",
            str(tmp_path / "orders.csv"),
            "--out",
            str(tmp_path / "s.csv"),
            "-c",
            str(config_path),
            "--quiet",
        ],
    )
    after = kiritimati_today()
    assert result.exit_code == 0, result.output
    with (tmp_path / "s.csv").open() as fh:
        recency = int(next(csv.DictReader(fh))["recency_days"])
    local_order_day = date(2020, 1, 2)  # 12:00 UTC is 02:00 the next day at UTC+14
    assert recency in {(before - local_order_day).days, (after - local_order_day).days}
    assert date.today() < before  # the machine's date differs: the test tells the two rules apart


def test_recalibrate_without_as_of_takes_today_in_the_shop_zone(tmp_path, machine_far_west):
    write_orders(tmp_path / "orders.csv", shop_rows(150, end=kiritimati_today() - timedelta(days=2)))
    config = load_config(write_config(tmp_path, zone="Pacific/Kiritimati"))
    runner = CliRunner()
    assert runner.invoke(main, ["run", "--once", "-c", str(tmp_path / "config.toml"), "--no-push"]).exit_code == 0
    before = kiritimati_today()
    result = runner.invoke(main, ["recalibrate", "-c", str(tmp_path / "config.toml")])
    after = kiritimati_today()
    assert result.exit_code == 0, result.output
    store = Store.open(config.store.url, config.base_dir)
    try:
        assert sq.current_calibration(store, "klaviyo", 730)["as_of"] in {before, after}
    finally:
        store.close()


def test_config_today_is_the_date_in_the_shop_zone():
    config = parse_config({"shop": {"timezone": "Pacific/Kiritimati"}})
    moment = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)  # 01:00 on 2 March at UTC+14
    assert config.today(moment) == date(2026, 3, 2)
    assert parse_config({"shop": {"timezone": "America/Los_Angeles"}}).today(moment) == date(2026, 3, 1)


@pytest.mark.slow  # a whole demo run
def test_demo_takes_today_in_its_shop_zone(tmp_path, monkeypatch):
    from rfm_sync.demo import run_demo

    # a machine zone 12 hours off UTC whose date differs from UTC's right now (the demo shop is UTC)
    monkeypatch.setenv("TZ", "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-12")
    time.tzset()
    try:
        before = datetime.now(UTC).date()
        assert date.today() != before
        result = run_demo(tmp_path / "demo", customers=200)
        assert result.second.as_of in {before, datetime.now(UTC).date()}
    finally:
        monkeypatch.undo()
        time.tzset()
