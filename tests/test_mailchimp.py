"""The Mailchimp destination against the fake Marketing API: merge fields, tags, status, batches, faults, doctor."""

from __future__ import annotations

import csv
import hashlib
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pydantic
import pytest
import responses
from click.testing import CliRunner

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, RetryableError, Transition
from connectors.file.destination import read_state
from connectors.http import RetryPolicy
from connectors.mailchimp import MailchimpDestination
from connectors.mailchimp.destination import MailchimpSettings, subscriber_hash
from rfm_sync.cli import main
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline, build_destinations
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from tests.configs import config_toml, destination, file_sink
from tests.fakes.klaviyo_fake import FakeClock
from tests.fakes.mailchimp_fake import API_KEY, BASE_URL, LIST_ID, FakeMailchimp

AS_OF = date(2026, 6, 30)
TAGS = {"RFM_GROUP", "RFM_PREV", "RFM_CHANGE", "RFM_SCORE"}


def secret(name: str) -> Secret:
    return Secret(name, {"mc-key": API_KEY}.get(name, "wrong-key-us21"))


def make(tmp_path: Path, **keys) -> tuple[MailchimpDestination, FakeClock]:
    table = {
        "type": "mailchimp",
        "name": "mc",
        "api_key_secret": "mc-key",
        "audience_id": LIST_ID,
        "base_url": BASE_URL,
    }
    clock = FakeClock()
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=secret)
    settings = MailchimpSettings.model_validate({**table, **keys})
    return MailchimpDestination(settings, ctx, sleep=clock.sleep, clock=clock, policy=RetryPolicy(attempts=4)), clock


def update(n: int, group: str | None, *, previous: str | None = None, email: str | None = "") -> ProfileUpdate:
    return ProfileUpdate(
        outbox_id=n,
        customer_key=f"c{n}",
        email=f"C{n}@Example.com" if email == "" else email,
        phone=None,
        properties={
            "Current RFM group": group,
            "Previous RFM group": previous,
            "RFM group last changed": "2026-06-30T00:00:00Z" if group else None,
            "RFM score": "333" if group else None,
        },
        transition=Transition(previous, group) if group else None,
    )


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeMailchimp().install(rsps)


