"""``rfm-sync klaviyo ...``: Klaviyo account set-up commands (registered in :mod:`rfm_sync.cli`)."""
from __future__ import annotations

import sys

import click

from connectors.base import ConnectorError

EXIT_CONFIG = 2
EXIT_FAILED = 1


@click.group("klaviyo")
def klaviyo() -> None:
    """Klaviyo set-up: segments for the RFM groups."""


@klaviyo.command("bootstrap")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Path to the TOML configuration.")
@click.option("--destination", "dest_name", default=None,
              help="Name of the klaviyo destination to use (default: the only one configured).")
@click.option("--dry-run", is_flag=True, help="List what would be created; create nothing.")
def bootstrap(config_path: str, dest_name: str | None, dry_run: bool) -> None:
    """Create one segment per RFM group ("Current RFM group equals X"); existing ones are left alone."""
    from connectors.klaviyo.destination import KlaviyoSettings
    from connectors.klaviyo.segments import bootstrap_segments

    from . import engine
    from .cli import _load
    from .pipeline import build_destinations

    config = _load(config_path)
    candidates = [d for d in config.destinations if isinstance(d, KlaviyoSettings)
                  and (dest_name is None or d.name == dest_name)]
    if len(candidates) != 1:
        what = f"named {dest_name!r}" if dest_name else "(use --destination to pick one)" if candidates else ""
        click.echo(f"error: {config_path}: expected one klaviyo destination {what}, found {len(candidates)}",
                   err=True)
        sys.exit(EXIT_CONFIG)
    dest = next(d for d in build_destinations(config) if d.name == candidates[0].name)
    try:
        results = bootstrap_segments(dest, engine.group_names(config.rfm), config.properties.current_group,
                                     dry_run=dry_run)
    except ConnectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    for r in results:
        suffix = f" (id {r.segment_id})" if r.segment_id else ""
        click.echo(f"{r.status:>12}: {r.name}{suffix}")
    created = sum(r.status == "created" for r in results)
    click.echo(f"{created} segment(s) created, {sum(r.status == 'exists' for r in results)} already existed")
