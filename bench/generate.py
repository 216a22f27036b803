"""The benchmark's data: a deterministic synthetic shop, cached under ``bench/data/``.

Reuses :func:`rfm_sync.sample.generate` (seeded, vectorised). ``large``: 1,000,000 customers,
about 10,000,000 orders, 40% one-order customers, two years ending on :data:`END`; ``medium``:
100,000 customers, ~1,000,000 orders; ``small``: 10,000 customers, ~100,000 orders. The CSV is
written once and reused; the file name holds the size so a cached file never stands in for another.

    python -m bench.generate --size small
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
END = date(2026, 6, 30)  # fixed, so every run scores the same data as of the same day
SIZES = {"small": (10_000, 100_000), "medium": (100_000, 1_000_000), "large": (1_000_000, 10_000_000)}
SEED = 20260630


def csv_path(size: str) -> Path:
    return DATA / f"orders-{size}.csv"


def ensure_csv(size: str, log=print) -> Path:
    path = csv_path(size)
    if path.exists():
        return path
    from rfm_sync.sample import generate, write_csv

    customers, orders = SIZES[size]
    log(f"generating {size}: {customers:,} customers, ~{orders:,} orders → {path}")
    frame = generate(customers, end=END, seed=SEED, one_order_share=0.4, target_orders=orders)
    tmp = path.with_suffix(".tmp")
    write_csv(frame, tmp)
    tmp.replace(path)
    log(f"  {len(frame):,} orders written")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    print(ensure_csv(parser.parse_args().size))


if __name__ == "__main__":
    main()
