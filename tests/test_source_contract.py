"""One contract for every source (CSV, Shopify, BigCommerce), and several shops in one config.

Every source: is registered under its ``type``; validates its own table strictly; yields pages of
``Order``/``Quarantined`` records carrying its name, with UTC-aware times, Decimal amounts and
string ids; returns cursors that are text (and, for shops, JSON with a UTC offset, never past the
cycle start); is idempotent (pulling again from its committed cursor changes nothing in the store);
and never shows a secret in its repr.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from connectors.base import ConnectorContext, Order, Page, PullContext, Quarantined, WebhookSource
from connectors.bigcommerce.source import BigCommerceSettings, BigCommerceSource
from connectors.csv.source import CsvSettings, CsvSource
from connectors.registry import connector_class
from connectors.shopify.source import ShopifySettings, ShopifySource
from rfm_sync.cli import main
from rfm_sync.config import parse_config
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.secrets import Secret, env_var_name
from rfm_sync.store import Store
from rfm_sync.store.schema import customers, orders
from tests.conftest import REPO
from tests.fakes.bigcommerce_fake import BigCommerceFake
from tests.fakes.shopify_fake import FakeClock, FakeOrder, ShopifyFake

SECRETS = {"shop-token": ShopifyFake.token, "bc-token": BigCommerceFake.token}


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda n: Secret(n, SECRETS[n]))


@functools.lru_cache(maxsize=1)
def bc_template(shared: Path) -> dict:
    spec = yaml.load(
        (shared / "specs/bigcommerce/orders.v2.oas2.yml").read_text(encoding="utf-8"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    return spec["components"]["responses"]["orderCollection_Resp"]["content"]["application/json"]["examples"][
        "response"
    ]["value"][0]


def make_csv(tmp_path, clock, shared):
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,customer_id,email,placed_at,amount,updated_at\n"
        "o1,c1,a@example.com,2026-01-01T10:00:00Z,10.50,2026-01-02T00:00:00Z\n"
        "o2,c2,b@example.com,2026-02-01T10:00:00Z,20.00,2026-02-02T00:00:00Z\n"
        "o3,c1,a@example.com,not a date,5,\n"
    )
    src = CsvSource(CsvSettings(name="csv", path=str(path)), context(tmp_path))
    return src, None, {"o1", "o2"}


def make_shopify(tmp_path, clock, shared):
    fake = ShopifyFake(clock=clock)
    fake.add_orders(250)
    settings = ShopifySettings(name="shopify", shop="contract", token_secret="shop-token", base_url=fake.url)
    src = ShopifySource(settings, context(tmp_path), sleep=clock.sleep, clock=clock.monotonic)
    return src, fake, set(fake.expected())


def make_bigcommerce(tmp_path, clock, shared):
    fake = BigCommerceFake(clock=clock, template=bc_template(shared))
    fake.add_orders(300)
    settings = BigCommerceSettings(name="bigcommerce", store_hash="abc123", token_secret="bc-token", base_url=fake.url)
    src = BigCommerceSource(settings, context(tmp_path), sleep=clock.sleep, clock=clock.monotonic)
    return src, fake, set(fake.expected())


FACTORIES = {"csv": make_csv, "shopify": make_shopify, "bigcommerce": make_bigcommerce}


@pytest.fixture(params=sorted(FACTORIES))
def built(request, tmp_path, shared_dir):
    clock = FakeClock()
    src, fake, expected = FACTORIES[request.param](tmp_path, clock, shared_dir)
    yield request.param, src, clock, expected
    if fake is not None:
        fake.close()


def test_registered_and_strictly_validated(built):
    kind, src, _, _ = built
    cls = connector_class("source", kind)
    assert isinstance(src, cls) and src.Settings is cls.Settings
    with pytest.raises(ValidationError):
        cls.Settings.model_validate({**src.settings.model_dump(), "no_such_key": 1})
    for value in SECRETS.values():
        assert value not in repr(src)
    if kind != "csv":  # shops also take webhooks, through exactly the protocol the listener calls
        assert isinstance(src, WebhookSource)
        assert src.verify_webhook({}, b"{}") is False  # unsigned (and no webhook secret configured)


def test_pages_hold_well_formed_records_and_text_cursors(built):
    kind, src, clock, expected = built
    started = clock.now()
    pages = list(src.pull(PullContext(cursor=None, started_at=started)))
    assert pages and all(isinstance(p, Page) for p in pages)
    got = set()
    for page in pages:
        assert page.cursor is None or isinstance(page.cursor, str)
        for rec in page.records:
            assert isinstance(rec, (Order, Quarantined)) and rec.source == src.name
            if isinstance(rec, Order):
                assert isinstance(rec.order_id, str) and isinstance(rec.customer_id, str)
                assert rec.placed_at.utcoffset() is not None and isinstance(rec.amount, Decimal)
                assert rec.updated_at is None or rec.updated_at.utcoffset() is not None
                got.add(rec.order_id)
    assert got == expected
    final = [p.cursor for p in pages if p.cursor is not None][-1]
    if kind != "csv":
        since = datetime.fromisoformat(json.loads(final)["since"])
        assert since.utcoffset() is not None and since <= started


def test_pulling_again_from_the_committed_cursor_changes_nothing(built, tmp_path):
    kind, src, clock, expected = built
    store = Store.open("sqlite:///" + str(tmp_path / "contract.sqlite"))
    pipeline = Pipeline(parse_config({}), store, sources=[src], destinations=[], clock=clock.now)
    pipeline.pull(None, CycleReport(run_id=0, as_of=date(2026, 11, 1)))
    columns = [c for c in orders.c if c.name != "ingested_at"]
    with store.engine.connect() as conn:
        before = sorted(conn.execute(sa.select(*columns)).all())
    assert {r.order_id for r in before} == expected
    clock.advance(3600)
    report = CycleReport(run_id=0, as_of=date(2026, 11, 1))
    pipeline.pull(None, report)
    with store.engine.connect() as conn:
        after = sorted(conn.execute(sa.select(*columns)).all())
    assert report.errors == {} and after == before


# ---------------------------------------------------------------------------------------- several shops
@pytest.mark.slow
def test_two_shopify_stores_and_one_bigcommerce_merge_customers_by_email(tmp_path, shared_dir):
    clock = FakeClock()
    shop_a, shop_b = ShopifyFake(clock=clock), ShopifyFake(clock=clock)
    bc = BigCommerceFake(clock=clock, template=bc_template(shared_dir))
    try:
        when = datetime(2026, 10, 1, tzinfo=UTC)
        shop_a.orders[1] = FakeOrder(
            id=1, customer_id=11, email="Ann@Example.com", created_at=when, updated_at=when, total=Decimal("10.00")
        )
        shop_b.orders[1] = FakeOrder(
            id=1, customer_id=None, email=" ann@example.COM ", created_at=when, updated_at=when, total=Decimal("20.00")
        )
        bc.orders[1] = bc.make(
            1,
            customer_id=77,
            email="ANN@example.com",
            created=when,
            modified=when,
            status_id=10,
            total=Decimal("30.00"),
        )
        bc.orders[2] = bc.make(
            2, customer_id=78, email="bob@example.com", created=when, modified=when, status_id=11, total=Decimal("5.00")
        )
        ctx = context(tmp_path)
        sources = [
            ShopifySource(
                ShopifySettings(name="shop-a", shop="a", token_secret="shop-token", base_url=shop_a.url),
                ctx,
                sleep=clock.sleep,
                clock=clock.monotonic,
            ),
            ShopifySource(
                ShopifySettings(name="shop-b", shop="b", token_secret="shop-token", base_url=shop_b.url),
                ctx,
                sleep=clock.sleep,
                clock=clock.monotonic,
            ),
            BigCommerceSource(
                BigCommerceSettings(name="bc", store_hash="abc123", token_secret="bc-token", base_url=bc.url),
                ctx,
                sleep=clock.sleep,
                clock=clock.monotonic,
            ),
        ]
        store = Store.open("sqlite:///" + str(tmp_path / "multi.sqlite"))
        # the Shopify shops sell in EUR, the BigCommerce store in USD: one currency per sum
        config = parse_config({"identity": {"merge_by": "email"}, "shop": {"currency": "EUR", "rates": {"USD": "0.9"}}})
        pipeline = Pipeline(config, store, sources=sources, destinations=[], clock=clock.now)
        report = pipeline.run_cycle(date(2026, 10, 15))
        assert report.errors == {} and report.pulled == {"shop-a": 1, "shop-b": 1, "bc": 2}
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(orders.c.source, orders.c.order_id, orders.c.customer_key, orders.c.source_customer_id)
            ).all()
            keys = set(conn.execute(sa.select(customers.c.customer_key)).scalars())
        ann = sorted(
            (r.source, r.order_id, r.source_customer_id) for r in rows if r.customer_key == "email:ann@example.com"
        )
        assert ann == [("bc", "1", "77"), ("shop-a", "1", "11"), ("shop-b", "1", "email:ann@example.com")]
        assert keys == {"email:ann@example.com", "email:bob@example.com"}
        assert report.scored == 2  # Ann is one customer with three orders from three shops
        spend = dict(zip(*(pipeline.score(date(2026, 10, 15)).frame[c] for c in ("customer_key", "monetary_e4"))))
        assert spend["email:ann@example.com"] == 10_0000 + 20_0000 + 27_0000  # 10 + 20 EUR + 30 USD × 0.9
    finally:
        for fake in (shop_a, shop_b, bc):
            fake.close()


@pytest.mark.slow
def test_rfm_sync_run_once_with_shop_sources_against_the_fakes(tmp_path, shared_dir, monkeypatch):
    clock = FakeClock()
    shop = ShopifyFake(clock=clock, bucket_max=100_000, restore_rate=10_000)
    bc = BigCommerceFake(clock=clock, template=bc_template(shared_dir), quota=10_000)
    try:
        shop.add_orders(300)
        bc.add_orders(300)
        monkeypatch.setenv(env_var_name("shop-token"), shop.token)
        monkeypatch.setenv(env_var_name("bc-token"), bc.token)
        (tmp_path / "config.toml").write_text(f"""
