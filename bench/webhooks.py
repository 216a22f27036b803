"""Webhook load test: how long from a webhook received to its profile pushed, on loopback, bounded in time.

    python bench/webhooks.py                          # 20 webhooks/s for 20 s on an idle daemon (10,000 customers)
    python bench/webhooks.py --rate 50 --seconds 60
    python bench/webhooks.py --pairs 5                # two orders 30 ms apart on a quiet shop, 5 times
    python bench/webhooks.py --during-full-cycle      # while the daemon's daily cycle rescores 100,000 customers

What runs (every process is started here and stopped here by PID, also on Ctrl-C or an error):

* the Shopify fake of the chaos harness (``python -m tests.chaos.servers --kind shopify``, no faults,
  no orders of its own) on 127.0.0.1, so the daemon's cycles have a shop to pull from;
* one ``rfm-sync daemon`` (``python -m rfm_sync.cli daemon -c CONFIG``) with webhooks on, its listener
  on 127.0.0.1 (a free port, read from its ``listening`` log line) and a file destination;
* in this process: a sender that posts signed Shopify ``orders/create`` webhooks (base64 HMAC-SHA256
  of the body, as Shopify signs them) at ``--rate`` per second for ``--seconds``, each a new order
  of a new customer (so each must end as one pushed profile), from a few threads so that a slow
  answer does not hold back the next send; and a watcher that tails the destination's JSONL file
  every few milliseconds and notes when each of those customers' lines appears.

The store is a copy of ``bench/data/store-small.sqlite`` (10,000 customers) or, with
``--during-full-cycle``, ``store-medium.sqlite`` (100,000 customers, about 1,000,000 orders), made by
:mod:`bench.store_load` (in its own process) and cached. Before the daemon starts, one
``rfm-sync run --as-of yesterday`` scores and pushes the whole shop (not timed), so the daemon's
start-up cycle is a next-day cycle: every customer rescored, a few changed — the daily cycle
(``incremental`` and ``full`` run the same cycle). Without ``--during-full-cycle`` the webhooks
start once that cycle is done (an idle daemon; the next cycle is 15 minutes away); with it they
start as soon as the daemon holds the store lock, so the first ones arrive while the daily cycle
runs, and a cycle is due every minute after it (the shortest interval), though under a steady
stream the webhooks job often holds the cycle lock at that moment and the cycle is skipped (logged
``job skipped``); the table lists the cycles that ran and shows the webhooks sent during one and
those sent outside.

Latency is from just before a webhook is sent to the moment its customer's line is seen in the
destination's file. *Lost*: a webhook answered 200 whose profile did not appear within
``--drain-seconds`` after the last send. The WARNING (and ERROR) lines are the daemon's, from the
first send to the end of the wait.

``--pairs K`` measures the other case the issue names: K times, two orders 30 ms apart on a quiet
shop, then quiet until both are pushed; the table gives each one's latency. The webhook job runs
with ``max_instances=1``: a wake-up that comes while it runs is refused (an APScheduler WARNING),
so the second order can wait ``process_every_seconds``.

Only the CLI and HTTP are used to drive rfm-sync (nothing of ``rfm_sync`` is imported here), so that
this keeps working as modules move. Bounds: ``--rate`` ≤ 200, ``--seconds`` ≤ 600, ``--pairs`` ≤ 20,
every wait has a timeout.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.servers import SHOPIFY_TOKEN  # noqa: E402 - the token the Shopify fake accepts

MAX_RATE, MAX_SECONDS, MAX_PAIRS = 200.0, 600.0, 20
WEBHOOK_SECRET = "bench-webhook-secret"
PAIR_GAP = 0.030  # seconds between the two orders of a pair
EMAIL = re.compile(rb'"email":"wh(\d+)@bench\.example"')  # a bench customer's line in the sink (orjson, no spaces)

CONFIG = """
[store]
url = "sqlite:///{store}"
[shop]
timezone = "UTC"
[rfm]
scheme = "klaviyo"
[[sources]]
type = "shopify"
name = "shop"
shop = "bench-shop"
token_secret = "bench-shopify"
webhook_secret = "bench-webhooks"
base_url = "{shopify}"
bulk_poll_seconds = 0.2
timeout_seconds = 10.0
[[destinations]]
type = "file"
name = "sink"
path = "{sink}"
batch_size = 10000
[schedule]
incremental_every_minutes = {every}
full_at = ""
recalibrate_cron = ""
run_at_start = true
[daemon]
http_host = "127.0.0.1"
http_port = 0
watch_config = false
[webhooks]
enabled = true
process_every_seconds = {process_every}
[logging]
level = "INFO"
format = "json"
"""


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()).decode()


def order_body(n: int) -> bytes:
    """A new order ``n`` of a new customer ``n``, in the REST shape of Shopify's ``orders/create``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        {
            "id": 900_000_000 + n,
            "created_at": now,
            "processed_at": now,
            "updated_at": now,
            "cancelled_at": None,
            "test": False,
            "email": f"wh{n}@bench.example",
            "financial_status": "paid",
            "currency": "USD",  # the bench shop's currency
            "current_total_price_set": {"shop_money": {"amount": "42.00", "currency_code": "USD"}},
            "customer": {"id": 800_000_000 + n, "email": f"wh{n}@bench.example"},
        }
    ).encode()


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# ---------------------------------------------------------------------- what this process watches
class SinkWatcher:
    """Tails the destination's JSONL file; ``seen[n]`` is when customer ``n``'s first line appeared
    (``time.monotonic()``). Only bench customers' lines are looked at (a regular expression over the
    new bytes, no JSON parsing: a cycle may append 100,000 lines at once)."""

    def __init__(self, path: Path, poll: float = 0.005):
        self.path, self.poll = path, poll
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._offset = path.stat().st_size if path.exists() else 0
        self._thread = threading.Thread(target=self._run, name="sink-watcher", daemon=True)

    def start(self) -> SinkWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        rest = b""
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                now = time.monotonic()
                self._offset += len(chunk)
                data, cut = rest + chunk, (rest + chunk).rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]  # a line still being written waits for its end
                for match in EMAIL.finditer(data):
                    self.seen.setdefault(int(match.group(1)), now)
            self._stop.wait(self.poll)


