"""``rfm-sync klaviyo ...``: Klaviyo account set-up commands (registered in :mod:`rfm_sync.cli`)."""

from __future__ import annotations

import click

from .. import exit_codes
from ._common import config_option, heavy_imports, load


@click.group("klaviyo")
def klaviyo() -> None:
    """Klaviyo set-up: segments for the RFM groups."""


@klaviyo.command("bootstrap")
@config_option
@click.option(
    "--destination",
    "dest_name",
    default=None,
    help="Name of the klaviyo destination to use (default: the only one configured).",
)
@click.option("--dry-run", is_flag=True, help="List what would be created; create nothing.")
def bootstrap(config_path: str, dest_name: str | None, dry_run: bool) -> None:
    """Create one segment per RFM group ("Current RFM group equals X"); existing ones are left alone."""
    with heavy_imports():
        from connectors.base import ConnectorError
        from connectors.klaviyo.destination import KlaviyoDestination, KlaviyoSettings
        from connectors.klaviyo.segments import bootstrap_segments

        from .. import engine
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
    dest = next(d for d in build_destinations(config) if d.name == candidates[0].name)
    if isinstance(dest, Unavailable):  # its constructor failed: say why (as `doctor` does), no traceback
        exit_codes.fail(f"{dest.name}: cannot be set up: {connector_fault(dest.name, dest.error)}", exit_codes.FAILED)
    assert isinstance(dest, KlaviyoDestination), "the destination built from a KlaviyoSettings"
    try:
        results = bootstrap_segments(
            dest, engine.group_names(config.rfm), config.properties.current_group, dry_run=dry_run
        )
    except ConnectorError as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)
    for r in results:
        suffix = f" (id {r.segment_id})" if r.segment_id else ""
        click.echo(f"{r.status:>12}: {r.name}{suffix}")
    created = sum(r.status == "created" for r in results)
    click.echo(f"{created} segment(s) created, {sum(r.status == 'exists' for r in results)} already existed")
