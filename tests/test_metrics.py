"""Prometheus metrics parse with the official text parser and move with what happens."""

from __future__ import annotations

from datetime import date

from prometheus_client.parser import text_string_to_metric_families

from connectors.http import HttpClient
from rfm_sync.daemon.metrics import Metrics
from rfm_sync.pipeline import CycleReport
from rfm_sync.store import Store, outbox


def samples(metrics: Metrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def report(**kw) -> CycleReport:
    r = CycleReport(run_id=1, as_of=date(2026, 1, 1))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_counters_move_with_each_cycle():
    m = Metrics()
    r = report(
        pulled={"shop": 120},
        pushed={"klaviyo": 40},
        failed={"klaviyo": 2},
        errors={"meta": "HTTP 500"},
        durations={"pull": 1.5, "push": 0.2},
        quarantined=[{"source": "shop"}],
    )
    m.observe_cycle("incremental", r, 2.0, "partial")
    first = samples(m)
    assert first[("rfm_sync_orders_pulled_total", (("source", "shop"),))] == 120
    assert first[("rfm_sync_profiles_pushed_total", (("destination", "klaviyo"),))] == 40
    assert first[("rfm_sync_profiles_failed_total", (("destination", "klaviyo"),))] == 2
    assert first[("rfm_sync_api_errors_total", (("connector", "meta"),))] == 1
    assert first[("rfm_sync_rows_quarantined_total", (("source", "shop"),))] == 1
    assert first[("rfm_sync_cycles_total", (("job", "incremental"), ("status", "partial")))] == 1
    assert first[("rfm_sync_cycle_duration_seconds_count", (("job", "incremental"),))] == 1
    assert first[("rfm_sync_step_duration_seconds_sum", (("step", "pull"),))] == 1.5
    m.observe_cycle("incremental", report(pulled={"shop": 5}, pushed={"klaviyo": 3}), 1.0, "ok")
    second = samples(m)
    assert second[("rfm_sync_orders_pulled_total", (("source", "shop"),))] == 125
    assert second[("rfm_sync_profiles_pushed_total", (("destination", "klaviyo"),))] == 43
    assert second[("rfm_sync_cycles_total", (("job", "incremental"), ("status", "ok")))] == 1


def test_group_gauges_replace_the_previous_counts():
    m = Metrics()
    m.set_groups({"Champions": 3, "Inactive": 9})
    m.set_groups({"Champions": 4})
    got = {k: v for k, v in samples(m).items() if k[0] == "rfm_sync_customers"}
    assert got == {("rfm_sync_customers", (("group", "Champions"),)): 4}


def test_retries_are_counted_once_per_retry():
    class Connector:
        name = "klaviyo"

        def __init__(self):
            self.client = HttpClient(connector="klaviyo", base_url="https://a.example")

    m, c = Metrics(), Connector()
    c.client.retries = 3
    m.observe_retries([c])
    m.observe_retries([c])
    c.client.retries = 5
    m.observe_retries([c])
    assert samples(m)[("rfm_sync_api_retries_total", (("connector", "klaviyo"),))] == 5


def test_outbox_backlog_is_read_at_scrape_time(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 's.sqlite'}")
    m = Metrics()
    m.store = store
    assert not any(k[0] == "rfm_sync_outbox_rows" for k in samples(m))
    with store.begin() as conn:
        outbox.enqueue(
            conn, [{"destination": "sink", "customer_key": str(i), "run_id": 1, "payload": "{}"} for i in range(3)]
        )
    assert samples(m)[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "pending")))] == 3
    outbox.mark_sent(store, [1])
    got = samples(m)
    assert got[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "pending")))] == 2
    assert got[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "sent")))] == 1
    store.close()


def test_every_outbox_and_webhook_status_is_exported_with_zero_for_a_baseline(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 's.sqlite'}")
    m = Metrics()
    m.store, m.destinations = store, ["sink", "klaviyo"]
    statuses = ("pending", "sending", "sent", "superseded", "dead")
    got = samples(m)
    for dest in ("sink", "klaviyo"):  # an empty outbox: every series is there, at 0
        for status in statuses:
            assert got[("rfm_sync_outbox_rows", (("destination", dest), ("status", status)))] == 0
    for status in ("pending", "done", "failed", "dropped"):
        assert got[("rfm_sync_webhook_events", (("status", status),))] == 0
    with store.begin() as conn:
        outbox.enqueue(conn, [{"destination": "sink", "customer_key": "c1", "run_id": 1, "payload": "{}"}])
    outbox.mark_sent(store, [1])
    got = samples(m)
    assert got[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "sent")))] == 1
    assert got[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "pending")))] == 0  # back to 0, not gone
    assert got[("rfm_sync_outbox_rows", (("destination", "klaviyo"), ("status", "dead")))] == 0
    store.close()
