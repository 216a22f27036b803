"""Real cycles (CSV source → score → diff → outbox → push) into fake Klaviyo and Meta, plus the CLI parts."""

from __future__ import annotations

import csv
import hashlib
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import responses
from click.testing import CliRunner

from connectors.base import ConnectorContext
from connectors.file.destination import read_state
from connectors.klaviyo.destination import LIMITS, KlaviyoDestination
from connectors.meta.destination import MetaAudiencesDestination
from rfm_sync.cli import main
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline, build_destinations, update_from_row
from rfm_sync.secrets import Secret
from rfm_sync.store import Store
from rfm_sync.store import outbox as ob
from tests.configs import config_toml, destination, file_sink, table
from tests.fakes import meta_fake
from tests.fakes.klaviyo_fake import API_KEY, BASE_URL, SPEC, FakeClock, FakeKlaviyo, klaviyo_spec, validate_all  # noqa: F401
from tests.fakes.meta_fake import FakeMeta

pytestmark = pytest.mark.slow  # real cycles into fake Klaviyo and Meta

AS_OF = date(2026, 6, 30)
CONFIG = config_toml(
    "sqlite:///state.sqlite",
    destinations=[
        file_sink(),
        destination(
            type="klaviyo",
            name="klaviyo",
            api_key_secret="klaviyo-key",
            base_url=BASE_URL,
            bulk_min_profiles=10,
            first_assignment_events="skip",
        ),
        destination(type="meta_audiences", name="meta", access_token_secret="meta-token", base_url=meta_fake.BASE_URL)
        + table("[[destinations.audiences]]", audience_id="111", groups=["Champions", "Loyal"]),
    ],
)


def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat() + "T12:00:00Z"


def base_rows():
    rows = []
    for i in range(30):
        for k in range(1 + i % 3):
            rows.append(
                [f"o{i}-{k}", f"c{i:02d}", f"c{i}@example.com", day(5 + 40 * (i % 7) + k), f"{10 + 7 * i}.50", "paid"]
            )
    return rows


def write_orders(path: Path, rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "customer_id", "email", "placed_at", "amount", "status"])
        w.writerows(rows)


def secret(name: str) -> Secret:
    return Secret(name, {"klaviyo-key": API_KEY, "meta-token": meta_fake.TOKEN}[name])


def make(tmp_path: Path, rows):
    write_orders(tmp_path / "orders.csv", rows)
    (tmp_path / "config.toml").write_text(CONFIG)
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    clock = FakeClock()
    ctx = ConnectorContext(zone=ZoneInfo("UTC"), base_dir=tmp_path, secret=secret)
    sink = build_destinations(config)[0]
    klaviyo = KlaviyoDestination(config.destinations[1], ctx, sleep=clock.sleep, clock=clock)
    meta = MetaAudiencesDestination(config.destinations[2], ctx, sleep=clock.sleep, clock=clock)
    return config, store, Pipeline(config, store, destinations=[sink, klaviyo, meta])


def again(pipeline: Pipeline) -> Pipeline:
    """A new cycle as a restarted process would run it (fresh sources), same destinations."""
    return Pipeline(pipeline.config, pipeline.store, destinations=pipeline.destinations)


@pytest.fixture
def fakes(request):
    spec = request.getfixturevalue("klaviyo_spec") if SPEC.is_file() else None
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        k, m = FakeKlaviyo().install(rsps), FakeMeta().install(rsps)
        yield k, m
    if spec is not None and k.requests:
        validate_all(spec, k.requests)


def klaviyo_expected(sink_state: dict) -> dict:
    return {
        f"email:c{int(key[1:])}@example.com": {k: v for k, v in props.items() if v is not None}
        for key, props in sink_state.items()
    }


def test_cycles_end_exactly_right_and_an_unchanged_cycle_writes_nothing(tmp_path, fakes):
    klaviyo, meta = fakes
    rows = base_rows()
    config, store, pipeline = make(tmp_path, rows)
    first = pipeline.run_cycle(AS_OF)
    entered = len(meta.audience("111"))  # Meta hears only of customers entering a mapped audience
    assert 0 < entered < 30 and first.skipped == {"meta": 30 - entered}
    assert not first.errors and first.pushed == {"sink": 30, "klaviyo": 30, "meta": entered}
    assert klaviyo.calls["POST /api/profile-bulk-import-jobs"] == 1 and klaviyo.events == {}

    # c00 loses every order (cleared); c01 and c02 buy again today (group changes -> events)
    for row in rows:
        if row[1] == "c00":
            row[5] = "cancelled"
    rows += [
        ["n1", "c01", "c1@example.com", day(0), "900.00", "paid"],
        ["n2", "c02", "c2@example.com", day(0), "900.00", "paid"],
        ["n3", "c02", "c2@example.com", day(1), "900.00", "paid"],
    ]
    write_orders(tmp_path / "orders.csv", rows)
    second = again(pipeline).run_cycle(AS_OF)
    assert not second.errors and second.cleared == 1
    state = read_state(tmp_path / "profiles.jsonl")
    assert klaviyo.profiles == klaviyo_expected(state)
    assert klaviyo.properties("c0@example.com") == {}  # every RFM property cleared
    moves = sum(n for (a, b), n in second.transitions.items() if a is not None)
    assert moves >= 2 and len(klaviyo.events) == moves  # c00 cleared + at least one group change
    members = {
        ("email", hashlib.sha256(f"c{int(k[1:])}@example.com".encode()).hexdigest())
        for k, p in state.items()
        if p.get("Current RFM group") in ("Champions", "Loyal")
    }
    assert meta.audience("111") == members

    writes = (klaviyo.writes(), meta.writes())
    third = again(pipeline).run_cycle(AS_OF)
    assert third.changed == 0 and (klaviyo.writes(), meta.writes()) == writes
    assert third.pushed == {"sink": 0, "klaviyo": 0, "meta": 0}


