"""Tables people look at: group sizes, transitions, runs, outbox backlog, quarantined rows."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # only for annotations: `rfm-sync score` need not import the store and pipeline
    from .pipeline import CycleReport


def group_table(counts: dict[str, int], order: Iterable[str], title: str = "RFM groups") -> Table:
    total = sum(counts.values()) or 1
    table = Table(title=title)
    table.add_column("group")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    peak = max(counts.values(), default=1) or 1
    for group in order:
        n = counts.get(group, 0)
        table.add_row(group, f"{n:,}", f"{100 * n / total:.1f}%", "█" * max(0, round(30 * n / peak)))
    return table


def transition_table(transitions: dict[tuple[str | None, str | None], int], order: list[str],
                     title: str = "previous → current group") -> Table:
    """A matrix: rows are the previous group, columns the current one; cells count customers."""
    table = Table(title=title)
    table.add_column("previous \\ current")
    cols = order + (["(none)"] if any(b is None for _, b in transitions) else [])
    for c in cols:
        table.add_column(c, justify="right")
    rows = (["(new)"] if any(a is None for a, _ in transitions) else []) + order
    for r in rows:
        key_r = None if r == "(new)" else r
        cells = []
        for c in cols:
            key_c = None if c == "(none)" else c
            n = transitions.get((key_r, key_c), 0)
            cells.append(f"{n:,}" if n else "·")
        if any(cell != "·" for cell in cells):
            table.add_row(r, *cells)
    return table


def cycle_summary(report: CycleReport) -> Table:
    table = Table(title=f"run {report.run_id} · as of {report.as_of.isoformat()}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, n in report.pulled.items():
        table.add_row(f"orders pulled from {name} (new or changed)", f"{n:,}")
    table.add_row("rows quarantined", f"{len(report.quarantined):,}")
    table.add_row("customers scored", f"{report.scored:,}")
    table.add_row("profiles changed", f"{report.changed:,}")
    if report.cleared:
        table.add_row("profiles cleared (no qualifying order left)", f"{report.cleared:,}")
    for name, n in report.pushed.items():
        notes = [f"{report.failed[name]:,} failed"] if report.failed.get(name) else []
        notes += [f"{report.skipped[name]:,} with nothing to send"] if report.skipped.get(name) else []
        table.add_row(f"pushed to {name}", f"{n:,}" + (f" ({'; '.join(notes)})" if notes else ""))
    for step, seconds in report.durations.items():
        table.add_row(f"{step} time", f"{seconds:.2f} s")
    return table


def quarantine_table(rows: list[dict[str, Any]], limit: int = 10) -> Table:
    table = Table(title=f"quarantined rows ({len(rows):,}; first {min(limit, len(rows))})")
    table.add_column("where")
    table.add_column("why")
    for row in rows[:limit]:
        table.add_row(row["location"], row["reason"])
    return table


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="last runs")
    for col in ("run", "as of", "started (UTC)", "status", "scored", "changed", "pushed", "error"):
        table.add_column(col)
    for r in runs:
        stats = r.get("stats") or {}
        pushed = ", ".join(f"{k}: {v:,}" for k, v in (stats.get("pushed") or {}).items())
        table.add_row(str(r["id"]), str(r["as_of"]), r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), r["status"],
                      f"{stats.get('scored', 0):,}", f"{stats.get('changed', 0):,}", pushed,
                      (r.get("error") or "")[:80])
    return table


def backlog_table(backlog: dict[str, dict[str, int]], destinations: list[str]) -> Table:
    table = Table(title="outbox per destination")
    for col in ("destination", "pending", "sending", "sent", "superseded", "dead"):
        table.add_column(col, justify="right" if col != "destination" else "left")
    for name in sorted(set(destinations) | set(backlog)):
        b = backlog.get(name, {})
        table.add_row(name, *(f"{b.get(s, 0):,}" for s in ("pending", "sending", "sent", "superseded", "dead")))
    return table


# Piped or redirected output (`rfm-sync status | less`, a cron mail, a log file) has no width; rich
# would assume 80 columns and wrap or cut ("…") every wider table. Tables are as wide as their content
# anyway, so off a terminal the bound is just far away.
PIPED_WIDTH = 10_000


def console(stderr: bool = False) -> Console:
    """The console tables print to: a terminal's width, or (piped, redirected) no practical bound, so
    no value is cut. An explicit ``COLUMNS`` environment variable still sets the width."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, width=PIPED_WIDTH)
    return out
