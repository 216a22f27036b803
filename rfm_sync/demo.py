"""``rfm-sync demo``: a synthetic shop through two real cycles, into a real store and sink file.

Writes ``orders.csv`` (generated deterministically, relative to today), ``config.toml``, the
SQLite store and the JSON-lines sink under one folder, then runs a cycle as of 90 days ago and
one as of today through the ordinary pipeline — the same code path as ``rfm-sync run``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

from .config import Config, load_config
from .pipeline import CycleReport, Pipeline
from .sample import write_sample
from .store import Store

DEMO_CONFIG = """\
# Written by `rfm-sync demo`; every key is documented in config.example.toml.
[store]
url = "sqlite:///rfm-sync.sqlite"

[shop]
timezone = "UTC"

[rfm]
scheme = "klaviyo"
window_days = 730

[properties]
include_metrics = false

[[sources]]
type = "csv"
name = "sample-shop"
path = "orders.csv"

[[destinations]]
type = "file"
name = "profiles-file"
path = "profiles.jsonl"
"""


@dataclass
class DemoResult:
    config: Config
    first: CycleReport
    second: CycleReport
    store_path: Path
    sink_path: Path


def run_demo(folder: Path, *, customers: int = 3000, today: date | None = None,
             progress: Callable[[str], None] = lambda _msg: None) -> DemoResult:
    if folder.exists():
        for name in ("rfm-sync.sqlite", "rfm-sync.sqlite-wal", "rfm-sync.sqlite-shm", "profiles.jsonl", "orders.csv"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(DEMO_CONFIG, encoding="utf-8")
    config = load_config(folder / "config.toml")
    today = today or config.today()  # today in the demo shop's [shop] timezone, as `run` takes it
    progress(f"generating a synthetic shop with {customers:,} customers over two years")
    write_sample(folder / "orders.csv", end=today, customers=customers)
    store = Store.open(config.store.url, config.base_dir)
    try:
        pipeline = Pipeline(config, store)
        progress("cycle 1: as of 90 days ago")
        first = pipeline.run_cycle(today - timedelta(days=90))
        progress("cycle 2: as of today")
        second = pipeline.run_cycle(today)
    finally:
        store.close()
    return DemoResult(config=config, first=first, second=second, store_path=folder / "rfm-sync.sqlite",
                      sink_path=folder / "profiles.jsonl")
