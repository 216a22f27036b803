"""The process exit codes of every command, and the one place ordinary faults become a line and a code.

The library raises; :class:`FaultGroup` (the ``rfm-sync`` command group) catches what an
operator can act on — the store cannot be used, a file cannot be written, a connector failed —
prints it as one line on stderr (what, where, what to do) and exits with the code below. Anything
else is a bug and keeps its traceback.

| code | meaning |
|---|---|
| 0 | done |
| 1 | the run finished, but a source or destination failed (see the run's errors) |
| 2 | the configuration (or a command's options) is invalid |
| 3 | refused: the command would overwrite or delete a file it must not (`score --out` onto its input, `demo` in a folder that is not a demo's) |
| 4 | another process holds the store's lock |
| 5 | the store cannot be opened or written (permissions, damaged, newer version, disk full) |
| 6 | an output file or folder cannot be written (permissions, disk full) |
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

OK = 0
FAILED = 1
CONFIG = 2
REFUSED = 3
LOCKED = 4
STORE = 5
OUTPUT = 6


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def output_problem(exc: OSError, where: object = None) -> str:
    """One line for an output that cannot be written. It names the error's own file, unless that
    is a temporary file beside the target (``rfm_sync/atomic.py``): then ``where``, the path the
    user named."""
    own = None
    for name in (exc.filename2, exc.filename):  # a failed rename names its target second
        if name and not (Path(str(name)).name.startswith(".") and ".tmp" in Path(str(name)).name):
            own = str(name)
            break
    where = own or where or "output"
    if exc.errno == errno.ENOSPC:
        problem = "the disk is full; free space and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem = f"cannot write here ({exc.strerror}); choose a writable path"
    elif exc.errno == errno.ENOENT:
        problem = "its folder does not exist; create it or choose another path"
    else:
        problem = str(exc.strerror or exc)
    # outputs are written to a temporary file and renamed into place (rfm_sync/atomic.py)
    return f"{where}: {problem} (the previous output, if any, is unchanged)"


class FaultGroup(click.Group):
    """A click group whose commands end ordinary faults with one line and a distinct exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            fault = ordinary_fault(exc)
            if fault is None:
                raise
            fail(*fault)


def ordinary_fault(exc: Exception) -> tuple[str, int] | None:
    """The line and exit code for a fault an operator can act on; None for anything else (a bug,
    which keeps its traceback). What it checks against is imported only now, on the way out: a
    command that ends well never loads the store's modules for it."""
    if isinstance(exc, (click.exceptions.Exit, click.exceptions.Abort, click.ClickException)):
        return None  # click's own way out (--help, a usage error), not a fault
    from connectors.base import ConnectorError

    from .store.errors import StoreError, describe

    if isinstance(exc, StoreError):
        return str(exc), STORE
    import sqlalchemy as sa

    if isinstance(exc, (sa.exc.DBAPIError, sa.exc.OperationalError)):
        error = describe(exc)
        return None if error is None else (str(error), STORE)
    if isinstance(exc, ConnectorError):
        return str(exc), FAILED
    if isinstance(exc, OSError):
        return output_problem(exc), OUTPUT
    return None
