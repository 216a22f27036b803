"""Bulk-load a benchmark CSV into a fresh SQLite store — a fast path for the benchmark only.

Pulling 10 million orders through the CSV source (one ``Order`` object per row) takes minutes and
is not what the benchmark measures; this writes the same rows the pipeline would (same key rule,
same amounts ×10⁴, same UTC text format as the store's ``UtcDateTime``) straight into the
``orders`` and ``customers`` tables with ``executemany``. The store file is cached beside the CSV.

    python -m bench.store_load --size small
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from rfm_sync.store import Store

from .generate import DATA, SIZES, ensure_csv

SOURCE = "bench"
CHUNK = 200_000


COLUMNS = (
    "source",
    "order_id",
    "customer_key",
    "source_customer_id",
    "email",
    "phone",
    "placed_at",
    "updated_at",
    "amount_e4",
    "currency",
    "status",
    "is_test",
    "is_cancelled",
    "is_deleted",
    "qualifies",
)  # as _rows_sql


def store_path(size: str) -> Path:
    return DATA / f"store-{size}.sqlite"


def _rows_sql(csv: Path) -> str:
    return f"""
        SELECT '{SOURCE}' AS source, order_id,
               COALESCE(NULLIF(customer_id, ''), 'email:' || lower(email)) AS customer_key,
               NULLIF(customer_id, '') AS source_customer_id, lower(email) AS email, NULL AS phone,
               strftime(placed_at::TIMESTAMPTZ AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%f') AS placed_at,
               NULL AS updated_at,
               CAST(round((CAST(amount AS DECIMAL(18,4)) - CAST(refunded AS DECIMAL(18,4))) * 10000) AS BIGINT)
                 AS amount_e4,
               currency, status, status = 'test' AS is_test, status = 'cancelled' AS is_cancelled,
               false AS is_deleted,
               (CAST(amount AS DECIMAL(18,4)) - CAST(refunded AS DECIMAL(18,4))) > 0
                 AND status NOT IN ('test', 'cancelled') AS qualifies
        FROM read_csv('{csv}', all_varchar=true, header=true)"""


def ensure_store(size: str, log=print) -> Path:
    path = store_path(size)
    if path.exists():
        return path
    csv = ensure_csv(size, log)
    tmp = path.with_suffix(".loading")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    Store.open(f"sqlite:///{tmp}").close()  # the schema, by the migrations
    log(f"loading {csv.name} into {path.name} (bulk path, bench only)")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    db = sqlite3.connect(tmp)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cur = con.execute(_rows_sql(csv))
    # by name: columns added by later migrations (a converted order's original currency and amount) stay NULL
    insert = f"INSERT INTO orders ({', '.join(COLUMNS)}, ingested_at) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
    while True:
        batch = cur.fetchmany(CHUNK)
        if not batch:
            break
        db.executemany(insert, [(*row, now) for row in batch])
    db.execute(
        """INSERT INTO customers (customer_key, email, phone, updated_at)
                  SELECT customer_key, max(email), NULL, ? FROM orders GROUP BY customer_key""",
        (now,),
    )
    db.commit()
    db.close()
    con.close()
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    print(ensure_store(parser.parse_args().size))


if __name__ == "__main__":
    main()
