"""Reference 2: RFM in one DuckDB SQL statement (aggregate, NTILE(5) quintiles), written to CSV by DuckDB.

    python bench/ref_duckdb.py ORDERS.csv OUT.csv 2026-06-30

The yardstick for speed: DuckDB on all cores, no quarantine, no de-duplication, no exact money.
"""

from __future__ import annotations

import sys

import duckdb


def main(orders: str, out: str, as_of: str) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""
        COPY (
          WITH q AS (
            SELECT COALESCE(NULLIF(customer_id, ''), 'email:' || lower(email)) AS customer,
                   placed_at::TIMESTAMPTZ AS placed_at, amount - refunded AS net
            FROM read_csv('{orders}', header = true)
            WHERE status NOT IN ('cancelled', 'test')),
          agg AS (
            SELECT customer,
                   date_diff('day', max(placed_at)::DATE, DATE '{as_of}') AS recency,
                   count(*) FILTER (WHERE placed_at >= DATE '{as_of}' - INTERVAL 729 DAY) AS frequency,
                   COALESCE(sum(net) FILTER (WHERE placed_at >= DATE '{as_of}' - INTERVAL 729 DAY), 0) AS monetary
            FROM q WHERE net > 0 AND placed_at < DATE '{as_of}' + INTERVAL 1 DAY
            GROUP BY customer)
          SELECT *, 6 - ntile(5) OVER (ORDER BY recency) AS r,
                 ntile(5) OVER (ORDER BY frequency) AS f, ntile(5) OVER (ORDER BY monetary) AS m
          FROM agg ORDER BY customer
        ) TO '{out}' (HEADER, DELIMITER ',')""")


if __name__ == "__main__":
    main(*sys.argv[1:4])
