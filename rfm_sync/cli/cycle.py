"""The commands around one scoring: ``demo``, ``run``, ``score``, ``status``, ``recalibrate``,
``check-config``. Registered in :mod:`rfm_sync.cli`.

Each imports the engine, the store and the pipeline inside itself (under
:func:`~rfm_sync.cli._common.heavy_imports`), so listing the commands or checking a config does not
load what only scoring needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import exit_codes
from ._common import (
    config_option,
    day,
    heavy_imports,
    load,
    open_store,
    optional_config_option,
    wait_option,
    writer_lock,
)

if TYPE_CHECKING:
    from connectors.base import Destination


@click.command()
@click.option(
    "--dir",
    "folder",
    default="rfm-sync-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the sample data, store and sink file: new, empty, or one the demo made "
    "(then only the demo's files are replaced).",
)
@click.option("--customers", default=3000, show_default=True, help="Customers in the synthetic shop.")
def demo(folder: str, customers: int) -> None:
    """Run two cycles on bundled sample data (as of 90 days ago, then today); no accounts, no network."""
    with heavy_imports():
        from .. import engine, report
        from ..demo import DemoFolderRefused, run_demo

    console = report.console()
    try:
        result = run_demo(Path(folder), customers=customers, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except DemoFolderRefused as exc:
        exit_codes.fail(str(exc), exit_codes.REFUSED)
    order = engine.group_names(result.config.rfm)
    console.print(report.cycle_summary(result.first))
    console.print(
        report.group_table(
            result.first.group_counts, order, title=f"RFM groups as of {result.first.as_of} (90 days ago)"
        )
    )
    console.print(report.cycle_summary(result.second))
    console.print(
        report.group_table(result.second.group_counts, order, title=f"RFM groups as of {result.second.as_of} (today)")
    )
    console.print(
        report.transition_table(
            result.second.transitions, order, title="customers who changed group in the last 90 days"
        )
    )
    if result.first.quarantined:
        console.print(report.quarantine_table(result.first.quarantined))
    back = result.backtest
    console.print(
        f"back-tested history: {back.changes:,} group changes over {back.days} days from {back.since} to "
        f"{back.until}; what followed them: rfm-sync outcomes -c {result.config.path}",
        markup=False,
    )
    console.print(f"store: {result.store_path}\nprofiles written to: {result.sink_path}\nreport: {result.report_path}")


@click.command()
@config_option
# `run` is always exactly one cycle; --once spells that out and is kept (hidden) for the scripts and
# docs that pass it. A schedule is `rfm-sync daemon`, never a flag of `run`.
@click.option("--once", is_flag=True, hidden=True, help="Accepted for compatibility: `run` always runs one cycle.")
@click.option("--as-of", "as_of", default=None, help="Score as of this date (YYYY-MM-DD); default today.")
@click.option("--no-push", is_flag=True, help="Pull, score and fill the outbox, but send nothing.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Like --no-push, then show what would be sent to each destination "
    "(counts and a sample, emails masked); nothing is sent or marked sent.",
)
@wait_option
def run(config_path: str, once: bool, as_of: str | None, no_push: bool, dry_run: bool, wait: float) -> None:
    """Run exactly one cycle (pull, score, diff, push), then exit; for a schedule use `rfm-sync daemon`."""
    with heavy_imports():
        from connectors.base import ConnectorError

        from .. import engine, report
        from ..pipeline import Pipeline, build_destinations
        from ..store.lock import FencedDestination, StoreLocked

    config = load(config_path)
    as_of_day = day(as_of)
    store = open_store(config)
    preview = None
    try:
        with writer_lock(config, store, wait) as held:
            # every batch first confirms the lock is still ours: a pusher taken over stops sending
            destinations: list[Destination] = [
                FencedDestination(d, held.confirm) for d in build_destinations(config, dry_run=dry_run)
            ]
            pipeline = Pipeline(config, store, destinations=destinations)
            result = pipeline.run_cycle(as_of_day, push=not (no_push or dry_run))
            if dry_run:
                preview = pipeline.push(result, dry_run=True)
    except StoreLocked as exc:
        exit_codes.fail(str(exc), exit_codes.LOCKED)
    except ConnectorError as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)
    for name, what in (preview or {}).items():
        click.echo(
            f"dry run: {name}: would send {what['profiles']:,} profile(s) in {what['batches']} batch(es): "
            f"{what['group_changes']:,} group change(s), {what['cleared']:,} cleared"
        )
        for item in what["sample"]:
            click.echo(f"  {item['email']}: {item['change']} ({item['properties']} properties)")
    console = report.console()
    console.print(report.cycle_summary(result))
    console.print(report.group_table(result.group_counts, engine.group_names(config.rfm)))
    console.print(report.run_transitions(result, engine.group_names(config.rfm)))
    if result.quarantined:
        console.print(report.quarantine_table(result.quarantined))
    for where, error in result.errors.items():
        click.echo(f"error: {where}: {error}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.errors:
        sys.exit(exit_codes.FAILED)


@click.command()
@click.option(
    "--orders",
    "orders_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Orders CSV (customer_id,placed_at,amount; optional order_id,email,status,currency,refunded).",
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Where to write the scores CSV."
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Score as of this date (YYYY-MM-DD); default today in [shop] timezone (UTC without a config).",
)
@optional_config_option(
    "config_path", help="Optional config for [shop], [rfm] and the CSV column names of its first csv source."
)
@click.option(
    "--preset",
    default=None,
    type=click.Choice(["shopify-export", "bigcommerce-export", "woocommerce-export"]),
    help="The file is a shop's own order export (docs/shops.md); overrides the config's preset.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def score(
    orders_path: str, out_path: str, as_of: str | None, config_path: str | None, preset: str | None, quiet: bool
) -> None:
    """Score an orders CSV offline (no store, no network) into a CSV of per-customer scores."""
    with heavy_imports():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from connectors.base import ConnectorError
        from connectors.csv.source import CsvSettings

        from .. import engine, report
        from ..config import parse_config
        from ..offline import OutputRefused, check_outputs, score_csv

    try:
        check_outputs(Path(orders_path), Path(out_path))
    except OutputRefused as exc:
        exit_codes.fail(str(exc), exit_codes.REFUSED)
    config = load(config_path) if config_path else parse_config({})
    settings = next((s for s in config.sources if isinstance(s, CsvSettings)), None)
    if settings is not None:
        settings = settings.model_copy(update={"path": orders_path})
    if preset is not None:
        settings = CsvSettings.model_validate(
            {**(settings.model_dump() if settings else {"name": "csv"}), "path": orders_path, "preset": preset}
        )
    as_of_day = day(as_of) or config.today()  # today in [shop] timezone (UTC without a config), as `run` takes it
    try:
        if quiet:
            result = score_csv(Path(orders_path), Path(out_path), config, as_of_day, settings)
        else:
            with Progress(
                TextColumn("scoring {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                transient=True,
                console=report.console(stderr=True),
            ) as bar:
                task = bar.add_task(Path(orders_path).name, total=100)
                result = score_csv(
                    Path(orders_path),
                    Path(out_path),
                    config,
                    as_of_day,
                    settings,
                    progress=lambda pct: bar.update(task, completed=pct),
                )
    except ConnectorError as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)
    except OSError as exc:  # the output folder is read-only, the disk full, ...: older outputs are kept
        exit_codes.fail(exit_codes.output_problem(exc, out_path), exit_codes.OUTPUT)
    if not quiet:
        console = report.console(stderr=True)
        counts = {str(g): int(n) for g, n in result.result.frame["rfm_group"].value_counts().items()}
        console.print(report.group_table(counts, engine.group_names(config.rfm), title=f"RFM groups as of {as_of_day}"))
        for warning in result.result.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        if result.quarantined:
            console.print(f"[yellow]{result.quarantined:,} bad rows quarantined[/yellow] → {result.quarantine_file}")
        if result.skipped:
            console.print(
                f"[yellow]{result.skipped:,} rows skipped (negative amount, not counted)[/yellow] → "
                f"{result.quarantine_file}"
            )
        if result.quarantine_file and not result.quarantined and not result.skipped:
            console.print(f"no bad rows: {result.quarantine_file} (from an earlier run) now lists none")
        console.print(f"{result.customers:,} customers → {result.out}")


@click.command()
@config_option
@click.option("--runs", "limit", default=10, show_default=True, help="How many recent runs to show.")
def status(config_path: str, limit: int) -> None:
    """Show the last runs, group counts, thresholds and the outbox backlog per destination."""
    with heavy_imports():
        from .. import engine, report
        from ..store.outbox import backlog
        from ..store.runs import recent_runs

    config = load(config_path)
    store = open_store(config)
    console = report.console()
    runs = recent_runs(store, limit)
    console.print(report.runs_table(runs))
    last = next((r for r in runs if r.get("group_counts")), None)
    if last:
        console.print(
            report.group_table(
                last["group_counts"],
                engine.group_names(config.rfm),
                title=f"groups after run {last['id']} (as of {last['as_of']})",
            )
        )
        if last.get("cut_points"):
            from ..calibration import cut_points_table, run_population, small_population

            population = run_population(last)
            console.print(
                cut_points_table(
                    last["cut_points"],
                    (last.get("stats") or {}).get("calibrated_on"),
                    title=f"cut points used by run {last['id']}",
                    population=population,
                )
            )
            if engine.SCHEMES[config.rfm.scheme].USES_QUANTILES and (small := small_population(population, config.rfm)):
                from rich.markup import escape

                console.print(f"[yellow]warning:[/yellow] {escape(small)}")  # "[rfm]" is not markup
        for warning in last.get("warnings") or []:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(report.backlog_table(backlog(store), [d.name for d in config.destinations]))


@click.command()
@config_option
@click.option(
    "--as-of", "as_of", default=None, help="Calibrate as of this date (YYYY-MM-DD); default today in [shop] timezone."
)
@wait_option
def recalibrate(config_path: str, as_of: str | None, wait: float) -> None:
    """Recompute and freeze the quantile cut points now; the next runs use them (profiles change then)."""
    with heavy_imports():
        from .. import engine, report
        from ..calibration import cut_points_table
        from ..calibration import recalibrate as run_recalibration
        from ..store.lock import StoreLocked

    config = load(config_path)
    store = open_store(config)
    as_of_day = day(as_of) or config.today()  # today in [shop] timezone, as `run` takes it
    try:
        with writer_lock(config, store, wait):
            result = run_recalibration(config, store, as_of_day)
    except StoreLocked as exc:
        exit_codes.fail(str(exc), exit_codes.LOCKED)
    console = report.console()
    if not engine.SCHEMES[config.rfm.scheme].USES_QUANTILES:
        console.print(f"scheme {config.rfm.scheme} has fixed thresholds: nothing to calibrate")
        return
    if not result["frozen"]:
        count, least = result["population"], config.rfm.min_calibration_customers
        window = f"with an order in the {config.rfm.window_days}-day window as of {as_of_day}"
        exit_codes.fail(
            f"recalibrate: no customers {window}: nothing to calibrate, cut points not frozen "
            "(pull the orders first: `rfm-sync run -c CONFIG`)"
            if not count
            else f"recalibrate: only {count:,} customer{'s' if count != 1 else ''} {window}, fewer than "
            f"[rfm] min_calibration_customers = {least}: cut points not frozen (every run computes its own "
            "until the shop has more)",
            exit_codes.FAILED,
        )
    if result["previous"]:
        console.print(
            cut_points_table(result["previous"]["cut_points"], result["previous"]["as_of"], title="previous cut points")
        )
    console.print(
        cut_points_table(result["cut_points"], as_of_day, title="new cut points", population=result["population"])
    )


@click.command("check-config")
@click.argument("config_arg", required=False, type=click.Path(dir_okay=False), metavar="[CONFIG]")
@optional_config_option(
    "config_opt", help="Path to the TOML configuration (as for every other command; or give it as the argument)."
)
def check_config(config_arg: str | None, config_opt: str | None) -> None:
    """Validate a configuration file: exit 0 if valid, else print every problem and exit 2."""
    given = [path for path in (config_arg, config_opt) if path is not None]  # "" too: a path, refused when read
    if len(given) != 1:
        raise click.UsageError("give the configuration once: `rfm-sync check-config -c CONFIG` (or CONFIG)")
    config_path = given[0]
    config = load(config_path)
    click.echo(
        f"{config_path}: OK ({len(config.sources)} source(s), {len(config.destinations)} destination(s), "
        f"scheme {config.rfm.scheme})"
    )
