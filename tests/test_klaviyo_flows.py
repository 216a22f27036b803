"""Draft flows (``rfm-sync klaviyo bootstrap --flows``) against the fake Klaviyo: every definition valid
against the spec, each flow made once and as a draft, what the merchant sees afterwards, lost answers,
missing scopes and metrics, and configuration errors."""

from __future__ import annotations

import copy
import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, Transition
from connectors.http import RetryPolicy
from connectors.klaviyo.bodies import REVISION, event_properties
from connectors.klaviyo.destination import HEADROOM, LIMITS, KlaviyoDestination, KlaviyoSettings
from connectors.klaviyo.flow_config import FlowsConfig, Move, WinBack
from connectors.klaviyo.flows import (
    EVENT_FROM,
    EVENT_TO,
    PropertyNames,
    bootstrap_flows,
    flow_body,
    plan_flows,
    template_body,
)
from connectors.klaviyo.segments import bootstrap_segments
from rfm_sync.cli import main
from rfm_sync.config import ConfigError, parse_config
from rfm_sync.engine import classic11
from rfm_sync.engine import klaviyo as klaviyo_scheme
from rfm_sync.secrets import Secret
from tests.configs import config_toml, destination, table
from tests.fakes.klaviyo_fake import (  # noqa: F401
    API_KEY,
    BASE_URL,
    SCOPES,
    SPEC,
    FakeClock,
    FakeKlaviyo,
    klaviyo_spec,
    validate_all,
    validate_request,
    validated_fake,
)

GROUPS = klaviyo_scheme.GROUP_NAMES
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": REVISION,
    "Content-Type": "application/vnd.api+json",
}
NAMES = [
    "RFM: Win-back: At Risk",
    "RFM: Win-back: Needs Attention",
    "RFM: Post-purchase by RFM group",
    "RFM: RFM group changed",
]


def plan(config: FlowsConfig | None = None, groups=GROUPS, **overrides):
    options = {"properties": PropertyNames(), "metric_name": "RFM Group Changed", "events": True, **overrides}
    return plan_flows(config or FlowsConfig(), groups=groups, **options)


def dest_for(clock: FakeClock, **settings) -> KlaviyoDestination:
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda name: Secret(name, API_KEY))
    s = KlaviyoSettings(name="klaviyo", api_key_secret="klaviyo-key", base_url=BASE_URL, **settings)
    return KlaviyoDestination(s, ctx, sleep=clock.sleep, clock=clock, policy=RetryPolicy(attempts=4, max_elapsed_s=600))


@pytest.fixture
def clock():
    return FakeClock()


def account(fake: FakeKlaviyo, dest: KlaviyoDestination, *metrics: str) -> dict[str, str | None]:
    """The account as the command finds it after the segments bootstrap, with these metrics recorded."""
    for name in metrics:
        fake.add_metric(name, integration="API" if name == "RFM Group Changed" else "Shopify")
    return {r.name: r.segment_id for r in bootstrap_segments(dest, GROUPS, "Current RFM group")}


def create(fake, dest, segments, config: FlowsConfig | None = None, **kw):
    return bootstrap_flows(dest, plan(config).flows, segments, **kw)


def group_change_event(i: int) -> ProfileUpdate:
    return ProfileUpdate(
        outbox_id=i,
        customer_key=f"c{i}",
        email=f"c{i}@example.com",
        phone=None,
        properties={"Current RFM group": "Needs Attention"},
        transition=Transition("Champions", "Needs Attention"),
        event_id=f"ev-{i}",
        changed_at=datetime(2026, 11, 20, tzinfo=UTC),
    )


