"""``rfm-sync doctor``: check a configuration against the real world, every problem with its fix.

Checks the store (opens and migrates it, then SQLite's ``PRAGMA quick_check``: a store can open
while pages elsewhere are damaged), each source and destination (the secrets it names, that it can
be built, and its ``check()``: a CSV export exists and its header maps the required columns, a file
sink's folder takes a file, an HTTP connector's credentials are set and — unless ``online`` is
False — one cheap authenticated read succeeds), the schedule and listener settings, the store
lock, and reports RFM eligibility warnings (from the last run, or from a fresh score of the stored
orders). A store fault is reported with the driver's own message, which is often the real cause.
Returns findings; the CLI prints them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from connectors.base import ConnectorError, ConnectorSettings, FatalError, RetryableError, WebhookSource
from connectors.registry import connector_class

from . import engine, secrets
from .calibration import run_population, small_population
from .config import Config
from .daemon.scheduler import next_runs
from .pipeline import Pipeline, connector_context
from .store import Store, make_url, utcnow
from .store.errors import describe, driver_message, where_of
from .store.orders import order_count
from .store.runs import recent_runs


@dataclass
class Finding:
    what: str
    ok: bool
    message: str
    fix: str = ""


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # RFM eligibility: reported, never fatal

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def add(self, what: str, ok: bool, message: str, fix: str = "") -> None:
        self.findings.append(Finding(what, ok, message, fix))


def secret_names(settings: ConnectorSettings) -> list[str]:
    """Values of the settings' ``*_secret`` keys: the names of the secrets this connector needs."""
    return [v for k, v in settings.model_dump().items() if k.endswith("_secret") and isinstance(v, str) and v]


def _takes_online(check: Any) -> bool:
    try:
        return "online" in inspect.signature(check).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the plain form
        return False


def _self_check(report: DoctorReport, what: str, connector: Any, online: bool) -> None:
    check = getattr(connector, "check", None)
    if not callable(check):  # a plug-in connector without one (every built-in has one)
        report.add(what, True, "built; no self-check (reachability and credentials not verified)")
        return
    plain = not _takes_online(check)
    if plain and not online:  # a plug-in's check() may call out: skipped when asked not to
        report.add(what, True, "built; self-check skipped (--offline, and its check() may use the network)")
        return
    try:
        problems = list((check() if plain else check(online=online)) or [])
    except FatalError as exc:
        report.add(what, False, str(exc), "check the credentials and permissions (scopes) of this connector")
        return
    except RetryableError as exc:
        report.add(what, False, str(exc), "the service did not answer: check the network, then try again")
        return
    except ConnectorError as exc:
        report.add(what, False, str(exc), "see the message; fix this connector's table in the config")
        return
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        report.add(what, False, f"{where}{exc.strerror or exc}", "see the message; fix this connector's table")
        return
    for item in problems:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            report.add(what, False, str(item[0]), str(item[1]))
        elif hasattr(item, "problem"):
            report.add(what, False, str(item.problem), str(getattr(item, "fix", "")))
        else:
            report.add(what, False, str(item))
    if not problems:
        report.add(what, True, "self-check passed" + ("" if online else " (offline: nothing was sent)"))


def check_connectors(report: DoctorReport, config: Config, online: bool = True) -> list[Any]:
    built = []
    ctx = connector_context(config)
    for kind, tables in (("source", config.sources), ("destination", config.destinations)):
        for settings in tables:
            what = f"{kind} {settings.name}"
            missing = False
            for name in secret_names(settings):
                try:
                    secrets.resolve(name)
                except secrets.SecretError as exc:
                    missing = True  # (a key pasted as the name never gets here: the config is refused)
                    report.add(
                        what,
                        False,
                        f"secret {name!r} is not available",
                        f"export {secrets.env_var_name(name)}=... or run `rfm-sync secrets set {name}`"
                        f" ({exc.__class__.__name__})",
                    )
            if missing:
                continue
            try:
                connector = connector_class(kind, settings.type)(settings, ctx)
            except (ConnectorError, secrets.SecretError, OSError, ValueError) as exc:
                report.add(what, False, f"cannot be set up: {exc}", f"fix its [[{kind}s]] table in the config")
                continue
            _self_check(report, what, connector, online)
            built.append(connector)
    return built


def check_schedule(report: DoctorReport, config: Config, sources: list[Any], now: datetime) -> None:
    runs = next_runs(config, now)
    zone = config.shop.zone
    text = ", ".join(f"{job} at {moment.astimezone(zone):%Y-%m-%d %H:%M %Z}" for job, moment in runs.items())
    report.add("schedule", True, f"next runs: {text}")
    if not config.schedule.recalibrate_cron:
        report.add("schedule", True, 'recalibration is off (schedule.recalibrate_cron = "")')
    hooks = [s.name for s in sources if isinstance(s, WebhookSource)]
    if config.webhooks.enabled:
        if not config.daemon.http_enabled:
            report.add(
                "webhooks",
                False,
                "webhooks are enabled but the HTTP listener is off",
                "set [daemon] http_enabled = true (or [webhooks] enabled = false)",
            )
        elif not hooks:
            report.add(
                "webhooks",
                False,
                "webhooks are enabled but no source that accepts webhooks could be set up",
                "add a shopify or bigcommerce source, or set [webhooks] enabled = false",
            )
        else:
            report.add(
                "webhooks",
                True,
                "listening at "
                + ", ".join(f"POST /webhooks/{n}" for n in hooks)
                + f" on {config.daemon.http_host}:{config.daemon.http_port}",
            )


