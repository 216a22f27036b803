"""A graceful stop is not an error: :class:`StopRequested` ends a cycle early, and nothing more.

The daemon wraps its sources and destinations so that, once SIGTERM or SIGINT has asked it to stop,
the next page of a pull or the next batch of a push raises ``StopRequested`` instead of doing the
work (:mod:`rfm_sync.daemon.runner`). The cycle (:mod:`rfm_sync.pipeline`) then ends where it is:
what was committed stays committed, a batch refused this way goes back to ``pending`` (nothing of it
was handed over), the run is recorded ``stopped`` (``partial`` only if a source or destination
really failed before), and the next cycle sends the rest — exactly what a crash at that boundary
would leave, minus the error. It is logged at INFO, counted as ``stopped`` in
``rfm_sync_cycles_total``, and leaves ``/healthz`` as it was.

It derives from :class:`BaseException`, not :class:`Exception`, as :class:`asyncio.CancelledError`
does, and for the same reason: the ``except Exception`` handlers that turn a connector's failure into
a recorded error (a warning, a ``partial`` run, an unhealthy daemon) must not catch a stop. Only
the places that mean to handle it name it. It lives in a module of its own so that the pipeline,
which knows nothing of the daemon, can name it without importing the daemon.
"""

from __future__ import annotations


class StopRequested(BaseException):
    """A stop was asked for (SIGTERM, SIGINT); raised at a page or batch boundary, before the work."""