class DaemonLog:
    """The daemon's JSON log lines (its stderr, in a file), read as they come."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._rest = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.records
        self._offset += len(chunk)
        data = self._rest + chunk
        cut = data.rfind(b"\n") + 1
        data, self._rest = data[:cut], data[cut:]
        for line in data.decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line, "level": "?"}  # a traceback line, say
            self.records.append(record if isinstance(record, dict) else {"msg": line, "level": "?"})
        return self.records

    def wait_for(
        self, test: Callable[[dict[str, Any]], bool], timeout: float, alive: Callable[[], bool], what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.read():
                if test(record):
                    return record
            if not alive():
                break
            time.sleep(0.05)
        tail = self.path.read_text(errors="replace")[-3000:] if self.path.exists() else ""
        raise SystemExit(f"the daemon did not log {what} within {timeout:.0f} s; its log ends:\n{tail}")


# ---------------------------------------------------------------------- processes
@dataclass
class Processes:
    """Everything this run starts, to be stopped by PID."""

    started: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
        with log.open("ab") as out:  # a file, not a pipe: a full pipe would block the process
            proc = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, **kwargs)
        self.started.append(proc)
        return proc

    def run(self, args: list[str], log: Path, timeout: float, **kwargs: Any) -> None:
        proc = self.popen(args, log, **kwargs)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise SystemExit(f"{' '.join(args[1:4])}… did not finish in {timeout:.0f} s; see {log}") from None
        if code != 0:
            raise SystemExit(f"{' '.join(args)} failed ({code}):\n{log.read_text(errors='replace')[-3000:]}")

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
        if proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.started):  # the daemon before the fake it pulls from
            try:
                self.stop(proc)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------- the bench
@dataclass
class Sent:
    n: int
    at: float  # time.monotonic() just before the request
    wall: float  # time.time() at the same moment, to compare with the daemon's log
    status: int | None = None  # None: no answer (connection refused, timeout)
    answer: str = ""


class Bench:
    def __init__(self, folder: Path, *, shop_size: str, process_every: int, cycle_every: int):
        self.folder, self.shop_size, self.process_every = folder, shop_size, process_every
        self.cycle_every = cycle_every  # minutes between the daemon's cycles
        self.procs = Processes()
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {
            **os.environ,
            "PYTHONPATH": path,
            "RFM_SYNC_SECRET_BENCH_SHOPIFY": SHOPIFY_TOKEN,
            "RFM_SYNC_SECRET_BENCH_WEBHOOKS": WEBHOOK_SECRET,
        }
        self.config = folder / "config.toml"
        self.sink = folder / "profiles.jsonl"
        self.log = DaemonLog(folder / "daemon.log")
        self.port = 0
        self.sent: list[Sent] = []
        self._next = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- set-up
    def prepare(self) -> None:
        """The fake shop, a copy of the cached bench store, the config, yesterday's cycle (not timed)."""
        py = sys.executable
        say(f"bench store ({self.shop_size}): python -m bench.store_load --size {self.shop_size}")
        out = self.folder / "store_load.log"
        self.procs.run(
            [py, "-m", "bench.store_load", "--size", self.shop_size], out, timeout=1800, cwd=ROOT, env=self.env
        )
        source = Path(out.read_text().strip().splitlines()[-1])
        shutil.copyfile(source, self.folder / "state.sqlite")
        port_file = self.folder / "shopify.port"
        fake = self.procs.popen(
            [
                py,
                "-m",
                "tests.chaos.servers",
                "--kind",
                "shopify",
                "--rate",
                "0",
                "--customers",
                "0",
                "--port-file",
                str(port_file),
            ],
            self.folder / "shopify.log",
            cwd=ROOT,
            env=self.env,
        )
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if fake.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "the Shopify fake did not start:\n"
                    + (self.folder / "shopify.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)
        self.config.write_text(
            CONFIG.format(
                store=self.folder / "state.sqlite",
                sink=self.sink,
                shopify=f"http://127.0.0.1:{int(port_file.read_text())}",
                process_every=self.process_every,
                every=self.cycle_every,
            )
        )
        yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        say(f"yesterday's cycle (not timed): rfm-sync run --as-of {yesterday}")
        started = time.monotonic()
        self.procs.run(
            [py, "-m", "rfm_sync.cli", "run", "-c", str(self.config), "--as-of", yesterday],
            self.folder / "run.log",
            timeout=1800,
            cwd=self.folder,
            env=self.env,
        )
        say(f"  done in {time.monotonic() - started:.1f} s")

    def start_daemon(self, *, wait_for_cycle: bool) -> None:
        daemon = self.procs.popen(
            [sys.executable, "-m", "rfm_sync.cli", "daemon", "-c", str(self.config)],
            self.log.path,
            cwd=self.folder,
            env=self.env,
        )

        def running() -> bool:
            return daemon.poll() is None

        listening = self.log.wait_for(lambda r: r.get("msg") == "listening", 120, running, "'listening'")
        self.port = int(listening["port"])
        self.log.wait_for(
            lambda r: r.get("msg") == "store lock acquired; running cycles", 120, running, "'store lock acquired'"
        )
        if wait_for_cycle:
            say("waiting for the daemon's start-up (daily) cycle to end")
            self.log.wait_for(lambda r: r.get("msg") == "cycle done", 1800, running, "'cycle done'")

    # ---------------------------------------------------------------- sending
    def send_one(self) -> Sent:
        with self._lock:
            n = self._next
            self._next += 1
        body = order_body(n)
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": sign(body),
            "X-Shopify-Event-Id": f"bench-{os.getpid()}-{n}",
            "X-Shopify-Shop-Domain": "bench-shop.myshopify.com",
        }
        item = Sent(n=n, at=time.monotonic(), wall=time.time())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/webhooks/shop", body=body, headers=headers)
            response = conn.getresponse()
            item.status, item.answer = response.status, response.read().decode(errors="replace")[:80]
        except OSError as exc:
            item.answer = type(exc).__name__
        finally:
            conn.close()
        with self._lock:
            self.sent.append(item)
        return item

    def send_at_rate(self, rate: float, seconds: float) -> float:
        """``rate`` webhooks a second for ``seconds``; returns how far the sends fell behind, at most."""
        count = max(1, round(rate * seconds))
        behind = 0.0
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="send") as pool:
            start = time.monotonic()
            for i in range(count):
                due = start + i / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                behind = max(behind, time.monotonic() - due)
                pool.submit(self.send_one)
        return behind

    def drain(self, watcher: SinkWatcher, seconds: float) -> None:
        """Wait (at most ``seconds``) until every accepted webhook's profile is pushed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(s.n in watcher.seen for s in self.accepted()):
                return
            time.sleep(0.05)

    def accepted(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.status == 200 and '"queued"' in s.answer]

    def latencies(self, watcher: SinkWatcher, among: list[Sent] | None = None) -> list[float]:
        return [watcher.seen[s.n] - s.at for s in (self.accepted() if among is None else among) if s.n in watcher.seen]

    def write_sent(self, watcher: SinkWatcher, origin: float) -> None:
        """``sent.csv`` in the work folder: each webhook's send time (seconds from ``origin``), answer and latency."""
        with (self.folder / "sent.csv").open("w") as out:
            out.write("n,sent_at,status,latency\n")
            for s in self.sent:
                seen = watcher.seen.get(s.n)
                out.write(
                    f"{s.n},{s.at - origin:.4f},{s.status or s.answer},{'' if seen is None else f'{seen - s.at:.4f}'}\n"
                )

    def warnings(self, since: int) -> Counter:
        """The daemon's WARNING and ERROR lines after record ``since``, by level and message (digits as #)."""
        out: Counter = Counter()
        for record in self.log.read()[since:]:
            if record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                message = re.sub(r' \(trigger: [^"]*\)', "", str(record.get("msg")))  # APScheduler's: no times
                out[(record["level"], message[:110])] += 1
        return out

    def stop(self) -> None:
        self.procs.stop_all()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


