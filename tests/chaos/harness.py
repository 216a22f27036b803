"""The chaos harness: fakes in their own processes, ``rfm-sync daemon`` SIGKILLed at seeded instants, an oracle.

One :class:`ChaosRun` (everything it starts, it stops, by PID):

1. starts the Shopify, BigCommerce, Klaviyo and Meta fakes (:mod:`tests.chaos.servers`), each a
   process serving 127.0.0.1 with its own seeded fault plan;
2. writes a config pointing rfm-sync at them (two sources merged by email, short timeouts, webhooks
   on, scheme ``klaviyo``);
3. loops: start ``rfm-sync daemon``; once it holds the store lock, wait a seeded random time while
   both shops' orders are created, edited, refunded and cancelled (BigCommerce: also archived) and
   the changes are sent to the daemon as webhooks (Shopify's signed bodies; BigCommerce's
   ``store/order/*`` callbacks, which make the daemon fetch the order), some twice; then
   ``SIGKILL`` it. A share of the rounds (``webhook_share``) aims at webhook handling instead: it waits
   for the first cycle to end, then sends the changes and kills soon after. The phase the daemon was
   in (pull, score+diff, push, webhooks, idle) is read from its log and, for a daemon whose log says
   it is between cycles, from the store and the fakes (see :meth:`ChaosRun.phase`). Until both the
   kill and the fault targets are met;
4. turns every fault off, lets one more daemon process the webhook events still pending (then stops
   it with SIGTERM), runs a clean ``rfm-sync run --once``, recalibrates (``rfm-sync recalibrate``: the
   cut points of the final data, so the oracle's comparison is well defined) and runs one more;
5. asks the oracle (:mod:`tests.chaos.oracle`) and checks the store with ``PRAGMA integrity_check``.

``python -m tests.chaos.harness --scale smoke|ci|full --seed N`` runs it from the command line and prints
the figures; ``tests/chaos/test_chaos.py`` runs it under pytest.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos import oracle
from tests.chaos.servers import AUDIENCES, BIGCOMMERCE_STORE, BIGCOMMERCE_TOKEN, KLAVIYO_KEY, META_TOKEN, SHOPIFY_TOKEN

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "chaos-webhook-secret"
BIGCOMMERCE_HOOK_SECRET = "chaos-bigcommerce-hook-header-value"
KINDS = ("shopify", "klaviyo", "meta", "bigcommerce")  # the order sets each fake's seed
SHOPS = ("shopify", "bigcommerce")


@dataclass(frozen=True)
class Scale:
    customers: int  # Shopify's; BigCommerce has bc_customers, a quarter of them Shopify's too
    bc_customers: int
    kills: int  # at least this many SIGKILLs ...
    faults: int  # ... and at least this many injected faults
    rate: float  # share of vendor requests that get a fault
    max_rounds: int  # hard bound on daemon starts
    mutations: int  # orders changed per round
    klaviyo_batch: int
    slow_codes: bool  # Meta's 60-second throttling codes too
    max_delay: float  # a daemon lives at most this long (or 1.3 cycles) after taking the lock
    webhook_wait: float  # a webhook round waits at most this long for the daemon to finish a cycle
    webhook_share: float = 0.3  # share of rounds (from the third on) that aim the kill at webhook handling


SCALES = {
    "smoke": Scale(
        customers=100,
        bc_customers=50,
        kills=3,
        faults=20,
        rate=0.2,
        max_rounds=6,
        mutations=4,
        klaviyo_batch=50,
        slow_codes=False,
        max_delay=3.0,
        webhook_wait=60.0,
        webhook_share=0.5,
    ),
    "ci": Scale(
        customers=250,
        bc_customers=100,
        kills=12,
        faults=220,
        rate=0.3,
        max_rounds=24,
        mutations=8,
        klaviyo_batch=100,
        slow_codes=False,
        max_delay=6.0,
        webhook_wait=150.0,
    ),
    "full": Scale(
        customers=5000,
        bc_customers=1000,
        kills=60,
        faults=1200,
        rate=0.12,
        max_rounds=150,
        mutations=25,
        klaviyo_batch=500,
        slow_codes=True,
        max_delay=15.0,
        webhook_wait=300.0,
    ),
}

CONFIG = """
[store]
url = "sqlite:///{store}"
[shop]
timezone = "UTC"
[identity]
merge_by = "email"
[rfm]
scheme = "klaviyo"
recalibrate_days = 3650
[push]
max_attempts = 100000
[[sources]]
type = "shopify"
name = "shop"
shop = "chaos-shop"
token_secret = "chaos-shopify"
webhook_secret = "chaos-webhooks"
base_url = "{shopify}"
page_size = 100
overlap_minutes = 1
bulk_poll_seconds = 0.2
timeout_seconds = 1.0
[[sources]]
type = "bigcommerce"
name = "bc"
store_hash = "{bc_store}"
token_secret = "chaos-bigcommerce"
webhook_secret = "chaos-bc-webhooks"
base_url = "{bigcommerce}"
page_size = 50
overlap_minutes = 1
timeout_seconds = 1.0
[[destinations]]
type = "klaviyo"
name = "klaviyo"
api_key_secret = "chaos-klaviyo"
base_url = "{klaviyo}"
batch_size = {klaviyo_batch}
bulk_min_profiles = 20
events = true
first_assignment_events = "send"
poll_interval_s = 0.2
job_timeout_s = 20
timeout_s = 1.0
[[destinations]]
type = "meta_audiences"
name = "meta"
access_token_secret = "chaos-meta"
base_url = "{meta}"
batch_size = 1000
send_phone = false
timeout_s = 1.0
{audiences}
[schedule]
incremental_every_minutes = 1
full_at = ""
recalibrate_cron = ""
run_at_start = true
[daemon]
http_host = "127.0.0.1"
http_port = {port}
heartbeat_seconds = 1
lock_expire_seconds = 2
shutdown_timeout_seconds = 5
watch_config = false
[webhooks]
enabled = true
process_every_seconds = 1
[logging]
level = "INFO"
format = "json"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()).decode()