def test_the_subscriber_hash_is_the_md5_of_the_lower_cased_email():
    assert (
        subscriber_hash(" Urist.McVankab@FreddiesJokes.com ")
        == hashlib.md5(b"urist.mcvankab@freddiesjokes.com").hexdigest()
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Current RFM group": "RFM_CURRENT_GROUP"}, "1-10 characters"),
        ({"Current RFM group": "rfm_group"}, "upper-case"),
        ({"Current RFM group": "RFM", "RFM score": "RFM"}, "given to both"),
        ({"Current RFM group": "EMAIL"}, "EMAIL"),
    ],
)
def test_merge_tags_outside_mailchimps_limits_are_a_settings_error(tmp_path, fields, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        make(tmp_path, merge_fields=fields)
    with pytest.raises(pydantic.ValidationError, match="max_merge_fields"):
        make(tmp_path, max_merge_fields=2)


def test_a_push_creates_the_merge_fields_once_writes_them_and_tags_the_group(tmp_path, fake):
    dest, _ = make(tmp_path)
    fake.max_count = 2  # the listing pages
    result = dest.push([update(1, "Loyal"), update(2, "At Risk")])
    assert sorted(result.accepted) == [1, 2] and not result.failed
    assert set(fake.lists[LIST_ID]["merge_fields"]) >= TAGS
    member = fake.member("c1@example.com")
    assert member["status"] == "transactional" and member["email_address"] == "c1@example.com"
    assert member["merge_fields"] == {
        "RFM_GROUP": "Loyal",
        "RFM_PREV": "",
        "RFM_CHANGE": "2026-06-30T00:00:00Z",
        "RFM_SCORE": "333",
    }
    assert fake.tags("c1@example.com") == {"rfm:Loyal"} and fake.tags("c2@example.com") == {"rfm:At Risk"}
    assert fake.calls["POST /lists/a1b2c3d4e5/merge-fields"] == 4
    # a new destination (a restarted process) lists the fields again and creates none
    again, _ = make(tmp_path)
    again.push([update(3, "Loyal")])
    assert fake.calls["POST /lists/a1b2c3d4e5/merge-fields"] == 4


def test_a_group_change_replaces_the_tag_and_an_unsubscribed_member_stays_unsubscribed(tmp_path, fake):
    fake.add_member("c1@example.com", status="unsubscribed", tags=["rfm:Loyal", "VIP", "rfm:Stale"])
    dest, _ = make(tmp_path)
    assert dest.push([update(1, "At Risk", previous="Loyal")]).accepted == [1]
    assert fake.tags("c1@example.com") == {"rfm:At Risk", "VIP"}  # never two group tags; other tags kept
    assert fake.journeys_started == [("c1@example.com", "rfm:At Risk")]  # a "Tag added" journey starts
    assert fake.member("c1@example.com")["status"] == "unsubscribed" and fake.status_changes == []
    writes = fake.writes
    dest.push([update(1, "At Risk", previous="Loyal")])
    assert fake.writes == writes + 1  # the merge-field write only: the tags are right already
    dest.push([update(1, None)])  # cleared: every group tag goes, every field emptied
    assert fake.tags("c1@example.com") == {"VIP"}
    assert set(fake.member("c1@example.com")["merge_fields"].values()) == {""}


def test_customers_without_an_email_are_skipped_and_unknown_members_may_be_left_alone(tmp_path, fake):
    fake.add_member("c2@example.com")
    dest, _ = make(tmp_path, unknown_members="skip", tags=False)
    result = dest.push([update(1, "Loyal"), update(2, "Loyal"), update(3, "Loyal", email=None)])
    assert sorted(result.accepted) == [1, 2, 3] and sorted(result.skipped) == [1, 3]
    assert fake.member("c1@example.com") is None  # never added
    assert fake.member("c2@example.com")["merge_fields"]["RFM_GROUP"] == "Loyal"
    assert fake.tags("c2@example.com") == set()


def test_a_member_mailchimp_refuses_is_that_records_failure(tmp_path, fake):
    fake.invalid_emails.add("c2@example.com")
    dest, _ = make(tmp_path)
    result = dest.push([update(1, "Loyal"), update(2, "Loyal"), update(3, "Loyal")])
    assert sorted(result.accepted) == [1, 3] and list(result.failed) == [2]
    assert "Invalid Resource" in result.failed[2] and "c2@example.com" not in result.failed[2]


def test_too_many_merge_fields_stop_before_creating_any(tmp_path, fake):
    fake.max_fields = 30
    for n in range(24):
        fake.lists[LIST_ID]["merge_fields"][f"X{n}"] = {"tag": f"X{n}", "type": "text"}
    dest, _ = make(tmp_path)
    with pytest.raises(FatalError, match="max_merge_fields = 30"):
        dest.push([update(1, "Loyal")])
    assert fake.writes == 0


@pytest.mark.parametrize("fault", ["fail_429", "fail_503", "cut_next", "malformed_next", "lost_next", "reset_next"])
def test_faults_end_right(tmp_path, fake, fault):
    dest, clock = make(tmp_path)
    dest.push([update(9, "Loyal")])  # merge fields made
    if fault.startswith("fail_"):
        fake.fail_next = [int(fault[5:])] * 2
    else:
        setattr(fake, fault, 2)
    result = dest.push([update(1, "Loyal"), update(2, "Champions", previous="Loyal")])
    assert sorted(result.accepted) == [1, 2] and not result.failed
    assert fake.tags("c1@example.com") == {"rfm:Loyal"} and fake.tags("c2@example.com") == {"rfm:Champions"}
    assert fake.member("c2@example.com")["merge_fields"]["RFM_GROUP"] == "Champions"
    assert sum(fake.injected.values()) == 2 and dest.client.retries >= 2


def test_throttled_past_the_retries_leaves_the_rest_for_the_next_cycle(tmp_path, fake):
    dest, _ = make(tmp_path)
    dest.push([update(9, "Loyal")])
    fake.fail_next = [429] * 4
    result = dest.push([update(1, "Loyal"), update(2, "Loyal")])
    assert result.accepted == [] and sorted(result.failed) == [1, 2] and "not sent" in result.failed[2]


def test_a_rejected_key_is_fatal_and_never_shown(tmp_path, fake):
    dest, _ = make(tmp_path, api_key_secret="other")
    with pytest.raises(FatalError, match="API key was rejected") as caught:
        dest.push([update(1, "Loyal")])
    assert "wrong-key" not in str(caught.value) and "wrong-key" not in repr(dest) + repr(dest.client)


def test_the_data_center_comes_from_the_key_suffix_or_the_settings(tmp_path):
    table = {"type": "mailchimp", "name": "mc", "api_key_secret": "mc-key", "audience_id": LIST_ID}
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=secret)
    assert (
        MailchimpDestination(MailchimpSettings.model_validate(table), ctx).client.base_url
        == "https://us21.api.mailchimp.com"
    )
    other = MailchimpSettings.model_validate({**table, "data_center": "us6"})
    assert MailchimpDestination(other, ctx).client.base_url == "https://us6.api.mailchimp.com"
    bare = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=lambda n: Secret(n, "nodashkey"))
    with pytest.raises(FatalError, match="data_center"):
        MailchimpDestination(MailchimpSettings.model_validate(table), bare).client  # noqa: B018


