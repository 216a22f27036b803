"""Meta Custom Audiences destination against the fake Graph API."""
from __future__ import annotations

import hashlib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from pydantic import ValidationError

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, Transition
from connectors.http import RetryPolicy
from connectors.meta_audiences import (GRAPH_VERSION, MetaAudiencesDestination, MetaAudiencesSettings, normalise_email,
                                       normalise_phone)
from rfm_sync.config import ConfigError, parse_config
from rfm_sync.secrets import Secret
from tests.fakes.klaviyo_fake import FakeClock
from tests.fakes.meta_fake import BASE_URL, TOKEN, FakeMeta

RULES = [{"audience_id": "111", "groups": ["Champions", "Loyal"]},
         {"audience_id": "222", "from": ["Champions", "Loyal"], "to": ["Needs Attention", "At Risk"]}]


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def move(i: int, before: str | None, after: str | None, *, email: str | None = "", phone: str | None = None):
    return ProfileUpdate(outbox_id=i, customer_key=f"c{i}", email=f" User{i}@Example.com " if email == "" else email,
                         phone=phone, properties={"Current RFM group": after},
                         transition=Transition(before, after), event_id=f"e{i}")


def destination(clock: FakeClock, **overrides) -> MetaAudiencesDestination:
    settings = MetaAudiencesSettings.model_validate({"type": "meta_audiences", "name": "meta",
                                                     "access_token_secret": "meta-token", "base_url": BASE_URL,
                                                     "audiences": RULES, **overrides})
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda n: Secret(n, TOKEN))
    return MetaAudiencesDestination(settings, ctx, sleep=clock.sleep, clock=clock,
                                    policy=RetryPolicy(attempts=5, max_elapsed_s=100_000))


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeMeta().install(rsps)


@pytest.fixture
def clock():
    return FakeClock()


def member(i: int) -> tuple[str, str]:
    return ("email", h(f"user{i}@example.com"))


def test_entering_adds_leaving_removes_with_removals_first(fake, clock):
    dest = destination(clock)
    assert sorted(dest.push([move(1, None, "Champions"), move(2, None, "Loyal"), move(3, None, "Recent")]).accepted) \
        == [1, 2, 3]
    assert fake.audience("111") == {member(1), member(2)}
    fake.order.clear()
    result = dest.push([move(1, "Champions", "At Risk"), move(3, "Recent", "Champions")])
    assert sorted(result.accepted) == [1, 3]
    assert fake.audience("111") == {member(2), member(3)}
    assert fake.audience("222") == {member(1)}  # moved Champions -> At Risk
    assert fake.order[0] == "remove:111" and fake.order.index("remove:111") < fake.order.index("add:111")


def test_transition_rule_needs_the_from_group(fake, clock):
    dest = destination(clock)
    dest.push([move(1, "Recent", "At Risk")])  # not from Champions/Loyal: not added to 222
    assert fake.audience("222") == set()
    dest.push([move(2, "Loyal", "Needs Attention")])
    dest.push([move(2, "Needs Attention", "Champions")])  # recovered: leaves 222, enters 111
    assert fake.audience("222") == set() and fake.audience("111") == {member(2)}


def test_additive_only_never_removes(fake, clock):
    dest = destination(clock, additive_only=True)
    dest.push([move(1, None, "Champions")])
    dest.push([move(1, "Champions", "Inactive")])
    assert fake.audience("111") == {member(1)} and all(m == "POST" for m, _, _ in fake.calls)


def test_no_transition_no_call(fake, clock):
    dest = destination(clock)
    same = ProfileUpdate(outbox_id=5, customer_key="c5", email="a@b.io", phone=None, properties={"RFM score": "333"})
    assert dest.push([same, move(6, "Recent", "Inactive")]).accepted == [5, 6]
    assert fake.writes() == 0


