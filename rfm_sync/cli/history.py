"""Commands on the group history: ``outcomes`` (what the customers who moved did next) and ``backtest``
(reconstruct the history before the first run). Registered in :mod:`rfm_sync.cli`.

``outcomes`` only reads the store; ``backtest`` writes the back-test's history rows, under the store's
writer lock like every command that writes.
"""

from __future__ import annotations

from typing import Any

import click

from .. import exit_codes
from ._common import (
    check_groups,
    config_option,
    day,
    day_option,
    heavy_imports,
    load_with_store,
    wait_option,
    writer_lock,
)


@click.command()
@config_option
@click.option("--from", "from_group", default=None, metavar="GROUP", help="Only the moves from this group.")
@click.option("--to", "to_group", default=None, metavar="GROUP", help="Only the moves to this group.")
@day_option("--since", "Only the moves made on or after this day.")
@day_option("--until", "Only the moves made on or before this day.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (money as exact decimal text).")
def outcomes(
    config_path: str, from_group: str | None, to_group: str | None, since: str | None, until: str | None, as_json: bool
) -> None:
    """What the customers who moved from one group to another did within 30, 60 and 90 days: back up,
    stayed, fell further, and what they spent."""
    with heavy_imports():
        from .. import outcomes, report

    config, store = load_with_store(config_path)
    check_groups(config, **{"--from": from_group, "--to": to_group})
    moves = outcomes.Moves(from_group, to_group, day(since, "--since"), day(until, "--until"))
    result = outcomes.compute(config, store, moves)
    if as_json:
        import json

        click.echo(
            json.dumps(
                {
                    "known_until": str(result.known_until) if result.known_until else None,
                    "currency": result.currency,
                    "left_out": result.left_out,
                    "cohorts": outcomes.records(result),
                },
                indent=2,
            )
        )
        return
    console = report.console()
    if result.table.empty:
        console.print(_nothing_yet(result, config_path))
        return
    console.print(outcomes_table(result))
    effect = outcomes.effects(result)
    if not effect.empty:
        console.print(effects_table(effect))
    if result.left_out:
        console.print(
            f"{result.left_out:,} move(s) from or to groups the current [rfm] settings do not have were left out",
            markup=False,
        )
    console.print(
        "up / stayed / down: the group on the horizon's last day against the group moved to "
        "(better, the same, worse or no group); observed: members whose horizon has passed. "
        "This describes what followed a move; without a hold-out it does not show what caused it "
        "(docs/outcomes.md).",
        markup=False,
    )


def _nothing_yet(result: Any, config_path: str) -> str:
    if result.known_until is None:
        return (
            "no group history yet: run a cycle (`rfm-sync run -c CONFIG`), or reconstruct earlier days from the "
            f"stored orders with `rfm-sync backtest -c {config_path} --since YYYY-MM-DD`"
        )
    return f"no moves between groups recorded up to {result.known_until} (for these options)"


def outcomes_table(result: Any) -> Any:
    """The outcome table for the terminal: a block of rows per cohort, one row per horizon."""
    from rich.table import Table

    from ..lookup import money_text

    money = f" ({result.currency})" if result.currency else ""
    table = Table(title=f"what followed each move (groups known up to {result.known_until})")
    arms = bool((result.table["arm"] != "").any())
    for col in ("from", "to", *(["arm"] if arms else []), "moved", "within", "observed", "up", "stayed", "down"):
        table.add_column(col, justify="left" if col in ("from", "to", "arm") else "right")
    table.add_column("bought again", justify="right")
    table.add_column(f"revenue{money}", justify="right")
    table.add_column(f"per member{money}", justify="right")
    previous = None
    for row in result.table.to_dict("records"):
        cohort = (row["from_group"], row["to_group"], row["arm"])
        if previous is not None and cohort != previous:
            table.add_section()
        seen = row["observed"]

        def share(n: int, seen: int = seen) -> str:
            return f"{n / seen:.0%} ({n:,})" if seen else "–"

        first = cohort != previous
        table.add_row(
            row["from_group"] if first else "",
            row["to_group"] if first else "",
            *([(row["arm"] or "not split") if first else ""] if arms else []),
            f"{row['moved']:,}" if first else "",
            f"{row['horizon_days']} days",
            f"{seen:,}",
            share(row["up"]),
            share(row["stayed"]),
            share(row["down"]),
            share(row["buyers"]),
            money_text(row["revenue_e4"]) if seen else "–",
            _cents(row["revenue_e4"], seen) if seen else "–",
        )
        previous = cohort
    return table


