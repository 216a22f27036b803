"""The command line: parse, call the library, format results and errors. The only place that prints."""
from __future__ import annotations

import gc

# the imports below (pandas, pyarrow, pydantic's models) make about a million objects and no garbage;
# without the collector's passes over them they take about 0.1 s less (of 0.8-1.0 s)
gc.disable()

import atexit  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NoReturn  # noqa: E402

import click  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from connectors.base import ConnectorError  # noqa: E402

from . import engine, report  # noqa: E402
from .config import Config, ConfigError, load_config, parse_config  # noqa: E402
from . import exit_codes  # noqa: E402
from .exit_codes import FaultGroup  # noqa: E402

gc.freeze()  # they stay for the process's life: later collections need not walk them either
gc.enable()

# exit codes: the table is in rfm_sync/exit_codes.py (and the README)
EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED, EXIT_LOCKED = (exit_codes.FAILED, exit_codes.CONFIG, exit_codes.REFUSED,
                                                       exit_codes.LOCKED)


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def exit_with_config_errors(exc: ConfigError) -> NoReturn:
    """Print every configuration problem (file, key path, what was expected) and exit 2."""
    click.echo("configuration errors:", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_CONFIG)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        exit_with_config_errors(exc)


def _open_store(config: Config):
    from .store import Store

    return Store.open(config.store.url, config.base_dir)


def _writer_lock(config: Config, store, wait: float):
    """The store's single-writer lock for a one-shot command (see rfm_sync.store.lock), with the
    daemon's heartbeat and expiry, so a daemon and a run agree on when a silent holder is dead."""
    from .store.lock import hold

    def waiting(other) -> None:
        click.echo(f"waiting up to {wait:g} s for the store lock (held by {other.holder} since "
                   f"{other.acquired_at.isoformat(timespec='seconds')})", err=True)

    return hold(store, wait_seconds=wait, heartbeat_seconds=config.daemon.heartbeat_seconds,
                expire_seconds=config.daemon.lock_expire_seconds, on_wait=waiting)


def _exit_locked(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_LOCKED)


WAIT_HELP = ("If another process holds the store's lock, wait up to SECONDS for it (default 0: fail at once "
             f"with exit status {EXIT_LOCKED}, naming the holder).")


