"""The daemon as a subprocess on a loopback port: webhooks, metrics, SIGTERM, two daemons on one store."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from connectors.file.destination import read_state
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store.schema import customer_state, outbox
from tests.configs import config_toml, csv_source, file_sink, table
from tests.daemon_fakes import shopify_order, sign

pytestmark = pytest.mark.slow  # the daemon in subprocesses: HTTP, SIGTERM, two at once

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret-hook-key"
NOW = datetime.now(UTC)


def config_text(port: int, batch: int, delay: float, shutdown: float, process_every: int = 1) -> str:
    return config_toml(
        "sqlite:///state.sqlite",
        table("[schedule]", incremental_every_minutes=60, full_at="", recalibrate_cron=""),
        table(
            "[daemon]",
            http_host="127.0.0.1",
            http_port=port,
            heartbeat_seconds=1,
            lock_expire_seconds=4,
            shutdown_timeout_seconds=shutdown,
        ),
        table("[webhooks]", enabled=True, process_every_seconds=process_every, max_body_bytes=4096),
        table("[logging]", format="json"),
        sources=[csv_source(type="tests.daemon_fakes:FakeWebhookSource", webhook_secret="test-hook")],
        destinations=[file_sink(type="tests.daemon_fakes:SlowFileSink", batch_size=batch, delay_seconds=delay)],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_orders(folder: Path, customers: int) -> None:
    """Customer 1 bought once, 400 days ago; the others buy regularly."""
    lines = ["order_id,customer_id,email,placed_at,amount"]
    old = (NOW - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines.append(f"o-1,1,one@example.com,{old},20.00")
    for c in range(2, customers + 2):
        for k in range(1 + c % 4):
            when = (NOW - timedelta(days=5 + 37 * k + c % 90)).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"o-{c}-{k},{c},c{c}@example.com,{when},{10 + (c * 7 + k) % 90}.00")
    (folder / "orders.csv").write_text("\n".join(lines) + "\n")


def start(
    folder: Path,
    port: int,
    *,
    batch: int = 1000,
    delay: float = 0.0,
    shutdown: float = 5.0,
    config_name: str = "config.toml",
    process_every: int = 1,
) -> subprocess.Popen:
    text = config_text(port=port, batch=batch, delay=delay, shutdown=shutdown, process_every=process_every)
    (folder / config_name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RFM_SYNC_SECRET_TEST_HOOK": SECRET}
    log_path = folder / (config_name + ".log")  # a file, not a pipe: a full pipe would block the daemon
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rfm_sync.cli", "daemon", "-c", str(folder / config_name)],
            env=env,
            stdout=log,
            stderr=log,
            text=True,
        )
    proc.log_path = log_path
    return proc


@pytest.fixture
def spawn():
    """``spawn(folder, port, ...)`` starts a daemon; any still running at teardown is killed."""
    procs: list[subprocess.Popen] = []

    def run(*args, **kw) -> subprocess.Popen:
        procs.append(start(*args, **kw))
        return procs[-1]

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, http.client.HTTPException):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("daemon did not stop in time:\n" + proc.log_path.read_text()[-3000:]) from None
    return proc.returncode, proc.log_path.read_text()


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    status, body = request(port, "GET", "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def group_of(folder: Path, key: str) -> str | None:
    state = read_state(folder / "profiles.jsonl") if (folder / "profiles.jsonl").exists() else {}
    return (state.get(key) or {}).get("Current RFM group")


def post_hook(port: int, body: bytes, *, signature: str | None, event_id: str, topic: str = "orders/create"):
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Shop-Domain": "test.myshopify.com",
    }
    if signature is not None:
        headers["X-Shopify-Hmac-Sha256"] = signature
    return request(port, "POST", "/webhooks/shop", body, headers)


def test_only_the_valid_webhook_changes_the_group_and_is_pushed(tmp_path, spawn):
    write_orders(tmp_path, 40)
    port = free_port()
    proc = spawn(tmp_path, port)
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 30, "the first cycle")
        before_1, before_2 = group_of(tmp_path, "1"), group_of(tmp_path, "2")
        assert before_1 == "Inactive"
        m0 = metrics(port)
        lines_before = (tmp_path / "profiles.jsonl").read_text().count("\n")

        today = NOW.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        valid = shopify_order(9001, 1, "one@example.com", today, "150.00")
        other = shopify_order(9002, 2, "c2@example.com", today, "9999.00")
        tampered = valid.replace(b'"customer": {"id": 1', b'"customer": {"id": 2')
        assert post_hook(port, other, signature=None, event_id="e-unsigned")[0] == 401
        assert post_hook(port, other, signature="bm90IGEgc2lnbmF0dXJl", event_id="e-forged")[0] == 401
        assert post_hook(port, tampered, signature=sign(SECRET, valid), event_id="e-tampered")[0] == 401
        big = b'{"pad": "' + b"x" * 5000 + b'"}'
        assert post_hook(port, big, signature=sign(SECRET, big), event_id="e-big")[0] == 413
        status, answer = post_hook(port, valid, signature=sign(SECRET, valid), event_id="e-1")
        assert (status, json.loads(answer)) == (200, {"status": "queued"})
        # a replay of the same event, even re-signed with another (valid) body, changes nothing
        status, answer = post_hook(port, other, signature=sign(SECRET, other), event_id="e-1")
        assert (status, json.loads(answer)) == (200, {"status": "duplicate"})
        assert request(port, "POST", "/webhooks/nope", valid, {"Content-Length": str(len(valid))})[0] == 404
        assert request(port, "GET", "/admin")[0] == 404

        wait_for(lambda: group_of(tmp_path, "1") not in (None, before_1), 20, "customer 1 to change group")
        assert group_of(tmp_path, "2") == before_2
        new_lines = (tmp_path / "profiles.jsonl").read_text().splitlines()[lines_before:]
        assert [json.loads(line)["customer_key"] for line in new_lines] == ["1"]  # only the affected customer
        assert json.loads(new_lines[0])["transition"] == {"from": "Inactive", "to": group_of(tmp_path, "1")}

        cycles = ("rfm_sync_cycles_total", (("job", "webhooks"), ("status", "ok")))
        m1 = wait_for(
            lambda: (lambda m: m if m.get(cycles, 0) == m0.get(cycles, 0) + 1 else None)(metrics(port)),
            10,
            "the webhook cycle in the metrics",
        )
        hook = lambda outcome: m1.get(("rfm_sync_webhooks_total", (("outcome", outcome), ("source", "shop"))), 0)  # noqa: E731
        assert (hook("queued"), hook("duplicate"), hook("unauthorized"), hook("too_large")) == (1, 1, 3, 1)
        pushed = ("rfm_sync_profiles_pushed_total", (("destination", "sink"),))
        assert m1[pushed] == m0.get(pushed, 0) + 1
        assert m1[("rfm_sync_outbox_rows", (("destination", "sink"), ("status", "sent")))] == lines_before + 1
        assert m1[("rfm_sync_webhook_events", (("status", "done"),))] == 1
        assert sum(v for (name, _), v in m1.items() if name == "rfm_sync_customers") == 41
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "cycle done" and r["job"] == "incremental" for r in logged)
    steps = {r["step"]: r for r in logged if r["msg"] == "cycle step done"}
    assert steps["pull"]["pulled"] > 0 and steps["score+diff"]["scored"] == 41 and "pushed" in steps["push"]
    assert all(isinstance(r["seconds"], float) for r in steps.values())
    assert "one@example.com" not in err and SECRET not in err


def test_a_webhook_that_arrives_while_the_webhook_job_runs_is_processed_at_once(tmp_path, spawn):
    """Two orders 0.03 s apart on a quiet shop: the second is not left for the next interval (30 s)."""
    write_orders(tmp_path, 40)
    port = free_port()
    proc = spawn(tmp_path, port, delay=1.0, process_every=30)  # each push takes a second: the job is busy
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 30, "the first cycle")
        before = {key: group_of(tmp_path, key) for key in ("1", "2")}
        today = NOW.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        first = shopify_order(9101, 1, "one@example.com", today, "150.00")
        second = shopify_order(9102, 2, "c2@example.com", today, "9999.00")
        sent = time.monotonic()
        assert post_hook(port, first, signature=sign(SECRET, first), event_id="pair-1")[0] == 200
        time.sleep(0.03)
        assert post_hook(port, second, signature=sign(SECRET, second), event_id="pair-2")[0] == 200
        wait_for(lambda: all(group_of(tmp_path, k) != before[k] for k in before), 12, "both customers' pushes")
        assert time.monotonic() - sent < 12  # the old code waited process_every_seconds (30 s) for the second
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [r["msg"] for r in logged if r["level"] == "WARNING"] == []  # a refused wake-up is no warning


def test_sigterm_mid_push_exits_0_and_the_outbox_finishes_the_job(tmp_path, spawn, monkeypatch):
    write_orders(tmp_path, 300)
    port = free_port()
    proc = spawn(tmp_path, port, batch=10, delay=0.25, shutdown=5)
    sink = tmp_path / "profiles.jsonl"
    wait_for(lambda: sink.exists() and sink.read_text().count("\n") >= 20, 30, "the push to start")
    began = time.monotonic()
    code, err = stop(proc)
    assert code == 0, err[-3000:]
    assert time.monotonic() - began < 6
    store = Store.open("sqlite:///" + str(tmp_path / "state.sqlite"))
    with store.engine.connect() as conn:
        by_status = dict(conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)).all())
        state = {
            k: json.loads(p)
            for k, p in conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.properties))
        }
    store.close()
    assert by_status.get("pending", 0) > 0  # abandoned at a batch boundary, still queued
    assert by_status["sent"] == sink.read_text().count("\n")  # everything written was acknowledged
    # the next cycle sends the rest: the sink ends with exactly the store's state
    (tmp_path / "config.toml").write_text(config_text(port=port, batch=1000, delay=0, shutdown=5))
    monkeypatch.setenv("RFM_SYNC_SECRET_TEST_HOOK", SECRET)
    config = load_config(tmp_path / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    report = Pipeline(config, store).run_cycle()
    store.close()
    assert report.changed == 0 and report.pushed["sink"] == by_status["pending"]
    assert read_state(sink) == state


def test_a_batch_stuck_past_the_shutdown_timeout_is_abandoned_and_exit_is_still_0(tmp_path, spawn):
    write_orders(tmp_path, 20)
    port = free_port()
    proc = spawn(tmp_path, port, delay=60, shutdown=1)  # the first push hangs for a minute

    def pending() -> int:
        if not (tmp_path / "state.sqlite").exists():
            return 0
        engine = sa.create_engine("sqlite:///" + str(tmp_path / "state.sqlite"), connect_args={"timeout": 30})
        try:
            with engine.connect() as conn:
                # not acknowledged: pending, or "sending" (handed to the sink, which hangs)
                return conn.execute(
                    sa.text("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")
                ).scalar()
        except sa.exc.OperationalError:
            return 0
        finally:
            engine.dispose()

    wait_for(pending, 30, "the diff to fill the outbox")
    began = time.monotonic()
    code, err = stop(proc)
    assert code == 0, err[-2000:]
    assert time.monotonic() - began < 5
    assert "abandoning it" in err
    sink = tmp_path / "profiles.jsonl"
    assert pending() == 21 and (not sink.exists() or not sink.read_text())  # nothing sent, nothing lost


def test_two_daemons_on_one_store_only_one_runs_cycles(tmp_path, spawn):
    write_orders(tmp_path, 20)
    ports = {"a": free_port(), "b": free_port()}
    procs = {"a": spawn(tmp_path, ports["a"])}
    errors: dict[str, str] = {}
    ok_cycles = ("rfm_sync_cycles_total", (("job", "incremental"), ("status", "ok")))
    winner, loser = "a", "b"
    try:
        wait_for(lambda: request(ports["a"], "GET", "/healthz")[0] == 200, 30, "daemon A's first cycle")
        procs["b"] = spawn(tmp_path, ports["b"], config_name="config-b.toml")
        wait_for(lambda: request(ports["b"], "GET", "/healthz")[0] == 503, 30, "daemon B to answer")
        health = json.loads(request(ports[loser], "GET", "/healthz")[1])
        assert health["status"] == "standby" and f":{procs[winner].pid} since" in health["reason"]
        time.sleep(1.0)
        assert not any(name == "rfm_sync_cycles_total" for name, _ in metrics(ports[loser]))
        assert metrics(ports[winner])[ok_cycles] >= 1
        code, errors[winner] = stop(procs[winner])
        assert code == 0
        # the winner released the lock on its way out: the other one takes over and runs a cycle
        wait_for(
            lambda: request(ports[loser], "GET", "/healthz")[0] == 200 and metrics(ports[loser]).get(ok_cycles),
            30,
            "the standby daemon to take over",
        )
    finally:
        for name, proc in procs.items():
            if name not in errors:
                errors[name] = stop(proc)[1]
    logged = [json.loads(line) for line in errors[loser].splitlines() if line.startswith("{")]
    held = [r for r in logged if r["msg"].startswith("another process holds the store lock")]
    assert held and held[0]["holder"].endswith(f":{procs[winner].pid}") and "since" in held[0]
    first_cycle = next(i for i, r in enumerate(logged) if r["msg"] == "cycle done")
    took_over = next(i for i, r in enumerate(logged) if r["msg"].startswith("store lock acquired"))
    assert logged.index(held[0]) < took_over < first_cycle  # no cycle while the other held the lock


def test_reload_keeps_the_old_config_when_invalid_and_applies_a_valid_one(tmp_path, spawn):
    write_orders(tmp_path, 10)
    port = free_port()
    proc = spawn(tmp_path, port)
    body = shopify_order(1, 1, "one@example.com", NOW.isoformat(), "1.00")  # about 250 bytes
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 30, "the first cycle")
        cfg = tmp_path / "config.toml"
        text = cfg.read_text()
        cfg.write_text(text.replace("max_body_bytes = 4096", "max_body_bytes = -1"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert post_hook(port, body, signature=sign(SECRET, body), event_id="r")[0] == 200  # old limit kept
        cfg.write_text(text.replace("max_body_bytes = 4096", "max_body_bytes = 100"))  # no signal: file watch
        wait_for(
            lambda: post_hook(port, body, signature=sign(SECRET, body), event_id="r")[0] == 413, 10, "the new limit"
        )
    finally:
        code, err = stop(proc)
    assert code == 0
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    rejected = [r for r in logged if r["msg"].startswith("config reload rejected")]
    assert rejected and any("webhooks.max_body_bytes" in p for p in rejected[0]["problems"])
    assert rejected[0]["why"] in ("SIGHUP", "config file changed")
    assert any(r["msg"] == "config reloaded" and r["why"] == "config file changed" for r in logged)


def test_poison_webhooks_are_failed_and_the_valid_order_behind_them_is_processed(tmp_path, spawn):
    write_orders(tmp_path, 40)
    port = free_port()
    proc = spawn(tmp_path, port)
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 30, "the first cycle")
        before = group_of(tmp_path, "1")
        today = NOW.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        deep = b"[" * 2000 + b"]" * 2000
        huge = shopify_order(9003, 3, "three@example.com", today, "1e400")
        valid = shopify_order(9001, 1, "one@example.com", today, "150.00")
        for n, body in enumerate([deep, huge, valid]):
            status, answer = post_hook(port, body, signature=sign(SECRET, body), event_id=f"e-{n}")
            assert (status, json.loads(answer)) == (200, {"status": "queued"})
        wait_for(lambda: group_of(tmp_path, "1") not in (None, before), 20, "customer 1 to change group")
        m = wait_for(
            lambda: (lambda m: m if m.get(("rfm_sync_webhook_events", (("status", "failed"),))) == 2 else None)(
                metrics(port)
            ),
            10,
            "two failed events in the metrics",
        )
        assert m[("rfm_sync_webhook_events", (("status", "done"),))] == 1
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failures = sorted(r["error"] for r in logged if r["msg"] == "webhook event failed")
    assert failures == ["RecursionError", "ValueError"]  # the type only: the message may quote the payload
    assert not any(r["msg"] == "job failed" for r in logged)
    assert "three@example.com" not in err and "[[[" not in err
