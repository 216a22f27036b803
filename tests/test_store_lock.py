"""One writer per store: `rfm-sync run` takes the daemon's lock, so two runs never push the same row."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from datetime import date

from rfm_sync.sample import write_sample
from tests.configs import config_toml, file_sink, table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TODAY = date(2026, 6, 30)


def config_text(url: str) -> str:
    return config_toml(
        url, destinations=[file_sink(type="tests.barrier_sink:BarrierFileSink", batch_size=50, barrier_dir="barrier")]
    )


def start_run(folder, name, *extra):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    err = open(folder / f"{name}.err", "w")  # noqa: SIM115 (the child process writes to it; closed after it ends)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rfm_sync.cli",
            "run",
            "--once",
            "-c",
            str(folder / "config.toml"),
            "--as-of",
            TODAY.isoformat(),
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    err.close()
    return proc


def release_when_settled(folder, procs):
    """Create `go` once each process has reached the sink's barrier, exited, or is waiting for the lock."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        arrived = {p.name.split("-", 1)[1] for p in (folder / "barrier").glob("arrived-*")}
        settled = [
            str(p.pid) in arrived or p.poll() is not None or "waiting" in (folder / f"{name}.err").read_text()
            for name, p in procs.items()
        ]
        if all(settled):
            break
        time.sleep(0.05)
    (folder / "barrier" / "go").touch()
    return {name: (p.wait(timeout=120), (folder / f"{name}.err").read_text()) for name, p in procs.items()}


def sink_lines(folder):
    return [json.loads(line) for line in (folder / "profiles.jsonl").read_text().splitlines()]


def setup(folder, url):
    """Orders, a config with its store at ``url`` (the ``store_url`` fixture), the barrier folder."""
    write_sample(folder / "orders.csv", end=TODAY, customers=300, seed=5)
    (folder / "config.toml").write_text(config_text(url=url))
    (folder / "barrier").mkdir()


def test_two_runs_at_once_push_each_profile_once(tmp_path, store_url):
    setup(tmp_path, store_url)
    results = release_when_settled(
        tmp_path, {"a": start_run(tmp_path, "a", "--wait", "120"), "b": start_run(tmp_path, "b", "--wait", "120")}
    )
    assert [code for code, _ in results.values()] == [0, 0], results
    lines = sink_lines(tmp_path)
    per_customer = collections.Counter(line["customer_key"] for line in lines)
    assert lines and set(per_customer.values()) == {1}
    events = collections.Counter(line["event_id"] for line in lines if line.get("event_id"))
    assert events and set(events.values()) == {1}


def test_a_run_next_to_a_running_one_fails_naming_the_holder(tmp_path, store_url):
    setup(tmp_path, store_url)
    results = release_when_settled(tmp_path, {"a": start_run(tmp_path, "a"), "b": start_run(tmp_path, "b")})
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 4], results
    refused = next(err for code, err in results.values() if code == 4)
    assert "locked by" in refused and "since" in refused and "Traceback" not in refused
    lines = sink_lines(tmp_path)
    assert lines and set(collections.Counter(line["customer_key"] for line in lines).values()) == {1}


# ---------------------------------------------------------------- in one process

from datetime import UTC, datetime, timedelta  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from connectors.base import PushResult  # noqa: E402
from rfm_sync.cli import main  # noqa: E402
from rfm_sync.store import Store  # noqa: E402
from rfm_sync.store.lock import FencedDestination, LockLost, StoreLock, StoreLocked, hold  # noqa: E402
from rfm_sync.store.runs import recent_runs  # noqa: E402

pytestmark = pytest.mark.slow  # concurrency: runs at once on one store, in subprocesses


def plain_setup(folder, url):
    write_sample(folder / "orders.csv", end=TODAY, customers=200, seed=3)
    (folder / "config.toml").write_text(config_toml(url, table("[rfm]", scheme="klaviyo")))
    return Store.open(url)


