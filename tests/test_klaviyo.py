"""Klaviyo destination against the fake API: bodies, bulk jobs, clearing, events, errors, limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from connectors.base import ConnectorContext, FatalError, ProfileUpdate, Transition
from connectors.http import RateLimiter, RetryPolicy
from connectors.klaviyo.bodies import (
    REVISION,
    bulk_job_body,
    e164,
    event_body,
    mask_email,
    profile_import_body,
    profile_resource,
    segment_body,
    split_jobs,
)
from connectors.klaviyo.destination import (
    DOCUMENTED,
    HEADROOM,
    LIMITS,
    KlaviyoDestination,
    KlaviyoSettings,
    error_summary,
)
from rfm_sync.secrets import Secret
from tests.fakes.klaviyo_fake import (  # noqa: F401  (fixtures: klaviyo_spec, fake)
    API_KEY,
    BASE_URL,
    SPEC,
    FakeClock,
    FakeKlaviyo,
    klaviyo_spec,
    validate_all,
    validated_fake,
)

CHANGED = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


def props(group: str | None = "Loyal", score: str | None = "322") -> dict:
    if group is None:
        return {
            "Current RFM group": None,
            "Previous RFM group": None,
            "RFM score": None,
            "RFM recency score": None,
            "RFM group last changed": None,
        }
    return {
        "Current RFM group": group,
        "RFM score": score,
        "RFM recency score": int(score[0]),
        "RFM group last changed": "2026-11-20T08:30:00Z",
    }


def update(
    i: int,
    group: str | None = "Loyal",
    *,
    before: str | None = "__same__",
    email: str | None = "",
    labels: tuple[dict, dict] | None = None,
    score: str = "322",
) -> ProfileUpdate:
    transition = None
    if before != "__same__":
        transition = Transition(before, group, *(labels or ({}, {})))
    elif labels:
        transition = Transition(group, group, *labels)
    return ProfileUpdate(
        outbox_id=i,
        customer_key=f"c{i}",
        email=f"user{i}@example.com" if email == "" else email,
        phone=None,
        properties=props(group, score),
        transition=transition,
        event_id=f"ev-{i}-{before}-{group}" if transition else None,
        changed_at=CHANGED,
        first_assignment=transition is not None and before is None,
    )


def context() -> ConnectorContext:
    return ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=lambda name: Secret(name, API_KEY))


def destination(clock: FakeClock, **overrides) -> KlaviyoDestination:
    settings = KlaviyoSettings(
        name="klaviyo",
        api_key_secret="klaviyo-key",
        base_url=BASE_URL,
        **{"bulk_min_profiles": 5, "poll_interval_s": 1.0, **overrides},
    )
    return KlaviyoDestination(
        settings, context(), sleep=clock.sleep, clock=clock, policy=RetryPolicy(attempts=6, max_elapsed_s=10_000)
    )


@pytest.fixture
def clock():
    return FakeClock()


# ---------------------------------------------------------------------- bodies vs the spec
@pytest.mark.slow  # every body against the OpenAPI spec
def test_every_body_kind_validates_against_the_spec(klaviyo_spec, fake, clock):
    dest = destination(clock, bulk_min_profiles=3, external_id=True)
    batch = [update(1, before="Loyal", group="At Risk"), update(2), update(3), update(4, group=None, before="Recent")]
    result = dest.push(batch)
    assert sorted(result.accepted) == [1, 2, 3, 4] and not result.failed
    kinds = {(r.method, r.url.split("?")[0].replace(BASE_URL, "")) for r in fake.requests}
    assert ("POST", "/api/profile-bulk-import-jobs") in kinds and ("POST", "/api/profile-import") in kinds
    assert ("POST", "/api/events") in kinds and ("GET", "/api/profile-bulk-import-jobs/job1") in kinds
    assert validate_all(klaviyo_spec, fake.requests) == len(fake.requests)
    assert fake.revisions == {REVISION}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: {"data": [b["data"]]},  # a list as data
        lambda b: {"data": {**b["data"], "type": "profiles"}},  # wrong resource type
        lambda b: {"data": {"type": "profile"}},  # attributes missing
    ],
)
def test_a_wrong_profile_import_shape_fails_validation(klaviyo_spec, mutate):
    from openapi_core.validation.request.exceptions import RequestValidationError

    from tests.fakes.klaviyo_fake import validate_request

    good = profile_import_body(profile_resource(update(1, group=None)))
    headers = {
        "Authorization": f"Klaviyo-API-Key {API_KEY}",
        "revision": REVISION,
        "Content-Type": "application/vnd.api+json",
    }
    validate_request(klaviyo_spec, "POST", BASE_URL + "/api/profile-import", headers, json.dumps(good).encode())
    with pytest.raises(RequestValidationError):
        validate_request(
            klaviyo_spec, "POST", BASE_URL + "/api/profile-import", headers, json.dumps(mutate(good)).encode()
        )


def test_event_and_segment_bodies_validate_and_a_broken_event_does_not(klaviyo_spec):
    from openapi_core.validation.request.exceptions import RequestValidationError

    from tests.fakes.klaviyo_fake import validate_request

    headers = {
        "Authorization": f"Klaviyo-API-Key {API_KEY}",
        "revision": REVISION,
        "Content-Type": "application/vnd.api+json",
    }
    event = event_body(update(1, before=None), metric="RFM Group Changed", backfill=True, external_id=True)
    assert (
        event["data"]["attributes"]["backfill"] is True
        and event["data"]["attributes"]["unique_id"] == "ev-1-None-Loyal"
    )
    validate_request(klaviyo_spec, "POST", BASE_URL + "/api/events", headers, json.dumps(event).encode())
    validate_request(
        klaviyo_spec,
        "POST",
        BASE_URL + "/api/segments",
        headers,
        json.dumps(segment_body("At Risk", "Current RFM group")).encode(),
    )
    validate_request(
        klaviyo_spec,
        "POST",
        BASE_URL + "/api/profile-bulk-import-jobs",
        headers,
        json.dumps(bulk_job_body([profile_resource(update(2))])).encode(),
    )
    del event["data"]["attributes"]["metric"]
    with pytest.raises(RequestValidationError):
        validate_request(klaviyo_spec, "POST", BASE_URL + "/api/events", headers, json.dumps(event).encode())


# ---------------------------------------------------------------------- profiles
def test_large_batch_is_one_bulk_job_polled_through_its_lifecycle(fake, clock):
    fake.polls_until_complete = 3
    dest = destination(clock)
    result = dest.push([update(i) for i in range(1, 51)])
    assert sorted(result.accepted) == list(range(1, 51)) and not result.failed
    assert fake.calls["POST /api/profile-bulk-import-jobs"] == 1
    assert fake.calls["GET /api/profile-bulk-import-jobs/{id}"] == 3
    assert fake.calls["POST /api/profile-import"] == 0
    assert fake.properties("user7@example.com") == props("Loyal")
    assert clock.sleeps.count(1.0) >= 3  # polled at poll_interval_s, on the injected clock


def test_import_errors_are_mapped_back_and_stay_failed(fake, clock):
    fake.reject = {f"user{i}@example.com" for i in range(10, 260)}  # 250 errors: three pages of 100
    dest = destination(clock)
    result = dest.push([update(i) for i in range(1, 301)])
    assert sorted(result.failed) == list(range(10, 260))
    assert sorted(result.accepted) == [i for i in range(1, 301) if not 10 <= i < 260]
    assert "Invalid email address" in result.failed[42] and "user42@example.com" not in result.failed[42]
    assert fake.calls["GET /api/profile-bulk-import-jobs/{id}/import-errors"] == 3


def test_small_batches_and_clearing_use_profile_import(fake, clock):
    dest = destination(clock, bulk_min_profiles=100)
    dest.push([update(1), update(2, group="Champions", score="333")])
    assert fake.calls["POST /api/profile-import"] == 2 and fake.calls["POST /api/profile-bulk-import-jobs"] == 0
    assert fake.properties("user2@example.com")["Current RFM group"] == "Champions"
    fake.profiles["email:user1@example.com"]["Favourite colour"] = "green"  # not ours: must survive
    result = dest.push([update(1, group=None, before="Loyal")])
    assert result.accepted == [1]
    assert fake.properties("user1@example.com") == {"Favourite colour": "green"}


def test_a_clearing_update_in_a_bulk_batch_still_clears(fake, clock):
    dest = destination(clock)
    dest.push([update(i) for i in range(1, 11)])
    result = dest.push([update(i) for i in range(11, 21)] + [update(3, group=None, before="Loyal")])
    assert len(result.accepted) == 11
    assert fake.properties("user3@example.com") == {}
    assert fake.calls["POST /api/profile-import"] == 1


def test_identifiers_email_external_id_and_phone(fake, clock):
    dest = destination(clock, external_id=True, phone=True, bulk_min_profiles=100)
    u = ProfileUpdate(
        outbox_id=1, customer_key="shop:42", email=None, phone="+49 30 1234-567", properties=props("Recent")
    )
    assert dest.push([u]).accepted == [1]
    assert fake.identities["external_id:shop:42"] == {"external_id": "shop:42", "phone_number": "+49301234567"}
    nobody = ProfileUpdate(outbox_id=2, customer_key="x", email=None, phone=None, properties=props())
    result = destination(clock, bulk_min_profiles=100).push([nobody])
    assert result.accepted == [] and "identify" in result.failed[2]
    assert e164("030 1234567") is None and e164("0049 30 1234567") == "+49301234567"


def test_a_rejected_profile_is_a_record_failure_with_the_email_masked(fake, clock):
    fake.reject = {"user2@example.com"}
    result = destination(clock, bulk_min_profiles=100).push([update(1), update(2), update(3)])
    assert sorted(result.accepted) == [1, 3]
    assert "HTTP 400" in result.failed[2] and "user2@example.com" not in result.failed[2]


def test_split_jobs_keeps_count_and_byte_limits():
    items = [
        (i, {"type": "profile", "attributes": {"email": f"u{i}@x.io", "properties": {"p": "x" * 100}}})
        for i in range(25)
    ]
    jobs = list(split_jobs(items, max_profiles=10))
    assert [len(j) for j, _ in jobs] == [10, 10, 5]
    assert json.loads(jobs[2][1]) == bulk_job_body([r for _, r in items[20:]])
    small = list(split_jobs(items, max_bytes=1200))
    assert [oid for j, _ in small for oid, _ in j] == list(range(25))
    assert len(small) > 3 and all(len(data) <= 1200 for _, data in small)


# ---------------------------------------------------------------------- events
def test_group_change_sends_one_event_with_a_deterministic_unique_id(fake, clock):
    dest = destination(clock, bulk_min_profiles=100)
    u = update(1, before="Champions", group="At Risk")
    assert dest.push([u]).accepted == [1]
    assert dest.push([u]).accepted == [1]  # a re-send (e.g. after a crash) ...
    assert len(fake.events) == 1  # ... is de-duplicated by unique_id
    (event,) = fake.events.values()
    assert event["unique_id"] == u.event_id and "backfill" not in event
    assert event["properties"]["from_group"] == "Champions" and event["properties"]["to_group"] == "At Risk"
    assert event["properties"]["RFM score"] == "322"
    assert event["metric"]["data"]["attributes"]["name"] == "RFM Group Changed"


def test_label_change_without_group_change_sends_an_event(fake, clock):
    dest = destination(clock, bulk_min_profiles=100)
    u = update(1, labels=({"frequency": "regular"}, {"frequency": "occasional"}))
    assert dest.push([u]).accepted == [1]
    (event,) = fake.events.values()
    assert event["properties"]["labels_before"] == {"frequency": "regular"}
    assert event["properties"]["labels_after"] == {"frequency": "occasional"}
    dest.push([update(2)])  # properties only: no event
    assert len(fake.events) == 1


@pytest.mark.parametrize("mode,expected", [("skip", None), ("backfill", True), ("send", False)])
def test_first_assignment_events_follow_the_configured_mode(fake, clock, mode, expected):
    dest = destination(clock, bulk_min_profiles=100, first_assignment_events=mode, metric_name="RFM moved")
    dest.push([update(1, before=None)])
    if expected is None:
        assert fake.events == {}
    else:
        (event,) = fake.events.values()
        assert event.get("backfill", False) is expected
        assert event["metric"]["data"]["attributes"]["name"] == "RFM moved"


def test_events_can_be_switched_off(fake, clock):
    destination(clock, bulk_min_profiles=100, events=False).push([update(1, before="Loyal", group="Recent")])
    assert fake.events == {} and fake.calls["POST /api/profile-import"] == 1


# ---------------------------------------------------------------------- errors, secrets, limits
def test_429_honours_retry_after_and_5xx_is_retried(fake, clock):
    fake.retry_after = "17"
    fake.fail_next = [429, 503, 500]
    result = destination(clock, bulk_min_profiles=100).push([update(1, before="Loyal", group="Recent")])
    assert result.accepted == [1]
    assert any(s >= 17 for s in clock.sleeps)
    assert fake.properties("user1@example.com")["Current RFM group"] == "Recent" and len(fake.events) == 1


def test_rejected_key_is_fatal_and_never_shown(fake, clock):
    fake.api_key = "pk_other"
    dest = destination(clock, bulk_min_profiles=100)
    with pytest.raises(FatalError) as info:
        dest.push([update(1)])
    assert "401" in str(info.value) and "credentials" in str(info.value)
    assert API_KEY not in str(info.value) and API_KEY not in repr(dest) and API_KEY not in repr(dest.client)


def test_a_missing_secret_is_a_fatal_error_naming_it(clock):
    def missing(name):
        raise LookupError(f"secret {name!r} is not set")

    dest = KlaviyoDestination(
        KlaviyoSettings(name="k", api_key_secret="klaviyo-key"),
        ConnectorContext(zone=ZoneInfo("UTC"), base_dir=Path("."), secret=missing),
    )
    with pytest.raises(FatalError, match="klaviyo-key"):
        dest.push([update(1)])


# each limiter and the operations it paces (method, path as the spec names it)
LIMITED_OPERATIONS = {
    "bulk_jobs": [
        ("post", "/api/profile-bulk-import-jobs"),
        ("get", "/api/profile-bulk-import-jobs"),
        ("get", "/api/profile-bulk-import-jobs/{job_id}"),
        ("get", "/api/profile-bulk-import-jobs/{id}/import-errors"),
    ],
    "profile_import": [("post", "/api/profile-import")],
    "events": [("post", "/api/events")],
    "segments_read": [("get", "/api/segments")],
    "segments_write": [("post", "/api/segments")],
    "flows_read": [("get", "/api/flows")],
    "flows_write": [("post", "/api/flows")],
    "metrics_read": [("get", "/api/metrics")],
    "templates": [("get", "/api/templates"), ("post", "/api/templates")],
}


def _per(value: str, unit: str) -> int:
    count, per = value.split("/")
    assert per == unit, value
    return int(count)


def test_documented_limits_are_the_spec_s_for_every_endpoint_used():
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is absent")
    paths = json.loads(SPEC.read_text(encoding="utf-8"))["paths"]
    assert set(LIMITED_OPERATIONS) == set(LIMITS) == set(DOCUMENTED)
    for name, operations in LIMITED_OPERATIONS.items():
        for method, path in operations:
            server = paths[path][method]["x-klaviyo-ratelimit"]
            assert DOCUMENTED[name] == (_per(server["burst"], "s"), _per(server["steady"], "m")), (name, path)


def _most_in_any_window(times: list[float], window: float) -> int:
    most, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window - 1e-9:
            j += 1
        most = max(most, j - i)
    return most


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_the_client_stays_below_klaviyo_s_limits_in_every_window_with_headroom(name):
    """A client sending as fast as its limiter allows, for 2.5 minutes: no 1 s window carries more
    than HEADROOM × the burst limit, no 1 min window more than HEADROOM × the steady limit (always
    under the server's), and it still gets most of the steady rate."""
    burst, steady = DOCUMENTED[name]
    clock = FakeClock()
    limiter = RateLimiter(LIMITS[name], clock=clock, sleep=clock.sleep)
    start, times = clock(), []
    while clock() - start < 150.0:
        limiter.acquire()
        times.append(clock() - start)
    for limit, window in ((burst, 1.0), (steady, 60.0)):
        most = _most_in_any_window(times, window)
        assert most <= max(1, int(HEADROOM * limit)), (name, window, most)
        assert most < limit or limit == 1, (name, window, most)
    assert HEADROOM < 1 and len(times) >= 0.7 * steady * 150 / 60  # still ~80 % of the steady rate


def test_segment_writes_at_one_per_second_are_spaced_with_slack():
    clock = FakeClock()
    limiter = RateLimiter(LIMITS["segments_write"], clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(5):
        limiter.acquire()
        times.append(clock())
    assert min(b - a for a, b in zip(times, times[1:])) >= 1.0 / HEADROOM - 1e-9


def test_a_refused_bulk_job_is_fatal_with_klaviyo_s_error_detail_but_no_body_or_email(fake, clock):
    fake.job_max_profiles = 5  # as Klaviyo's 10,000-profile maximum, at test scale
    dest = destination(clock, bulk_min_profiles=1)
    with pytest.raises(FatalError) as info:
        dest.push([update(i) for i in range(1, 8)])
    message = str(info.value)
    assert "POST /api/profile-bulk-import-jobs" in message and "HTTP 400" in message
    assert "invalid: Invalid input.: A bulk import job accepts at most 5 profiles; got 7." in message
    assert "(at /data/attributes/profiles/data)" in message
    assert "@example.com" not in message and "Current RFM group" not in message and API_KEY not in message
    assert info.value.status == 400


def test_error_summary_lists_klaviyo_s_errors_with_pointers_and_masks_emails():
    response = requests.Response()
    response.status_code = 400
    errors = [
        {
            "code": "invalid",
            "title": "Invalid input.",
            "detail": f"'{n}@shop.example' is not valid",
            "source": {"pointer": f"/data/{n}"},
        }
        for n in ("ann", "bob", "cy", "dee")
    ]
    response._content = json.dumps({"errors": errors}).encode()
    summary = error_summary(response)
    assert summary.startswith("HTTP 400 invalid: Invalid input.: 'a***@shop.example' is not valid (at /data/ann); ")
    assert "(at /data/cy)" in summary and "dee" not in summary and summary.endswith("and 1 more")
    response._content = b"<html>bad gateway</html>"
    assert error_summary(response) == "HTTP 400"


def test_mask_email():
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_email("to a@b.io and bob@x.org") == "to a***@b.io and b***@x.org"


def test_check_proves_the_key_for_doctor(fake, clock):
    fake.jobs = {}
    assert destination(clock).check() == []
    fake.api_key = "pk_other"
    with pytest.raises(FatalError, match="401"):
        destination(clock).check()
