"""Commands for looking at the groups: ``report``, ``customers``, ``explain``. Registered in :mod:`rfm_sync.cli`.

They only read the store (no lock: a running daemon is not disturbed) and run inside
:class:`rfm_sync.exit_codes.FaultGroup`, so a store that cannot be opened or an output that
cannot be written ends in one line and its exit code.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import click

from .. import exit_codes
from ._common import check_groups, config_option, day, day_option, heavy_imports, load_with_store


@click.command()
@config_option
@click.option(
    "--html",
    "html_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the report as one self-contained HTML page (charts inside; opens with no network) here.",
)
@day_option("--since", "Show the moves since this day (by the runs' as-of days) first; default the last 30 days.")
def report(config_path: str, html_path: str | None, since: str | None) -> None:
    """Group sizes now and over time, who moved where, cut points, revenue per group, warnings, last runs."""
    with heavy_imports():
        from .. import insight
        from .. import report as tables
        from ..report_html import write_report

    since_day = day(since, "--since")
    config, store = load_with_store(config_path)
    if html_path is not None:
        try:
            written = write_report(config, store, Path(html_path), since_day)
        except OSError as exc:
            exit_codes.fail(exit_codes.output_problem(exc, html_path), exit_codes.OUTPUT)
        click.echo(f"report written to {written} ({written.stat().st_size / 1e6:.1f} MB)")
        return
    console = tables.console()
    for table in tables.summary_tables(
        insight.gather(config, store, since=since_day), currency=config.shop.currency or ""
    ):
        console.print(table)


@click.command()
@config_option
@click.option("--group", default=None, help="Only customers now in this group.")
@click.option(
    "--moved-from",
    "moved_from",
    default=None,
    help="Only customers whose previous group (the last different one) is this.",
)
@day_option("--since", "Only customers whose group changed (or was cleared) on or after this day (shop time zone).")
@click.option(
    "--cleared",
    is_flag=True,
    help="Only customers without a group because none of their orders qualifies (cleared, or never had one).",
)
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "csv", "json"]),
    help="table (the first --limit rows), or every row as CSV or JSON lines on stdout.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Rows shown in table format.")
@click.option(
    "--show-emails",
    is_flag=True,
    help="Full email addresses (in the email column and in email: keys); masked (j***@example.com) without it.",
)
def customers(
    config_path: str,
    group: str | None,
    moved_from: str | None,
    since: str | None,
    cleared: bool,
    fmt: str,
    limit: int,
    show_emails: bool,
) -> None:
    """Who is where: recency, frequency, monetary, scores, group, previous group and when it changed.
    Emails are masked unless --show-emails: a listing is easily pasted or mailed on."""
    with heavy_imports():
        from rich.table import Table

        from .. import lookup
        from .. import report as tables

    since_day = day(since, "--since")
    config, store = load_with_store(config_path)
    check_groups(config, **{"--group": group, "--moved-from": moved_from})
    if cleared and group is not None:
        exit_codes.fail(
            "--cleared lists customers without a group; it cannot be combined with --group", exit_codes.CONFIG
        )
    frame, basis = lookup.list_customers(
        config, store, group=group, moved_from=moved_from, since=since_day, cleared=True if cleared else None
    )
    rows = lookup.records(frame)
    if not show_emails:
        from ..insight import mask_email, mask_text

        for row in rows:
            row["email"] = mask_email(row["email"]) or None
            row["customer_key"] = mask_text(row["customer_key"])
    if fmt in ("json", "csv"):
        buffer = io.StringIO()
        if fmt == "json":
            buffer.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(buffer, fieldnames=lookup.COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        try:
            click.echo(buffer.getvalue(), nl=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    what = basis and f"values as of {basis.as_of} (run {basis.run_id})" or "nothing scored yet"
    table = Table(title=f"{len(rows):,} customer{'s' if len(rows) != 1 else ''} · {what}")
    for col in ("customer", "email", "group", "previous", "changed (UTC)", "days", "orders", "spend", "RFM", "status"):
        table.add_column(col, justify="right" if col in ("days", "orders", "spend") else "left")
    for r in rows[:limit]:
        table.add_row(
            r["customer_key"],
            r["email"] or "",
            r["group"] or "–",
            r["previous_group"] or "–",
            (r["group_changed_at"] or "")[:16].replace("T", " "),
            _cell(r["recency_days"]),
            _cell(r["frequency"]),
            r["monetary"] or "",
            r["rfm_score"] or "",
            r["status"],
        )
    console = tables.console()
    console.print(table)
    if len(rows) > limit:
        console.print(f"… {len(rows) - limit:,} more: --limit N, or --format csv / json for every row")


def _cell(value) -> str:
    return "" if value is None else f"{value:,}"


@click.command()
@config_option
@click.argument("customer")
def explain(config_path: str, customer: str) -> None:
    """Why CUSTOMER (a key, email or shop customer id) is in their group, and what would move them."""
    with heavy_imports():
        from .. import lookup

    config, store = load_with_store(config_path)
    try:
        e = lookup.explain(config, store, customer)
    except lookup.LookupError_ as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)
    for line in explanation_lines(e):
        click.echo(line)


def explanation_lines(e) -> list[str]:
    b = e.basis
    head = f"customer {e.customer_key}" + (f" ({e.email})" if e.email else "")
    lines = [head]
    if e.status != "scored":
        was = (f", cleared from {e.previous_group}" if e.previous_group else "") + (
            f" at {e.changed_at.isoformat(timespec='seconds')}" if e.changed_at else ""
        )
        lines.append(f"  no group ({e.status}{was})")
        if e.orders:
            lines.append("  their stored orders: " + ", ".join(f"{n} {kind}" for kind, n in sorted(e.orders.items())))
        lines += [f"  {note}" for note in e.notes]
        if e.moves:
            lines.append("  what would give them a group: " + "; ".join(m.needs for m in e.moves))
        return lines
    since = f" since {e.changed_at.isoformat(timespec='seconds')}" if e.changed_at else ""
    previous = f"; previous group {e.previous_group}" if e.previous_group else ""
    lines.append(f"  group: {e.group}{since}{previous} (scored by run {b.run_id} as of {b.as_of})")
    if b.calibrated_on:
        pop = f" over {b.population:,} customers" if b.population is not None else ""
        lines.append(f"  quantile cut points computed as of {b.calibrated_on}{pop}")
    if e.values:
        lines.append(f"  score {e.rfm_score}:")
        for dim, letter in (("recency", "R"), ("frequency", "F"), ("monetary", "M")):
            lines.append(f"    {letter} = {e.scores[dim]}  {e.value_text[dim]}; {e.bands[dim]}")
        lines.append(f"  rule: {e.scheme_rule}")
        if e.segment_rule:
            lines.append(f"  segment: {e.segment_rule}")
    lines += [f"  note: {note}" for note in e.notes]
    if e.moves:
        lines.append("  what would move them (each alone, other values unchanged):")
        for m in e.moves:
            change = "no group change" if m.group == e.group else f"group {m.group}"
            lines.append(f"    {m.dimension[0].upper()} {m.score_from} → {m.score_to}: {m.needs} → {change}")
    elif e.values:
        lines.append("  what would move them: nothing raises a score further (every score is at its best)")
    return lines
