"""``rfm-sync demo``: a synthetic shop through two real cycles, into a real store and sink file.

Writes ``orders.csv`` (generated deterministically, relative to today), ``config.toml``, the
SQLite store and the JSON-lines sink under one folder, then runs a cycle as of 90 days ago and
one as of today through the ordinary pipeline — the same code path as ``rfm-sync run`` —,
back-tests the group history of the 21 months before the first cycle (every 14 days, as
``rfm-sync backtest`` does), so ``rfm-sync outcomes`` has moves to show, and writes
``report.html``, the page ``rfm-sync report --html`` writes.

**Only the demo's own files are replaced.** ``--dir .`` in a real set-up would otherwise name that
set-up's ``config.toml``, ``orders.csv``, store and sink. The demo marks a folder it makes with
``.rfm-sync-demo``, which lists the files it wrote (with a SHA-256 of the inputs it generated).
It runs in a new or empty folder, or in a marked one, where it replaces only the listed files —
and refuses if one of its file names exists unlisted, or a listed input was edited since; any
other file in the folder is left alone. A non-empty folder without the marker is refused. Every
file is written to a temporary file and renamed into place; nothing is removed recursively.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from . import atomic
from .backtest import Backtest, run_backtest
from .config import Config, load_config, parse_config
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
    backtest: Backtest
    store_path: Path
    sink_path: Path
    report_path: Path


BACKTEST_DAYS = 640  # before cycle 1: the sample's two years, less the first 90 days with few customers
MARKER = ".rfm-sync-demo"
INPUTS = ("orders.csv", "config.toml")  # generated: replaced only while unchanged since
STATE = (
    "rfm-sync.sqlite",
    "rfm-sync.sqlite-wal",
    "rfm-sync.sqlite-shm",
    "profiles.jsonl",  # made by the cycles
    "report.html",
)  # and the report of them (rfm-sync report --html)


class DemoFolderRefused(Exception):
    """The folder holds files the demo did not write; it would have to replace them."""


def _digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_marker(folder: Path, digests: dict[str, str | None]) -> None:
    atomic.write_text(folder / MARKER, json.dumps({"written_by": "rfm-sync demo", "files": digests}, indent=1) + "\n")


def check_folder(folder: Path) -> None:
    """Raise :class:`DemoFolderRefused` unless ``folder`` is new, empty, or a demo folder whose demo
    files are as the demo left them."""
    if not folder.exists() or not any(folder.iterdir()):
        return
    marker = folder / MARKER
    how = "; choose a new or empty folder with --dir"
    if not marker.is_file():
        raise DemoFolderRefused(
            f"{folder} is not empty and was not made by `rfm-sync demo` (it has no {MARKER} "
            f"file): the demo would replace its {', '.join(INPUTS + STATE[:1] + STATE[3:])}"
            f"{how} (a folder from an older rfm-sync demo: delete it)"
        )
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))["files"]
        assert isinstance(recorded, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise DemoFolderRefused(f"{marker}: not a marker written by `rfm-sync demo`{how}") from None
    for name in INPUTS + STATE:
        path = folder / name
        if not path.exists():
            continue
        if name not in recorded:
            raise DemoFolderRefused(f"{path} was not written by the demo (it is not listed in {marker}){how}")
        if recorded[name] is not None and _digest(path) != recorded[name]:
            raise DemoFolderRefused(f"{path} was changed since the demo wrote it; the demo would replace it{how}")


def run_demo(
    folder: Path,
    *,
    customers: int = 3000,
    today: date | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> DemoResult:
    # today in the demo shop's [shop] timezone, as `run` takes it
    today = today or parse_config(tomllib.loads(DEMO_CONFIG)).today()
    check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, dict.fromkeys(INPUTS + STATE))  # claimed before anything is written
    for name in STATE:  # the previous demo's store and sink (checked above: listed in its marker)
        (folder / name).unlink(missing_ok=True)
    progress(f"generating a synthetic shop with {customers:,} customers over two years")
    with atomic.replaced(folder / "orders.csv") as temp:
        write_sample(temp, end=today, customers=customers)
    atomic.write_text(folder / "config.toml", DEMO_CONFIG)
    _write_marker(folder, {**{name: _digest(folder / name) for name in INPUTS}, **dict.fromkeys(STATE)})
    config = load_config(folder / "config.toml")
    store = Store.open(config.store.url, config.base_dir)
    try:
        pipeline = Pipeline(config, store)
        progress("cycle 1: as of 90 days ago")
        first = pipeline.run_cycle(today - timedelta(days=90))
        progress("cycle 2: as of today")
        second = pipeline.run_cycle(today)
        progress("back-testing the groups of the 21 months before cycle 1 (every 14 days)")
        history = run_backtest(config, store, since=today - timedelta(days=90 + BACKTEST_DAYS), every=14)
        progress("writing the report")
        from .report_html import write_report

        report = write_report(config, store, folder / "report.html")
    finally:
        store.close()
    return DemoResult(
        config=config,
        first=first,
        second=second,
        backtest=history,
        store_path=folder / "rfm-sync.sqlite",
        sink_path=folder / "profiles.jsonl",
        report_path=report,
    )