@dataclass
class Figures:
    seed: int = 0
    scale: str = ""
    kills: int = 0
    kills_by_phase: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    faults_by_vendor: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)  # "shopify create": n, ...
    requests: Counter = field(default_factory=Counter)
    webhooks_by_shop: Counter = field(default_factory=Counter)
    webhooks_sent: int = 0
    webhooks_replayed: int = 0
    webhooks_refused: int = 0
    webhook_events_left: int = 0  # pending when the chaos ended (then processed by ChaosRun.drain)
    webhook_events: Counter = field(default_factory=Counter)  # in the store at the end, by status
    customers: int = 0
    events: int = 0
    mismatches: int = 0
    mismatch_kinds: dict = field(default_factory=dict)
    duplicate_events: int = 0
    changes_seen_without_event: int = 0
    integrity: str = ""
    history_disagreements: int = 0  # customers whose newest group_history row is not their state's group
    final_exit: int | None = None
    cycle_failures: Counter = field(default_factory=Counter)
    fake_problems: list = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        faults = sum(self.faults.values())
        return [
            f"chaos run: scale {self.scale}, seed {self.seed}, {self.seconds:.0f} s",
            f"kills (SIGKILL): {self.kills}  by phase: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.kills_by_phase.items())),
            "vendor requests: " + ", ".join(f"{k} {v}" for k, v in sorted(self.requests.items())),
            f"faults injected: {faults}  by vendor: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_by_vendor.items())),
            "  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"orders mutated: {sum(self.mutations.values())}  ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.mutations.items()))
            + ")",
            f"webhooks sent: {self.webhooks_sent} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.webhooks_by_shop.items()))
            + f"; +{self.webhooks_replayed} replays, {self.webhooks_refused} not delivered: daemon down)",
            "webhook events in the store at the end: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.webhook_events.items()))
            + f" ({self.webhook_events_left} were still pending when the chaos ended)",
            "cycles failed or partial during the chaos: "
            + (", ".join(f"{k} {v}" for k, v in self.cycle_failures.most_common(8)) or "none"),
            f"customers checked: {self.customers}  events checked: {self.events}",
            f"mismatches: {self.mismatches}" + (f"  ({self.mismatch_kinds})" if self.mismatch_kinds else ""),
            f"duplicate events: {self.duplicate_events}",
            f"group changes a destination showed without an event: {self.changes_seen_without_event}",
            f"store integrity_check: {self.integrity}; final clean run exit status: {self.final_exit}",
            f"customers whose group history disagrees with their state: {self.history_disagreements}",
        ] + [f"fake refused a request: {p}" for p in self.fake_problems[:10]]