def test_a_group_tag_longer_than_mailchimp_takes_is_that_records_failure_never_cut_short(tmp_path, fake):
    dest, _ = make(tmp_path)
    result = dest.push([update(1, "Loyal"), update(2, "x" * 120)])
    assert result.accepted == [1] and "longer than 100 characters" in result.failed[2]
    assert fake.member("c2@example.com") is None


def test_doctor_pings_and_finds_the_audience(tmp_path, fake):
    dest, _ = make(tmp_path)
    assert dest.check(online=False) == [] and dest.check() == []
    assert fake.calls["GET /ping"] == 1
    missing, _ = make(tmp_path, audience_id="nope")
    problems = missing.check()
    assert len(problems) == 1 and "audience nope not found" in problems[0][0]
    with pytest.raises(FatalError, match="API key was rejected"):
        make(tmp_path, api_key_secret="other")[0].check()
    for n in range(24):
        fake.lists[LIST_ID]["merge_fields"][f"X{n}"] = {"tag": f"X{n}", "type": "text"}
    full = dest.check()
    assert len(full) == 1 and "no room for RFM_GROUP" in full[0][0] and fake.writes == 0


def test_rfm_sync_doctor_checks_the_key_and_the_audience(tmp_path, fake, monkeypatch):
    (tmp_path / "orders.csv").write_text("customer_id,placed_at,amount\nc1,2026-01-01T00:00:00Z,10\n")
    monkeypatch.setenv("RFM_SYNC_SECRET_MC_KEY", API_KEY)

    def doctor(audience_id: str):
        mc = destination(
            type="mailchimp", name="mailchimp", api_key_secret="mc-key", audience_id=audience_id, base_url=BASE_URL
        )
        (tmp_path / "config.toml").write_text(config_toml("sqlite:///state.sqlite", destinations=[mc]))
        return CliRunner().invoke(main, ["doctor", "-c", str(tmp_path / "config.toml")])

    ok = doctor(LIST_ID)
    assert ok.exit_code == 0, ok.output
    assert "destination mailchimp" in ok.output and fake.calls["GET /ping"] == 1
    wrong = doctor("nope")
    assert wrong.exit_code == 1 and "audience nope not found" in wrong.output and "check audience_id" in wrong.output
    assert API_KEY not in ok.output + wrong.output


# ---------------------------------------------------------------------- batch operations
def test_a_large_push_goes_through_batch_operations(tmp_path, fake):
    fake.add_member("c3@example.com", status="unsubscribed", tags=["rfm:Loyal"])
    fake.invalid_emails.add("c4@example.com")
    dest, clock = make(tmp_path, batch_min_members=2, poll_interval_s=3.0)
    fake.polls_to_finish = 3
    updates = [update(n, "Champions", previous="Loyal" if n == 3 else None) for n in range(1, 6)]
    result = dest.push(updates)
    assert sorted(result.accepted) == [1, 2, 3, 5] and list(result.failed) == [4]
    assert "Invalid Resource" in result.failed[4]
    assert len(fake.batches) == 2  # members, then the tags their answers call for
    assert fake.calls["batch PUT /lists/a1b2c3d4e5/members/{hash}"] == 5
    assert fake.calls["PUT /lists/a1b2c3d4e5/members/{hash}"] == 0
    assert (
        fake.tags("c3@example.com") == {"rfm:Champions"} and fake.member("c3@example.com")["status"] == "unsubscribed"
    )
    assert fake.member("c1@example.com")["merge_fields"]["RFM_GROUP"] == "Champions"
    assert 3.0 in clock.sleeps and fake.status_changes == []


