"""An answer cut off half way (or truncated into malformed JSON) costs a retry, never the cycle.

For each connector that talks HTTP (Shopify, BigCommerce, Klaviyo, Meta) a real cycle runs against
its fake while the fake cuts answers after doing the work: the call is retried and the cycle ends
with the exact result. When every answer is cut, the cycle still ends: that connector's step is
recorded as failed (a clean connector error naming the cut-off, no traceback) and the connectors
after it run as usual.
"""

from __future__ import annotations

import csv
import functools
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
import yaml

from connectors.base import ConnectorContext
from connectors.bigcommerce.source import BigCommerceSettings, BigCommerceSource
from connectors.csv.source import CsvSettings, CsvSource
from connectors.file.destination import read_state
from connectors.http import RetryPolicy
from connectors.klaviyo.destination import KlaviyoDestination
from connectors.meta.destination import MetaAudiencesDestination
from connectors.shopify.source import ShopifySettings, ShopifySource
from rfm_sync.config import load_config, parse_config
from rfm_sync.engine.klaviyo import GROUP_NAMES  # the default scheme
from rfm_sync.pipeline import Pipeline, build_destinations
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.configs import config_toml, destination, file_sink, table
from tests.fakes import klaviyo_fake, meta_fake
from tests.fakes.bigcommerce_fake import BigCommerceFake
from tests.fakes.klaviyo_fake import FakeKlaviyo
from tests.fakes.meta_fake import FakeMeta
from tests.fakes.shopify_fake import FakeClock, ShopifyFake
from tests.store_helpers import stored

pytestmark = pytest.mark.slow  # fault injection: real cycles against fakes that cut their answers

SECRETS = {
    "shop-token": ShopifyFake.token,
    "bc-token": BigCommerceFake.token,
    "klaviyo-key": klaviyo_fake.API_KEY,
    "meta-token": meta_fake.TOKEN,
}
FAULTS = [("cut_next", 2), ("malformed_next", 1), ("cut_rate", 0.1)]  # cut_rate: the 10 % seen in the field


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda n: Secret(n, SECRETS[n]))


def policy(attempts: int = 6) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, max_elapsed_s=10_000)


def csv_source(tmp_path: Path) -> CsvSource:
    path = tmp_path / "other.csv"
    path.write_text(
        "order_id,customer_id,email,placed_at,amount\n"
        "x1,k1,k1@example.com,2026-10-01T10:00:00Z,10.50\n"
        "x2,k2,k2@example.com,2026-10-02T10:00:00Z,20.00\n"
    )
    return CsvSource(CsvSettings(name="csv", path=str(path)), context(tmp_path))


def cycle(tmp_path: Path, clock: FakeClock, sources):
    config = parse_config({"identity": {"merge_by": "customer_id"}})
    store = Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    report = Pipeline(config, store, sources=sources, destinations=[], clock=clock.now).run_cycle()
    return store, report


def set_fault(fake, fault: str, value) -> None:
    setattr(fake, fault, value)


# ---------------------------------------------------------------------------------------- sources
@pytest.fixture
def clock():
    return FakeClock()


def shopify(fake: ShopifyFake, tmp_path: Path, clock: FakeClock, attempts: int = 6) -> ShopifySource:
    settings = ShopifySettings(
        name="shopify", shop="cut", token_secret="shop-token", base_url=fake.url, backfill="paged"
    )
    return ShopifySource(settings, context(tmp_path), sleep=clock.sleep, clock=clock.monotonic, policy=policy(attempts))


@pytest.mark.parametrize("fault,value", FAULTS)
def test_shopify_answers_cut_half_way_are_retried_and_the_cycle_is_exact(tmp_path, clock, fault, value):
    fake = ShopifyFake(clock=clock)
    try:
        fake.add_orders(2000)
        set_fault(fake, fault, value)
        src = shopify(fake, tmp_path, clock)
        store, report = cycle(tmp_path, clock, [src])
        assert report.errors == {} and fake.cuts >= 1 and src.client.retries >= fake.cuts
        assert stored(store, "shopify") == fake.expected()
    finally:
        fake.close()


def test_shopify_cut_off_every_time_fails_that_source_only(tmp_path, clock):
    fake = ShopifyFake(clock=clock, cut_rate=1.0)
    try:
        fake.add_orders(50)
        store, report = cycle(tmp_path, clock, [shopify(fake, tmp_path, clock, attempts=3), csv_source(tmp_path)])
        assert "cut off" in report.errors["shopify"] and "gave up after 3 attempts" in report.errors["shopify"]
        assert report.pulled["csv"] == 2 and set(stored(store, "csv")) == {"x1", "x2"}
    finally:
        fake.close()


