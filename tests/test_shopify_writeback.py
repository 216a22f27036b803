"""The Shopify write-back against the fake shop: groups reach customers, reruns write nothing, tags never double.

Every query and mutation is validated against Shopify's Admin API schema (../shared/specs, with graphql-core),
and so are the variables the connector actually sent in these tests.
"""

from __future__ import annotations

import functools
import gzip
import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from graphql import GraphQLSchema, OperationDefinitionNode, build_client_schema, parse, specified_rules, validate
from graphql.execution.values import get_variable_values
from graphql.validation import NoDeprecatedCustomRule

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, RetryableError
from connectors.http import RetryPolicy
from connectors.shopify import queries
from connectors.shopify.queries import API_VERSION
from connectors.shopify.source import ShopifySettings, ShopifySource
from connectors.shopify.writeback import ShopifyWriteback, ShopifyWritebackSettings, customer_gid
from rfm_sync.config import parse_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.fakes.shopify_fake import FakeClock, FakeCustomer, FakeOrder, ShopifyFake

TOKEN = "shpat_test_token"
AS_OF = date(2026, 11, 1)


def context() -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda n: Secret(n, TOKEN))


def writeback(url: str, clock: FakeClock, attempts: int = 8, **settings: Any) -> ShopifyWriteback:
    s = ShopifyWritebackSettings(name="shopify-wb", shop="shop-a", token_secret="shop-token", base_url=url, **settings)
    return ShopifyWriteback(
        s, context(), sleep=clock.sleep, clock=clock.monotonic, policy=RetryPolicy(attempts=attempts, max_elapsed_s=120)
    )


def update(outbox_id: int, key: str, group: str | None, previous: str | None = None, changed: str | None = None):
    props = {"Current RFM group": group, "Previous RFM group": previous, "RFM group last changed": changed}
    return ProfileUpdate(outbox_id, key, f"{key}@example.com", None, props)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake(clock):
    shop = ShopifyFake(clock=clock)
    shop.scopes = [*shop.scopes, "write_customers"]
    yield shop
    shop.close()


@pytest.fixture
def schema(shared_dir) -> GraphQLSchema:
    return admin_schema(shared_dir / "specs" / "shopify" / f"admin_{API_VERSION}.json.gz")


@functools.cache
def admin_schema(path: Path) -> GraphQLSchema:
    with gzip.open(path) as fh:
        built = build_client_schema(json.load(fh)["data"])
    # Shopify's schema fails graphql-core's own consistency self-check (deprecations on interface
    # implementations, see ../shared/specs/shopify/SOURCE.txt): mark it checked, validate documents only
    built._validation_errors = []
    return built