HEADER = f"  {'':22} {'sent':>7} {'pushed':>7} {'lost':>5} {'p50':>7} {'p99':>7} {'max':>7}"


def table_row(label: str, sent: int, values: list[float]) -> str:
    """One row: webhooks sent (answered 200), pushed, lost, and the latency of those pushed."""
    counts = f"  {label:22} {sent:7,} {len(values):7,} {sent - len(values):5,}"
    if not values:
        return counts + f" {'–':>7} {'–':>7} {'–':>7}"
    return counts + f" {percentile(values, 0.5):6.2f}s {percentile(values, 0.99):6.2f}s {max(values):6.2f}s"


def warning_lines(counts: Counter) -> list[str]:
    total = sum(n for (level, _), n in counts.items() if level == "WARNING")
    errors = sum(n for (level, _), n in counts.items() if level != "WARNING")
    lines = [f"daemon log during the run: {total:,} WARNING line(s), {errors:,} ERROR line(s)"]
    lines += [f"  {n:6,} × {level} {message}" for (level, message), n in counts.most_common(4)]
    return lines


# ---------------------------------------------------------------------- the two modes
def load_test(bench: Bench, args: argparse.Namespace) -> list[str]:
    bench.start_daemon(wait_for_cycle=not args.during_full_cycle)
    watcher = SinkWatcher(bench.sink).start()
    since = len(bench.log.read())
    say(f"sending {args.rate:g} webhooks/s for {args.seconds:g} s to 127.0.0.1:{bench.port}")
    sending = time.monotonic()
    sending_wall = time.time()
    behind = bench.send_at_rate(args.rate, args.seconds)
    send_seconds = time.monotonic() - sending
    say(f"waiting at most {args.drain_seconds:g} s for the last pushes")
    bench.drain(watcher, args.drain_seconds)
    watcher.stop()
    accepted, latencies = bench.accepted(), bench.latencies(watcher)
    ok = {s.n for s in accepted}
    refused = [s for s in bench.sent if s.n not in ok]
    lines = [
        f"webhooks → profile pushed: {args.rate:g}/s for {args.seconds:g} s ({len(bench.sent):,} sent in "
        f"{send_seconds:.1f} s, at most {behind:.2f} s behind schedule), {bench.shop_size} shop, "
        f"process_every_seconds = {bench.process_every}, "
        + ("while daily cycles run (one due a minute)" if args.during_full_cycle else "idle daemon"),
        HEADER,
        table_row("all", len(accepted), latencies),
    ]
    if args.during_full_cycle:
        lines += cycle_lines(bench, watcher, accepted, sending_wall)
    slowest = sorted((watcher.seen[s.n] - s.at, s.at - sending) for s in accepted if s.n in watcher.seen)[-3:]
    if slowest:
        lines.append(
            "  slowest: " + ", ".join(f"{late:.2f} s (sent at {when:+.2f} s)" for late, when in reversed(slowest))
        )
    bench.write_sent(watcher, sending)
    lines.append(
        f"  (lost: answered 200, not pushed {args.drain_seconds:g} s after the last send; not answered 200: "
        f"{len(refused):,}"
        + (f", {Counter(s.status or s.answer for s in refused).most_common(3)}" if refused else "")
        + ")"
    )
    return lines + warning_lines(bench.warnings(since))