def effects_table(effect: Any) -> Any:
    """The hold-out comparison: per cohort and horizon, the share back up when reached and when held out."""
    from rich.table import Table

    def missing(v: Any) -> bool:
        return v is None or v != v

    def share(v: Any) -> str:
        return "–" if missing(v) else f"{v:.0%}"

    def points(v: Any) -> str:  # a difference of shares
        return "–" if missing(v) else f"{v:+.1%}"

    table = Table(title="reached against held out: the share back up")
    headers = ("from", "to", "within", "reached", "held out", "up, reached", "up, held out", "difference")
    for col in (*headers, "95 % interval"):
        table.add_column(col, justify="left" if col in ("from", "to") else "right")
    for row in effect.to_dict("records"):
        table.add_row(
            row["from_group"],
            row["to_group"],
            f"{row['horizon_days']} days",
            f"{row['reached']:,}",
            f"{row['held_out']:,}",
            share(row["up_reached"]),
            share(row["up_held_out"]),
            points(row["difference"]),
            "–" if missing(row["low"]) else f"{points(row['low'])} … {points(row['high'])}",
        )
    return table


def _cents(total_e4: int, members: int) -> str:
    """The mean per member, rounded to the cent (half to even) for display."""
    from decimal import ROUND_HALF_EVEN, Decimal

    from ..store.schema import MONEY_SCALE

    mean = Decimal(int(total_e4)) / MONEY_SCALE / members
    return str(mean.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


@click.command()
@config_option
@day_option("--since", "The first day to reconstruct (e.g. a year before the first run).", required=True)
@click.option(
    "--every",
    default=7,
    show_default=True,
    type=click.IntRange(min=1, max=365),
    metavar="DAYS",
    help="Days between two reconstructed days (7: as a weekly run would have seen it).",
)
@wait_option
def backtest(config_path: str, since: str, every: int, wait: float) -> None:
    """Reconstruct the group history before the first run from the stored orders (for `outcomes`):
    the groups each customer would have had every DAYS days, with today's [rfm] settings."""
    with heavy_imports():
        from .. import backtest as reconstruct
        from .. import report
        from ..store.lock import StoreLocked

    config, store = load_with_store(config_path)
    start = day(since, "--since")
    assert start is not None, "--since is required"
    end, first = reconstruct.limit(config, store)
    if start >= end:
        exit_codes.fail(
            f"--since {start}: nothing to reconstruct, the history "
            + (f"starts with the first run, as of {first}" if first else f"would end today, {config.today()}"),
            exit_codes.CONFIG,
        )
    console = report.console(stderr=True)
    try:
        with writer_lock(config, store, wait), console.status("reconstructing") as status:
            result = reconstruct.run_backtest(
                config,
                store,
                since=start,
                every=every,
                progress=lambda done, total: status.update(f"reconstructing: day {done:,} of {total:,}"),
            )
    except StoreLocked as exc:
        exit_codes.fail(str(exc), exit_codes.LOCKED)
    click.echo(
        f"back-test: {result.days:,} days from {result.since} to {result.until} (every {every}), "
        f"{result.customers:,} customers, {result.changes:,} group changes recorded "
        f"(earlier back-test rows replaced; the rows of real runs are kept)"
    )
