"""A deterministic synthetic shop: customers and their orders over two years, as an orders CSV.

Used by ``rfm-sync demo`` (a few thousand customers) and by ``bench/`` (a million customers, ten
million orders) — the same generator, seeded, vectorised with numpy, written by DuckDB.

Shape of the shop: 40% of customers buy once; the others buy 2–60 times with a heavy tail; each
customer is active over a span of the two years (some churned long ago, some arrived lately);
order values are log-normal per customer; about 2% of orders are cancelled, 0.3% are test orders,
3% are partly refunded; a few customers check out as guests (no customer id, email only).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd


def generate(
    customers: int,
    *,
    end: date,
    days: int = 730,
    seed: int = 7,
    one_order_share: float = 0.4,
    target_orders: int | None = None,
) -> pd.DataFrame:
    """Orders as a DataFrame with the CSV source's default columns."""
    rng = np.random.default_rng(seed)
    n = customers
    counts = np.ones(n, dtype=np.int64)
    repeat = rng.random(n) >= one_order_share
    mean_extra = 4.0
    if target_orders is not None:  # choose the tail so the total lands near target_orders
        mean_extra = max(0.5, (target_orders - n) / max(1, repeat.sum()))
    counts[repeat] += np.minimum(rng.geometric(1 / mean_extra, repeat.sum()), 400)
    end_ts = datetime.combine(end, time(23, 59, 59), UTC).timestamp()
    span = days * 86400.0
    # each customer's active span [first, last] inside the two years
    first = end_ts - span * rng.random(n)
    churn = rng.random(n) < 0.35
    last = np.where(churn, first + (end_ts - first) * rng.random(n) * 0.5, end_ts)
    cust = np.repeat(np.arange(n), counts)
    total = len(cust)
    u = rng.random(total)
    single = counts[cust] == 1
    placed = np.where(single, first[cust], first[cust] + (last[cust] - first[cust]) * u)
    level = rng.lognormal(mean=3.6, sigma=0.6, size=n)  # the customer's typical basket
    cents = np.maximum(100, (level[cust] * rng.lognormal(0, 0.35, total) * 100).round()).astype(np.int64)
    status = np.full(total, "paid", dtype=object)
    roll = rng.random(total)
    status[roll < 0.02] = "cancelled"
    status[(roll >= 0.02) & (roll < 0.023)] = "test"
    refunded = np.where((roll >= 0.5) & (roll < 0.53), (cents * rng.random(total) * 0.5).round(), 0).astype(np.int64)
    ids = (
        np.array([f"{i:07d}" for i in range(n)], dtype=object)
        if n <= 200_000
        else pd.Series(np.arange(n)).astype(str).str.zfill(7).to_numpy(dtype=object)
    )
    guest = rng.random(n) < 0.03
    frame = pd.DataFrame(
        {
            "order_id": np.char.add("o", np.arange(1, total + 1).astype(str))
            if total <= 2_000_000
            else pd.Series(np.arange(1, total + 1)).astype(str).radd("o").to_numpy(),
            "customer_id": np.where(guest[cust], "", ids[cust]),
            "email": pd.Series(ids[cust]).radd("customer").add("@example.com").to_numpy(),
            "placed_at": pd.to_datetime(placed, unit="s", utc=True).floor("s"),
            "amount": cents,
            "refunded": refunded,
            "status": status,
            "currency": "USD",
        }
    )
    return frame.sort_values("placed_at", kind="stable").reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write with amounts as exact decimals (cents → 'D.CC') and ISO-8601 UTC times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.register("orders_frame", frame)
    con.execute(f"""COPY (
        SELECT order_id, customer_id, email,
               strftime(placed_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS placed_at,
               CAST(amount // 100 AS VARCHAR) || '.' || lpad(CAST(amount % 100 AS VARCHAR), 2, '0') AS amount,
               CAST(refunded // 100 AS VARCHAR) || '.' || lpad(CAST(refunded % 100 AS VARCHAR), 2, '0') AS refunded,
               status, currency
        FROM orders_frame) TO '{str(path).replace("'", "''")}' (HEADER, DELIMITER ',')""")
    con.close()
    return path


def write_sample(path: Path, *, end: date, customers: int = 3000, seed: int = 7) -> Path:
    return write_csv(generate(customers, end=end, seed=seed), path)
