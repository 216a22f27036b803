"""What the command modules share: the config and store they open, the writer lock, dates, and how
a command ends when it cannot go on.

Exit codes are :mod:`rfm_sync.exit_codes`'s (the table is there and in the README); a fault is one
line on stderr (``error: …``), configuration problems are all printed, then exit 2. Only click and
the exit codes are imported here at the top: the config, the store and its lock are imported when a
command asks for them, so ``rfm-sync --help`` loads none of them.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .. import exit_codes

if TYPE_CHECKING:
    from ..config import Config, ConfigError

Command = TypeVar("Command", bound=Callable[..., Any])

CONFIG_HELP = "Path to the TOML configuration."
config_option = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP
)


def optional_config_option(name: str, help: str) -> Callable[[Command], Command]:
    """``-c/--config`` for a command that can do without it (``score``) or also takes it another way
    (``check-config``): the same option as :data:`config_option`, not required, passed as ``name``."""
    return click.option("-c", "--config", name, default=None, type=click.Path(dir_okay=False), help=help)


WAIT_HELP = (
    "If another process holds the store's lock, wait up to SECONDS for it (default 0: fail at once "
    f"with exit status {exit_codes.LOCKED}, naming the holder)."
)
wait_option = click.option(
    "--wait", "wait", default=0.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS", help=WAIT_HELP
)


def day_option(name: str, help: str, required: bool = False) -> Any:
    """A ``YYYY-MM-DD`` option (``--since``, ``--until``), given to the command as text: :func:`day` reads it."""
    return click.option(name, default=None, required=required, metavar="YYYY-MM-DD", help=help)


_frozen = False


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Around a command's imports of pandas, pyarrow, DuckDB, the engine and the store: they make
    about a million objects and no garbage, so the collector is paused while they run and what they
    made is frozen afterwards (later collections need not walk it). docs/engine.md has the figures.

    Frozen once per process: a later freeze would keep for good whatever garbage is about by then
    (the tests run many commands in one process)."""
    global _frozen
    gc.disable()
    try:
        yield
    finally:
        if not _frozen:
            gc.freeze()
            _frozen = True
        gc.enable()


def day(value: str | None, option: str | None = None) -> date | None:
    """A YYYY-MM-DD option's date (None when it was not given)."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


def check_groups(config: Config, **options: str | None) -> None:
    """Every group named in these options (``--name`` → value; None: not given) is a group of the
    configured scheme, or the command ends here with exit 2, naming the option and the groups there are."""
    from .. import engine

    known = engine.group_names(config.rfm)
    for option, name in options.items():
        if name is not None and name not in known:
            exit_codes.fail(
                f"{option}: no group {name!r} in scheme {config.rfm.scheme} (groups: {', '.join(known)})",
                exit_codes.CONFIG,
            )


def exit_with_config_errors(exc: ConfigError) -> NoReturn:
    """Print every configuration problem (file, key path, what was expected) and exit 2."""
    click.echo("configuration errors:", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(exit_codes.CONFIG)


def load(path: str) -> Config:
    """The validated config at ``path``; on any problem, every one is printed and the command exits 2."""
    with heavy_imports():  # the config's models, and the engine that its [rfm] checks import
        from ..config import ConfigError, load_config

        try:
            return load_config(path)
        except ConfigError as exc:
            exit_with_config_errors(exc)


def open_store(config: Config) -> Any:
    from ..store import Store

    return Store.open(config.store.url, config.base_dir)


def load_with_store(path: str) -> tuple[Config, Any]:
    config = load(path)
    return config, open_store(config)


def writer_lock(config: Config, store: Any, wait: float) -> Any:
    """The store's single-writer lock for a one-shot command (see rfm_sync.store.lock), with the
    daemon's heartbeat and expiry, so a daemon and a run agree on when a silent holder is dead."""
    from ..store.lock import hold

    def waiting(other: Any) -> None:
        click.echo(
            f"waiting up to {wait:g} s for the store lock (held by {other.holder} since "
            f"{other.acquired_at.isoformat(timespec='seconds')})",
            err=True,
        )

    return hold(
        store,
        wait_seconds=wait,
        heartbeat_seconds=config.daemon.heartbeat_seconds,
        expire_seconds=config.daemon.lock_expire_seconds,
        on_wait=waiting,
    )