# The group history is written in the diff's transaction: after any number of kills, each customer's
# newest history row is the group their state holds (a cleared customer: no state, a None group).
HISTORY_AGAINST_STATE = """
    WITH newest AS (
        SELECT customer_key, to_group FROM (
            SELECT customer_key, to_group,
                   row_number() OVER (PARTITION BY customer_key ORDER BY as_of DESC, id DESC) AS n
            FROM group_history
        ) WHERE n = 1
    )
    SELECT (SELECT count(*) FROM customer_state cs LEFT JOIN newest h USING (customer_key)
            WHERE h.to_group IS NOT cs.current_group)
         + (SELECT count(*) FROM newest h LEFT JOIN customer_state cs USING (customer_key)
            WHERE cs.customer_key IS NULL AND h.to_group IS NOT NULL)
"""


class ChaosRun:
    def __init__(self, folder: Path, *, seed: int, scale: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seed, self.scale_name, self.scale = seed, scale, SCALES[scale]
        self.rng = random.Random(seed)
        self.servers: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.daemon: subprocess.Popen | None = None
        self.figures = Figures(seed=seed, scale=scale)
        self.mismatches: list[str] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RFM_SYNC_SECRET_CHAOS_SHOPIFY": SHOPIFY_TOKEN,
            "RFM_SYNC_SECRET_CHAOS_KLAVIYO": KLAVIYO_KEY,
            "RFM_SYNC_SECRET_CHAOS_META": META_TOKEN,
            "RFM_SYNC_SECRET_CHAOS_WEBHOOKS": WEBHOOK_SECRET,
            "RFM_SYNC_SECRET_CHAOS_BIGCOMMERCE": BIGCOMMERCE_TOKEN,
            "RFM_SYNC_SECRET_CHAOS_BC_WEBHOOKS": BIGCOMMERCE_HOOK_SECRET,
        }
        self.cycle_seconds = 3.0  # running estimate of a cycle's length, from the daemon's logs

    # ------------------------------------------------------------------ processes
    def start_servers(self) -> None:
        for n, kind in enumerate(KINDS):
            port_file = self.folder / f"{kind}.port"
            port_file.unlink(missing_ok=True)
            customers = self.scale.bc_customers if kind == "bigcommerce" else self.scale.customers
            args = [
                sys.executable,
                "-m",
                "tests.chaos.servers",
                "--kind",
                kind,
                "--seed",
                str(self.seed * 10 + n),
                "--rate",
                str(self.scale.rate),
                "--customers",
                str(customers),
                "--shopify-customers",
                str(self.scale.customers),
                "--port-file",
                str(port_file),
            ]
            if self.scale.slow_codes:
                args.append("--slow-codes")
            log = (self.folder / f"{kind}.log").open("w")
            self.servers[kind] = subprocess.Popen(args, env=self.env, stdout=log, stderr=log, cwd=REPO)
        deadline = time.monotonic() + 60
        for kind in KINDS:
            port_file = self.folder / f"{kind}.port"
            while not port_file.exists():
                if self.servers[kind].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {kind} fake did not start:\n" + (self.folder / f"{kind}.log").read_text()[-2000:]
                    )
                time.sleep(0.05)
            self.ports[kind] = int(port_file.read_text())

    def stop(self) -> None:
        """Stop what this run started, by PID."""
        if self.daemon is not None and self.daemon.poll() is None:
            os.kill(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
        for proc in self.servers.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.servers.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def control(self, kind: str, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[kind], timeout=60)
        try:
            if payload is None:
                conn.request("GET", f"/__chaos/{name}")
            else:
                conn.request(
                    "POST", f"/__chaos/{name}", body=json.dumps(payload), headers={"Content-Type": "application/json"}
                )
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def write_config(self, port: int) -> Path:
        audiences = "\n".join(
            f'[[destinations.audiences]]\naudience_id = "{a}"\ngroups = {json.dumps(g)}' for a, g in AUDIENCES.items()
        )
        path = self.folder / "config.toml"
        path.write_text(
            CONFIG.format(
                store=self.folder / "state.sqlite",
                port=port,
                audiences=audiences,
                klaviyo_batch=self.scale.klaviyo_batch,
                bc_store=BIGCOMMERCE_STORE,
                **{k: f"http://127.0.0.1:{p}" for k, p in self.ports.items()},
            )
        )
        return path

    def rfm_sync(self, *args: str, log_name: str, timeout: float = 600) -> int:
        with (self.folder / log_name).open("a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rfm_sync.cli", *args], env=self.env, stdout=log, stderr=log, cwd=self.folder
            )
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return -9

    # ------------------------------------------------------------------ the kill loop
    def start_daemon(self, round_no: int | str) -> tuple[int, Path]:
        port = free_port()
        config = self.write_config(port)
        log_path = self.folder / (
            f"daemon-{round_no:03d}.log" if isinstance(round_no, int) else f"daemon-{round_no}.log"
        )
        with log_path.open("w") as log:  # a file, not a pipe: a full pipe would block the daemon
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "rfm_sync.cli", "daemon", "-c", str(config)],
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=self.folder,
            )
        return port, log_path

    @staticmethod
    def log_records(log_path: Path) -> list[dict[str, Any]]:
        records = []
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"message": line})  # a traceback line, say
        return records

    def wait_for_lock(self, log_path: Path, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                return False
            if "store lock acquired" in log_path.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False

    def phase(self, log_path: Path, killed_at: float | None = None) -> str:
        """Where the daemon was when it died (``killed_at``: ``time.time()`` just before the kill).

        Its log says when a cycle's steps end (pull, then score+diff, then push) and when a cycle or a
        batch of webhook events is done. The webhooks job logs nothing when it *starts*, so a daemon
        whose log says it is between cycles is looked at more closely (:meth:`between_cycles`); one
        whose first cycle was skipped because the webhooks job held the cycle lock is in webhooks."""
        state, since, last_run = "startup", None, 0
        for r in self.log_records(log_path):
            message = r.get("msg") or r.get("message", "")
            if isinstance(r.get("run"), int):
                last_run = max(last_run, r["run"])
            if message == "store lock acquired; running cycles":
                state = "pull"
            elif message == "job skipped: another cycle is running" and r.get("job") in ("incremental", "full"):
                state = "webhooks" if state == "pull" else state  # the webhooks job took the lock first
            elif message == "cycle step done":
                state = {"pull": "score+diff", "score+diff": "push"}.get(r.get("step"), "idle")
            elif message == "cycle done":
                state, since = "idle", r.get("ts")
                if isinstance(r.get("seconds"), (int, float)):
                    self.cycle_seconds = 0.7 * self.cycle_seconds + 0.3 * float(r["seconds"])
                if r.get("status") not in ("ok", "stopped"):  # a graceful stop is no failure
                    for error in (
                        (r.get("errors") or {"?": "partial"}).values()
                        if isinstance(r.get("errors"), dict)
                        else [r.get("errors")]
                    ):
                        self.figures.cycle_failures[f"partial: {str(error)[:60]}"] += 1
            elif message.startswith(("pull failed", "push stopped")):  # a step of a cycle (the cycle goes on)
                self.figures.cycle_failures[f"{message.split(':')[0]}: {str(r.get('error'))[:60]}"] += 1
            elif message == "job failed":
                self.figures.cycle_failures[f"failed: {str(r.get('error'))[:70]}"] += 1
                state, since = "idle", r.get("ts")
            elif message == "webhook events processed":
                state, since = "idle", r.get("ts")
            elif message == "customers rescored" or (
                message.startswith("webhook")
                and not message.startswith(("webhook rejected", "webhook not stored", "webhook verification"))
            ):  # the listener's
                state = "webhooks" if state == "idle" else state
        if state == "idle" and killed_at is not None:
            state = self.between_cycles(since, killed_at, last_run)
        return state

    def between_cycles(self, since: str | None, killed_at: float, last_run: int) -> str:
        """A daemon between cycles by its log: ``pull`` if a shop was asked for orders since (the next
        cycle began), ``webhooks`` if an order was fetched by id since (a BigCommerce callback) or the
        store holds webhook events due for processing or a run newer than any in the log (a webhook
        rescore: its score, diff or push), else ``idle``."""
        try:
            after = datetime.fromisoformat(since).timestamp() if since else 0.0
        except ValueError:
            after = 0.0
        activity = [self.control(shop, "activity") for shop in SHOPS]
        if any(a["last_pull_at"] > after for a in activity):
            return "pull"
        if any(a["last_fetch_at"] > after for a in activity):
            return "webhooks"
        moment = datetime.fromtimestamp(killed_at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as stored
        try:
            with contextlib.closing(sqlite3.connect(self.folder / "state.sqlite", timeout=10)) as db:
                due = db.execute(
                    "SELECT COUNT(*) FROM webhook_events WHERE status = 'pending' AND received_at <= ? "
                    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?)",
                    (moment, moment),
                ).fetchone()[0]
                rescoring = db.execute(
                    "SELECT COUNT(*) FROM runs WHERE status = 'running' AND id > ?", (last_run,)
                ).fetchone()[0]
        except sqlite3.Error:
            return "idle"
        return "webhooks" if due or rescoring else "idle"

    def send_webhooks(self, port: int, shop: str, changed: list[dict[str, Any]]) -> None:
        """Each change as the shop sends it: Shopify a signed ``orders/updated`` body (its own event id);
        BigCommerce a ``store/order/*`` callback naming the order, with the secret header set when the
        hook was created (its retries repeat the body: the daemon dedupes them by the body's hash)."""
        for item in changed:
            if shop == "shopify":
                data = json.dumps(item).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-Shopify-Topic": "orders/updated",
                    "X-Shopify-Event-Id": f"chaos-{self.rng.getrandbits(64):016x}",
                    "X-Shopify-Hmac-Sha256": sign(data),
                }
                path = "/webhooks/shop"
            else:
                data = json.dumps(
                    {
                        "created_at": int(time.time()),
                        "store_id": "1001",
                        "producer": f"stores/{BIGCOMMERCE_STORE}",
                        "scope": item["scope"],
                        "hash": f"{self.rng.getrandbits(160):040x}",
                        "data": item["data"],
                    }
                ).encode()
                headers = {"Content-Type": "application/json", "X-Rfm-Sync-Secret": BIGCOMMERCE_HOOK_SECRET}
                path = "/webhooks/bc"
            for attempt in range(2 if self.rng.random() < 0.15 else 1):  # some are delivered twice
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
                    conn.request("POST", path, body=data, headers=headers)
                    status = conn.getresponse().status
                    conn.close()
                except OSError:
                    status = None
                if status == 200:
                    if attempt:
                        self.figures.webhooks_replayed += 1
                    else:
                        self.figures.webhooks_sent += 1
                        self.figures.webhooks_by_shop[shop] += 1
                elif not attempt:
                    self.figures.webhooks_refused += 1

    def mutate_and_send(self, port: int) -> None:
        for shop in SHOPS:
            count = self.scale.mutations if shop == "shopify" else max(1, self.scale.mutations // 2)
            self.send_webhooks(port, shop, self.control(shop, "mutate", {"count": count})["changed"])

    def live_a_while(self, port: int) -> None:
        """A seeded instant: anywhere from the start of the first cycle to a little after its end; the
        shops change at a seeded moment within it."""
        delay = self.rng.uniform(0.05, max(self.scale.max_delay, 1.3 * self.cycle_seconds))
        mutate_at = self.rng.uniform(0, delay)
        started = time.monotonic()
        mutated = False
        while time.monotonic() - started < delay and self.daemon.poll() is None:
            if not mutated and time.monotonic() - started >= mutate_at:
                self.mutate_and_send(port)
                mutated = True
            time.sleep(0.02)

    def aim_at_webhooks(self, port: int, log_path: Path) -> None:
        """Wait (at most ``webhook_wait``) until the daemon is between cycles, send the shops' changes,
        and let it live a seeded 0.05-1.5 s more: the kill lands while the webhooks job fetches, rescores
        or pushes (or just after it finished). The first such round is the one that lets the first full
        push (an event per customer, under faults) finish: the regular lives are too short for it."""
        limit = time.monotonic() + self.scale.webhook_wait
        while time.monotonic() < limit and self.daemon.poll() is None:
            text = log_path.read_text(errors="replace")
            if '"cycle done"' in text or '"webhook events processed"' in text:
                break
            time.sleep(0.05)
        if self.daemon.poll() is None:
            self.mutate_and_send(port)
        end = time.monotonic() + self.rng.uniform(0.05, 1.5)
        while time.monotonic() < end and self.daemon.poll() is None:
            time.sleep(0.02)

    def one_round(self, round_no: int) -> None:
        port, log_path = self.start_daemon(round_no)
        if not self.wait_for_lock(log_path):
            self.figures.cycle_failures["daemon never took the lock"] += 1
        started = time.monotonic()
        aimed = self.rng.random() < self.scale.webhook_share and round_no >= 2  # the first kills: in the backfill
        if aimed:
            self.aim_at_webhooks(port, log_path)
        else:
            self.live_a_while(port)
        if self.daemon.poll() is None:
            if "cycle done" not in log_path.read_text(errors="replace"):
                # no cycle finished in this life: let the next ones live longer, so that kills reach
                # every phase (score, diff, push, webhooks) and not only the pull
                self.cycle_seconds = min(60.0, self.cycle_seconds * 1.3)
            killed_at = time.time()
            os.kill(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
            self.figures.kills += 1
            phase = self.phase(log_path, killed_at)
            self.figures.kills_by_phase[phase] += 1
            with (self.folder / "kills.log").open("a") as kills:  # one line a kill, to read beside the logs
                kills.write(
                    f"{log_path.name} {'webhook round' if aimed else 'timed round'} "
                    f"{time.monotonic() - started:.1f}s {phase}\n"
                )
        else:
            self.figures.cycle_failures[f"daemon exited by itself ({self.daemon.returncode})"] += 1
            self.phase(log_path)
        self.daemon = None

    def faults_so_far(self) -> int:
        return sum(sum(self.control(k, "state")["faults"].values()) for k in KINDS)

    def chaos(self) -> None:
        for round_no in range(self.scale.max_rounds):
            self.one_round(round_no)
            if (
                self.figures.kills >= self.scale.kills
                and round_no % 3 == 2
                and self.faults_so_far() >= self.scale.faults
            ):
                break

    # ------------------------------------------------------------------ the end
    def webhook_events(self) -> Counter:
        with contextlib.closing(sqlite3.connect(self.folder / "state.sqlite", timeout=10)) as db:
            return Counter(dict(db.execute("SELECT status, COUNT(*) FROM webhook_events GROUP BY status").fetchall()))

    def drain(self, timeout: float = 120) -> None:
        """Faults off: one more daemon, left to run until its first cycle is done and every webhook event
        received during the chaos is processed (late events: an order's older body must not win over
        the pulled order), then stopped with SIGTERM (its graceful shutdown)."""
        port, log_path = self.start_daemon("drain")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.daemon.poll() is None:
            if '"cycle done"' in log_path.read_text(errors="replace") and not self.webhook_events().get("pending"):
                break
            time.sleep(0.5)
        if self.daemon.poll() is None:
            os.kill(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        self.daemon = None

    def settle(self) -> None:
        """Faults off; the pending webhook events are processed (:meth:`drain`); a clean cycle pulls the
        final orders; the cut points are recalibrated on them (so the oracle's comparison is well
        defined); a second clean cycle scores and pushes with them."""
        for kind in KINDS:
            self.control(kind, "faults", {"rate": 0.0})
        time.sleep(2.5)  # the last killed daemon's lock expires (lock_expire_seconds = 2)
        self.figures.webhook_events_left = self.webhook_events().get("pending", 0)
        self.drain()
        config = self.folder / "config.toml"
        first = self.rfm_sync("run", "--once", "-c", str(config), log_name="final.log")
        self.rfm_sync("recalibrate", "-c", str(config), log_name="final.log")
        second = self.rfm_sync("run", "--once", "-c", str(config), log_name="final.log")
        self.figures.final_exit = first or second

    def verify(self) -> oracle.Verdict:
        states = {kind: self.control(kind, "state") for kind in KINDS}
        for kind, state in states.items():
            (self.folder / f"final-{kind}.json").write_text(json.dumps(state, indent=1, default=str))
        shop, bc, klaviyo, meta = (states[k] for k in ("shopify", "bigcommerce", "klaviyo", "meta"))
        as_of = datetime.now(UTC).date()
        orders = shop["orders"] + oracle.bigcommerce_orders(bc["orders"])
        verdict = oracle.compare(oracle.expected_state(orders, as_of, merge_by_email=True), klaviyo, meta, AUDIENCES)
        f = self.figures
        f.mutations = Counter({f"{kind} {k}": v for kind in SHOPS for k, v in states[kind]["mutations"].items()})
        for state in states.values():
            f.faults.update(state["faults"])
            f.faults_by_vendor[state["kind"]] = sum(state["faults"].values())
            f.requests[state["kind"]] = state["requests"]
            f.fake_problems.extend(f"{state['kind']}: {p}" for p in state["problems"])
        f.customers, f.events = verdict.customers, verdict.events
        f.mismatches = sum(verdict.kinds.values())
        f.mismatch_kinds = dict(verdict.kinds)
        f.duplicate_events = verdict.duplicate_events
        f.changes_seen_without_event = verdict.changes_seen_without_event
        with contextlib.closing(sqlite3.connect(self.folder / "state.sqlite")) as db:
            f.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            f.history_disagreements = db.execute(HISTORY_AGAINST_STATE).fetchone()[0]
        f.webhook_events = self.webhook_events()
        self.mismatches = verdict.mismatches
        return verdict

    def run(self) -> Figures:
        started = time.monotonic()
        try:
            self.start_servers()
            self.chaos()
            self.settle()
            self.verify()
        finally:
            self.figures.seconds = time.monotonic() - started
            self.stop()
        return self.figures


def main() -> int:
    parser = argparse.ArgumentParser(description="rfm-sync chaos run (see tests/chaos/harness.py)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="ci")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    import tempfile

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rfm-chaos-"))
    run = ChaosRun(folder, seed=args.seed, scale=args.scale)
    figures = run.run()
    print("\n".join(figures.lines()))
    for line in run.mismatches[:40]:
        print("  " + line)
    print(f"(logs and store in {folder})")
    return 0 if figures.mismatches == 0 and figures.integrity == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
