"""Tables people look at: group sizes, transitions, runs, outbox backlog, quarantined rows."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

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


def transition_table(
    transitions: dict[tuple[str | None, str | None], int], order: list[str], title: str = "previous → current group"
) -> Table:
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


def run_transitions(report: CycleReport, order: list[str]) -> Table | str:
    """The previous → current table of one run (``rfm-sync run`` ends with it)."""
    moved = {k: n for k, n in report.transitions.items() if n}
    if not moved:
        return f"run {report.run_id}: no customer changed group"
    return transition_table(
        moved, order, title=f"previous → current group in run {report.run_id} ({sum(moved.values()):,} customers)"
    )


def cycle_summary(report: CycleReport) -> Table:
    from .insight import mask_text

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
        why = report.failure_reason.get(name)
        notes = (
            [f"{report.failed[name]:,} failed" + (f", e.g. {mask_text(why)[:120]}" if why else "")]
            if report.failed.get(name)
            else []
        )
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
        table.add_row(
            str(r["id"]),
            str(r["as_of"]),
            r["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
            r["status"],
            f"{stats.get('scored', 0):,}",
            f"{stats.get('changed', 0):,}",
            pushed,
            (r.get("error") or "")[:80],
        )
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


# ---------------------------------------------------------------------- `rfm-sync report` (terminal)
def summary_tables(summary: Any, *, currency: str = "", weeks: int = 8) -> list[Any]:
    """The report's summary as terminal tables (the HTML page draws the same numbers: rfm_sync/report_html.py)."""
    from .insight import buckets, dimension_rows, group_rows, mask_text, readable

    out: list[Any] = []
    latest = summary.latest
    rows = group_rows(summary)
    title = f"groups as of {latest.as_of} (run {latest.id})" if latest else "groups (no scored run yet)"
    table = Table(title=title)
    for col in ["group", "customers", "share"] + (
        ["revenue", "revenue share", "orders", "avg order value"] if rows and "revenue" in rows[0] else []
    ):
        table.add_column(col, justify="left" if col == "group" else "right")
    for r in rows:
        cells = [r["group"], f"{r['customers']:,}", f"{r['share']:.1%}"]
        if "revenue" in r:
            cells += [
                f"{r['revenue']:,.2f}",
                f"{r['revenue_share']:.1%}",
                f"{r['orders']:,}",
                f"{r['aov']:,.2f}" if r["aov"] is not None else "–",
            ]
        table.add_row(*cells)
    out.append(table)

    weekly = buckets(summary, "week")[-weeks:]
    if weekly:
        growth = Table(title=f"customers per group per week (last {len(weekly)}; net flow in brackets)")
        growth.add_column("group")
        for b in weekly:
            growth.add_column(b["start"].strftime("%m-%d"), justify="right")
        for g in summary.order:
            growth.add_row(
                g,
                *(
                    f"{b['customers'].get(g, 0):,}" + (f" ({b['net'].get(g, 0):+,})" if b["moves_recorded"] else "")
                    for b in weekly
                ),
            )
        out.append(growth)

    from .report_html import default_choice

    labels = list(summary.periods)
    if labels:
        label = labels[default_choice(summary)]
        moves = summary.periods[label]
        out.append(
            transition_table(
                moves, summary.order, title=f"moves, {label} ({summary.period_runs.get(label, 0)} run(s) recorded)"
            )
            if moves
            else f"no moves recorded, {label}"
        )

    cuts = Table(
        title="R, F and M: cut points in force and customers per score",
        caption=f"cut points {summary.cut_points_origin}"
        + (f" over {summary.calibration_population:,} customers" if summary.calibration_population is not None else ""),
    )
    for col in ("dimension", "cut points", "customers per score", "median (approx.)"):
        cuts.add_column(col, justify="left" if col == "dimension" else "right")
    for row in dimension_rows(summary):
        dim = row["dimension"]
        scores = ", ".join(f"{s}: {n:,}" for s, n in row["scores"].items()) or "not recorded"
        cuts.add_row(
            dim,
            "  ·  ".join(readable(dim, c) for c in row["cuts"]) or "–",
            scores,
            _median(row["histogram"], dim, readable),
        )
    out.append(cuts)

    warnings = (latest.warnings if latest else []) or []
    if warnings:
        w = Table(title="eligibility warnings")
        w.add_column("warning")
        for text in warnings:
            w.add_row(mask_text(text))
        out.append(w)

    dests = sorted({d for r in summary.runs for d in (r.stats.get("pushed") or {})} | set(summary.destinations))
    runs = Table(title="last runs")
    for col in (
        ["run", "as of", "took", "status", "pulled", "quarantined", "scored", "changed", "cleared"]
        + [f"{d}: ok / failed" for d in dests]
        + ["error"]
    ):
        runs.add_column(col, justify="right" if col not in ("status", "error", "pulled") else "left")
    for r in summary.recent(10):
        s = r.stats
        runs.add_row(
            str(r.id),
            str(r.as_of),
            f"{r.seconds:.1f} s" if r.seconds is not None else "running",
            r.status,
            ", ".join(f"{k}: {v:,}" for k, v in (s.get("pulled") or {}).items()),
            f"{s.get('quarantined', 0):,}",
            f"{s.get('scored', 0):,}",
            f"{s.get('changed', 0):,}",
            f"{s.get('cleared', 0):,}",
            *(
                f"{(s.get('pushed') or {}).get(d, 0):,} / {(s.get('failed') or {}).get(d, 0):,}"
                if d in (s.get("pushed") or {})
                else "–"
                for d in dests
            ),
            mask_text(r.error or "")[:80],
        )
    out.append(runs)
    out.append(backlog_table(summary.backlog, summary.destinations))
    return out


def _median(hist: dict[str, Any] | None, dim: str, readable: Any) -> str:
    """The bin holding the median of the recorded histogram (customers with none in the window count below it)."""
    if not hist:
        return "–"
    total = hist["below"] + sum(hist["counts"]) + hist["over"]
    seen = hist["below"]
    if seen * 2 >= total:
        return "none in the window"
    for i, n in enumerate(hist["counts"]):
        seen += n
        if seen * 2 >= total:
            lo = hist["low"] + i * hist["width"]
            return (
                f"{readable(dim, lo)}–{readable(dim, lo + hist['width'])}" if hist["width"] > 1 else readable(dim, lo)
            )
    return f"above {readable(dim, hist['low'] + len(hist['counts']) * hist['width'])}"
