"""Superseding keeps only the newest snapshot per customer but never loses a group change."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from connectors.base import PushResult, RetryableError
from connectors.file.destination import FileSink, FileSinkSettings, read_state
from rfm_sync.config import parse_config
from rfm_sync.pipeline import Pipeline, build_sources, connector_context
from rfm_sync.sample import write_sample
from rfm_sync.store import Store
from rfm_sync.store.outbox import fold_transitions
from rfm_sync.store.schema import customer_state

TODAY = date(2026, 6, 30)


def payload(group, transition=None, first=False, event="e"):
    return {
        "properties": {"Current RFM group": group},
        "transition": transition,
        "first_assignment": first,
        "event_id": event if transition else None,
    }


def test_fold_keeps_the_first_origin_and_the_latest_group():
    older = payload("Loyal", {"from": "Champions", "to": "Loyal"}, event="e1")
    newer = payload("At Risk", {"from": "Loyal", "to": "At Risk"}, event="e2")
    merged = fold_transitions("c1", [older, newer])
    assert merged["transition"]["from"] == "Champions" and merged["transition"]["to"] == "At Risk"
    assert merged["event_id"] not in (None, "e1", "e2")
    assert merged["event_id"] == fold_transitions("c1", [older, newer])["event_id"]  # deterministic


def test_fold_carries_a_change_into_a_properties_only_snapshot():
    older = payload("Loyal", {"from": "Champions", "to": "Loyal"}, event="e1")
    newer = payload("Loyal")  # e.g. only "RFM days since last order" moved
    merged = fold_transitions("c1", [older, newer])
    assert merged["transition"] == {"from": "Champions", "to": "Loyal", "labels_before": None}
    first = fold_transitions("c2", [payload("Recent", {"from": None, "to": "Recent"}, first=True), payload("Recent")])
    assert first["first_assignment"] is True and first["transition"]["from"] is None


def test_fold_drops_a_round_trip_and_leaves_plain_snapshots_alone():
    there = payload("Loyal", {"from": "Champions", "to": "Loyal"})
    back = payload("Champions", {"from": "Loyal", "to": "Champions"})
    merged = fold_transitions("c1", [there, back])
    assert merged["transition"] is None and merged["event_id"] is None
    plain = [payload("Loyal"), payload("Loyal")]
    assert fold_transitions("c1", plain) is plain[-1]


class DownSink(FileSink):
    """A file sink whose far side can be switched off (every push raises a retryable error)."""

    down = False

    def push(self, updates):
        if DownSink.down:
            raise RetryableError("HTTP 503", connector=self.name, status=503)
        return super().push(updates)


@pytest.mark.slow
def test_a_change_made_while_the_destination_was_down_still_reaches_it(tmp_path, store_url):
    write_sample(tmp_path / "orders.csv", end=TODAY, customers=300, seed=3)
    config = parse_config(
        {
            "store": {"url": store_url},
            "properties": {"include_metrics": True},
            "sources": [{"type": "csv", "name": "shop", "path": "orders.csv"}],
        },
        path=tmp_path / "config.toml",
    )
    store = Store.open(config.store.url, config.base_dir)
    sink = DownSink(FileSinkSettings(name="sink", path="p.jsonl", batch_size=50), connector_context(config))

    def cycle(day):
        return Pipeline(config, store, sources=build_sources(config), destinations=[sink]).run_cycle(day)

    cycle(TODAY - timedelta(days=200))
    groups_before = {k: p["Current RFM group"] for k, p in read_state(tmp_path / "p.jsonl").items()}
    DownSink.down = True
    moved = cycle(TODAY - timedelta(days=100))  # groups change; nothing can be sent
    assert moved.errors and sum(n for (a, b), n in moved.transitions.items() if a and b and a != b) > 0
    cycle(TODAY - timedelta(days=99))  # one day later: mostly properties-only changes, superseding the above
    DownSink.down = False
    lines_before = len((tmp_path / "p.jsonl").read_text().splitlines())
    cycle(TODAY - timedelta(days=99))
    pushed = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()[lines_before:]]
    assert pushed
    final = read_state(tmp_path / "p.jsonl")
    # the batch in flight when the sink went down may have arrived: it is resent first, as it was;
    # everything else arrives as one snapshot per customer
    in_flight = len(pushed) - len({line["customer_key"] for line in pushed})
    assert 0 <= in_flight <= sink.batch_size
    had = dict(groups_before)
    for line in pushed:
        key, now = line["customer_key"], line["properties"]["Current RFM group"]
        was = had.get(key)
        if was is not None and now is not None and was != now:
            # the group change made while the sink was down arrives, from the group the sink had
            assert line["transition"] == {"from": was, "to": now}, line
        elif was == now:
            assert "transition" not in line, line  # a round trip (or no change) sends no event
        had[key] = now
    with store.engine.connect() as conn:
        stored = {
            k: json.loads(p)
            for k, p in conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.properties))
        }
    assert final.keys() == stored.keys()
    own = {"Previous RFM group", "RFM group last changed"}
    history = sink_history(tmp_path / "p.jsonl")
    folded = 0
    for key, props in final.items():
        # the sink holds the store's current snapshot ...
        assert {k: v for k, v in props.items() if k not in own} == {
            k: v for k, v in stored[key].items() if k not in own
        }
        # ... but its previous group is the last different group *it* was sent, never one it never had
        assert props.get("Previous RFM group") == previous_of(history[key]), (key, history[key])
        folded += props.get("Previous RFM group") != stored[key].get("Previous RFM group")
    assert folded > 0  # the scenario did fold changes the sink never saw


def sink_history(path):
    """customer_key → the groups a file sink was sent, in order."""
    out: dict[str, list] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.setdefault(record["customer_key"], []).append(record["properties"]["Current RFM group"])
    return out


def previous_of(groups):
    """The last group before the current one that differs from it (None if there is none)."""
    current = groups[-1]
    for group in reversed(groups[:-1]):
        if group is None:  # sent as cleared: the destination starts afresh
            return None
        if group != current:
            return group
    return None


def test_a_folded_change_reaches_the_destination_consistent_with_what_it_had(tmp_path):
    """Champions → Recent → At Risk while the sink was down: the event is Champions → At Risk and
    the profile says Previous RFM group = Champions (what the sink last had), not Recent; a round
    trip sends no event and leaves the previous group the sink already shows."""
    from rfm_sync.config import PropertyNames
    from rfm_sync.delivery import Memory, for_destination

    names = PropertyNames()

    def snap(group, previous, changed, transition=None, event=None):
        props = {names.current_group: group, names.group_changed_at: changed}
        if previous:
            props[names.previous_group] = previous
        return {"properties": props, "transition": transition, "event_id": event, "first_assignment": False}

    had = Memory(group="Champions", previous_group="Loyal", group_changed_at="2026-01-01T00:00:00Z", labels=None)
    # the store saw Champions → Recent (superseded) then Recent → At Risk; fold gave from=Champions
    newest = snap("At Risk", "Recent", "2026-03-01T00:00:00Z", {"from": "Champions", "to": "At Risk"}, "e1")
    sent = for_destination("c1", 7, newest, had, names)
    assert sent["transition"]["from"] == "Champions" and sent["transition"]["to"] == "At Risk"
    assert sent["properties"][names.previous_group] == "Champions"
    assert sent["properties"][names.group_changed_at] == "2026-03-01T00:00:00Z"
    assert sent["event_id"] == "e1"  # the fold's id where it already agrees
    # a round trip Champions → Recent → Champions: no event, the previous group the sink already shows
    back = snap("Champions", "Recent", "2026-03-01T00:00:00Z")
    sent = for_destination("c1", 8, back, had, names)
    assert sent["transition"] is None and sent["event_id"] is None
    assert sent["properties"][names.previous_group] == "Loyal"
    assert sent["properties"][names.group_changed_at] == "2026-01-01T00:00:00Z"
    # one destination was down (memory: Champions), another up (memory: Recent): each gets its own from
    other = Memory(group="Recent", previous_group="Champions", group_changed_at="2026-02-01T00:00:00Z", labels=None)
    sent = for_destination(
        "c1",
        9,
        snap("At Risk", "Recent", "2026-03-01T00:00:00Z", {"from": "Recent", "to": "At Risk"}, "e2"),
        other,
        names,
    )
    assert sent["transition"]["from"] == "Recent" and sent["properties"][names.previous_group] == "Recent"
    again = for_destination("c1", 9, snap("At Risk", "Recent", "2026-03-01T00:00:00Z"), had, names)
    assert again["transition"] == {"from": "Champions", "to": "At Risk", "labels_before": None, "labels_after": None}
    assert (
        again["event_id"]
        == for_destination("c1", 9, snap("At Risk", "Recent", "2026-03-01T00:00:00Z"), had, names)["event_id"]
    )  # deterministic: a resend is one event


def test_acknowledging_a_whole_batch_marks_exactly_that_batch(tmp_path, store_url):
    """The range acknowledgement (every row of a batch accepted) touches only that batch's pending
    rows of that destination: not another destination's, not a superseded one, not rows queued
    after the batch was read."""
    from rfm_sync.store.outbox import enqueue, mark_batch_sent, mark_sending, next_batch
    from rfm_sync.store.schema import outbox

    store = Store.open(store_url)
    with store.begin() as conn:
        enqueue(
            conn,
            [
                {"destination": d, "customer_key": f"c{i}", "run_id": 1, "payload": json.dumps(payload("A"))}
                for i in range(6)
                for d in ("file", "meta")
            ],
        )
        conn.execute(
            outbox.update()
            .where(outbox.c.destination == "file", outbox.c.customer_key == "c2")
            .values(status="superseded")
        )
    batch = next_batch(store, "file", 0, 3)
    assert [r["customer_key"] for r in batch] == ["c0", "c1", "c3"]
    mark_sending(store, "file", 0, batch[-1]["id"])  # handed to the destination
    with store.begin() as conn:  # queued while the batch was being pushed
        enqueue(conn, [{"destination": "file", "customer_key": "c0", "run_id": 2, "payload": json.dumps(payload("B"))}])
    mark_batch_sent(store, "file", 0, batch[-1]["id"])
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.destination, outbox.c.customer_key, outbox.c.run_id, outbox.c.status).order_by(
                outbox.c.id
            )
        ).all()
    sent = {(d, k, r) for d, k, r, s in rows if s == "sent"}
    assert sent == {("file", "c0", 1), ("file", "c1", 1), ("file", "c3", 1)}
    status = {(d, k, r): s for d, k, r, s in rows}
    assert status[("file", "c2", 1)] == "superseded" and status[("file", "c0", 2)] == "pending"
    assert all(s == "pending" for (d, _, _), s in status.items() if d == "meta")
    store.close()


def test_upgrading_a_store_remembers_what_each_destination_was_sent(tmp_path, store_url):
    """Migration 0004 back-fills destination_state: where a destination's newest row for a customer
    was sent, it holds the customer's current state; a customer with a pending row gets no memory."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from rfm_sync.store import MIGRATIONS
    from rfm_sync.store.schema import destination_state, outbox

    write_sample(tmp_path / "orders.csv", end=TODAY, customers=60, seed=5)
    config = parse_config(
        {"store": {"url": store_url}, "sources": [{"type": "csv", "name": "shop", "path": "orders.csv"}]},
        path=tmp_path / "config.toml",
    )
    store = Store.open(config.store.url, config.base_dir)
    sink = FileSink(FileSinkSettings(name="sink", path="p.jsonl"), connector_context(config))
    Pipeline(config, store, sources=build_sources(config), destinations=[sink]).run_cycle(TODAY)
    with store.begin() as conn:
        pending_key = conn.execute(sa.select(outbox.c.customer_key).limit(1)).scalar_one()
        conn.execute(outbox.update().where(outbox.c.customer_key == pending_key).values(status="pending"))
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    store.migrate()
    with store.engine.connect() as conn:
        memory = {r.customer_key: r for r in conn.execute(sa.select(destination_state))}
        state = {r.customer_key: r for r in conn.execute(sa.select(customer_state))}
    assert set(memory) == set(state) - {pending_key} and len(memory) > 10
    sent = read_state(tmp_path / "p.jsonl")
    for key, row in memory.items():
        assert row.destination == "sink" and row.rfm_group == state[key].current_group
        assert row.group_changed_at == sent[key]["RFM group last changed"]
    store.close()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no except Exception, no bookkeeping)."""


class LostAnswerSink(FileSink):
    """Writes every batch, then the process dies before the acknowledgement is recorded."""

    lose = False

    def push(self, updates):
        result = super().push(updates)
        if LostAnswerSink.lose:
            raise Killed()
        return result


@pytest.mark.slow
def test_a_change_delivered_but_never_acknowledged_is_resent_as_it_was_not_folded(tmp_path, store_url):
    """Found by the chaos harness: an event the destination got, whose acknowledgement was lost, was
    folded into a newer snapshot and sent again under a new id (two 'None -> Recent' events, or
    'None -> Champions' after 'None -> Recent'). Now such rows are resent first, unchanged, and the
    newer snapshot is reconciled with what the destination then has."""
    write_sample(tmp_path / "orders.csv", end=TODAY, customers=200, seed=11)
    config = parse_config(
        {"store": {"url": store_url}, "sources": [{"type": "csv", "name": "shop", "path": "orders.csv"}]},
        path=tmp_path / "config.toml",
    )
    store = Store.open(config.store.url, config.base_dir)
    sink = LostAnswerSink(FileSinkSettings(name="sink", path="p.jsonl"), connector_context(config))

    def cycle(day):
        return Pipeline(config, store, sources=build_sources(config), destinations=[sink]).run_cycle(day)

    LostAnswerSink.lose = True
    with pytest.raises(Killed):
        cycle(TODAY - timedelta(days=120))  # the first batch of first assignments delivered, then killed
    LostAnswerSink.lose = False
    moved = cycle(TODAY)  # restarted months later: groups moved on; the delivered rows must not be folded into these
    assert not moved.errors and moved.changed
    seen: dict[str, dict[str, dict]] = {}
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "event_id" in record:
            seen.setdefault(record["customer_key"], {})[record["event_id"]] = record["transition"]
    chains = 0
    for key, events in seen.items():
        at = None
        for transition in events.values():  # distinct events, in the order first sent
            assert transition["from"] == at, (key, list(events.values()))
            at = transition["to"]
        chains += len(events) > 1
    assert chains > 0  # the scenario did move customers after the lost answers
    store.close()


class HalfDoneSink(FileSink):
    """Writes every update (its event arrives), then reports each record failed — as Klaviyo does when a
    bulk import job is cancelled after the events were posted."""

    half = False

    def push(self, updates):
        result = super().push(updates)
        if HalfDoneSink.half:
            return PushResult(accepted=[], failed={u.outbox_id: "bulk import job was cancelled" for u in updates})
        return result


@pytest.mark.slow
def test_a_record_failure_whose_event_arrived_is_resent_as_it_was_not_folded(tmp_path, store_url):
    """Found by the chaos harness: rows a destination reported failed had already delivered their
    event; folded into a newer snapshot they were sent again as 'None -> At Risk' after 'None -> Loyal'."""
    write_sample(tmp_path / "orders.csv", end=TODAY, customers=200, seed=11)
    config = parse_config(
        {"store": {"url": store_url}, "sources": [{"type": "csv", "name": "shop", "path": "orders.csv"}]},
        path=tmp_path / "config.toml",
    )
    store = Store.open(config.store.url, config.base_dir)
    sink = HalfDoneSink(FileSinkSettings(name="sink", path="p.jsonl", batch_size=500), connector_context(config))

    def cycle(day):
        return Pipeline(config, store, sources=build_sources(config), destinations=[sink]).run_cycle(day)

    HalfDoneSink.half = True
    assert sum(cycle(TODAY - timedelta(days=120)).failed.values()) > 0
    HalfDoneSink.half = False
    cycle(TODAY)
    seen: dict[str, dict[str, dict]] = {}
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "event_id" in record:
            seen.setdefault(record["customer_key"], {})[record["event_id"]] = record["transition"]
    moved = 0
    for key, events in seen.items():
        at = None
        for transition in events.values():
            assert transition["from"] == at, (key, list(events.values()))
            at = transition["to"]
        moved += len(events) > 1
    assert moved > 0
    store.close()
