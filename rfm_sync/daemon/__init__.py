"""``rfm-sync daemon``: what only the long-running process needs, around the core's one cycle.

* :mod:`.runner` — :class:`~rfm_sync.daemon.runner.Daemon`: the store's writer lock and stand-by,
  the jobs, graceful stop, reload;
* :mod:`.scheduler` — when each job runs (APScheduler 3.x);
* :mod:`.webhooks` — the HTTP listener: ``/healthz`` (:mod:`.health`), ``/metrics``
  (:mod:`.metrics`), ``POST /webhooks/<source>``;
* :mod:`.logs` — JSON or text log lines, emails and credentials masked;
* :mod:`.config` — the typed ``[schedule]``, ``[daemon]``, ``[webhooks]`` and ``[logging]`` sections.

The core (:mod:`rfm_sync.pipeline`, the store, the engine) never imports this package; the one
exception is :mod:`rfm_sync.config`, which composes the whole file's model from :mod:`.config`
(pydantic models only). That is why this ``__init__`` imports nothing: loading a config must not
load the daemon.
"""
