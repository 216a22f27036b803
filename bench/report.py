"""The report at scale: a store of 1,000,000 customers and a year of daily runs, then ``rfm-sync report``.

    python -m bench.report                 # 1,000,000 customers, 365 runs (store cached in bench/data/)
    python -m bench.report --customers 100000 --days 90   # a quick check

The store is built directly (a bench-only fast path, like :mod:`bench.store_load`), in bounded time:

* the customers are scored for real: synthetic per-customer aggregates (seeded) go through
  :func:`rfm_sync.engine.score_customers`, and their groups and scores fill ``customer_state``
  and ``customers`` (one row each, with a properties JSON of the usual size);
* 365 daily run records (one a day, as of consecutive days ending on :data:`bench.generate.END`)
  carry the insight a full cycle records (:func:`rfm_sync.insight.snapshot` of those scores), with
  group counts drifting day to day and about 2,000 moves a day between groups; monthly
  calibrations; an outbox of a million first-run rows plus each day's changes (short payloads:
  the report only counts them).

Then it times, each in its own process, ``rfm-sync report -c CONFIG --html FILE`` and the terminal
``rfm-sync report -c CONFIG`` (wall time including start-up, peak RSS), and prints the page's size.
Targets: under 10 s and under 10 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.generate import DATA, END  # noqa: E402
from bench.run import timed  # noqa: E402

SEED = 15


def build(path: Path, customers: int, days: int, log=print) -> None:
    from rfm_sync import engine, insight
    from rfm_sync.config import parse_config
    from rfm_sync.store import Store

    started = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    Store.open(f"sqlite:///{path}").close()  # the schema, by the migrations
    rng = np.random.default_rng(SEED)
    n = customers
    keys = pd.Series(np.arange(n)).astype(str).str.zfill(7).radd("c").to_numpy(dtype=object)
    frequency = np.where(rng.random(n) < 0.4, 1, 1 + rng.geometric(0.25, n)).astype(np.int64)
    monetary = (frequency * np.maximum(100, rng.lognormal(3.6, 0.6, n) * 100).round() * 100).astype(np.int64)
    end = datetime.combine(END, dtime(12), UTC)
    last = pd.to_datetime(end.timestamp() - rng.random(n) ** 1.5 * 700 * 86400, unit="s", utc=True)
    frame = pd.DataFrame(
        {
            "customer_key": keys,
            "first_order_at": last,
            "last_order_at": last,
            "orders": frequency,
            "frequency": frequency,
            "monetary_e4": monetary,
        }
    )
    config = parse_config({"rfm": {"scheme": "klaviyo"}})
    result = engine.score_customers(frame, END, config.rfm, zone=UTC)
    scored = result.frame
    snap = insight.snapshot(scored, config.rfm, result.cut_points)
    order = engine.group_names(config.rfm)
    groups = scored["rfm_group"].astype(object).to_numpy()
    log(f"  scored {n:,} customers ({time.perf_counter() - started:.1f} s)")

    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    stamp = lambda day: datetime.combine(day, dtime(3), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # noqa: E731
    first_day = END - timedelta(days=days - 1)
    previous = np.where(rng.random(n) < 0.3, rng.choice(np.array(order, dtype=object), n), None)
    previous = np.where(previous == groups, None, previous)
    changed_on = [stamp(first_day + timedelta(days=int(d))) for d in rng.integers(0, days, n)]
    scores = scored["rfm_score"].astype(str).to_numpy()
    props = [
        f'{{"Current RFM group": "{g}", "RFM frequency score": {s[1]}, "RFM group last changed": '
        f'"{c[:10]}T03:00:00Z", "RFM monetary score": {s[2]}, "RFM recency score": {s[0]}, "RFM score": "{s}"}}'
        for g, s, c in zip(groups, scores, changed_on)
    ]
    db.executemany(
        "INSERT INTO customer_state VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
        zip(keys, groups, previous, changed_on, scores, props, [days] * n),
    )
    db.executemany(
        "INSERT INTO customers VALUES (?, ?, NULL, ?)", ((k, f"{k}@example.com", changed_on[0]) for k in keys)
    )
    log(f"  customer_state, customers ({time.perf_counter() - started:.1f} s)")

    counts = {g: int(v) for g, v in pd.Series(groups).value_counts().items()}
    at = stamp(first_day)
    outbox_rows = [("sink", k, 1, "{}", "sent", 1, at, at) for k in keys]
    run_rows, calibration_rows = [], []
    for i in range(days):
        day = first_day + timedelta(days=i)
        moves: dict[tuple, int] = {}
        for _ in range(40):  # ~2,000 moves a day between random pairs of groups
            a, b = rng.choice(len(order), 2, replace=False)
            moves[(order[a], order[b])] = moves.get((order[a], order[b]), 0) + int(rng.integers(10, 90))
        if i == 0:
            moves = {(None, g): c for g, c in counts.items()}
        day_counts = {
            g: max(1, int(c * (0.9 + 0.2 * i / max(1, days - 1)) + rng.integers(-500, 500))) for g, c in counts.items()
        }
        day_snap = json.loads(json.dumps(snap))
        for g, v in day_snap["groups"].items():
            scale = day_counts[g] / max(1, v["customers"])
            v["customers"], v["monetary_e4"], v["orders"] = (
                day_counts[g],
                int(v["monetary_e4"] * scale),
                int(v["orders"] * scale),
            )
        stats = {
            "pulled": {"shop": int(rng.integers(2_000, 9_000))},
            "quarantined": int(rng.integers(0, 20)),
            "scored": sum(day_counts.values()),
            "changed": sum(moves.values()),
            "cleared": 0,
            "pushed": {"sink": sum(moves.values())},
            "failed": {"sink": 0},
            "durations": {"pull": 2.1, "score+diff": 17.5, "push": 0.3},
            "calibrated_on": (day - timedelta(days=i % 30)).isoformat(),
            "calibration_population": n,
            "transitions": insight.transitions_json(moves),
            "insight": day_snap,
        }
        begun = datetime.combine(day + timedelta(days=1), dtime(3), UTC)
        run_rows.append(
            (
                i + 1,
                begun.strftime("%Y-%m-%d %H:%M:%S.%f"),
                (begun + timedelta(seconds=20)).strftime("%Y-%m-%d %H:%M:%S.%f"),
                day.isoformat(),
                "klaviyo",
                "ok",
                json.dumps(stats),
                json.dumps(day_counts),
                json.dumps(result.cut_points),
                json.dumps(result.warnings),
                None,
            )
        )
        if i % 30 == 0:
            calibration_rows.append(
                (
                    "klaviyo",
                    day.isoformat(),
                    stamp(day),
                    json.dumps({"window_days": 730, "points": result.cut_points, "population": n}),
                    i + 1,
                )
            )
        if i:
            picked, at = rng.choice(n, sum(moves.values()), replace=False), stamp(day)
            outbox_rows += [("sink", keys[j], i + 1, "{}", "sent", 1, at, at) for j in picked]
    db.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run_rows)
    db.executemany(
        "INSERT INTO calibrations (scheme, as_of, computed_at, cut_points, run_id) VALUES (?, ?, ?, ?, ?)",
        calibration_rows,
    )
    db.executemany(
        "INSERT INTO outbox (destination, customer_key, run_id, payload, status, attempts, created_at, "
        "sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        outbox_rows,
    )
    db.commit()
    db.close()
    log(
        f"  {days} runs, {len(outbox_rows):,} outbox rows; store built in {time.perf_counter() - started:.1f} s "
        f"({path.stat().st_size / 1e6:,.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rebuild", action="store_true", help="Build the store again even if it is cached.")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    name = f"report-{args.customers}-{args.days}"
    store = DATA / f"{name}.sqlite"
    if args.build_only:
        tmp = DATA / f"{name}.building.sqlite"
        build(tmp, args.customers, args.days)
        os.replace(tmp, store)
        return
    if args.rebuild or not store.exists():
        # in a process of its own: Linux keeps a process's peak RSS across fork and exec, so a big
        # builder here would show as the timed commands' peak
        print(f"building {store.name}: {args.customers:,} customers, {args.days} daily runs")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.report",
                "--customers",
                str(args.customers),
                "--days",
                str(args.days),
                "--build-only",
            ],
            cwd=BENCH.parent,
            check=True,
        )
    config = DATA / f"{name}.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{store}"\n\n[[destinations]]\ntype = "file"\nname = "sink"\n'
        f'path = "{DATA / (name + ".jsonl")}"\n',
        encoding="utf-8",
    )
    page = DATA / f"{name}.html"
    exe = [sys.executable, "-m", "rfm_sync.cli"]
    html = timed(exe + ["report", "-c", str(config), "--html", str(page)])
    terminal = timed(exe + ["report", "-c", str(config)])
    print(
        f"report over {args.customers:,} customers and {args.days} daily runs ({store.stat().st_size / 1e6:,.0f} MB "
        f"store), {os.cpu_count()} cores, each in its own process (start-up included):"
    )
    print(
        f"  rfm-sync report --html   {html['wall']:5.1f} s   peak RSS {html['rss_mb']:5.0f} MB   "
        f"page {page.stat().st_size / 1e6:.1f} MB"
    )
    print(f"  rfm-sync report          {terminal['wall']:5.1f} s   peak RSS {terminal['rss_mb']:5.0f} MB")


if __name__ == "__main__":
    main()
