"""A graceful stop is not an error (rfm_sync/stop.py): SIGTERM in the middle of a push, in-process (the
daemon's own signal handlers, its jobs run by hand in the main thread, where Python runs signal
handlers), and a stop in the middle of a pull."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connectors.base import Order, Page
from connectors.file.destination import FileSink, FileSinkSettings, read_state
from rfm_sync.config import load_config
from rfm_sync.daemon.runner import Daemon, StoppableSource
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store import orders as order_store
from rfm_sync.store.runs import recent_runs
from rfm_sync.store.schema import customer_state, outbox, runs
from tests.configs import config_toml, file_sink, table

SECTIONS = (
    table("[daemon]", http_enabled=False),
    table("[logging]", format="json"),
    table("[properties]", include_metrics=True),
)  # a new order changes every customer's "RFM orders"
CONFIG = config_toml(
    "sqlite:///s.sqlite", *SECTIONS, destinations=[file_sink(type="tests.test_daemon_stop:SigtermSink", batch_size=10)]
)


class SigtermSinkSettings(FileSinkSettings):
    type: str = "tests.test_daemon_stop:SigtermSink"
    trigger: str = "sigterm-after-next-batch"


class SigtermSink(FileSink):
    """A file sink that, once the file ``trigger`` exists, removes it and sends this process SIGTERM
    right after a batch it accepted: a stop that arrives in the middle of a push."""

    Settings = SigtermSinkSettings

    def __init__(self, settings: SigtermSinkSettings, context):
        super().__init__(settings, context)
        self.trigger = context.resolve_path(settings.trigger)

    def push(self, updates):
        result = super().push(updates)
        if self.trigger.exists():
            self.trigger.unlink()
            os.kill(os.getpid(), signal.SIGTERM)
        return result


@pytest.fixture(autouse=True)
def restore_logging_and_signals():
    """The daemon installs its own log handler and signal handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def write_orders(path, customers: int, day: str) -> None:
    rows = ["order_id,customer_id,placed_at,amount"]
    rows += [f"a{i},c{i},2026-0{1 + i % 6}-0{1 + i % 9},{10 + i}" for i in range(customers)]
    if day:  # everyone orders again: every customer's recency and frequency change
        rows += [f"b{i},c{i},{day},{20 + i}" for i in range(customers)]
    path.write_text("\n".join(rows) + "\n")


def started(config_path) -> Daemon:
    daemon = Daemon(config_path, holder="test:1")
    daemon.start()
    daemon.scheduler.pause()  # the test runs the jobs by hand
    daemon.install_signals()
    daemon._hold_lock()
    assert daemon.has_lock
    return daemon


def logged(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


@pytest.mark.slow  # three cycles and two daemon starts
def test_sigterm_mid_push_is_a_stop_not_a_failure_and_the_next_cycle_sends_the_rest_once(
    tmp_path, write_config, capsys
):
    config_path = write_config(CONFIG)
    write_orders(tmp_path / "orders.csv", 45, day="")
    sink = tmp_path / "profiles.jsonl"
    daemon = started(config_path)
    try:
        daemon._jobs().incremental()  # a first, whole cycle: the daemon is healthy
        ready, body = daemon.health.check()
        assert ready and body["status"] == "ok"
        first = sink.read_text().count("\n")
        assert first == 45
        capsys.readouterr()

        write_orders(tmp_path / "orders.csv", 45, day="2026-06-20")
        (tmp_path / "sigterm-after-next-batch").touch()
        daemon._jobs().incremental()  # SIGTERM after its first batch of 10
        lines = logged(capsys)
        assert daemon.stop_event.is_set()  # the signal did reach the daemon
        assert [r for r in lines if r["level"] in ("WARNING", "ERROR", "CRITICAL")] == []
        done = next(r for r in lines if r["msg"] == "cycle done")
        assert done["status"] == "stopped" and done["errors"] == {}
        ready, body = daemon.health.check()
        assert ready and body["status"] == "ok" and body["last_failure"] is None
        cycles = {
            (s.labels["job"], s.labels["status"]): s.value
            for m in daemon.metrics.registry.collect()
            if m.name == "rfm_sync_cycles"
            for s in m.samples
            if s.name.endswith("_total")
        }
        assert cycles == {("incremental", "ok"): 1, ("incremental", "stopped"): 1}
        errors = [s for m in daemon.metrics.registry.collect() if m.name == "rfm_sync_api_errors" for s in m.samples]
        assert errors == []
        with daemon.store.engine.connect() as conn:
            run = conn.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(1)).mappings().one()
            by_status = dict(conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)).all())
        assert run["status"] == "stopped" and run["error"] is None and run["finished_at"] is not None
        assert json.loads(run["stats"])["pushed"] == {"sink": 10}  # what went before the stop is counted
        assert by_status == {"sent": 45 + 10, "pending": 35}  # the rest waits, none left "sending"
        assert sink.read_text().count("\n") == first + 10
    finally:
        daemon.shutdown()

    daemon = started(config_path)  # the next start: its cycle sends the rest, each profile once
    try:
        assert daemon.health.check()[0]  # the stopped run did not hide the last good one
        capsys.readouterr()
        daemon._jobs().incremental()
        assert [r for r in logged(capsys) if r["level"] in ("WARNING", "ERROR", "CRITICAL")] == []
        assert recent_runs(daemon.store, 1)[0]["status"] == "ok"
        with daemon.store.engine.connect() as conn:
            by_status = dict(conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)).all())
            state = {
                k: json.loads(p)
                for k, p in conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.properties))
            }
    finally:
        daemon.shutdown()
    assert by_status == {"sent": 45 + 45}
    sent = [json.loads(line)["customer_key"] for line in sink.read_text().splitlines()]
    assert len(sent) == 90 and set(Counter(sent).values()) == {2}  # once per cycle that changed them
    assert read_state(sink) == state


class TwoPages:
    """A source of two pages of orders; the daemon's stop is asked for while the first is stored."""

    name = "pages"

    def __init__(self, stop):
        self.stop = stop

    def pull(self, context):
        placed = datetime(2026, 5, 1, tzinfo=UTC)
        for page in (1, 2):
            yield Page(
                [
                    Order(
                        source=self.name,
                        order_id=f"{page}-{i}",
                        customer_id=f"c{page}-{i}",
                        placed_at=placed,
                        amount=Decimal("10"),
                    )
                    for i in range(5)
                ],
                cursor=str(page),
            )
            self.stop.set()  # SIGTERM arrives after the first page was handed over


def test_a_stop_during_the_pull_keeps_the_stored_pages_and_ends_the_cycle_before_its_diff(
    tmp_path, write_config, caplog
):
    config = load_config(write_config(config_toml("sqlite:///s.sqlite", *SECTIONS)))
    store = Store.open(config.store.url, config.base_dir)
    stop = threading.Event()
    try:
        pipeline = Pipeline(config, store, sources=[StoppableSource(TwoPages(stop), stop)])
        with caplog.at_level(logging.INFO):
            report = pipeline.run_cycle()
        assert report.status == "stopped" and report.errors == {} and report.pulled == {"pages": 5}
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        run = recent_runs(store, 1)[0]
        assert run["status"] == "stopped" and run["error"] is None and run["group_counts"] is None
        assert order_store.get_cursor(store, "pages") == "1"  # the first page and its cursor are committed
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0  # no diff ran
        stop.clear()
        report = Pipeline(config, store, sources=[StoppableSource(TwoPages(threading.Event()), stop)]).run_cycle()
        assert report.status == "ok" and report.scored == 10 and report.pushed == {"sink": 10}
    finally:
        store.close()