# ---------------------------------------------------------------------- definitions vs the spec
def test_every_default_flow_and_template_is_valid_against_the_spec_and_all_emails_are_drafts(klaviyo_spec):
    flows = plan().flows
    assert [f.name for f in flows] == NAMES
    for flow in flows:
        templates = {e.template: f"T{n}" for n, e in enumerate(flow.emails())}
        body = flow_body(flow, trigger_id="X1", template_ids=templates)
        validate_request(klaviyo_spec, "POST", BASE_URL + "/api/flows", HEADERS, json.dumps(body).encode())
        actions = body["data"]["attributes"]["definition"]["actions"]
        emails = [a for a in actions if a["type"] == "send-email"]
        assert emails and all(a["data"]["status"] == "draft" for a in emails)
        assert "status" not in body["data"]["attributes"]  # the API creates every flow as a draft
        for step in flow.emails():
            template = json.dumps(template_body(step, flow.properties)).encode()
            validate_request(klaviyo_spec, "POST", BASE_URL + "/api/templates", HEADERS, template)


def test_with_a_hold_out_the_flows_on_moves_leave_it_out(klaviyo_spec):
    """``[properties] holdout_percent`` > 0: the win-back and group-change flows (the ones on a move,
    which ``rfm-sync outcomes`` measures) leave out the held-out customers; the post-purchase flow not."""
    flows = plan(properties=PropertyNames(holdout="RFM holdout")).flows
    held_out = {"type": "boolean", "operator": "equals", "value": False}
    for flow in flows:
        body = flow_body(flow, trigger_id="X1", template_ids={})
        validate_request(klaviyo_spec, "POST", BASE_URL + "/api/flows", HEADERS, json.dumps(body).encode())
        groups = (_definition(body).get("profile_filter") or {}).get("condition_groups", [])
        filters = [(c.get("property"), c.get("filter")) for g in groups for c in g["conditions"]]
        assert (("properties['RFM holdout']", held_out) in filters) == (flow.key != "post_purchase"), flow.key
    assert not any("holdout" in json.dumps(flow_body(f, trigger_id="X", template_ids={})) for f in plan().flows)


def _definition(body):
    return body["data"]["attributes"]["definition"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["actions"][0]["data"].pop("value"),  # a time delay without its length
        lambda d: d["actions"][0]["data"].update(unit="weeks"),  # a unit Klaviyo does not have
        lambda d: d["actions"][2]["data"].update(status="published"),  # an email status that does not exist
        lambda d: d["triggers"][0].update(type="segments"),  # an unknown trigger type
        lambda d: d.pop("entry_action_id"),  # no entry point
        lambda d: d["actions"][1]["data"]["profile_filter"]["condition_groups"][0]["conditions"][0]["filter"].update(
            operator="is"
        ),  # a split on an operator the spec does not list
    ],
)
def test_an_invalid_definition_fails_spec_validation(klaviyo_spec, mutate):
    from openapi_core.validation.request.exceptions import RequestValidationError

    good = flow_body(plan().flows[2], trigger_id="X1", template_ids={})
    validate_request(klaviyo_spec, "POST", BASE_URL + "/api/flows", HEADERS, json.dumps(good).encode())
    bad = copy.deepcopy(good)
    mutate(_definition(bad))
    with pytest.raises(RequestValidationError):
        validate_request(klaviyo_spec, "POST", BASE_URL + "/api/flows", HEADERS, json.dumps(bad).encode())


def test_the_fake_refuses_what_klaviyo_refuses(fake, clock):
    """The spec lets a split go without its links; Klaviyo (and the fake) do not, nor an unknown trigger."""
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order")
    good = flow_body(plan().flows[2], trigger_id=fake.metrics[0]["id"], template_ids={})
    for mutate, detail in [
        (lambda d: d["actions"][1].pop("links"), "next_if_true"),
        (lambda d: d["actions"][0]["links"].update(next="action-99"), "names no action"),
        (lambda d: d["triggers"][0].update(id="nope"), "does not exist"),
    ]:
        bad = copy.deepcopy(good)
        mutate(_definition(bad))
        with pytest.raises(FatalError, match=detail) as info:
            dest.send("POST", "/api/flows", limiter="flows_write", idempotent=False, body=bad)
        assert info.value.status == 400
    assert fake.flows == [] and segments


def test_the_split_keys_are_the_ones_the_event_carries():
    props = event_properties(group_change_event(1))
    assert (props[EVENT_FROM], props[EVENT_TO]) == ("Champions", "Needs Attention")