def cycle_lines(bench: Bench, watcher: SinkWatcher, accepted: list[Sent], sending_wall: float) -> list[str]:
    """The cycles that ran while webhooks were sent (from the daemon's ``cycle done`` lines), and the
    latency of the webhooks sent during one of them."""
    windows = []
    for record in bench.log.read():
        if record.get("msg") == "cycle done" and isinstance(record.get("seconds"), (int, float)):
            end = datetime.fromisoformat(record["ts"]).timestamp()
            windows.append((end - float(record["seconds"]), end, record))
    during = [s for s in accepted if any(a <= s.wall <= b for a, b, _ in windows)]
    inside = {s.n for s in during}
    outside = [s for s in accepted if s.n not in inside]
    lines = [
        table_row("sent during a cycle", len(during), bench.latencies(watcher, during)),
        table_row("sent outside a cycle", len(outside), bench.latencies(watcher, outside)),
    ]
    for a, b, r in windows:
        if b >= sending_wall:
            lines.append(
                f"  the {r.get('job')} cycle ({r.get('scored', 0):,} customers scored, "
                f"{r.get('changed', 0):,} changed): {b - a:.1f} s, from {a - sending_wall:+.1f} s to "
                f"{b - sending_wall:+.1f} s of the sending"
            )
    if not any(b >= sending_wall for _, b, _ in windows):
        lines.append("  (no cycle ended after the first send: the daily cycle was over before the webhooks began)")
    return lines