@click.group(cls=FaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="rfm-sync", prog_name="rfm-sync", message="%(prog)s %(version)s")
def main(verbose: int) -> None:
    """rfm-sync: RFM scores from your shop's orders, synced to your email platform and ad audiences."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # At exit Python walks every object once more before the process ends; with pandas and pyarrow
    # loaded that took 0.2-0.35 s after each `rfm-sync score`. Freezing them first (permanent
    # generation) leaves that walk nothing to do; the OS frees the memory as always.
    atexit.unregister(gc.freeze)  # registered once, however often main() runs in one process (tests)
    atexit.register(gc.freeze)


@main.command()
@click.option("--dir", "folder", default="rfm-sync-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the sample data, store and sink file: new, empty, or one the demo made "
                   "(then only the demo's files are replaced).")
@click.option("--customers", default=3000, show_default=True, help="Customers in the synthetic shop.")
def demo(folder: str, customers: int) -> None:
    """Run two cycles on bundled sample data (as of 90 days ago, then today); no accounts, no network."""
    from .demo import DemoFolderRefused, run_demo

    console = report.console()
    try:
        result = run_demo(Path(folder), customers=customers, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except DemoFolderRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    order = engine.group_names(result.config.rfm)
    console.print(report.cycle_summary(result.first))
    console.print(report.group_table(result.first.group_counts, order,
                                     title=f"RFM groups as of {result.first.as_of} (90 days ago)"))
    console.print(report.cycle_summary(result.second))
    console.print(report.group_table(result.second.group_counts, order,
                                     title=f"RFM groups as of {result.second.as_of} (today)"))
    console.print(report.transition_table(result.second.transitions, order,
                                          title="customers who changed group in the last 90 days"))
    if result.first.quarantined:
        console.print(report.quarantine_table(result.first.quarantined))
    console.print(f"store: {result.store_path}\nprofiles written to: {result.sink_path}\nreport: {result.report_path}")


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Path to the TOML configuration.")
# `run` is always exactly one cycle; --once spells that out and is kept (hidden) for the scripts and
# docs that pass it. A schedule is `rfm-sync daemon`, never a flag of `run`.
@click.option("--once", is_flag=True, hidden=True, help="Accepted for compatibility: `run` always runs one cycle.")
@click.option("--as-of", "as_of", default=None, help="Score as of this date (YYYY-MM-DD); default today.")
@click.option("--no-push", is_flag=True, help="Pull, score and fill the outbox, but send nothing.")
@click.option("--dry-run", is_flag=True, help="Like --no-push, then show what would be sent to each destination "
                                              "(counts and a sample, emails masked); nothing is sent or marked sent.")
@click.option("--wait", "wait", default=0.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help=WAIT_HELP)
def run(config_path: str, once: bool, as_of: str | None, no_push: bool, dry_run: bool, wait: float) -> None:
    """Run exactly one cycle (pull, score, diff, push), then exit; for a schedule use `rfm-sync daemon`."""
    from .pipeline import Pipeline, build_destinations
    from .store.lock import FencedDestination, StoreLocked

    config = _load(config_path)
    day = _as_of(as_of)
    store = _open_store(config)
    preview = None
    try:
        with _writer_lock(config, store, wait) as held:
            # every batch first confirms the lock is still ours: a pusher taken over stops sending
            destinations = [FencedDestination(d, held.confirm) for d in build_destinations(config, dry_run=dry_run)]
            pipeline = Pipeline(config, store, destinations=destinations)
            result = pipeline.run_cycle(day, push=not (no_push or dry_run))
            if dry_run:
                preview = pipeline.push(result, dry_run=True)
    except StoreLocked as exc:
        _exit_locked(exc)
    except ConnectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    for name, what in (preview or {}).items():
        click.echo(f"dry run: {name}: would send {what['profiles']:,} profile(s) in {what['batches']} batch(es): "
                   f"{what['group_changes']:,} group change(s), {what['cleared']:,} cleared")
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
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--orders", "orders_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Orders CSV (customer_id,placed_at,amount; optional order_id,email,status,currency,refunded).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Where to write the scores CSV.")
@click.option("--as-of", "as_of", default=None,
              help="Score as of this date (YYYY-MM-DD); default today in [shop] timezone (UTC without a config).")
@click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Optional config for [shop], [rfm] and the CSV column names of its first csv source.")
@click.option("--preset", default=None, type=click.Choice(["shopify-export", "bigcommerce-export", "woocommerce-export"]),
              help="The file is a shop's own order export (docs/shops.md); overrides the config's preset.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def score(orders_path: str, out_path: str, as_of: str | None, config_path: str | None, preset: str | None,
          quiet: bool) -> None:
    """Score an orders CSV offline (no store, no network) into a CSV of per-customer scores."""
    from connectors.csv.source import CsvSettings

    from .offline import OutputRefused, check_outputs, score_csv

    try:
        check_outputs(Path(orders_path), Path(out_path))
    except OutputRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    config = _load(config_path) if config_path else parse_config({})
    settings = next((s for s in config.sources if isinstance(s, CsvSettings)), None)
    if settings is not None:
        settings = settings.model_copy(update={"path": orders_path})
    if preset is not None:
        settings = CsvSettings.model_validate({**(settings.model_dump() if settings else {"name": "csv"}),
                                               "path": orders_path, "preset": preset})
    day = _as_of(as_of) or config.today()  # today in [shop] timezone (UTC without a config), as `run` takes it
    try:
        if quiet:
            result = score_csv(Path(orders_path), Path(out_path), config, day, settings)
        else:
            with Progress(TextColumn("scoring {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TimeElapsedColumn(), transient=True, console=report.console(stderr=True)) as bar:
                task = bar.add_task(Path(orders_path).name, total=100)
                result = score_csv(Path(orders_path), Path(out_path), config, day, settings,
                                   progress=lambda pct: bar.update(task, completed=pct))
    except ConnectorError as exc:
        exit_codes.fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # the output folder is read-only, the disk full, ...: older outputs are kept
        exit_codes.fail(exit_codes.output_problem(exc, out_path), exit_codes.OUTPUT)
    if not quiet:
        console = report.console(stderr=True)
        counts = result.result.frame["rfm_group"].value_counts().to_dict()
        console.print(report.group_table(counts, engine.group_names(config.rfm),
                                         title=f"RFM groups as of {day}"))
        for warning in result.result.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        if result.quarantined:
            console.print(f"[yellow]{result.quarantined:,} bad rows quarantined[/yellow] → {result.quarantine_file}")
        if result.skipped:
            console.print(f"[yellow]{result.skipped:,} rows skipped (negative amount, not counted)[/yellow] → "
                          f"{result.quarantine_file}")
        if result.quarantine_file and not result.quarantined and not result.skipped:
            console.print(f"no bad rows: {result.quarantine_file} (from an earlier run) now lists none")
        console.print(f"{result.customers:,} customers → {result.out}")


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Path to the TOML configuration.")
@click.option("--runs", "limit", default=10, show_default=True, help="How many recent runs to show.")
def status(config_path: str, limit: int) -> None:
    """Show the last runs, group counts, thresholds and the outbox backlog per destination."""
    from .store.outbox import backlog
    from .store.runs import recent_runs

    config = _load(config_path)
    store = _open_store(config)
    console = report.console()
    runs = recent_runs(store, limit)
    console.print(report.runs_table(runs))
    last = next((r for r in runs if r.get("group_counts")), None)
    if last:
        console.print(report.group_table(last["group_counts"], engine.group_names(config.rfm),
                                         title=f"groups after run {last['id']} (as of {last['as_of']})"))
        if last.get("cut_points"):
            from .calibration import cut_points_table, run_population, small_population

            population = run_population(last)
            console.print(cut_points_table(last["cut_points"], (last.get("stats") or {}).get("calibrated_on"),
                                           title=f"cut points used by run {last['id']}", population=population))
            if engine.SCHEMES[config.rfm.scheme].USES_QUANTILES and (small := small_population(population, config.rfm)):
                from rich.markup import escape

                console.print(f"[yellow]warning:[/yellow] {escape(small)}")  # "[rfm]" is not markup
        for warning in last.get("warnings") or []:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(report.backlog_table(backlog(store), [d.name for d in config.destinations]))


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Path to the TOML configuration.")
@click.option("--as-of", "as_of", default=None,
              help="Calibrate as of this date (YYYY-MM-DD); default today in [shop] timezone.")
@click.option("--wait", "wait", default=0.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help=WAIT_HELP)
def recalibrate(config_path: str, as_of: str | None, wait: float) -> None:
    """Recompute and freeze the quantile cut points now; the next runs use them (profiles change then)."""
    from .calibration import cut_points_table, recalibrate as run_recalibration
    from .store.lock import StoreLocked

    config = _load(config_path)
    store = _open_store(config)
    day = _as_of(as_of) or config.today()  # today in [shop] timezone, as `run` takes it
    try:
        with _writer_lock(config, store, wait):
            result = run_recalibration(config, store, day)
    except StoreLocked as exc:
        _exit_locked(exc)
    console = report.console()
    if not engine.SCHEMES[config.rfm.scheme].USES_QUANTILES:
        console.print(f"scheme {config.rfm.scheme} has fixed thresholds: nothing to calibrate")
        return
    if not result["frozen"]:
        count, least = result["population"], config.rfm.min_calibration_customers
        window = f"with an order in the {config.rfm.window_days}-day window as of {day}"
        click.echo(f"error: recalibrate: no customers {window}: nothing to calibrate, cut points not frozen "
                   "(pull the orders first: `rfm-sync run -c CONFIG`)" if not count else
                   f"error: recalibrate: only {count:,} customer{'s' if count != 1 else ''} {window}, fewer than "
                   f"[rfm] min_calibration_customers = {least}: cut points not frozen (every run computes its own "
                   "until the shop has more)", err=True)
        sys.exit(EXIT_FAILED)
    if result["previous"]:
        console.print(cut_points_table(result["previous"]["cut_points"], result["previous"]["as_of"],
                                       title="previous cut points"))
    console.print(cut_points_table(result["cut_points"], day, title="new cut points", population=result["population"]))


@main.command("check-config")
@click.argument("config_arg", required=False, type=click.Path(dir_okay=False), metavar="[CONFIG]")
@click.option("-c", "--config", "config_opt", default=None, type=click.Path(dir_okay=False),
              help="Path to the TOML configuration (as for every other command; or give it as the argument).")
def check_config(config_arg: str | None, config_opt: str | None) -> None:
    """Validate a configuration file: exit 0 if valid, else print every problem and exit 2."""
    if (config_arg is None) == (config_opt is None):
        raise click.UsageError("give the configuration once: `rfm-sync check-config -c CONFIG` (or CONFIG)")
    config_path = config_arg or config_opt
    config = _load(config_path)
    click.echo(f"{config_path}: OK ({len(config.sources)} source(s), {len(config.destinations)} destination(s), "
               f"scheme {config.rfm.scheme})")


from .daemon_cli import daemon as _daemon_cmd, doctor as _doctor_cmd, secrets as _secrets_cmd  # noqa: E402

main.add_command(_daemon_cmd)
main.add_command(_doctor_cmd)
main.add_command(_secrets_cmd)
from .klaviyo_cli import klaviyo as _klaviyo_cmd  # noqa: E402

main.add_command(_klaviyo_cmd)
from .webhooks_cli import webhooks as _webhooks_cmd  # noqa: E402

main.add_command(_webhooks_cmd)
from .report_cli import customers as _customers_cmd, explain as _explain_cmd, report as _report_cmd  # noqa: E402

for _cmd in (_report_cmd, _customers_cmd, _explain_cmd):
    main.add_command(_cmd)

if __name__ == "__main__":  # pragma: no cover
    main()
