"""Through the real outbox and Pipeline.push: 100,000 profiles in 10 bulk jobs; 30% chaos ends exactly right."""

from __future__ import annotations

import gc
import json
import math
from datetime import UTC, date, datetime, timedelta

import pytest
import responses

from connectors.http import RetryPolicy
from connectors.klaviyo.destination import KlaviyoDestination, KlaviyoSettings
from rfm_sync.config import parse_config
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.store import Store
from rfm_sync.store import outbox as ob
from rfm_sync.store.runs import start_run
from tests.fakes.klaviyo_fake import FakeClock, FakeKlaviyo, klaviyo_spec, validate_all  # noqa: F401
from tests.test_klaviyo import context

pytestmark = pytest.mark.slow  # scale: 100k profiles

GROUPS = ["Champions", "Loyal", "Recent", "Needs Attention", "At Risk", "Inactive"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
NAMES = [
    "Current RFM group",
    "Previous RFM group",
    "RFM group last changed",
    "RFM score",
    "RFM recency score",
    "RFM frequency score",
    "RFM monetary score",
]


def snapshot(i: int, group: str | None, previous: str | None, when: datetime) -> dict:
    if group is None:
        return dict.fromkeys(NAMES)
    score = f"{1 + i % 3}{1 + (i // 3) % 3}{1 + (i // 9) % 3}"
    props = {
        "Current RFM group": group,
        "RFM group last changed": when.isoformat().replace("+00:00", "Z"),
        "RFM score": score,
        "RFM recency score": int(score[0]),
        "RFM frequency score": int(score[1]),
        "RFM monetary score": int(score[2]),
    }
    if previous:
        props["Previous RFM group"] = previous
    return props


def row(
    dest: str,
    i: int,
    run_id: int,
    group: str | None,
    before: str | None,
    when: datetime,
    *,
    changed: bool = True,
    previous: str | None = None,
) -> dict:
    payload = {
        "email": f"customer{i}@example.com",
        "phone": None,
        "properties": snapshot(i, group, previous, when),
        "changed_at": when.isoformat(),
        "transition": None,
        "event_id": None,
        "first_assignment": False,
    }
    if changed:
        payload["transition"] = {"from": before, "to": group}
        payload["event_id"] = f"{i}-{before}-{group}-{run_id}"
        payload["first_assignment"] = before is None
    return {"destination": dest, "customer_key": f"c{i}", "run_id": run_id, "payload": json.dumps(payload)}


def setup(tmp_path, dest: KlaviyoDestination) -> tuple[Store, Pipeline]:
    store = Store.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    config = parse_config({})
    return store, Pipeline(config, store, sources=[], destinations=[dest])


def push(store: Store, pipeline: Pipeline) -> CycleReport:
    report = CycleReport(run_id=0, as_of=date(2026, 11, 25))
    pipeline.push(report)
    return report


def bulk_rows(dest: str, n: int, run_id: int) -> tuple[list[dict], dict[str, dict]]:
    """First-assignment rows for customers 0..n-1, and the profile state they should produce.
    Payloads are built from 54 templates (group x score repeat every 54 customers): cheap at 100k."""
    templates = {}
    for k in range(54):
        sample = json.loads(row(dest, k, run_id, GROUPS[k % 6], None, T0)["payload"])
        sample["email"], sample["event_id"] = "EMAIL", "EVENT"
        templates[k] = (json.dumps(sample), snapshot(k, GROUPS[k % 6], None, T0))
    rows, expected = [], {}
    for i in range(n):
        text, props = templates[i % 54]
        email = f"customer{i}@example.com"
        rows.append(
            {
                "destination": dest,
                "customer_key": f"c{i}",
                "run_id": run_id,
                "payload": text.replace("EMAIL", email).replace("EVENT", f"{i}-{run_id}"),
            }
        )
        expected["email:" + email] = props
    return rows, expected


@pytest.fixture
def no_gc():
    """100k small objects make the cyclic GC rescan a big heap again and again; nothing here is cyclic."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_100k_changed_profiles_take_10_bulk_jobs_and_a_rerun_writes_nothing(tmp_path, klaviyo_spec, no_gc):
    n = 100_000
    clock = FakeClock()
    dest = KlaviyoDestination(
        KlaviyoSettings(name="klaviyo", api_key_secret="k", base_url="http://127.0.0.1:8765"),
        context(),
        sleep=clock.sleep,
        clock=clock,
    )
    assert dest.batch_size == 10_000
    store, pipeline = setup(tmp_path, dest)
    run_id = start_run(store, date(2026, 11, 25), "klaviyo")
    rows, expected = bulk_rows("klaviyo", n, run_id)
    with store.begin() as conn:
        ob.enqueue(conn, rows)
    del rows
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeKlaviyo().install(rsps)
        report = push(store, pipeline)
        assert report.pushed == {"klaviyo": n} and report.failed == {"klaviyo": 0} and not report.errors
        jobs = fake.calls["POST /api/profile-bulk-import-jobs"]
        assert jobs == math.ceil(n / 10_000) == 10
        assert fake.writes() == jobs  # no profile-import, no events (first assignments are skipped by default)
        assert fake.calls["GET /api/profile-bulk-import-jobs/{id}"] >= jobs  # plus polls
        assert fake.profiles == expected
        assert ob.pending_count(store, "klaviyo") == 0
        writes = fake.writes()
        rerun = push(store, pipeline)
        assert rerun.pushed == {"klaviyo": 0} and fake.writes() == writes
        # every body is validated; bulk bodies on their first 200 profiles (same builder for all)
        assert validate_all(klaviyo_spec, fake.requests, max_profiles=200) == len(fake.requests)


def expected_after(changes: list[tuple[int, str | None, str | None, datetime, str | None]]) -> dict:
    state: dict[str, dict] = {}
    for i, group, _before, when, previous in changes:
        props = {k: v for k, v in snapshot(i, group, previous, when).items() if v is not None}
        state[f"email:customer{i}@example.com"] = props
    return state


def test_30_percent_429_and_5xx_still_ends_exactly_right_without_duplicate_events(tmp_path, klaviyo_spec, seed=3):
    n = 600
    clock = FakeClock()
    settings = KlaviyoSettings(
        name="klaviyo",
        api_key_secret="k",
        base_url="http://127.0.0.1:8765",
        batch_size=200,
        bulk_min_profiles=50,
        first_assignment_events="backfill",
        poll_interval_s=1.0,
    )
    dest = KlaviyoDestination(
        settings, context(), sleep=clock.sleep, clock=clock, policy=RetryPolicy(attempts=5, max_elapsed_s=100_000)
    )
    store, pipeline = setup(tmp_path, dest)
    run1 = start_run(store, date(2026, 11, 1), "klaviyo")
    run2 = start_run(store, date(2026, 11, 2), "klaviyo")
    t1 = T0 + timedelta(days=1)
    first = [(i, GROUPS[i % 6], None, T0, None) for i in range(n)]
    second = []
    for i in range(0, n, 3):  # a third change group, some lose every order (cleared), one in 30 twice
        if i % 15 == 0:
            second.append((i, None, GROUPS[i % 6], t1, None))
        else:
            second.append((i, GROUPS[(i + 1) % 6], GROUPS[i % 6], t1, GROUPS[i % 6]))
    with store.begin() as conn:
        ob.enqueue(conn, [row("klaviyo", i, run1, g, b, w) for i, g, b, w, _ in first])
        ob.enqueue(conn, [row("klaviyo", i, run2, g, b, w, previous=p) for i, g, b, w, p in second])
        # properties-only refresh for some others (no transition): no event
        ob.enqueue(conn, [row("klaviyo", i, run2, GROUPS[i % 6], None, T0, changed=False) for i in range(1, n, 3)])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeKlaviyo(failure_rate=0.30, seed=seed, retry_after="5").install(rsps)
        for _ in range(30):
            push(store, pipeline)
            if ob.pending_count(store, "klaviyo") == 0:
                break
        assert ob.pending_count(store, "klaviyo") == 0
        assert fake.injected[429] > 0 and fake.injected[503] > 0
        assert any(s >= 5 for s in clock.sleeps)  # Retry-After honoured
        final = {c[0]: c for c in first}
        final.update({c[0]: c for c in second})
        assert fake.profiles == expected_after(list(final.values()))
        # a pending row superseded by a newer one hands its group change on (rfm_sync.store.outbox.supersede):
        # every customer's one event goes from what Klaviyo last saw (nothing: never sent) to the
        # current group, as a backfilled first assignment; never seen and now cleared sends none
        changed = {c[0]: c[1] for c in second}
        expected = set()
        for i in range(n):
            to = changed[i] if i in changed else GROUPS[i % 6]
            if to is not None:
                expected.add((f"customer{i}@example.com", None, to, True))
        events = list(fake.events.values())
        got = [
            (
                e["profile"]["data"]["attributes"]["email"],
                e["properties"]["from_group"],
                e["properties"]["to_group"],
                bool(e.get("backfill")),
            )
            for e in events
        ]
        ids = [e["unique_id"] for e in events]
        assert len(ids) == len(set(ids)) == len(got)  # no duplicate events despite 30% failures
        assert sorted(got, key=str) == sorted(expected, key=str)
        assert validate_all(klaviyo_spec, fake.requests, max_profiles=50) == len(fake.requests)
