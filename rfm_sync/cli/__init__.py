"""The command line: parse, call the library, format results and errors. The only place that prints.

``main`` is the ``rfm-sync`` group; each family of commands is a module of its own, registered here:

* :mod:`.cycle` — ``demo``, ``run``, ``score``, ``status``, ``recalibrate``, ``check-config``;
* :mod:`.ops` — ``daemon``, ``doctor``, ``secrets set|check``: running in production;
* :mod:`.report` — ``report``, ``customers``, ``explain``: looking at the groups;
* :mod:`.history` — ``outcomes``, ``backtest``: what followed the moves, and the history before the first run;
* :mod:`.klaviyo` — ``klaviyo bootstrap``;
* :mod:`.webhooks` — ``webhooks list|retry|drop``.

:mod:`._common` holds what they share (the config and store they open, the writer lock, dates);
:mod:`rfm_sync.exit_codes` the exit codes and the one line an ordinary fault ends in. The command
modules import click and little else at the top; pandas, DuckDB, plotly, the store and the engine
are imported inside the commands that use them, so ``rfm-sync --help`` loads none of them.
"""

from __future__ import annotations

import atexit
import gc
import logging

import click

from ..exit_codes import FaultGroup
from . import cycle, history, klaviyo, ops, report, webhooks


@click.group(cls=FaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="rfm-sync", prog_name="rfm-sync", message="%(prog)s %(version)s")
def main(verbose: int) -> None:
    """rfm-sync: RFM scores from your shop's orders, synced to your email platform and ad audiences."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # At exit Python walks every object once more; freezing them first (permanent generation) leaves
    # that walk nothing to do, and the OS frees the memory as always (docs/engine.md has the figures).
    atexit.unregister(gc.freeze)  # registered once, however often main() runs in one process (tests)
    atexit.register(gc.freeze)


for _command in (
    cycle.demo,
    cycle.run,
    cycle.score,
    cycle.status,
    cycle.recalibrate,
    cycle.check_config,
    ops.daemon,
    ops.doctor,
    ops.secrets,
    report.report,
    report.customers,
    report.explain,
    history.outcomes,
    history.backtest,
    klaviyo.klaviyo,
    webhooks.webhooks,
):
    main.add_command(_command)
