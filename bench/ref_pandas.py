"""Reference 1: a naive pandas RFM script (read the CSV, groupby, qcut), as most tutorials write it.

    python bench/ref_pandas.py ORDERS.csv OUT.csv 2026-06-30

Not exact like rfm-sync (floats for money, rank-based quintiles, no quarantine, no de-duplication):
it is the yardstick "what a data scientist would write first".
"""

from __future__ import annotations

import sys

import pandas as pd


def main(orders: str, out: str, as_of: str) -> None:
    end = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    df = pd.read_csv(orders, parse_dates=["placed_at"], dtype={"customer_id": str})
    df = df[~df["status"].isin(["cancelled", "test"])]
    df["net"] = df["amount"] - df["refunded"]
    df = df[(df["net"] > 0) & (df["placed_at"] < end)]
    df["customer"] = df["customer_id"].fillna("email:" + df["email"].str.lower())
    in_window = df["placed_at"] >= end - pd.Timedelta(days=730)
    df["f"] = in_window.astype(int)
    df["m"] = df["net"].where(in_window, 0.0)
    rfm = df.groupby("customer").agg(last=("placed_at", "max"), frequency=("f", "sum"), monetary=("m", "sum"))
    rfm["recency"] = (end - rfm["last"]).dt.days
    rfm["r"] = pd.qcut(rfm["recency"].rank(method="first"), 5, labels=[5, 4, 3, 2, 1]).astype(int)
    rfm["f_score"] = pd.qcut(rfm["frequency"].rank(method="first"), 5, labels=[1, 2, 3, 4, 5]).astype(int)
    rfm["m_score"] = pd.qcut(rfm["monetary"].rank(method="first"), 5, labels=[1, 2, 3, 4, 5]).astype(int)
    rfm["rfm_score"] = rfm["r"].astype(str) + rfm["f_score"].astype(str) + rfm["m_score"].astype(str)
    rfm.drop(columns="last").to_csv(out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
