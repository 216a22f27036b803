"""The benchmark, in one run: score the same orders CSV three ways, then a full cycle from the store.

    python bench/run.py --size large      # 1,000,000 customers, ~10,000,000 orders (cached in bench/data/)
    python bench/run.py --size small      # 10,000 customers, ~100,000 orders: a quick check

1. ``rfm-sync score`` (the product: DuckDB scan with quarantine and de-duplication, exact engine);
2. ``bench/ref_pandas.py`` — a naive pandas groupby + qcut script;
3. ``bench/ref_duckdb.py`` — one DuckDB SQL statement with NTILE;
4. ``bench/cycle.py`` — ``Pipeline.run_cycle(pull=False)`` from a SQLite store of the same orders;
5. with ``--webhooks``: ``bench/webhooks.py`` — webhook received → profile pushed through a real
   ``rfm-sync daemon`` on loopback, at its defaults (20/s for 20 s), then 5 pairs of orders 30 ms apart.

Each runs in its own process; wall time and that process's peak RSS (``os.wait4``) are printed
with the ratios to the DuckDB reference. Targets: ``rfm-sync score`` ≤ 1.5× DuckDB's wall time,
peak RSS ≤ 1.5 GB; the full cycle under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.generate import DATA, END, SIZES, ensure_csv  # noqa: E402
from bench.store_load import ensure_store  # noqa: E402


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of that process (MB, from ``os.wait4``) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-2000:]}")
        return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "stdout": out.read()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    parser.add_argument("--skip-cycle", action="store_true", help="Only the three scoring runs.")
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="Also the webhook load test (bench/webhooks.py at its defaults, then --pairs 5; ~2 min).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Score this many times each, interleaved (timings here vary ±25%%); "
        "the table shows medians and the ratio of medians, the range below it.",
    )
    args = parser.parse_args()
    csv = ensure_csv(args.size)
    if not args.skip_cycle:
        ensure_store(args.size)  # the cached store (bulk-loaded once, not timed)
    py = sys.executable
    out = DATA / "out"
    out.mkdir(exist_ok=True)
    day = END.isoformat()
    runs = {
        "rfm-sync score": [
            py,
            "-m",
            "rfm_sync.cli",
            "score",
            "--orders",
            str(csv),
            "--out",
            str(out / "rfm-sync.csv"),
            "--as-of",
            day,
            "--quiet",
        ],
        "pandas reference": [py, str(BENCH / "ref_pandas.py"), str(csv), str(out / "pandas.csv"), day],
        "duckdb reference": [py, str(BENCH / "ref_duckdb.py"), str(csv), str(out / "duckdb.csv"), day],
    }
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    for i in range(args.repeat):
        for name, cmd in runs.items():
            samples[name].append(timed(cmd))
            print(f"  run {i + 1}/{args.repeat} {name}: {samples[name][-1]['wall']:.1f} s", file=sys.stderr)
    results = {
        name: {
            "wall": statistics.median(r["wall"] for r in rs),
            "rss_mb": max(r["rss_mb"] for r in rs),
            "low": min(r["wall"] for r in rs),
            "high": max(r["wall"] for r in rs),
        }
        for name, rs in samples.items()
    }
    base = results["duckdb reference"]
    lines = [
        f"scoring {csv.name} ({os.path.getsize(csv) / 1e6:,.0f} MB) as of {day}, {os.cpu_count()} cores, "
        f"median of {args.repeat} runs each (peak RSS: the highest)",
        f"{'':20} {'wall':>9} {'peak RSS':>10} {'× duckdb':>9} {'range':>14}",
    ]
    for name, r in results.items():
        lines.append(
            f"{name:20} {r['wall']:8.1f}s {r['rss_mb']:8.0f}MB {r['wall'] / base['wall']:8.2f}× "
            f"{r['low']:6.1f}–{r['high']:.1f}s"
        )
    if not args.skip_cycle:
        cycle = timed([py, "-m", "bench.cycle", "--size", args.size])
        report = json.loads(cycle["stdout"].strip().splitlines()[-1])
        first, nxt = report["first"], report["next_day"]
        lines.append(f"full cycle from the store (run_cycle, pull=False), peak RSS {cycle['rss_mb']:.0f}MB:")
        for label, r in (("first (all new)", first), ("next day", nxt)):
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in r["steps"].items())
            lines.append(
                f"  {label:16} {r['seconds']:6.1f}s  ({steps}; {r['customers']:,} customers, "
                f"{r['changed']:,} changed, {r['pushed']:,} pushed)"
            )
    if args.webhooks:
        for extra in ([], ["--pairs", "5"]):
            lines += timed([py, str(BENCH / "webhooks.py"), *extra])["stdout"].rstrip().splitlines()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
