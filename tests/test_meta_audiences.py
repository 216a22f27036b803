"""Meta Custom Audiences destination against the fake Graph API."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from pydantic import ValidationError

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, RetryableError, Transition
from connectors.http import RetryPolicy
from connectors.meta.destination import (
    EXPIRY_WARNING,
    GRAPH_VERSION,
    MARKETING_API_VERSIONS,
    MetaAudiencesDestination,
    MetaAudiencesSettings,
    appsecret_proof,
    normalise_email,
    normalise_phone,
    reported_wait,
    version_expiry,
    version_problem,
)
from rfm_sync.config import ConfigError, parse_config
from rfm_sync.secrets import Secret
from tests.fakes.klaviyo_fake import FakeClock
from tests.fakes.meta_fake import BASE_URL, TOKEN, FakeMeta

RULES = [
    {"audience_id": "111", "groups": ["Champions", "Loyal"]},
    {"audience_id": "222", "from": ["Champions", "Loyal"], "to": ["Needs Attention", "At Risk"]},
]


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def move(i: int, before: str | None, after: str | None, *, email: str | None = "", phone: str | None = None):
    return ProfileUpdate(
        outbox_id=i,
        customer_key=f"c{i}",
        email=f" User{i}@Example.com " if email == "" else email,
        phone=phone,
        properties={"Current RFM group": after},
        transition=Transition(before, after),
        event_id=f"e{i}",
    )


APP_SECRET = "app-secret-not-real-0123"
SECRETS = {"meta-token": TOKEN, "meta-app": APP_SECRET, "wrong-app": "another-app-secret"}


def destination(clock: FakeClock, **overrides) -> MetaAudiencesDestination:
    settings = MetaAudiencesSettings.model_validate(
        {
            "type": "meta_audiences",
            "name": "meta",
            "access_token_secret": "meta-token",
            "base_url": BASE_URL,
            "audiences": RULES,
            **overrides,
        }
    )
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda n: Secret(n, SECRETS[n]))
    return MetaAudiencesDestination(
        settings, ctx, sleep=clock.sleep, clock=clock, policy=RetryPolicy(attempts=5, max_elapsed_s=100_000)
    )


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
    assert sorted(
        dest.push([move(1, None, "Champions"), move(2, None, "Loyal"), move(3, None, "Recent")]).accepted
    ) == [1, 2, 3]
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


# Meta's PHONE rules: digits only, always the country code, no trunk prefix (Italy keeps its 0).
PHONES = [
    ("+1 (415) 555-0100", None, "14155550100"),
    ("(415) 555-0100", "1", "14155550100"),  # US/Canada: the default applies to numbers without a 0
    ("415.555.0100", "1", "14155550100"),
    ("1 415 555 0100", "1", "14155550100"),  # the NANP trunk prefix 1 is the country code
    ("613-555-0100 ext. 12", "1", "16135550100"),  # Canada; the extension is not part of the number
    ("030 1234567", "49", "49301234567"),
    ("+49 (0)30 1234567", None, "49301234567"),
    ("0049 30 1234567", None, "49301234567"),
    ("0049 30 1234567", "1", "49301234567"),
    ("07700 900123", "44", "447700900123"),
    ("+44 07700 900123", None, "447700900123"),  # a trunk 0 written after the country code
    ("06 1234 5678", "39", "390612345678"),  # Italy: the leading 0 is part of the number
    ("+39 06 1234 5678", None, "390612345678"),
    ("8 912 345-67-89", "7", "79123456789"),  # Russia: trunk prefix 8
    ("415 555 0100", None, None),  # no country code and no default: Meta could not match it
    ("12", "1", None),
    ("call me", "1", None),
    ("", "1", None),
]


@pytest.mark.parametrize("raw,default,expected", PHONES)
def test_phone_normalisation_follows_metas_rules(raw, default, expected):
    assert normalise_phone(raw, default) == expected


def test_values_are_normalised_and_hashed_never_raw(fake, clock):
    dest = destination(clock, default_country_code="49")
    dest.push(
        [
            move(1, None, "Champions", phone="030 1234567"),
            move(2, None, "Champions", email=None, phone="+1 (415) 555-0100"),
        ]
    )
    assert fake.audience("111") == {member(1), ("phone", h("14155550100"))}
    assert normalise_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalise_phone("+49 (0)30 1234567") == normalise_phone("+49 30 1234567") == "49301234567"
    assert normalise_phone("0049 30 1234567") == "49301234567"
    assert normalise_phone("030 1234567") is None and normalise_phone("030 1234567", "49") == "49301234567"


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------- API version
def test_the_pinned_version_is_not_within_60_days_of_its_expiry():
    """Fails 60 days before Meta retires the pinned version: move GRAPH_VERSION and the table then."""
    assert GRAPH_VERSION in MARKETING_API_VERSIONS, "add the pinned version to MARKETING_API_VERSIONS"
    newest = max(MARKETING_API_VERSIONS, key=lambda v: MARKETING_API_VERSIONS[v][0])
    assert newest == GRAPH_VERSION
    retires = version_expiry(GRAPH_VERSION)
    assert retires - date.today() > EXPIRY_WARNING, f"Meta retires {GRAPH_VERSION} on {retires}: move on"


def test_version_table_is_consistent_and_published_dates_win():
    for version, (released, retires) in MARKETING_API_VERSIONS.items():
        assert retires is None or retires > released, version
    assert version_expiry("v25.0") == date(2027, 2, 23) and version_expiry("v24.0") == date(2026, 11, 10)
    assert version_expiry("v27.0") > date(2027, 6, 1)  # not published: release plus the shortest lifetime
    assert version_expiry("v99.0") is None
    assert version_problem("v24.0", date(2026, 12, 2))[0] is True
    assert version_problem("v25.0", date(2027, 1, 1)) == (False, version_problem("v25.0", date(2027, 1, 1))[1])
    assert version_problem("v25.0", date(2026, 12, 2)) is None


def test_the_version_is_configurable(fake, clock):
    dest = destination(clock, graph_version="v26.0")
    assert dest.push([move(1, None, "Champions")]).accepted == [1]
    assert fake.versions_seen == {"v26.0": 1}
    with pytest.raises(ValidationError):
        MetaAudiencesSettings.model_validate(
            {"name": "m", "access_token_secret": "t", "graph_version": "25", "audiences": RULES}
        )


def test_a_retired_version_is_refused_before_any_call(fake, clock):
    with pytest.raises(FatalError, match=r"retired Marketing API v24.0 on 2026-11-10.*graph_version = \"v27.0\""):
        destination(clock, graph_version="v24.0").push([move(1, None, "Champions")])
    assert not fake.versions_seen


def test_error_2635_is_fatal_with_the_fix_not_a_failure_of_every_record(fake, clock):
    fake.retired.add("v26.0")  # Meta retired a version our table does not know about yet
    dest = destination(clock, graph_version="v26.0")
    with pytest.raises(FatalError, match=r"no longer serves Marketing API v26.0; set graph_version = \"v27.0\""):
        dest.push([move(1, None, "Champions"), move(2, None, "Loyal")])
    assert fake.versions_seen == {"v26.0": 1} and not clock.sleeps  # not retried, not parked per record


def test_a_version_close_to_retiring_is_a_warning_and_a_doctor_problem(fake, clock, monkeypatch):
    import connectors.meta.destination as meta

    monkeypatch.setattr(meta, "date", type("FrozenDate", (date,), {"today": classmethod(lambda c: date(2027, 1, 10))}))
    dest = destination(clock, graph_version="v25.0")
    assert dest.push([move(1, None, "Champions")]).accepted == [1]
    assert any("retires Marketing API v25.0 on 2027-02-23" in w for w in dest.warnings)
    assert any("v25.0" in problem for problem, _ in dest.check())


# ---------------------------------------------------------------------------------------- throttling
@pytest.mark.parametrize(
    "failure,at_least", [((400, 80003, 5), 300), ((400, 80004, 2), 120), ((400, 613, 90), 90), ((400, 17, 45), 45)]
)
def test_throttling_waits_as_long_as_meta_reports(fake, clock, failure, at_least):
    fake.fail_next = [failure]
    assert destination(clock).push([move(1, None, "Champions")]).accepted == [1]
    assert len(clock.sleeps) == 1 and at_least <= clock.sleeps[0] < at_least + 1


def test_throttling_without_a_reported_wait_falls_back_to_backoff(fake, clock):
    fake.fail_next = [(400, 80003, 0), (400, 4), (400, 4)]
    assert destination(clock).push([move(1, None, "Champions")]).accepted == [1]
    assert len(clock.sleeps) == 3 and all(s <= 2 for s in clock.sleeps)  # 0.5 s doubling, with jitter


def test_a_reported_wait_beyond_the_bound_ends_this_push_for_the_next_cycle(fake, clock):
    fake.fail_next = [(400, 80003, 30)]  # 30 minutes; the bound is 15
    with pytest.raises(RetryableError, match="wait 30 min.*next cycle") as info:
        destination(clock).push([move(1, None, "Champions")])
    assert info.value.retry_after == 1800 and not clock.sleeps and fake.injected[80003] == 1


def test_reported_wait_reads_both_usage_headers():
    assert (
        reported_wait(
            {
                "X-Business-Use-Case-Usage": '{"1": [{"type": "custom_audience", "call_count": 100, '
                '"estimated_time_to_regain_access": 3}], "2": [{"type": '
                '"ads_management", "estimated_time_to_regain_access": 7}]}',
                "X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 200}',
            }
        )
        == 420
    )
    assert reported_wait({"X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 200}'}) == 200
    assert reported_wait({"X-Business-Use-Case-Usage": "not json"}) is None and reported_wait({}) is None


# ---------------------------------------------------------------------------------------- appsecret_proof
def test_appsecret_proof_is_sent_when_configured_and_never_shown(clock, caplog):
    caplog.set_level(logging.DEBUG)
    proof = hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    assert appsecret_proof(APP_SECRET, TOKEN) == proof
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeMeta(app_secret=APP_SECRET).install(rsps)
        with pytest.raises(FatalError, match="set app_secret_secret"):
            destination(clock).push([move(1, None, "Champions")])
        with pytest.raises(FatalError, match="'wrong-app' holds this app's secret"):
            destination(clock, app_secret_secret="wrong-app").push([move(1, None, "Champions")])
        dest = destination(clock, app_secret_secret="meta-app")
        assert dest.push([move(1, None, "Champions")]).accepted == [1] and dest.check() == []
        assert fake.audience("111") == {member(1)}
        sent = [c.request for c in rsps.calls]
    assert all(proof not in c.request.url for c in rsps.calls if c.request.method != "GET")
    assert any(proof in (r.body or "") for r in sent if r.method == "POST")
    shown = caplog.text + repr(dest) + repr(dest.client)
    assert proof not in shown and APP_SECRET not in shown


def test_config_validation_of_audience_rules():
    with pytest.raises(ValidationError):
        MetaAudiencesSettings.model_validate(
            {"name": "m", "access_token_secret": "t", "audiences": [{"audience_id": "1", "from": ["Loyal"]}]}
        )
    with pytest.raises(ConfigError):
        parse_config({"destinations": [{"type": "meta_audiences", "access_token_secret": "t", "audiences": []}]})
    config = parse_config(
        {"destinations": [{"type": "meta_audiences", "access_token_secret": "t", "audiences": RULES}]}
    )
    assert config.destinations[0].audiences[1].from_groups == ["Champions", "Loyal"]


def test_check_reports_missing_or_flagged_audiences_and_fatal_token(fake, clock):
    assert destination(clock).check() == []
    fake.audiences = {"111": 471}
    problems = destination(clock).check()
    assert [p for p, _ in problems] == ["audience 111: operation_status 471", problems[1][0]] and "222" in problems[1][
        0
    ]
    fake.token = "other"
    with pytest.raises(FatalError, match="access token"):
        destination(clock).check()


# ---------------------------------------------------------------------------------------- what "pushed" counts
def test_updates_meta_never_saw_are_accepted_as_skipped_not_pushed(fake, clock):
    result = destination(clock).push(
        [
            move(1, None, "Champions"),
            move(2, None, "Recent"),  # no rule maps Recent
            move(3, None, "Loyal", email=None),
            move(4, "Loyal", "Loyal"),
        ]
    )
    assert sorted(result.accepted) == [1, 2, 3, 4]  # done with: none stays in the outbox
    assert sorted(result.skipped) == [2, 3, 4]  # no mapped change, no identifier, no move
    assert fake.calls == [("POST", "111", 1)]


@pytest.mark.slow
def test_a_cycle_counts_as_pushed_only_what_meta_acknowledged(fake, clock, tmp_path):
    from rfm_sync.pipeline import Pipeline
    from rfm_sync.store import Store

    rows = "".join(
        f"o{i}-{k},c{i},c{i}@example.com,2026-{1 + (i * 5) % 6:02d}-{1 + k:02d},{10 + 7 * i}.50\n"
        for i in range(40)
        for k in range(1 + i % 3)
    )
    (tmp_path / "orders.csv").write_text("order_id,customer_id,email,placed_at,amount\n" + rows)
    config = parse_config(
        {
            "store": {"url": "sqlite:///s.sqlite"},
            "sources": [{"type": "csv", "path": "orders.csv"}],
            "destinations": [
                {
                    "type": "meta_audiences",
                    "name": "meta",
                    "access_token_secret": "t",
                    "base_url": BASE_URL,
                    "audiences": RULES,
                }
            ],
        },
        path=tmp_path / "config.toml",
    )
    store = Store.open(config.store.url, tmp_path)
    try:
        report = Pipeline(config, store, destinations=[destination(clock)]).run_cycle(date(2026, 7, 1))
    finally:
        store.close()
    mapped = report.group_counts.get("Champions", 0) + report.group_counts.get("Loyal", 0)
    assert 0 < mapped < report.scored  # some customers entered audience 111, the others no audience
    assert report.pushed == {"meta": mapped} == {"meta": len(fake.audience("111"))}
    assert report.skipped == {"meta": report.scored - mapped} and report.failed == {"meta": 0}