def test_a_crash_before_acknowledging_resends_only_the_unacknowledged(tmp_path, fakes):
    klaviyo, _ = fakes
    config, store, pipeline = make(tmp_path, base_rows())
    pipeline.run_cycle(AS_OF, push=False)
    # a batch was sent but the process died before mark_sent: simulate by pushing the first 10
    # rows straight to the destination without acknowledging them
    batch = ob.next_batch(store, "klaviyo", 0, 10)
    pipeline.destinations[1].push([update_from_row(r) for r in batch])
    ob.mark_sent(store, [r["id"] for r in batch[:4]])  # only 4 acknowledged before the "crash"
    before = klaviyo.calls["POST /api/profile-bulk-import-jobs"]
    report = again(pipeline).run_cycle(AS_OF)
    assert report.pushed["klaviyo"] == 26  # 30 - 4 acknowledged: the 6 unacknowledged are re-sent, once
    assert klaviyo.calls["POST /api/profile-bulk-import-jobs"] == before + 1
    assert len(klaviyo.profiles) == 30


def test_dry_run_shows_counts_and_masked_sample_and_sends_nothing(tmp_path, fakes):
    klaviyo, meta = fakes
    config, store, pipeline = make(tmp_path, base_rows())
    report = pipeline.run_cycle(AS_OF, push=False)
    preview = pipeline.push(report, dry_run=True)
    assert preview["klaviyo"]["profiles"] == 30 and preview["klaviyo"]["batches"] == 1
    assert preview["meta"]["group_changes"] == 30
    sample = preview["klaviyo"]["sample"]
    assert len(sample) == 5 and all(s["email"] == "c***@example.com" for s in sample)
    assert klaviyo.requests == [] and meta.calls == []
    assert ob.pending_count(store, "klaviyo") == 30 and ob.pending_count(store, "meta") == 30


def test_run_dry_run_cli_prints_masked_preview_without_calls(tmp_path, fakes, monkeypatch):
    klaviyo, meta = fakes
    write_orders(tmp_path / "orders.csv", base_rows())
    (tmp_path / "config.toml").write_text(CONFIG)
    result = CliRunner().invoke(main, ["run", "-c", str(tmp_path / "config.toml"), "--as-of", str(AS_OF), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: klaviyo: would send 30 profile(s) in 1 batch(es)" in result.output
    assert "c***@example.com" in result.output and "c1@example.com" not in result.output
    assert klaviyo.requests == [] and meta.calls == []


def test_bootstrap_creates_one_segment_per_group_and_is_idempotent(tmp_path, fakes, monkeypatch):
    klaviyo, _ = fakes
    monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", API_KEY)
    monkeypatch.setitem(LIMITS, "segments_write", [(50, 1.0)])  # the CLI sleeps for real: don't wait 1/s here
    (tmp_path / "config.toml").write_text(CONFIG)
    klaviyo.segments = [
        {"type": "segment", "id": f"other{i}", "attributes": {"name": f"Unrelated {i}"}} for i in range(12)
    ]  # two pages of someone else's segments
    runner = CliRunner()
    dry = runner.invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml"), "--dry-run"])
    assert dry.exit_code == 0 and dry.output.count("would create") == 6 and len(klaviyo.segments) == 12
    first = runner.invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml")])
    assert first.exit_code == 0, first.output
    names = [s["attributes"]["name"] for s in klaviyo.segments[12:]]
    assert names == [
        f"Current RFM group equals {g}"
        for g in ["Champions", "Loyal", "Recent", "Needs Attention", "At Risk", "Inactive"]
    ]
    row = next(line for line in first.output.splitlines() if "Current RFM group equals At Risk" in line)
    assert "│ At Risk" in row and "│ created" in row and "6 segment(s) created" in first.output
    second = runner.invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml")])
    assert second.exit_code == 0 and "0 segment(s) created, 6 already existed" in second.output
    assert len(klaviyo.segments) == 18 and klaviyo.calls["POST /api/segments"] == 6


def test_bootstrap_never_makes_a_segment_twice_when_an_answer_is_lost(tmp_path, fakes, monkeypatch):
    """Klaviyo makes the segment, then the answer is cut off: the segments are listed again instead
    of a blind retry, which would make a second segment of the same name."""
    klaviyo, _ = fakes
    monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", API_KEY)
    monkeypatch.setitem(LIMITS, "segments_write", [(50, 1.0)])
    (tmp_path / "config.toml").write_text(CONFIG)
    klaviyo.cut_next, klaviyo.cut_only = 1, "POST /api/segments"  # made, then the answer is cut half way
    result = CliRunner().invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml")])
    assert result.exit_code == 0, result.output
    names = [s["attributes"]["name"] for s in klaviyo.segments]
    assert len(names) == len(set(names)) == 6, names
    assert klaviyo.calls["POST /api/segments"] == 6


def test_bootstrap_names_the_error_of_a_destination_that_cannot_be_built(tmp_path, monkeypatch):
    """A klaviyo destination whose constructor fails is built as an Unavailable stand-in: bootstrap
    says why and exits 1, instead of calling the stand-in for segments (an AttributeError)."""

    def refuse(self, settings, context, **kwargs):
        raise ValueError("cannot be built")

    monkeypatch.setattr(KlaviyoDestination, "__init__", refuse)
    (tmp_path / "config.toml").write_text(CONFIG)
    result = CliRunner().invoke(main, ["klaviyo", "bootstrap", "-c", str(tmp_path / "config.toml")])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.exception
    assert "error: klaviyo: cannot be set up: ValueError: cannot be built" in result.output