def test_a_cut_off_archive_is_fetched_again_and_unknown_members_are_skipped_in_batches(tmp_path, fake):
    fake.add_member("c1@example.com")
    dest, _ = make(tmp_path, batch_min_members=1, unknown_members="skip")
    dest.push([update(9, "Loyal", email=None)])  # merge fields made
    fake.archive_faults = ["cut", "malformed"]
    result = dest.push([update(1, "Loyal"), update(2, "Loyal")])
    assert sorted(result.accepted) == [1, 2] and result.skipped == [2] and not result.failed
    assert fake.member("c2@example.com") is None and fake.tags("c1@example.com") == {"rfm:Loyal"}
    assert fake.injected["archive cut"] == 1 and fake.injected["archive malformed"] == 1


@pytest.mark.parametrize("fault", ["lost_next", "reset_next", "cut_next", "malformed_next", "fail_503"])
def test_faults_around_a_batch_end_right(tmp_path, fake, fault):
    dest, _ = make(tmp_path, batch_min_members=1)
    dest.push([update(9, "Loyal", email=None)])  # merge fields made: the next call is POST /batches
    if fault == "fail_503":
        fake.fail_next = [503, 503]
    else:
        setattr(fake, fault, 3)  # the start, then the polls
    result = dest.push([update(1, "Loyal"), update(2, "Champions")])
    assert sorted(result.accepted) == [1, 2] and not result.failed
    assert fake.tags("c1@example.com") == {"rfm:Loyal"} and fake.tags("c2@example.com") == {"rfm:Champions"}
    assert fake.status_changes == [] and dest.client.retries >= 2


def test_a_batch_that_does_not_finish_in_time_is_left_for_the_next_cycle(tmp_path, fake):
    dest, clock = make(tmp_path, batch_min_members=1, poll_interval_s=60.0, batch_timeout_s=300.0)
    fake.polls_to_finish = 100
    with pytest.raises(RetryableError, match="not finished after 300 s"):
        dest.push([update(1, "Loyal")])
    assert 5 <= len(clock.sleeps) <= 7


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"start": '{"status": "pending"}'}, "without a batch id"),
        ({"start": "[]"}, "without a batch id"),
        ({"poll": '{"id": "b1", "status": "finished"}'}, "without a response_body_url"),
        (
            {"poll": '{"id": "b1", "status": "finished", "response_body_url": "file:///etc/passwd"}'},
            "without a response_body_url",
        ),
    ],
)
def test_odd_batch_answers_leave_the_batch_for_the_next_cycle(tmp_path, fake, answer, message):
    dest, _ = make(tmp_path, batch_min_members=1)
    json_type = {"Content-Type": "application/json"}
    if "start" in answer:
        fake._start_batch = lambda body: (200, json_type, answer["start"])
    else:
        fake._batch_status = lambda batch_id: (200, json_type, answer["poll"])
    with pytest.raises(RetryableError, match=message):
        dest.push([update(1, "Loyal")])


def test_an_archive_that_cannot_be_fetched_leaves_the_batch_for_the_next_cycle(tmp_path, fake):
    dest, _ = make(tmp_path, batch_min_members=1)
    fake.archive_faults = ["missing"]
    with pytest.raises(RetryableError, match="sent again next cycle"):
        dest.push([update(1, "Loyal")])
    assert dest.push([update(1, "Loyal")]).accepted == [1] and fake.tags("c1@example.com") == {"rfm:Loyal"}


# ---------------------------------------------------------------------- a real cycle
def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat() + "T12:00:00Z"


def write_orders(path: Path, rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "customer_id", "email", "placed_at", "amount", "status"])
        w.writerows(rows)


def cycle_pipeline(tmp_path: Path, **keys) -> Pipeline:
    """A pipeline over tmp_path's orders.csv into the file sink and a Mailchimp destination (``keys``: its table)."""
    mc = destination(
        type="mailchimp", name="mailchimp", api_key_secret="mc-key", audience_id=LIST_ID, base_url=BASE_URL, **keys
    )
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///state.sqlite", destinations=[file_sink(), mc]))
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    clock = FakeClock()
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=secret)
    dest = MailchimpDestination(config.destinations[1], ctx, sleep=clock.sleep, clock=clock)
    return Pipeline(config, store, destinations=[build_destinations(config)[0], dest])