[store]
url = "sqlite:///state.sqlite"
[identity]
merge_by = "email"
[shop]
currency = "EUR"
[shop.rates]
USD = "0.9"
[[sources]]
type = "shopify"
name = "shop"
shop = "example"
token_secret = "shop-token"
base_url = "{shop.url}"
bulk_poll_seconds = 0.05
[[sources]]
type = "bigcommerce"
name = "bc"
store_hash = "abc123"
token_secret = "bc-token"
base_url = "{bc.url}"
""")
        result = CliRunner().invoke(
            main, ["run", "--once", "-c", str(tmp_path / "config.toml"), "--as-of", "2026-11-01"]
        )
        assert result.exit_code == 0, result.output
        # read the store from a fresh process: the CLI run may have left this process's SQLite locks
        # on the file in a state a second SQLite library (the optional ADBC driver) confuses
        script = (
            "import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(json.dumps(dict(c.execute('SELECT source, count(*) FROM orders GROUP BY source'))))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "state.sqlite")],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        counts = json.loads(out)
        assert counts == {"shop": len(shop.orders), "bc": len(bc.orders)}
        assert os.environ[env_var_name("shop-token")] not in result.output
    finally:
        shop.close()
        bc.close()


def test_the_commented_shop_examples_in_config_example_validate():
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    block = text.split("# --- shop sources (shopify, bigcommerce) ---")[1].split("# -----")[0]
    lines = [
        line[2:] for line in block.splitlines() if line.startswith("# [[sources]]") or re.match(r"# [a-z_]+ = ", line)
    ]
    config = parse_config(tomllib.loads("\n".join(lines)))
    assert [s.type for s in config.sources] == ["shopify", "bigcommerce"]
