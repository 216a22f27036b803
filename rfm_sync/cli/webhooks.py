"""``rfm-sync webhooks list|retry|drop``: look at stored webhook events and unstick them.

The daemon's ``webhooks`` job marks an event ``failed`` (with its reason) when it cannot be read or
after ``[webhooks] max_attempts`` temporary errors; a failed event keeps its body. ``retry`` puts
failed events back to ``pending`` (the running daemon takes them within ``process_every_seconds``);
``drop`` sets events aside for good: ``dropped``, body forgotten, the row kept so that a replay of
the same event is still recognised (it is pruned after ``keep_events_days`` like a done one).

Neither bodies nor headers are ever printed: they carry customer data. Registered in :mod:`rfm_sync.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .. import exit_codes
from ._common import Command, config_option, load, open_store

if TYPE_CHECKING:
    from rich.table import Table

    from ..store.webhooks import EventSummary

# the store's statuses (rfm_sync.store.webhooks.STATUSES), here so that `--help` need not load the store
STATUSES = ("pending", "done", "failed", "dropped")


@click.group("webhooks")
def webhooks() -> None:
    """Stored webhook events: list them, retry failed ones, drop stuck ones."""


def _store(config_path: str) -> Any:
    return open_store(load(config_path))


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ") if moment else ""


def events_table(events: list[EventSummary], title: str) -> Table:
    """Narrow columns, and the error wrapped (never cut) in what width is left."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("id", "source", "topic", "status", "received", "tries"):
        fixed = col in ("id", "status", "received", "tries")
        table.add_column(col, justify="right" if col in ("id", "tries") else "left", no_wrap=fixed, overflow="fold")
    table.add_column("error", overflow="fold", ratio=1)
    for e in events:
        table.add_row(str(e.id), e.source, e.topic, e.status, _when(e.received_at), str(e.attempts), e.error or "")
    return table


@webhooks.command("list")
@config_option
@click.option(
    "--status", type=click.Choice(STATUSES), default=None, help="Only events with this status (default: all)."
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most this many, newest first."
)
def list_events(config_path: str, status: str | None, limit: int) -> None:
    """Show stored webhook events (newest first) with their status, tries and error; never their bodies."""
    from .. import report
    from ..store import webhooks as webhook_store

    store = _store(config_path)
    events = webhook_store.listing(store, status, limit)
    counts = webhook_store.counts(store)
    console = report.console()
    if not events:
        console.print(f"no {status + ' ' if status else ''}webhook events")
    else:
        console.print(events_table(events, f"webhook events{' (' + status + ')' if status else ''}"))
    console.print(", ".join(f"{counts.get(s, 0)} {s}" for s in webhook_store.STATUSES))


def _chosen_events(command: Command) -> Command:
    """The arguments ``retry`` and ``drop`` share: the config, and the events as IDS or --all-failed."""
    command = click.argument("ids", nargs=-1, type=int)(command)
    command = click.option("--all-failed", is_flag=True, help="Every failed event.")(command)
    return config_option(command)


def _act_on(
    action: Callable[..., dict[int, str]], config_path: str, ids: tuple[int, ...], all_failed: bool, done: str
) -> None:
    """Apply the store's ``action`` (retry or drop) to the chosen events, then print one line per event
    and exit 1 when a listed event was not acted on."""
    if bool(ids) == all_failed:
        raise click.UsageError("give event ids (see `rfm-sync webhooks list`) or --all-failed, not both")
    outcomes = action(_store(config_path), ids, all_failed=all_failed)
    for event in ids:
        outcomes.setdefault(event, "no such event")
    for event, outcome in sorted(outcomes.items()):
        click.echo(f"{event}: {outcome}")
    acted = sum(outcome == done for outcome in outcomes.values())
    click.echo(f"{acted} event(s) {done}")
    if acted < len(outcomes):
        sys.exit(exit_codes.FAILED)


@webhooks.command("retry")
@_chosen_events
def retry(config_path: str, all_failed: bool, ids: tuple[int, ...]) -> None:
    """Put failed events (IDS, or --all-failed) back to pending; the daemon processes them again."""
    from ..store.webhooks import retry as retry_events

    _act_on(retry_events, config_path, ids, all_failed, "retried")


@webhooks.command("drop")
@_chosen_events
def drop(config_path: str, all_failed: bool, ids: tuple[int, ...]) -> None:
    """Set pending or failed events (IDS, or --all-failed) aside for good; their ids still stop replays."""
    from ..store.webhooks import drop as drop_events

    _act_on(drop_events, config_path, ids, all_failed, "dropped")