@pytest.mark.parametrize("batch_min_members", [1000, 5])
def test_cycles_write_merge_fields_and_tags_and_an_unchanged_cycle_writes_nothing(tmp_path, fake, batch_min_members):
    rows = [
        [
            f"o{i}-{k}",
            f"c{i:02d}",
            f"c{i}@example.com" if i != 7 else "",
            day(5 + 40 * (i % 7) + k),
            f"{10 + 7 * i}.50",
            "paid",
        ]
        for i in range(20)
        for k in range(1 + i % 3)
    ]
    write_orders(tmp_path / "orders.csv", rows)
    fake.add_member("c3@example.com", status="unsubscribed")
    pipeline = cycle_pipeline(tmp_path, batch_min_members=batch_min_members)

    first = pipeline.run_cycle(AS_OF)
    assert not first.errors and first.pushed["mailchimp"] == 19 and first.skipped == {"mailchimp": 1}
    state = read_state(tmp_path / "profiles.jsonl")
    for key, props in state.items():
        email = f"c{int(key[1:])}@example.com"
        member = fake.member(email)
        if key == "c07":
            assert member is None
            continue
        assert member["merge_fields"]["RFM_GROUP"] == props["Current RFM group"]
        assert fake.tags(email) == {f"rfm:{props['Current RFM group']}"}
    assert fake.member("c3@example.com")["status"] == "unsubscribed" and fake.status_changes == []

    # c01 buys big today: its group changes, and its tag with it
    before = state["c01"]["Current RFM group"]
    rows += [
        ["n1", "c01", "c1@example.com", day(0), "900.00", "paid"],
        ["n2", "c01", "c1@example.com", day(1), "900.00", "paid"],
    ]
    write_orders(tmp_path / "orders.csv", rows)
    second = Pipeline(pipeline.config, pipeline.store, destinations=pipeline.destinations).run_cycle(AS_OF)
    after = read_state(tmp_path / "profiles.jsonl")["c01"]["Current RFM group"]
    assert not second.errors and after != before
    assert fake.tags("c1@example.com") == {f"rfm:{after}"}
    assert fake.member("c1@example.com")["merge_fields"]["RFM_PREV"] == before

    writes = fake.writes
    third = Pipeline(pipeline.config, pipeline.store, destinations=pipeline.destinations).run_cycle(AS_OF)
    assert third.changed == 0 and third.pushed["mailchimp"] == 0 and fake.writes == writes


@pytest.mark.parametrize("batch_min_members", [1000, 5])
def test_a_cycle_with_faults_injected_ends_exactly_right(tmp_path, fake, batch_min_members):
    rows = [
        [f"o{i}", f"c{i:02d}", f"c{i}@example.com", day(3 + 30 * (i % 9)), f"{10 + 9 * i}.00", "paid"]
        for i in range(15)
    ]
    write_orders(tmp_path / "orders.csv", rows)
    for i in (2, 5):
        fake.add_member(f"c{i}@example.com", status="unsubscribed", tags=["rfm:Old", "VIP"])
    pipeline = cycle_pipeline(tmp_path, batch_min_members=batch_min_members, poll_interval_s=1.0)
    config, store, (sink, dest) = pipeline.config, pipeline.store, pipeline.destinations
    fake.failure_rate = 0.3
    for _ in range(6):  # a fault past the retries would end that push; the next cycle goes on
        report = Pipeline(config, store, destinations=[sink, dest]).run_cycle(AS_OF)
        if not report.errors and not report.failed.get("mailchimp"):
            break
    assert not report.errors and sum(fake.injected.values()) >= 2, fake.injected
    fake.failure_rate = 0.0
    state = read_state(tmp_path / "profiles.jsonl")
    for key, props in state.items():
        email = f"c{int(key[1:])}@example.com"
        assert fake.member(email)["merge_fields"]["RFM_GROUP"] == props["Current RFM group"], key
        extra = {"VIP"} if key in ("c02", "c05") else set()
        assert fake.tags(email) == {f"rfm:{props['Current RFM group']}"} | extra, key
    assert fake.member("c2@example.com")["status"] == "unsubscribed" and fake.status_changes == []
    assert sum(1 for tag in fake.lists[LIST_ID]["merge_fields"] if tag.startswith("RFM_")) == 4
    writes = fake.writes
    again = Pipeline(config, store, destinations=[sink, dest]).run_cycle(AS_OF)
    assert again.pushed["mailchimp"] == 0 and fake.writes == writes