def test_values_are_normalised_and_hashed_never_raw(fake, clock):
    dest = destination(clock, default_country_code="49")
    dest.push([move(1, None, "Champions", phone="030 1234567"), move(2, None, "Champions", email=None,
                                                                  phone="+1 (415) 555-0100")])
    assert fake.audience("111") == {member(1), ("phone", h("14155550100"))}
    assert normalise_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalise_phone("+49 (0)30 1234567") == normalise_phone("+49 30 1234567") == "49301234567"
    assert normalise_phone("0049 30 1234567") == "49301234567"
    assert normalise_phone("030 1234567") is None and normalise_phone("030 1234567", "49") == "49301234567"


def test_at_most_10000_rows_per_request(fake, clock):
    dest = destination(clock, batch_size=25_000)
    dest.push([move(i, None, "Loyal") for i in range(25_000)])
    assert [n for _, _, n in fake.calls] == [10_000, 10_000, 5_000]
    assert len(fake.audience("111")) == 25_000


@pytest.mark.parametrize("code", [4, 17, 80003, 80004])
def test_throttling_codes_back_off_and_retry(fake, clock, code):
    fake.fail_next = [(400, code), (400, code)]
    assert destination(clock).push([move(1, None, "Champions")]).accepted == [1]
    assert fake.injected[code] == 2 and fake.audience("111") == {member(1)} and clock.sleeps


def test_expired_token_and_missing_permission_are_fatal_with_a_clear_message(fake, clock):
    fake.fail_next = [(400, 190)]
    with pytest.raises(FatalError, match="access token is invalid or expired") as info:
        destination(clock).push([move(1, None, "Champions")])
    assert TOKEN not in str(info.value)
    fake.fail_next = [(403, 200)]
    with pytest.raises(FatalError, match="ads_management"):
        destination(clock).push([move(1, None, "Champions")])
    assert fake.injected == {190: 1, 200: 1}  # fatal: not retried


def test_audience_too_small_is_reported_not_retried(fake, clock):
    fake.too_small = {"111"}
    dest = destination(clock)
    result = dest.push([move(1, "Champions", "Inactive"), move(2, None, "Loyal")])
    assert "too small" in result.failed[1] and result.accepted == [2]
    assert not clock.sleeps  # no back-off loop on it


def test_num_received_short_is_retried_and_invalid_entries_reported(fake, clock):
    fake.drop_rows = 1
    dest = destination(clock)
    assert dest.push([move(1, None, "Champions"), move(2, None, "Champions")]).accepted == [1, 2]
    assert [n for _, _, n in fake.calls] == [2, 2]  # the short answer made it send again
    fake.invalid_next = 1
    dest.push([move(3, None, "Loyal")])
    assert any("1 invalid entry" in w for w in dest.warnings)


def test_graph_version_is_pinned_once():
    assert GRAPH_VERSION.startswith("v") and float(GRAPH_VERSION[1:]) >= 20


def test_config_validation_of_audience_rules():
    with pytest.raises(ValidationError):
        MetaAudiencesSettings.model_validate({"name": "m", "access_token_secret": "t",
                                              "audiences": [{"audience_id": "1", "from": ["Loyal"]}]})
    with pytest.raises(ConfigError):
        parse_config({"destinations": [{"type": "meta_audiences", "access_token_secret": "t", "audiences": []}]})
    config = parse_config({"destinations": [{"type": "meta_audiences", "access_token_secret": "t",
                                             "audiences": RULES}]})
    assert config.destinations[0].audiences[1].from_groups == ["Champions", "Loyal"]


def test_check_reports_missing_or_flagged_audiences_and_fatal_token(fake, clock):
    assert destination(clock).check() == []
    fake.audiences = {"111": 471}
    problems = destination(clock).check()
    assert [p for p, _ in problems] == ["audience 111: operation_status 471",
                                        problems[1][0]] and "222" in problems[1][0]
    fake.token = "other"
    with pytest.raises(FatalError, match="access token"):
        destination(clock).check()