class Recorder:
    name, batch_size = "rec", 10

    def __init__(self):
        self.batches = []

    def push(self, updates):
        self.batches.append(updates)
        return PushResult(accepted=[])


def test_a_pusher_whose_lock_was_taken_over_stops_before_the_next_batch(tmp_path, store_url):
    store = Store.open(store_url)
    with hold(store, "a:1", expire_seconds=60) as held:
        dest = FencedDestination(Recorder(), held.confirm)
        dest.push(["first"])
        later = datetime.now(UTC) + timedelta(seconds=120)  # a's heartbeat is stale by then
        assert StoreLock(store, "b:2", expire_seconds=60, clock=lambda: later).acquire() is None
        with pytest.raises(LockLost, match="b:2"):
            dest.push(["second"])
        assert dest._inner.batches == [["first"]]
    assert StoreLock(store, "x").current().holder == "b:2"  # leaving the block did not release b's lock
    store.close()


def test_hold_waits_then_names_the_holder_and_releases_when_done(tmp_path, store_url):
    store = Store.open(store_url)
    assert StoreLock(store, "other:7").acquire() is None
    told = []
    with (
        pytest.raises(StoreLocked, match="locked by other:7 since") as caught,
        hold(store, "me:1", wait_seconds=0.3, poll_seconds=0.05, on_wait=told.append),
    ):
        pass
    assert [t.holder for t in told] == ["other:7"] and caught.value.waited >= 0.3
    StoreLock(store, "other:7").release()
    with hold(store, "me:1"):
        assert StoreLock(store, "x").current().holder == "me:1"
    assert StoreLock(store, "x").current() is None
    store.close()


def test_hold_heartbeats_while_the_command_works(tmp_path, store_url):
    store = Store.open(store_url)
    with hold(store, "me:1", heartbeat_seconds=0.05):
        first = StoreLock(store, "x").current().heartbeat_at
        deadline = time.monotonic() + 30
        while StoreLock(store, "x").current().heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert StoreLock(store, "x").current().heartbeat_at > first
    store.close()


@pytest.mark.parametrize("command", [["run", "--once"], ["recalibrate"]])
def test_run_and_recalibrate_refuse_a_locked_store_with_exit_4(tmp_path, command, store_url):
    store = plain_setup(tmp_path, store_url)
    assert StoreLock(store, "shop-host:4242").acquire() is None
    result = CliRunner().invoke(main, [*command, "-c", str(tmp_path / "config.toml"), "--as-of", TODAY.isoformat()])
    assert result.exit_code == 4, result.output
    assert "locked by shop-host:4242 since" in result.output
    assert recent_runs(store, 5) == [] and not (tmp_path / "profiles.jsonl").exists()
    StoreLock(store, "shop-host:4242").release()
    result = CliRunner().invoke(main, [*command, "-c", str(tmp_path / "config.toml"), "--as-of", TODAY.isoformat()])
    # recalibrate over a store with no orders yet refuses to freeze (exit 1); either way the lock was had
    assert result.exit_code == (0 if command[0] == "run" else 1) and "locked" not in result.output, result.output
    assert StoreLock(store, "x").current() is None  # released at the end
    store.close()


def test_the_lock_of_a_process_that_is_gone_is_taken_over_at_once(tmp_path, store_url):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Store.open(store_url)
    host = socket.gethostname()
    assert StoreLock(store, f"{host}:{dead.pid}").acquire() is None
    assert StoreLock(store, f"{host}:{os.getpid()}").acquire() is None
    assert StoreLock(store, "x").current().holder == f"{host}:{os.getpid()}"
    # a holder on another host, or one whose process is alive, keeps its lock until it expires
    StoreLock(store, f"{host}:{os.getpid()}").release()
    assert StoreLock(store, f"otherhost:{dead.pid}").acquire() is None
    assert StoreLock(store, f"{host}:{os.getpid()}").acquire().holder == f"otherhost:{dead.pid}"
    store.close()
