"""One shop's groups reach Shopify's own customers, Klaviyo and Mailchimp in the same cycles, over the fakes,
with a fault injected on each vendor's way: every place ends with the same group, a rerun writes nothing,
and a group change replaces the tag (never two group tags) in both places that tag."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses

from connectors.base import ConnectorContext
from connectors.http import RetryPolicy
from connectors.klaviyo.destination import KlaviyoDestination, KlaviyoSettings
from connectors.mailchimp.destination import MailchimpDestination, MailchimpSettings
from connectors.shopify.source import ShopifySettings, ShopifySource
from connectors.shopify.writeback import ShopifyWriteback, ShopifyWritebackSettings
from rfm_sync.config import parse_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.fakes import klaviyo_fake, mailchimp_fake
from tests.fakes.shopify_fake import FakeClock, ShopifyFake

pytestmark = pytest.mark.slow  # real cycles over a fake shop and two fake platforms

AS_OF = date(2026, 11, 1)
SECRETS = {"shop-token": "shpat_test_token", "klaviyo-key": klaviyo_fake.API_KEY, "mc-key": mailchimp_fake.API_KEY}


@pytest.fixture
def shop():
    fake = ShopifyFake(clock=FakeClock())
    fake.scopes = [*fake.scopes, "write_customers"]
    fake.add_orders(150)  # 51 customers; every 7th order a guest's
    # the fake gives some guest orders a customer's email: with merge_by = "customer_id" that guest and
    # that customer are two rfm-sync customers writing one Klaviyo profile. Here every guest has its own.
    for order in fake.orders.values():
        if order.customer_id is None:
            order.email = f"guest{order.id}@example.com"
    fake.changed()
    yield fake
    fake.close()


def pipeline(tmp_path: Path, shop: ShopifyFake) -> Pipeline:
    clock = shop.clock
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda n: Secret(n, SECRETS[n]))
    wait = {"sleep": clock.sleep, "clock": clock.monotonic}
    source = ShopifySource(
        ShopifySettings(name="shop-a", shop="shop-a", token_secret="shop-token", base_url=shop.url, backfill="paged"),
        ctx,
        **wait,
    )
    writeback = ShopifyWriteback(
        ShopifyWritebackSettings(name="shopify", shop="shop-a", token_secret="shop-token", base_url=shop.url),
        ctx,
        policy=RetryPolicy(attempts=8, max_elapsed_s=120),
        **wait,
    )
    k_clock = klaviyo_fake.FakeClock()
    klaviyo = KlaviyoDestination(
        KlaviyoSettings.model_validate(
            {"type": "klaviyo", "name": "klaviyo", "api_key_secret": "klaviyo-key", "base_url": klaviyo_fake.BASE_URL}
        ),
        ctx,
        sleep=k_clock.sleep,
        clock=k_clock,
    )
    m_clock = klaviyo_fake.FakeClock()
    mailchimp = MailchimpDestination(
        MailchimpSettings.model_validate(
            {
                "type": "mailchimp",
                "name": "mailchimp",
                "api_key_secret": "mc-key",
                "audience_id": mailchimp_fake.LIST_ID,
                "base_url": mailchimp_fake.BASE_URL,
            }
        ),
        ctx,
        sleep=m_clock.sleep,
        clock=m_clock,
        policy=RetryPolicy(attempts=4),
    )
    store = Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    config = parse_config({"identity": {"merge_by": "customer_id"}})
    return Pipeline(config, store, sources=[source], destinations=[writeback, klaviyo, mailchimp], clock=clock.now)


def email_of(customer_id: int) -> str:
    return f"customer{customer_id - 500_000}@example.com"  # how the fake shop names its customers


def groups_everywhere(shop: ShopifyFake, klaviyo, mailchimp) -> dict[int, tuple]:
    """Per Shopify customer: (metafield group, its rfm: tags, Klaviyo's group, Mailchimp's group, its rfm: tags)."""
    out = {}
    for cid, customer in shop.customers.items():
        email = email_of(cid)
        member = mailchimp.member(email) or {}
        out[cid] = (
            customer.metafields[("rfm", "group")][1],
            sorted(t for t in customer.tags if t.startswith("rfm:")),
            (klaviyo.properties(email) or {}).get("Current RFM group"),
            (member.get("merge_fields") or {}).get("RFM_GROUP"),
            sorted(t for t in mailchimp.tags(email) if t.startswith("rfm:")),
        )
    return out


def test_groups_reach_shopify_klaviyo_and_mailchimp_alike_and_a_rerun_writes_nothing(tmp_path, shop):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(shop.url)  # the fake shop is a real server on loopback
        klaviyo = klaviyo_fake.FakeKlaviyo().install(rsps)
        mailchimp = mailchimp_fake.FakeMailchimp().install(rsps)
        cycle = pipeline(tmp_path, shop)
        # a fault on each vendor's way: a 503, and answers lost after the work was done
        shop.server_errors_next, klaviyo.lost_next, mailchimp.cut_next = 1, 1, 1
        first = cycle.run_cycle(AS_OF)
        assert not first.errors, first.errors
        assert shop.server_errors_next == klaviyo.lost_next == mailchimp.cut_next == 0  # every fault was hit
        seen = groups_everywhere(shop, klaviyo, mailchimp)
        assert len(seen) == len(shop.customers) > 40
        for cid, (group, shop_tags, k_group, m_group, m_tags) in seen.items():
            assert group and shop_tags == [f"rfm:{group}"] and k_group == m_group == group, (cid, seen[cid])
            assert m_tags == [f"rfm:{group}"], (cid, m_tags)
        assert first.skipped["shopify"] > 0  # guests have no Shopify customer to write to

        writes = (len(shop.writes), klaviyo.writes(), mailchimp.writes)
        rerun = cycle.run_cycle(AS_OF)
        assert not rerun.errors and (len(shop.writes), klaviyo.writes(), mailchimp.writes) == writes

        later = cycle.run_cycle(AS_OF + timedelta(days=150))  # time moves customers down
        assert not later.errors, later.errors
        after = groups_everywhere(shop, klaviyo, mailchimp)
        moved = [cid for cid in seen if after[cid][0] != seen[cid][0]]
        assert moved
        for cid in moved:
            group, shop_tags, k_group, m_group, m_tags = after[cid]
            assert shop_tags == [f"rfm:{group}"] and m_tags == [f"rfm:{group}"] and k_group == m_group == group
            assert klaviyo.properties(email_of(cid))["Previous RFM group"] == seen[cid][0]
            assert shop.customers[cid].metafields[("rfm", "previous_group")][1] == seen[cid][0]