def pairs_test(bench: Bench, args: argparse.Namespace) -> list[str]:
    bench.start_daemon(wait_for_cycle=True)
    watcher = SinkWatcher(bench.sink).start()
    since = len(bench.log.read())
    wait = bench.process_every + 10.0
    say(
        f"{args.pairs} pair(s) of webhooks {PAIR_GAP * 1000:.0f} ms apart, each then quiet until pushed "
        f"(at most {wait:g} s) and 2 s more"
    )
    time.sleep(2.0)  # quiet before the first pair too
    rows = []
    for _ in range(args.pairs):
        first = bench.send_one()
        pause = first.at + PAIR_GAP - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        second = bench.send_one()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not (first.n in watcher.seen and second.n in watcher.seen):
            time.sleep(0.01)
        rows.append((first, second, watcher.seen.get(first.n), watcher.seen.get(second.n)))
        time.sleep(2.0)
    watcher.stop()
    lines = [
        (
            f"pairs: two new orders {PAIR_GAP * 1000:.0f} ms apart on a quiet shop ({bench.shop_size} shop, "
            f"process_every_seconds = {bench.process_every}), {args.pairs} time(s)"
        ),
        f"  {'pair':>4} {'apart':>7} {'first':>8} {'second':>8}",
    ]
    seconds = []

    def shown(item: Sent, at: float | None) -> str:  # its latency, "lost", or the answer it got instead of 200
        if at is not None:
            return f"{at - item.at:7.2f}s"
        return "    lost" if item.status == 200 else f"{item.status or item.answer:>8}"

    for i, (first, second, a, b) in enumerate(rows, 1):
        lines.append(f"  {i:4} {(second.at - first.at) * 1000:5.0f}ms {shown(first, a)} {shown(second, b)}")
        if b is not None:
            seconds.append(b - second.at)
    if seconds:
        lines.append(
            f"  second of a pair: median {percentile(seconds, 0.5):.2f} s, max {max(seconds):.2f} s; "
            f"{sum(s > 2.0 for s in seconds)} of {len(rows)} over 2 s"
        )
    return lines + warning_lines(bench.warnings(since))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help=f"webhooks per second (at most {MAX_RATE:g})")
    parser.add_argument("--seconds", type=float, default=20.0, help=f"how long to send (at most {MAX_SECONDS:g})")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        help="after the last send, wait at most this long for the last pushes (at most 600)",
    )
    parser.add_argument(
        "--during-full-cycle",
        action="store_true",
        help="a 100,000-customer shop; the webhooks start with the daemon's daily cycle",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        metavar="K",
        help=f"instead: K pairs of webhooks {PAIR_GAP * 1000:.0f} ms apart, quiet in between (at most {MAX_PAIRS})",
    )
    parser.add_argument(
        "--shop",
        choices=["small", "medium", "large"],
        default=None,
        help="the bench store: small (10,000 customers; the default), medium (100,000; the "
        "default with --during-full-cycle) or large (1,000,000: minutes to build, and "
        "yesterday's cycle alone takes about 100 s and 3.5 GB)",
    )
    parser.add_argument(
        "--process-every", type=int, default=10, help="[webhooks] process_every_seconds (the daemon's default: 10)"
    )
    parser.add_argument("--dir", default=None, help="work folder, kept (default: a temporary one, removed)")
    args = parser.parse_args()
    if not (
        0 < args.rate <= MAX_RATE
        and 0 < args.seconds <= MAX_SECONDS
        and 0 <= args.pairs <= MAX_PAIRS
        and 0 <= args.drain_seconds <= 600
        and 0 < args.process_every <= 600
    ):
        parser.error(
            f"bounds: 0 < --rate ≤ {MAX_RATE:g}, 0 < --seconds ≤ {MAX_SECONDS:g}, --pairs ≤ {MAX_PAIRS}, "
            "--drain-seconds ≤ 600, 0 < --process-every ≤ 600"
        )
    if args.pairs and args.during_full_cycle:
        parser.error("--pairs measures a quiet shop: not with --during-full-cycle")
    shop_size = args.shop or ("medium" if args.during_full_cycle else "small")
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rfm-whbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    # with --during-full-cycle a cycle due every minute (the shortest interval), so a long run may meet several
    bench = Bench(
        folder, shop_size=shop_size, process_every=args.process_every, cycle_every=1 if args.during_full_cycle else 15
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # like Ctrl-C: the finally below stops what we started
    try:
        bench.prepare()
        lines = pairs_test(bench, args) if args.pairs else load_test(bench, args)
    finally:
        bench.stop()
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n".join(lines))
    if args.dir:
        print(f"(config, logs, store and sink in {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