@functools.lru_cache(maxsize=1)
def bc_template(shared: Path) -> dict:
    spec = yaml.load(
        (shared / "specs/bigcommerce/orders.v2.oas2.yml").read_text(encoding="utf-8"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    return spec["components"]["responses"]["orderCollection_Resp"]["content"]["application/json"]["examples"][
        "response"
    ]["value"][0]


def bigcommerce(fake: BigCommerceFake, tmp_path: Path, clock: FakeClock, attempts: int = 6) -> BigCommerceSource:
    settings = BigCommerceSettings(
        name="bigcommerce", store_hash="abc123", token_secret="bc-token", base_url=fake.url, page_size=100
    )
    return BigCommerceSource(
        settings, context(tmp_path), sleep=clock.sleep, clock=clock.monotonic, policy=policy(attempts)
    )


@pytest.mark.parametrize("fault,value", FAULTS)
def test_bigcommerce_answers_cut_half_way_are_retried_and_the_cycle_is_exact(tmp_path, clock, shared_dir, fault, value):
    fake = BigCommerceFake(clock=clock, template=bc_template(shared_dir))
    try:
        fake.add_orders(1500)
        set_fault(fake, fault, value)
        src = bigcommerce(fake, tmp_path, clock)
        store, report = cycle(tmp_path, clock, [src])
        assert report.errors == {} and fake.cuts >= 1 and src.client.retries >= fake.cuts
        assert stored(store, "bigcommerce") == fake.expected()
    finally:
        fake.close()


def test_bigcommerce_cut_off_every_time_fails_that_source_only(tmp_path, clock, shared_dir):
    fake = BigCommerceFake(clock=clock, template=bc_template(shared_dir), cut_rate=1.0)
    try:
        fake.add_orders(50)
        store, report = cycle(tmp_path, clock, [bigcommerce(fake, tmp_path, clock, attempts=3), csv_source(tmp_path)])
        assert "cut off" in report.errors["bigcommerce"] and "gave up after 3" in report.errors["bigcommerce"]
        assert report.pulled["csv"] == 2
    finally:
        fake.close()


# ---------------------------------------------------------------------------------------- destinations
AS_OF = date(2026, 6, 30)
CONFIG = config_toml(
    "sqlite:///state.sqlite",
    destinations=[
        destination(
            type="klaviyo",
            name="klaviyo",
            api_key_secret="klaviyo-key",
            base_url=klaviyo_fake.BASE_URL,
            bulk_min_profiles=10,
            first_assignment_events="skip",
        ),
        destination(type="meta_audiences", name="meta", access_token_secret="meta-token", base_url=meta_fake.BASE_URL)
        + table("[[destinations.audiences]]", audience_id="111", groups=GROUP_NAMES),
        file_sink(),
    ],
)


def write_orders(path: Path, customers: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "customer_id", "email", "placed_at", "amount"])
        for i in range(customers):
            for k in range(1 + i % 3):
                placed = AS_OF - timedelta(days=5 + 40 * (i % 7) + k)
                w.writerow(
                    [
                        f"o{i}-{k}",
                        f"c{i:03d}",
                        f"c{i}@example.com",
                        f"{placed.isoformat()}T12:00:00Z",
                        f"{10 + 7 * i}.50",
                    ]
                )


def destination_cycle(tmp_path: Path, customers: int = 40):
    """One cycle CSV -> Klaviyo, Meta, file sink; returns (report, sink state, klaviyo, meta)."""
    write_orders(tmp_path / "orders.csv", customers)
    (tmp_path / "config.toml").write_text(CONFIG)
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    clock = klaviyo_fake.FakeClock()
    ctx = context(tmp_path)
    klaviyo = KlaviyoDestination(config.destinations[0], ctx, sleep=clock.sleep, clock=clock, policy=policy(3))
    meta = MetaAudiencesDestination(config.destinations[1], ctx, sleep=clock.sleep, clock=clock, policy=policy(3))
    sink = build_destinations(config)[2]
    report = Pipeline(config, store, destinations=[klaviyo, meta, sink]).run_cycle(AS_OF)
    return report, read_state(tmp_path / "profiles.jsonl"), klaviyo, meta


@pytest.fixture
def fakes():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeKlaviyo().install(rsps), FakeMeta().install(rsps)


@pytest.mark.parametrize("fault", ["cut_next", "malformed_next"])
@pytest.mark.parametrize("customers", [40, 5], ids=["bulk-job", "profile-import"])
def test_klaviyo_answers_cut_half_way_are_retried_and_the_cycle_is_exact(tmp_path, fakes, fault, customers):
    k, _ = fakes
    setattr(k, fault, 2)
    report, sink, klaviyo, _ = destination_cycle(tmp_path, customers)
    assert report.errors == {} and report.failed["klaviyo"] == 0 and k.cuts == 2 and klaviyo.client.retries >= 2
    assert report.pushed["klaviyo"] == len(sink) == customers
    for key, props in sink.items():
        email = f"email:c{int(key[1:])}@example.com"
        assert k.profiles[email]["Current RFM group"] == props["Current RFM group"]


def test_klaviyo_cut_off_every_time_fails_that_destination_only(tmp_path, fakes):
    k, m = fakes
    k.cut_next = 10_000
    report, sink, _, _ = destination_cycle(tmp_path)
    assert "cut off" in report.errors["klaviyo"] and "gave up after 3 attempts" in report.errors["klaviyo"]
    assert report.pushed["klaviyo"] == 0 and report.pushed["sink"] == len(sink) == 40 and m.writes() >= 1


@pytest.mark.parametrize("fault", ["cut_next", "malformed_next"])
def test_meta_answers_cut_half_way_are_retried_and_the_cycle_is_exact(tmp_path, fakes, fault):
    _, m = fakes
    setattr(m, fault, 1)
    report, sink, _, meta = destination_cycle(tmp_path)
    assert report.errors == {} and m.cuts == 1 and meta.client.retries == 1
    assert len(m.audience("111")) == len(sink) == 40  # every group is mapped: everyone is a member once


def test_meta_cut_off_every_time_fails_that_destination_only(tmp_path, fakes):
    _, m = fakes
    m.cut_next = 10_000
    report, sink, _, _ = destination_cycle(tmp_path)
    assert "cut off" in report.errors["meta"] and "gave up after 3 attempts" in report.errors["meta"]
    assert report.pushed["sink"] == len(sink) == 40 and report.errors.keys() == {"meta"}