# ---------------------------------------------------------------------- against the fake
def test_bootstrap_creates_the_drafts_once_and_a_second_run_creates_none(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    first = create(fake, dest, segments)
    assert [(r.name, r.status, r.flow_status) for r in first] == [(n, "created", "draft") for n in NAMES]
    templates = len(fake.templates)
    assert templates == 2 + 2 + 3 + 2  # one placeholder template per email
    second = create(fake, dest, segments)
    assert [(r.status, r.flow_id) for r in second] == [("exists", r.flow_id) for r in first]
    assert fake.calls["POST /api/flows"] == 4 and len(fake.templates) == templates
    assert fake.revisions == {REVISION}


def test_what_the_merchant_sees_in_klaviyo_afterwards(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    create(fake, dest, segments)
    metric = {m["attributes"]["name"]: m["id"] for m in fake.metrics}
    assert [f["attributes"]["name"] for f in fake.flows] == NAMES
    assert {f["attributes"]["status"] for f in fake.flows} == {"draft"}

    def seen(name):
        definition = fake.flow_named(name)["attributes"]["definition"]
        by_id = {a["id"]: a for a in definition["actions"]}
        assert not any("temporary_id" in a for a in definition["actions"])  # real ids, linked by them
        return definition, by_id, by_id[definition["entry_action_id"]]

    # win-back: added to the At Risk segment; consent and "still At Risk" checked before every step
    definition, by_id, first = seen("RFM: Win-back: At Risk")
    assert definition["triggers"] == [{"type": "segment", "id": segments["Current RFM group equals At Risk"]}]
    conditions = [c for g in definition["profile_filter"]["condition_groups"] for c in g["conditions"]]
    assert conditions[0]["type"] == "profile-marketing-consent"
    assert conditions[1]["property"] == "properties['Current RFM group']"
    assert conditions[1]["filter"] == {"type": "string", "operator": "equals", "value": "At Risk"}
    email = by_id[first["links"]["next"]]
    assert (first["type"], first["data"]["value"], email["type"]) == ("time-delay", 1, "send-email")
    assert email["data"]["status"] == "draft"
    template = next(t for t in fake.templates if t["id"] == email["data"]["message"]["template_id"])
    assert template["attributes"]["name"] == "RFM: Win-back: At Risk · email 1"
    html = template["attributes"]["html"]
    assert "{{ person|lookup:'Current RFM group'|default:'' }}" in html and "{% unsubscribe %}" in html

    # post-purchase: Placed Order, a week's wait, then a split on the current group
    definition, by_id, first = seen("RFM: Post-purchase by RFM group")
    assert definition["triggers"] == [{"type": "metric", "id": metric["Placed Order"]}]
    split = by_id[first["links"]["next"]]
    condition = split["data"]["profile_filter"]["condition_groups"][0]["conditions"][0]
    assert (first["data"]["value"], split["type"]) == (7, "conditional-split")
    assert condition["filter"] == {"type": "string", "operator": "in", "value": ["Champions", "Loyal"]}
    review = by_id[split["links"]["next_if_true"]]
    assert review["data"]["message"]["subject_line"].startswith("How do you like your order")
    recent = by_id[split["links"]["next_if_false"]]
    assert recent["data"]["profile_filter"]["condition_groups"][0]["conditions"][0]["filter"]["value"] == "Recent"
    others = by_id[recent["links"]["next_if_false"]]
    assert others["data"]["message"]["subject_line"] == "Thank you for your order"

    # group change: a trigger split on the event's from_group and to_group
    definition, by_id, first = seen("RFM: RFM group changed")
    assert definition["triggers"] == [{"type": "metric", "id": metric["RFM Group Changed"]}]
    assert first["type"] == "trigger-split" and first["data"]["trigger_id"] == metric["RFM Group Changed"]
    tests = [c for g in first["data"]["trigger_filter"]["condition_groups"] for c in g["conditions"]]
    assert [(c["field"], c["filter"]["value"]) for c in tests] == [
        ("from_group", "Champions"),
        ("to_group", ["Needs Attention", "At Risk"]),
    ]
    slipped = by_id[first["links"]["next_if_true"]]
    template = next(t for t in fake.templates if t["id"] == slipped["data"]["message"]["template_id"])
    assert "{{ event.from_group|default:'–' }}" in template["attributes"]["html"]


@pytest.mark.parametrize("fault", ["cut_next", "malformed_next", "lost_next"])
@pytest.mark.parametrize("route", ["POST /api/flows", "POST /api/templates"])
def test_a_lost_answer_never_makes_a_flow_or_template_twice(fake, clock, fault, route):
    """Klaviyo makes the flow (or template), then the answer is cut off, truncated or a 503: the
    flows are listed again instead of a blind retry, which would make a second one of that name."""
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    fake.cut_only = route
    setattr(fake, fault, 1)
    results = create(fake, dest, segments)
    assert [r.status for r in results] == ["created"] * 4 and fake.cuts == 1
    assert [f["attributes"]["name"] for f in fake.flows] == NAMES  # each once
    templates = [t["attributes"]["name"] for t in fake.templates]
    assert len(templates) == len(set(templates)) == 9
    assert fake.calls[route] == (4 if route == "POST /api/flows" else 9)


def test_flow_creation_is_paced_below_one_a_second(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    times, acquire = [], dest.limiters["flows_write"].acquire

    def timed():
        acquire()
        times.append(clock())

    dest.limiters["flows_write"].acquire = timed
    create(fake, dest, segments)
    assert len(times) == 4 and min(b - a for a, b in zip(times, times[1:])) >= 1 / HEADROOM - 1e-9
    assert LIMITS["flows_write"] and LIMITS["flows_read"]


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("flows:write", "create flows (HTTP 403): the API key lacks the flows:write scope"),
        ("flows:read", "list the flows (HTTP 403): the API key lacks the flows:read scope"),
        ("metrics:read", "list the metrics (HTTP 403): the API key lacks the metrics:read scope"),
        ("templates:write", "create the email templates (HTTP 403): the API key lacks the templates:write scope"),
    ],
)
def test_a_missing_scope_is_named(fake, clock, missing, says):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    fake.scopes = set(SCOPES.values()) - {missing}
    with pytest.raises(FatalError) as info:
        create(fake, dest, segments)
    assert str(info.value).startswith(f"klaviyo: Klaviyo refused to {says}") and info.value.status == 403
    assert len(fake.flows) <= 2  # the win-backs need no metric: made before the metrics were listed


def test_a_metric_not_yet_in_klaviyo_waits_for_its_first_event(fake, clock):
    """No event sent yet, no order integration: Klaviyo has neither metric, and a flow cannot trigger
    on a metric that does not exist. The first group change sends the event that makes it."""
    dest = dest_for(clock, bulk_min_profiles=5)
    segments = account(fake, dest)
    first = create(fake, dest, segments)
    assert [r.status for r in first] == ["created", "created", "not created", "not created"]
    assert "no metric 'Placed Order' in Klaviyo" in first[2].reason and "flows.post_purchase.metric" in first[2].reason
    assert "not in Klaviyo yet" in first[3].reason and "first group change" in first[3].reason
    assert dest.push([group_change_event(1)]).accepted == [1]  # rfm-sync's first group-change event
    second = create(fake, dest, segments)
    assert [r.status for r in second] == ["exists", "exists", "not created", "created"]


def test_several_metrics_of_one_name_need_metric_id(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    other = fake.add_metric("Placed Order", integration="WooCommerce")
    results = create(fake, dest, segments)
    assert results[2].status == "not created" and "set flows.post_purchase.metric_id" in results[2].reason
    chosen = FlowsConfig.model_validate({"post_purchase": {"metric_id": other}})
    results = create(fake, dest, segments, chosen)
    assert results[2].status == "created"
    assert fake.flow_named(NAMES[2])["attributes"]["definition"]["triggers"][0]["id"] == other


def test_a_flow_klaviyo_refuses_is_reported_and_the_others_are_made(fake, clock, monkeypatch):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    real = fake._flow_problem
    monkeypatch.setattr(
        fake,
        "_flow_problem",
        lambda d: ("Too many actions.", "/actions") if d["triggers"][0]["type"] == "metric" else real(d),
    )
    results = create(fake, dest, segments)
    assert [r.status for r in results] == ["created", "created", "not created", "not created"]
    assert "Too many actions. (at /data/attributes/definition/actions)" in results[2].reason


def test_dry_run_lists_and_creates_nothing(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    results = create(fake, dest, segments, dry_run=True)
    assert [r.status for r in results] == ["would create"] * 4
    assert fake.flows == [] and fake.templates == [] and fake.calls["POST /api/flows"] == 0


def test_the_fake_lists_flows_by_page_and_by_name_filter(fake, clock):
    dest = dest_for(clock)
    segments = account(fake, dest, "Placed Order", "RFM Group Changed")
    create(fake, dest, segments)
    fake.flows += [{**copy.deepcopy(fake.flows[0]), "id": f"X{i}"} for i in range(60)]  # two pages of copies
    pages = dest.send("GET", "/api/flows", limiter="flows_read", params={"page[size]": 50}).json()
    assert len(pages["data"]) == 50 and "page%5Bcursor%5D=50" in pages["links"]["next"]
    named = dest.send(
        "GET", "/api/flows", limiter="flows_read", params={"filter": 'equals(name,"RFM: RFM group changed")'}
    ).json()
    assert [f["id"] for f in named["data"]] == [fake.flow_named(NAMES[3])["id"]]
    starting = dest.send(
        "GET", "/api/flows", limiter="flows_read", params={"filter": "starts-with(name,'RFM: Win-back')"}
    ).json()
    rest = dest.send("GET", starting["links"]["next"], limiter="flows_read").json()
    assert len(starting["data"]) + len(rest["data"]) == 2 + 60 and "next" not in rest["links"]
    with pytest.raises(FatalError, match="Invalid filter"):
        dest.send("GET", "/api/flows", limiter="flows_read", params={"filter": "greater-than(name,1)"})


# ---------------------------------------------------------------------- the plan and its configuration
def test_the_defaults_fit_another_scheme_by_leaving_out_what_it_lacks():
    result = plan(groups=classic11.GROUP_NAMES)
    assert result.problems == []
    assert [f.key for f in result.flows] == ["win_back[0]", "post_purchase", "group_change"]
    assert any("win_back[1].group" in n and "'Needs Attention'" in n for n in result.notes)
    assert "Recent" not in result.flows[1].steps() and "Champions, Loyal" in result.flows[1].steps()
    assert "Needs Attention" not in result.flows[2].steps()  # that move would mean another move narrowed


def test_configured_groups_the_scheme_lacks_are_configuration_errors():
    config = FlowsConfig(
        win_back=[WinBack(group="At Riskk")],
        group_change={"moves": [Move.model_validate({"from": ["Champion"], "email": {"subject": "x"}})]},
    )
    result = plan(config, where="destinations[0].flows")
    assert result.problems == [
        f"destinations[0].flows.win_back[0].group: no group 'At Riskk' in this scheme (groups: {', '.join(GROUPS)})",
        "destinations[0].flows.group_change.moves[0].from: no group 'Champion' in this scheme "
        f"(groups: {', '.join(GROUPS)})",
    ]


def test_no_events_no_group_change_flow():
    result = plan(events=False)
    assert [f.key for f in result.flows] == ["win_back[0]", "win_back[1]", "post_purchase"]
    assert any("events = false" in n for n in result.notes)


def _klaviyo_table(flows_toml: str) -> dict:
    text = destination(type="klaviyo", name="klaviyo", api_key_secret="klaviyo-key") + flows_toml
    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("flows_toml", "says"),
    [
        (table("[destinations.flows.post_purchase]", wait_days=-1), "destinations[0].flows.post_purchase.wait_days"),
        (table("[destinations.flows]", name_prefx="X"), "destinations[0].flows.name_prefx"),
        (
            table("[[destinations.flows.win_back]]", group="At Risk", emails=[]),
            "destinations[0].flows.win_back[0].emails",
        ),
        (
            table("[[destinations.flows.win_back]]", group="At Risk", name="Same")
            + table("[[destinations.flows.win_back]]", group="Loyal", name="Same"),
            "win_back[1] and win_back[0] are both named 'Same'",
        ),
        (
            table("[[destinations.flows.group_change.moves]]")
            + table("[destinations.flows.group_change.moves.email]", subject="x"),
            "a move needs `from` or `to`",
        ),
    ],
)
def test_flow_settings_are_validated_at_start_up_naming_the_key(flows_toml, says):
    with pytest.raises(ConfigError) as info:
        parse_config(_klaviyo_table(flows_toml))
    assert any(says in problem for problem in info.value.problems), info.value.problems


# ---------------------------------------------------------------------- the command
CONFIG = config_toml(
    "sqlite:///state.sqlite",
    destinations=[destination(type="klaviyo", name="klaviyo", api_key_secret="klaviyo-key", base_url=BASE_URL)],
)


@pytest.fixture
def command(tmp_path, fake, monkeypatch):
    """``rfm-sync klaviyo bootstrap -c CONFIG ...`` against the fake (the CLI waits for real: no pacing here)."""
    monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", API_KEY)
    for limiter in ("segments_write", "flows_write", "flows_read"):
        monkeypatch.setitem(LIMITS, limiter, [(50, 1.0)])
    (tmp_path / "orders.csv").write_text("order_id,customer_id,email,placed_at,amount,status\n")

    def run(*args: str, config: str = CONFIG):
        (tmp_path / "config.toml").write_text(config)
        return CliRunner().invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml"), *args])

    return run


@pytest.mark.slow  # four runs of the command
def test_cli_drafts_the_flows_once(command, fake):
    fake.add_metric("Placed Order")
    fake.add_metric("RFM Group Changed", integration="API")
    dry = command("--flows", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would create") == 6 + 4 and fake.calls["POST /api/flows"] == 0
    first = command("--flows")
    assert first.exit_code == 0, first.output
    assert "6 segment(s) created" in first.output and "4 flow(s) created as drafts, 0 already existed" in first.output
    assert "turn them live" in first.output and "RFM: Win-back: At Risk" in first.output
    second = command("--flows")
    assert second.exit_code == 0 and "0 flow(s) created as drafts, 4 already existed" in second.output
    assert fake.calls["POST /api/flows"] == 4 and len(fake.flows) == 4
    without = command()
    assert without.exit_code == 0 and "flow" not in without.output  # the segments only, as before


def test_cli_a_missing_metric_is_exit_1_with_what_to_do(command, fake):
    result = command("--flows")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "2 flow(s) created as drafts" in result.output
    assert "error: 2 flow(s) not created (RFM: Post-purchase by RFM group, RFM: RFM group changed)" in result.output


def test_cli_a_missing_scope_is_one_line_and_exit_1(command, fake):
    fake.add_metric("Placed Order")
    fake.scopes = set(SCOPES.values()) - {"flows:write"}
    result = command("--flows")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "error: klaviyo: Klaviyo refused to create flows (HTTP 403): the API key lacks the flows:write scope" in (
        result.output
    )
    assert "Flows: Full Access" in result.output and "Traceback" not in result.output


def test_cli_a_hold_out_reaches_the_flows(command, fake):
    fake.add_metric("Placed Order")
    config = CONFIG.replace("[store]", table("[properties]", holdout_percent=10) + "[store]")
    result = command("--flows", config=config)
    assert result.exit_code == 1, result.output  # the group-change metric is not there yet
    definition = fake.flow_named("RFM: Win-back: At Risk")["attributes"]["definition"]
    assert "properties['RFM holdout']" in json.dumps(definition["profile_filter"])


def test_cli_configuration_errors_are_exit_2_before_any_call(command, fake):
    bad_group = CONFIG + table("[[destinations.flows.win_back]]", group="At Riskk")
    result = command("--flows", config=bad_group)
    assert result.exit_code == 2 and "destinations[0].flows.win_back[0].group: no group 'At Riskk'" in result.output
    bad_value = CONFIG + table("[destinations.flows.group_change]", wait_days=-2)
    result = command("--flows", config=bad_value)
    assert result.exit_code == 2 and "destinations[0].flows.group_change.wait_days" in result.output
    assert fake.requests == []