QUICK_CHECK_LIMIT = 100  # problems SQLite lists before it stops looking
STORE_FIX = "check [store] url, that its folder exists and is writable, and the database is reachable"
DAMAGE_FIX = (
    "stop rfm-sync and restore the store from a backup (or salvage what SQLite can still read: "
    "`sqlite3 FILE .recover | sqlite3 NEW-FILE`, then point [store] url at NEW-FILE)"
)


def store_fault(exc: BaseException, where: str) -> tuple[str, str]:
    """(message, fix) for a store fault: what happened and the driver's own words, which are often
    the real cause (``file is not a database``, ``unable to open database file``), never a bare type."""
    error = describe(exc, where)
    if error is None:  # not an ordinary fault: still say what the driver said
        return f"{where}: {type(exc).__name__}: {driver_message(exc)}", STORE_FIX
    cause = f" ({error.cause})" if error.cause else ""
    return f"{error.where or where}: {error.what}{cause}", error.hint or STORE_FIX


def check_integrity(report: DoctorReport, store: Store) -> bool:
    """``PRAGMA quick_check`` on a SQLite store: a store can open and answer queries while some of its
    pages are damaged. False when damage was found."""
    try:
        problems = store.quick_check(QUICK_CHECK_LIMIT)
    except sa.exc.SQLAlchemyError as exc:  # too damaged for the check to finish
        message, _ = store_fault(exc, store.where)
        report.add("store", False, f"integrity check (PRAGMA quick_check) failed: {message}", DAMAGE_FIX)
        return False
    if problems is None:
        report.add("store", True, "integrity check: not available for this database (SQLite only)")
        return True
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        count = f"{len(problems)} or more" if len(problems) >= QUICK_CHECK_LIMIT else str(len(problems))
        report.add(
            "store", False, f"{store.where}: damaged: PRAGMA quick_check found {count} problem(s): {shown}", DAMAGE_FIX
        )
        return False
    report.add("store", True, "integrity check passed (PRAGMA quick_check)")
    return True


def check_store(report: DoctorReport, config: Config) -> Store | None:
    try:
        store = Store.open(config.store.url, config.base_dir)
    except Exception as exc:  # every fault is a finding: the message carries the driver's own words
        message, fix = store_fault(exc, where_of(make_url(config.store.url, config.base_dir)))
        report.add("store", False, f"cannot open the store: {message}", fix)
        return None
    report.add("store", True, f"opened and migrated: {store!r}")
    check_integrity(report, store)
    from .store.lock import StoreLock

    try:
        holder = StoreLock(store, "doctor", expire_seconds=config.daemon.lock_expire_seconds).current()
    except sa.exc.SQLAlchemyError as exc:
        message, fix = store_fault(exc, store.where)
        report.add("store", False, f"cannot read the store's lock: {message}", fix)
        return store
    if holder is not None:
        age = (utcnow() - holder.heartbeat_at).total_seconds()
        state = "alive" if age <= config.daemon.lock_expire_seconds else "expired (will be taken over)"
        report.add(
            "store",
            True,
            f"daemon lock held by {holder.holder} since {holder.acquired_at:%Y-%m-%d %H:%M} "
            f"UTC, last heartbeat {age:.0f}s ago: {state}",
        )
    return store


def eligibility(report: DoctorReport, config: Config, store: Store) -> None:
    """RFM eligibility warnings, and a warning when the cut points in force came from too few customers."""
    quantiles = engine.SCHEMES[config.rfm.scheme].USES_QUANTILES
    runs = [
        r
        for r in recent_runs(store, 20)
        if r["status"] in ("ok", "partial", "stopped") and r.get("warnings") is not None
    ]
    full = [r for r in runs if "webhooks" not in ((r.get("stats") or {}).get("pulled") or {})]  # not rescores
    if full:
        report.warnings.extend(full[0]["warnings"])
        small = small_population(run_population(full[0]), config.rfm) if quantiles else None
        report.warnings.extend([small] if small else [])
        return
    if order_count(store) == 0:
        report.warnings.append("no orders stored yet: run `rfm-sync run -c CONFIG` to pull them")
        return
    result = Pipeline(config, store, sources=[], destinations=[]).score(config.today())
    report.warnings.extend(engine.eligibility_warnings(result.frame))
    small = small_population(result.calibration_population, config.rfm) if quantiles else None
    report.warnings.extend([small] if small else [])


def run_doctor(config: Config, now: datetime | None = None, *, online: bool = True) -> DoctorReport:
    """Every check; ``online=False`` sends nothing over the network (connectors check their
    settings, files and credentials, not that the services accept them)."""
    report = DoctorReport()
    store = check_store(report, config)
    built = check_connectors(report, config, online)
    check_schedule(report, config, built, now or utcnow())
    if store is not None:
        try:
            eligibility(report, config, store)
        except sa.exc.SQLAlchemyError as exc:  # a damaged store can fail any read
            message, fix = store_fault(exc, store.where)
            report.add("store", False, f"cannot read the stored runs and orders: {message}", fix)
        finally:
            store.close()
    return report
