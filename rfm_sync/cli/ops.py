"""Commands for running in production: ``daemon``, ``doctor``, ``secrets``. Registered in :mod:`rfm_sync.cli`."""

from __future__ import annotations

import logging
import os
import sys

import click

from .. import exit_codes
from .. import secrets as secret_store
from ._common import config_option, exit_with_config_errors, heavy_imports, load


@click.command()
@config_option
def daemon(config_path: str) -> None:
    """Run the schedule (and the optional webhook listener) in the foreground until SIGTERM/SIGINT.

    One daemon per store runs cycles; a second one stands by. SIGHUP reloads the configuration.
    """
    with heavy_imports():
        from ..config import ConfigError
        from ..daemon.runner import Daemon

        try:
            runner = Daemon(config_path)
        except ConfigError as exc:
            exit_with_config_errors(exc)
    runner.install_signals()
    try:
        code = runner.run()
    except Exception as exc:  # start-up failures: store unreachable, port in use, secrets missing
        exit_codes.fail(f"the daemon could not start: {type(exc).__name__}: {exc}", exit_codes.FAILED)
    if runner.abandoned:  # a cycle thread is still busy: do not wait for it at interpreter exit
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


@click.command()
@config_option
@click.option(
    "--offline",
    is_flag=True,
    help="Send nothing over the network: check settings, files and that credentials are set, "
    "not that Shopify, BigCommerce, Klaviyo or Meta accept them.",
)
def doctor(config_path: str, offline: bool) -> None:
    """Check the store (and its integrity), every source and destination, their secrets and the
    schedule; print each problem with its fix and exit 1 if there is one."""
    config = load(config_path)
    with heavy_imports():
        from ..doctor import run_doctor

    report = run_doctor(config, online=not offline)
    for finding in report.findings:
        mark = click.style("ok ", fg="green") if finding.ok else click.style("ERR", fg="red")
        click.echo(f"{mark} {finding.what}: {finding.message}")
        if finding.fix:
            click.echo(f"    fix: {finding.fix}")
    for warning in report.warnings:
        click.echo(f"{click.style('warn', fg='yellow')} RFM eligibility: {warning}")
    problems = len(report.problems)
    click.echo(f"{problems} problem(s) found" if problems else "no problems found")
    if problems:
        sys.exit(exit_codes.FAILED)


@click.group()
def secrets() -> None:
    """Store secrets in the OS keyring (environment variables RFM_SYNC_SECRET_<NAME> override it)."""


@secrets.command("set")
@click.argument("name")
def secrets_set(name: str) -> None:
    """Prompt (without echo) for the value of secret NAME and store it in the OS keyring."""
    problem = secret_store.keyring_problem(name)
    if problem is not None:  # say so before anyone types (or pastes) the value
        click.echo(f"error: {problem}", err=True)
        if not secret_store.looks_like_a_value(name):
            click.echo(f"  e.g. in a container or systemd unit: {secret_store.env_var_name(name)}=<value>", err=True)
        sys.exit(exit_codes.FAILED)
    value = click.prompt(f"value of secret {name!r}", hide_input=True, default="", show_default=False)
    if not value:
        exit_codes.fail("empty value; nothing stored", exit_codes.FAILED)
    try:
        secret_store.store(name, value)
    except secret_store.SecretError as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(f"  e.g. in a container or systemd unit: {secret_store.env_var_name(name)}=<value>", err=True)
        sys.exit(exit_codes.FAILED)
    click.echo(
        f"stored secret {name!r} in the OS keyring "
        f"(the environment variable {secret_store.env_var_name(name)} overrides it when set)"
    )


@secrets.command("check")
@click.argument("name")
def secrets_check(name: str) -> None:
    """Say whether secret NAME resolves, and from where (never prints the value)."""
    var = secret_store.env_var_name(name)
    try:
        secret_store.resolve(name)  # a NAME that looks like a pasted key is refused, without echoing it
    except secret_store.SecretError as exc:
        exit_codes.fail(str(exc), exit_codes.FAILED)
    where = f"environment variable {var}" if os.environ.get(var) else "OS keyring"
    click.echo(f"secret {name!r} is set (from the {where})")
