"""The same checks for every destination: settings, batch size, empty pushes, no secret in reprs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses

from connectors.base import ConnectorContext, ConnectorSettings, Destination, PushResult
from connectors.registry import DESTINATIONS, connector_class
from rfm_sync.config import parse_config
from rfm_sync.secrets import Secret
from tests.conftest import REPO

SECRET = "super-secret-value-123"
TABLES = {
    "file": {"type": "file", "name": "f", "path": "out.jsonl"},
    "klaviyo": {"type": "klaviyo", "name": "k", "api_key_secret": "k", "base_url": "http://127.0.0.1:8765"},
    "meta_audiences": {
        "type": "meta_audiences",
        "name": "m",
        "access_token_secret": "m",
        "base_url": "http://127.0.0.1:8766",
        "audiences": [{"audience_id": "1", "groups": ["Loyal"]}],
    },
    "mailchimp": {
        "type": "mailchimp",
        "name": "mc",
        "api_key_secret": "mc",
        "audience_id": "a1b2c3d4e5",
        "base_url": "http://127.0.0.1:8767",
    },
    "shopify": {"type": "shopify", "name": "s", "shop": "s", "token_secret": "s", "base_url": "http://127.0.0.1:8768"},
}


@pytest.fixture(params=sorted(DESTINATIONS))
def built(request, tmp_path):
    table = TABLES[request.param]
    cls = connector_class("destination", table["type"])
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda name: Secret(name, SECRET))
    return cls, cls(cls.Settings.model_validate(table), ctx)


def test_every_destination_follows_the_protocol(built):
    cls, dest = built
    assert issubclass(cls.Settings, ConnectorSettings)
    assert isinstance(dest, Destination) and dest.batch_size >= 1


def test_an_empty_batch_makes_no_call(built):
    _, dest = built
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        assert dest.push([]) == PushResult()
        assert len(rsps.calls) == 0


def test_no_secret_in_repr(built):
    _, dest = built
    assert SECRET not in repr(dest)
    client = getattr(dest, "client", None)  # building the HTTP client reads the secret
    assert client is None or SECRET not in repr(client)


def test_the_commented_destination_examples_are_valid():
    text = (REPO / "config.example.toml").read_text()
    block = text[
        text.index("# --- destinations (klaviyo, meta_audiences, mailchimp, shopify) ---") : text.index("# --- daemon")
    ]
    lines = [line[2:] for line in block.splitlines() if re.match(r"^# (\[|[a-z_]+ = )", line)]
    config = parse_config(tomllib.loads("\n".join(lines)))
    assert [d.type for d in config.destinations] == ["klaviyo", "meta_audiences", "mailchimp", "shopify"]
    assert config.destinations[2].merge_fields["Current RFM group"] == "RFM_GROUP"
    assert len(config.destinations[1].audiences) == 2
    assert [m.key for m in config.destinations[3].metafields] == ["group", "previous_group", "group_changed_at"]
    flows = config.destinations[0].flows
    assert [w.group for w in flows.win_back] == ["At Risk", "Needs Attention"] and len(flows.win_back[0].emails) == 2
    assert [b.groups for b in flows.post_purchase.branches] == [["Champions", "Loyal"], ["Recent"]]
    assert [m.from_groups for m in flows.group_change.moves] == [["Champions"], []]


def test_docs_cover_scopes_and_the_example_flows():
    doc = (REPO / "docs" / "destinations.md").read_text()
    for needle in (
        "profiles:write",
        "events:write",
        "segments:write",
        "ads_management",
        "Current RFM group equals At Risk",
        "RFM Group Changed",
        "rfm-sync klaviyo bootstrap",
        "write_customers",
        "Customer tags added",
        "metafields.rfm.group",
        "bulkOperationRunMutation",
    ):
        assert needle in doc, needle
    assert Path(REPO / "config.example.toml").is_file()


@pytest.mark.parametrize("kind", ["klaviyo", "meta_audiences", "mailchimp", "shopify"])
def test_a_destination_built_for_a_dry_run_refuses_to_send(kind, tmp_path):
    from connectors.base import FatalError, ProfileUpdate, Transition

    table = TABLES[kind]
    cls = connector_class("destination", kind)
    ctx = ConnectorContext(
        zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda name: Secret(name, SECRET), dry_run=True
    )
    dest = cls(cls.Settings.model_validate(table), ctx)
    update = ProfileUpdate(
        outbox_id=1,
        customer_key="c1",
        email="a@example.com",
        phone=None,
        properties={"Current RFM group": "Loyal"},
        transition=Transition("Recent", "Loyal"),
        event_id="e1",
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        with pytest.raises(FatalError, match="dry run"):
            dest.push([update])
        assert len(rsps.calls) == 0