def problems(schema: GraphQLSchema, document: str, variables: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a document (unknown or deprecated fields, arguments, types) and, given, its variables."""
    tree = parse(document)
    found = [e.message for e in validate(schema, tree, [*specified_rules, NoDeprecatedCustomRule])]
    if variables is not None and not found:
        [op] = [d for d in tree.definitions if isinstance(d, OperationDefinitionNode)]
        coerced = get_variable_values(schema, op.variable_definitions or [], variables)
        found += [e.message for e in coerced] if isinstance(coerced, list) else []
    return found


# ---------------------------------------------------------------------------------------- the schema
def test_every_document_the_shopify_connectors_send_is_valid_in_the_pinned_schema(schema):
    documents = {  # every document (ORDER_FIELDS is a piece of two of them, not one itself)
        n: v
        for n, v in vars(queries).items()
        if n.isupper() and isinstance(v, str) and v.lstrip().startswith(("query", "mutation", "{"))
    }
    assert {"CUSTOMER_STATE", "METAFIELDS_SET", "METAFIELDS_DELETE", "TAGS_ADD", "TAGS_REMOVE"} <= set(documents)
    assert {name: problems(schema, doc) for name, doc in documents.items()} == {name: [] for name in documents}


def test_the_schema_says_what_the_write_back_relies_on(schema):
    mutation = schema.mutation_type
    assert mutation is not None
    assert "maximum of 25 metafields" in (mutation.fields["metafieldsSet"].description or "")
    assert queries.MAX_METAFIELDS_PER_SET == 25
    assert "elementIndex" in schema.type_map["MetafieldsSetUserError"].fields  # type: ignore[union-attr]
    assert problems(schema, "query { nodes(ids: []) { id } }") == []


# ---------------------------------------------------------------------------------------- unit
def test_only_shopify_customers_have_a_gid():
    assert customer_gid("207119551") == "gid://shopify/Customer/207119551"
    assert customer_gid("gid://shopify/Customer/5") == "gid://shopify/Customer/5"
    for key in ("email:a@example.com", "c01", "gid://shopify/Order/5", "١٢٣", ""):
        assert customer_gid(key) is None


def test_a_batch_writes_metafields_and_one_tag_and_a_resend_writes_nothing(fake, clock, schema):
    fake.customers = {i: FakeCustomer(i, tags=["VIP"]) for i in range(1, 31)}
    dest = writeback(fake.url, clock)
    batch = [update(i, str(i), "Loyal", "Recent", "2026-10-30T08:00:00+00:00") for i in range(1, 31)]
    batch.append(update(99, "email:guest@example.com", "Loyal"))
    result = dest.push(batch)
    assert sorted(result.accepted) == [*range(1, 31), 99] and result.failed == {} and result.skipped == [99]
    assert fake.largest_set == 25  # 90 metafields in calls of at most 25
    assert dest.writes == len(fake.writes) == 4 + 30  # 4 metafieldsSet calls, one tagsAdd per customer
    c = fake.customers[7]
    assert c.metafields == {
        ("rfm", "group"): ("single_line_text_field", "Loyal"),
        ("rfm", "previous_group"): ("single_line_text_field", "Recent"),
        ("rfm", "group_changed_at"): ("date_time", "2026-10-30T08:00:00"),
    }
    assert sorted(c.tags) == ["VIP", "rfm:Loyal"]
    writes = len(fake.writes)
    again = dest.push(batch)  # a lost answer made the outbox send it again: already there
    assert len(fake.writes) == writes and sorted(again.skipped) == [*range(1, 31), 99]
    for document, variables in fake.sent:
        assert problems(schema, document, variables) == [], document


def test_a_group_change_replaces_the_tag_and_an_emptied_property_is_deleted(fake, clock):
    fake.customers = {1: FakeCustomer(1, tags=["rfm:Champions", "rfm:At Risk", "wholesale"])}  # two: a person's doing
    dest = writeback(fake.url, clock)
    dest.push([update(1, "1", "Loyal", "Champions", "2026-10-30T08:00:00Z")])
    assert sorted(fake.customers[1].tags) == ["rfm:Loyal", "wholesale"]
    assert fake.writes[-2:] == ["RfmTagsRemove", "RfmTagsAdd"]  # the old tag goes first: never two
    dest.push([update(1, "1", None)])  # cleared: no qualifying order left
    assert fake.customers[1].tags == ["wholesale"] and fake.customers[1].metafields == {}


def test_namespace_key_and_tag_are_configurable(fake, clock):
    fake.customers = {1: FakeCustomer(1)}
    dest = writeback(
        fake.url,
        clock,
        namespace="loyalty",
        metafields=[
            {"property": "Current RFM group", "key": "segment"},
            {"property": "RFM score", "key": "score", "namespace": "custom", "type": "number_integer"},
        ],
        tag=False,
    )
    dest.push([ProfileUpdate(1, "1", None, None, {"Current RFM group": "Loyal", "RFM score": 7})])
    assert fake.customers[1].metafields == {
        ("loyalty", "segment"): ("single_line_text_field", "Loyal"),
        ("custom", "score"): ("number_integer", "7"),
    }
    assert fake.customers[1].tags == []


def test_two_properties_on_one_metafield_are_refused():
    with pytest.raises(ValueError, match="both written to rfm.group"):
        ShopifyWritebackSettings(
            name="s",
            shop="s",
            token_secret="t",
            metafields=[{"property": "Current RFM group", "key": "group"}, {"property": "RFM score", "key": "group"}],
        )


def test_user_errors_fail_the_record_retry_or_stop_as_their_code_says(fake, clock):
    fake.customers = {i: FakeCustomer(i) for i in (1, 2, 3)}
    fake.reject_customers = {2}
    dest = writeback(fake.url, clock)
    result = dest.push([update(i, str(i), "Loyal") for i in (1, 2, 3, 4)])  # 4: not in the shop (deleted)
    assert sorted(result.accepted) == [1, 3] and set(result.failed) == {2, 4}
    assert "Value is invalid" in result.failed[2] and "has no customer" in result.failed[4]
    assert fake.customers[1].metafields and fake.customers[3].metafields and not fake.customers[2].metafields
    # a definition of another type fails every customer alike: the destination stops, saying what to check
    fake.definitions = {("rfm", "group"): "number_integer"}
    with pytest.raises(FatalError, match="INVALID_TYPE"):
        dest.push([update(1, "1", "At Risk")])


def test_throttles_5xx_and_answers_lost_after_the_work_end_right(fake, clock):
    fake.customers = {i: FakeCustomer(i) for i in range(1, 121)}
    fake.bucket_max, fake.restore_rate, fake.available = 500.0, 10.0, 500.0  # a small bucket: must wait
    fake.server_errors_next, fake.cut_next = 2, 3  # two 503s, then three answers cut after the work
    dest = writeback(fake.url, clock, batch_size=120)
    result = dest.push([update(i, str(i), "Champions", "Loyal") for i in range(1, 121)])
    assert len(result.accepted) == 120 and not result.failed
    assert all(c.tags == ["rfm:Champions"] for c in fake.customers.values())
    assert all(c.metafields[("rfm", "group")][1] == "Champions" for c in fake.customers.values())
    # the bucket paces the calls: a throttle only where our estimate could not know (the first read's cost,
    # a cut answer that never told us the bucket's level), out of some 270 requests
    assert dest.bucket.waited > 0 and fake.throttled <= 4 and fake.cuts == 3 and dest.client.retries >= 5


def test_retries_used_up_leave_the_batch_to_the_next_cycle(fake, clock):
    fake.customers = {1: FakeCustomer(1)}
    fake.server_errors_next = 10
    with pytest.raises(RetryableError):
        writeback(fake.url, clock, attempts=3).push([update(1, "1", "Loyal")])


def test_doctor_check_reports_a_missing_write_customers_scope_and_a_push_stops_on_it(fake, clock):
    dest = writeback(fake.url, clock)
    assert dest.check(online=False) == [] and dest.check() == []
    fake.scopes = ["read_orders", "read_all_orders", "read_customers"]
    [(problem, fix)] = dest.check()
    assert "write_customers" in problem and "write_customers" in fix and TOKEN not in problem + fix
    fake.customers = {1: FakeCustomer(1)}
    with pytest.raises(FatalError, match="denied.*write_customers"):
        dest.push([update(1, "1", "Loyal")])
    assert fake.customers[1].metafields == {} and fake.writes == []
    fake.token = "another"
    with pytest.raises(FatalError) as err:
        dest.check()
    assert TOKEN not in str(err.value)


# ---------------------------------------------------------------------------------------- end to end
def shop_cycle(tmp_path: Path, fake: ShopifyFake, clock: FakeClock) -> tuple[Pipeline, ShopifyWriteback]:
    config = parse_config({"identity": {"merge_by": "customer_id"}})
    store = Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    src = ShopifySource(
        ShopifySettings(name="shop-a", shop="shop-a", token_secret="shop-token", base_url=fake.url, backfill="paged"),
        context(),
        sleep=clock.sleep,
        clock=clock.monotonic,
    )
    dest = writeback(fake.url, clock)
    return Pipeline(config, store, sources=[src], destinations=[dest], clock=clock.now), dest


@pytest.mark.slow  # real cycles over the fake shop
def test_cycles_write_groups_to_customers_reruns_write_nothing_and_changes_swap_the_tag(tmp_path, fake, clock, schema):
    fake.add_orders(300)  # every 7th order a guest's
    guests = {o.email.strip().lower() for o in fake.orders.values() if o.customer_id is None and o.qualifies()}
    pipeline, dest = shop_cycle(tmp_path, fake, clock)
    assert not pipeline.run_cycle(AS_OF, push=False).errors  # pulled and scored: the outbox is full
    # faults on the write-back's way: a 503, an answer lost after the work, a bucket that runs dry
    fake.server_errors_next, fake.cut_next = 1, 1
    fake.bucket_max, fake.restore_rate, fake.available = 600.0, 20.0, 600.0
    first = pipeline.run_cycle(AS_OF, pull=False)
    assert not first.errors, first.errors
    assert fake.cuts == 1 and fake.failures == 1 and dest.bucket.waited > 0
    written = [c for c in fake.customers.values() if c.metafields]
    assert len(written) == len(fake.customers)  # every customer with an order has its group
    assert first.pushed == {"shopify-wb": len(written)} and first.skipped == {"shopify-wb": len(guests)}
    assert first.scored == len(written) + len(guests)
    for c in fake.customers.values():
        groups = [t for t in c.tags if t.startswith("rfm:")]
        assert groups == [f"rfm:{c.metafields[('rfm', 'group')][1]}"]

    writes = len(fake.writes)
    rerun = pipeline.run_cycle(AS_OF)
    assert len(fake.writes) == writes and rerun.pushed == {"shopify-wb": 0} and not rerun.errors

    before = {c.id: c.metafields[("rfm", "group")][1] for c in fake.customers.values()}
    buyer = next(iter(fake.customers))  # a big new order moves one customer; time moves the rest
    fake.orders[99_999] = FakeOrder(99_999, buyer, "big@example.com", clock.now(), clock.now(), Decimal("5000.00"))
    fake.changed()
    later = pipeline.run_cycle(AS_OF + timedelta(days=120))
    assert not later.errors
    moved = {i for i, c in fake.customers.items() if c.metafields[("rfm", "group")][1] != before[i]}
    assert moved and later.pushed["shopify-wb"] >= len(moved)
    for i in moved:
        c = fake.customers[i]
        assert [t for t in c.tags if t.startswith("rfm:")] == [f"rfm:{c.metafields[('rfm', 'group')][1]}"]
        assert c.metafields[("rfm", "previous_group")][1] == before[i]
    for document, variables in fake.sent:
        assert problems(schema, document, variables) == [], document


@pytest.mark.slow  # real cycles over the fake shop
def test_answers_lost_until_the_retries_ran_out_are_resent_next_cycle_without_writing_twice(tmp_path, fake, clock):
    fake.add_orders(120)
    pipeline, dest = shop_cycle(tmp_path, fake, clock)
    dest.client.policy = RetryPolicy(attempts=2, max_elapsed_s=60)
    assert not pipeline.run_cycle(AS_OF, push=False).errors
    # the first batch's metafields are set; then the shop adds the first tag but both answers are lost
    fake.cut_next, fake.cut_only = 2, "RfmTagsAdd"
    lost = pipeline.run_cycle(AS_OF, pull=False)
    assert "shopify-wb" in lost.errors and lost.pushed == {"shopify-wb": 0}
    mark = len(fake.sent)
    written_before = {m["ownerId"] for doc, v in fake.sent if "metafieldsSet" in doc for m in v["metafields"]}
    resent = pipeline.run_cycle(AS_OF, pull=False)  # the rows left "sending" go first, as they were
    # all but the one whose tag was added before its answer was lost: that one needed nothing more
    assert not resent.errors and resent.pushed["shopify-wb"] == len(fake.customers) - 1
    assert all([t for t in c.tags if t.startswith("rfm:")] for c in fake.customers.values())
    assert all(("rfm", "group") in c.metafields for c in fake.customers.values())
    # what the lost push had done was not done again: no metafield set twice, one more tagsAdd only
    # where the lost push's own retry repeated it
    again = {m["ownerId"] for doc, v in fake.sent[mark:] if "metafieldsSet" in doc for m in v["metafields"]}
    assert written_before and not written_before & again
    assert fake.writes.count("RfmTagsAdd") == len(fake.customers) + 1
