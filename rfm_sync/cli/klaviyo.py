"""``rfm-sync klaviyo ...``: Klaviyo account set-up commands (registered in :mod:`rfm_sync.cli`).

``bootstrap`` makes one segment per group; with ``--flows`` it then drafts the flows of
``[destinations.flows]`` on them (connectors/klaviyo/flows.py). The flows' groups are checked
against the scheme before anything is sent, so a misspelt group is a configuration error (exit 2),
not a half-made set of flows.
"""

from __future__ import annotations

from typing import Any

import click

from .. import exit_codes
from ._common import config_option, exit_with_config_errors, heavy_imports, load


@click.group("klaviyo")
def klaviyo() -> None:
    """Klaviyo set-up: segments for the RFM groups, and draft flows on them."""


@klaviyo.command("bootstrap")
@config_option
@click.option(
    "--destination",
    "dest_name",
    default=None,
    help="Name of the klaviyo destination to use (default: the only one configured).",
)
@click.option("--dry-run", is_flag=True, help="List what would be created; create nothing.")
@click.option(
    "--flows",
    "with_flows",
    is_flag=True,
    help="Also create the draft flows of [destinations.flows] (win-back, post-purchase, group change) "
    "on those segments. They stay drafts until you turn them live in Klaviyo.",
)
def bootstrap(config_path: str, dest_name: str | None, dry_run: bool, with_flows: bool) -> None:
    """Create one segment per RFM group ("Current RFM group equals X"); existing ones are left alone.
    With --flows, also the draft flows; existing flows (same name) are left alone too."""
    with heavy_imports():
        from connectors.base import ConnectorError
        from connectors.klaviyo.destination import KlaviyoDestination, KlaviyoSettings
        from connectors.klaviyo.segments import bootstrap_segments

        from .. import engine
        from ..config import ConfigError
        from ..pipeline import Unavailable, build_destinations, connector_fault

    config = load(config_path)
    candidates = [
        d for d in config.destinations if isinstance(d, KlaviyoSettings) and (dest_name is None or d.name == dest_name)
    ]
    if len(candidates) != 1:
        what = f"named {dest_name!r}" if dest_name else "(use --destination to pick one)" if candidates else ""
        exit_codes.fail(
            f"{config_path}: expected one klaviyo destination {what}, found {len(candidates)}", exit_codes.CONFIG
        )
    settings = candidates[0]
    plan = _plan(config, settings, config_path) if with_flows else None
    if plan is not None and plan.problems:
        exit_with_config_errors(ConfigError(plan.problems))
    dest = next(d for d in build_destinations(config) if d.name == settings.name)
    if isinstance(dest, Unavailable):  # its constructor failed: say why (as `doctor` does), no traceback
        exit_codes.fail(f"{dest.name}: cannot be set up: {connector_fault(dest.name, dest.error)}", exit_codes.FAILED)
    assert isinstance(dest, KlaviyoDestination), "the destination built from a KlaviyoSettings"
    try:
        results = bootstrap_segments(
            dest, engine.group_names(config.rfm), config.properties.current_group, dry_run=dry_run
        )
        _segments_table(results, dry_run)
        created = sum(r.status == "created" for r in results)
        click.echo(f"{created} segment(s) created, {sum(r.status == 'exists' for r in results)} already existed")
        if plan is not None:
            _flows(dest, plan, {r.name: r.segment_id for r in results}, dry_run)
    except ConnectorError as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)


def _segments_table(results: list[Any], dry_run: bool) -> None:
    """One row per group: its segment, what became of it, its id in Klaviyo."""
    from rich.markup import escape
    from rich.table import Table

    from ..report import console

    table = Table(title="segments" + (" (dry run: nothing created)" if dry_run else ""))
    for column in ("group", "segment", "result", "id in Klaviyo"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(*(escape(cell) for cell in (r.group, r.name, r.status, r.segment_id or "")))
    console().print(table)


def _plan(config: Any, settings: Any, config_path: str) -> Any:
    """The flows to draft, checked against the scheme's groups (problems name the file and key)."""
    from connectors.klaviyo.flows import PropertyNames, plan_flows

    from .. import engine

    p = config.properties
    plan = plan_flows(
        settings.flows,
        groups=engine.group_names(config.rfm),
        properties=PropertyNames(
            p.current_group,
            p.previous_group,
            p.score,
            p.group_changed_at,
            holdout=p.holdout if p.holdout_percent > 0 else None,
        ),
        metric_name=settings.metric_name,
        events=settings.events,
        where=f"destinations[{config.destinations.index(settings)}].flows",
    )
    plan.problems = [f"{config_path}: {problem}" for problem in plan.problems]
    return plan


def _flows(dest: Any, plan: Any, segments: dict[str, str | None], dry_run: bool) -> None:
    """Draft the planned flows and print what became of each; exit 1 if one could not be made."""
    from rich.markup import escape
    from rich.table import Table

    from connectors.klaviyo.flows import bootstrap_flows

    from ..report import console

    for note in plan.notes:
        click.echo(f"note: {note}")
    results = bootstrap_flows(dest, plan.flows, segments, dry_run=dry_run)
    table = Table(title="draft flows" + (" (dry run: nothing created)" if dry_run else ""))
    for column in ("flow", "trigger", "steps", "result", "in Klaviyo"):
        table.add_column(column, overflow="fold")
    for r in results:
        where = ", ".join(x for x in (r.flow_status, f"id {r.flow_id}" if r.flow_id else None) if x)
        table.add_row(*(escape(cell) for cell in (r.name, r.trigger, r.steps, r.status, r.reason or where)))
    console().print(table)
    made = sum(r.status == "created" for r in results)
    click.echo(
        f"{made} flow(s) created as drafts, {sum(r.status == 'exists' for r in results)} already existed"
        + (": review them in Klaviyo (Flows) and turn them live when they are ready" if made else "")
    )
    missing = [r for r in results if r.status == "not created"]
    if missing and not dry_run:
        exit_codes.fail(
            f"{len(missing)} flow(s) not created ({', '.join(r.name for r in missing)}): the table says why; "
            "run this command again once that is done (flows already made are left alone)",
            exit_codes.FAILED,
        )
