"""What sources and destinations exchange with the core, and the errors they raise.

A source yields normalised :class:`Order` records; a destination receives batches of
:class:`ProfileUpdate` and returns a :class:`PushResult` saying which it accepted. Neither knows
about the store, the scheduler or the RFM engine. Both answer ``check(online)`` for ``rfm-sync
doctor``: the (problem, fix) pairs that would stop them — offline from their settings, files and
credentials alone, online with one cheap authenticated read as well.

Errors are classified by what the caller should do next:

* :class:`RetryableError` — try the same call again later (throttled, 5xx, connection reset);
* :class:`FatalError` — stop this connector and tell a human (bad credentials, missing scope);
* :class:`RecordError` — skip this one record, keep it with its reason, carry on with the rest.

Messages never carry secrets or raw response bodies with customer data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict


# --------------------------------------------------------------------------- errors
class ConnectorError(Exception):
    """Base of every connector error. ``connector`` names the configured source/destination."""

    def __init__(self, message: str, *, connector: str = "", status: int | None = None):
        super().__init__(message)
        self.connector = connector
        self.status = status

    def __str__(self) -> str:  # "shopify-main: HTTP 401 ..." — never the body, never a secret
        prefix = f"{self.connector}: " if self.connector else ""
        return prefix + super().__str__()


class RetryableError(ConnectorError):
    """A temporary failure: the same request may succeed later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class NotSentError(RetryableError):
    """Nothing of the batch was handed to the outside system (refused before sending): its rows may
    be treated as never sent. (A daemon's graceful stop is not an error: ``rfm_sync.stop``.)"""


class FatalError(ConnectorError):
    """A failure that retrying cannot fix (credentials, permissions, configuration)."""


class RecordError(ConnectorError):
    """One record is bad; skip it (quarantine), keep going with the rest."""

    def __init__(self, message: str, *, location: str = "", raw: str = "", **kw: Any):
        super().__init__(message, **kw)
        self.location = location
        self.raw = raw


# --------------------------------------------------------------------------- records
# The largest amount a source may report (exclusive): 14 digits before the point, as the CSV
# source's DECIMAL(18,4). The store keeps amount × 10⁴ in a signed 64-bit integer; a larger amount
# (say a payload's "1e400") is quarantined by the source instead of failing the whole batch.
MAX_AMOUNT = Decimal(10) ** 14
AMOUNT_OUT_OF_RANGE = "amount out of range (at most 14 digits before the point)"  # said of a larger one, wherever


@dataclass(frozen=True, slots=True)
class Order:
    """One order as the core sees it. ``amount`` is net of refunds, in the shop currency."""

    source: str
    order_id: str
    customer_id: str  # opaque; guests are identified as "email:<normalised email>"
    placed_at: datetime  # UTC-aware
    amount: Decimal
    updated_at: datetime | None = None
    email: str | None = None
    phone: str | None = None
    currency: str | None = None
    status: str | None = None
    is_test: bool = False
    is_cancelled: bool = False
    is_deleted: bool = False
    # what the source reports about this order although it keeps it (an email that is not an
    # address, a negative amount): listed with the run's quarantined rows (connectors/validate.py)
    notices: tuple[Quarantined, ...] = ()

    def __post_init__(self) -> None:
        if self.placed_at.tzinfo is None:
            raise ValueError("Order.placed_at must be timezone-aware")
        if not isinstance(self.amount, Decimal):
            raise TypeError("Order.amount must be a Decimal")


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record a source could not read: where it was and why. Yielded instead of an Order."""

    source: str
    location: str  # e.g. "orders.csv:17" or "order 4501"
    reason: str
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    from_group: str | None
    to_group: str
    labels_before: Mapping[str, str] = field(default_factory=dict)
    labels_after: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """The full property snapshot of one customer, plus what changed to cause it."""

    outbox_id: int
    customer_key: str
    email: str | None
    phone: str | None
    properties: Mapping[str, Any]
    transition: Transition | None = None  # set when the group (or a label) changed in this run
    event_id: str | None = None  # deterministic; the same change always has the same id
    changed_at: datetime | None = None
    first_assignment: bool = False


@dataclass(slots=True)
class PushResult:
    """Which outbox ids a destination accepted, and why the others failed.

    ``skipped``: accepted ids for which nothing needed sending (a Meta audience rule the change does
    not touch, a customer without an email or phone to match): done with, but not counted as pushed,
    so "pushed N" is what reached the far side."""

    accepted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PullContext:
    """What the core tells a source about this pull."""

    cursor: str | None  # what the source returned last time it committed; None on first pull
    started_at: datetime  # start of this cycle (UTC); cursors never go past it


@dataclass(slots=True)
class Page:
    """A batch of pulled records and the cursor that is safe to store once they are committed."""

    records: list[Order | Quarantined]
    cursor: str | None


class SecretValue(Protocol):
    """A secret's value, kept out of reprs and logs until revealed (``rfm_sync.secrets.Secret``)."""

    def reveal(self) -> str: ...


@dataclass(frozen=True)
class ConnectorContext:
    """What the core hands every connector when building it."""

    zone: ZoneInfo  # the shop's time zone
    base_dir: Path  # relative paths in connector settings are relative to the config file
    secret: Callable[[str], SecretValue]  # secret name -> its value; raises LookupError if unset
    dry_run: bool = False

    def reveal_secret(self, name: str, connector: str) -> str:
        """The value of the secret ``name``; if it is not set, a :class:`FatalError` that names the
        secret and where to set it (never a value)."""
        try:
            return self.secret(name).reveal()
        except LookupError as exc:
            raise FatalError(str(exc), connector=connector) from None

    def refuse_dry_run(self, connector: str) -> None:
        """For a destination about to build what sends: a :class:`FatalError` when it was built for
        ``run --dry-run``, so that nothing is sent, not even by mistake."""
        if self.dry_run:
            raise FatalError("built for a dry run: nothing may be sent", connector=connector)

    def missing_secrets(self, connector: str, *names: str | None) -> list[tuple[str, str]]:
        """For ``check()``: a (problem, fix) for each named secret that is not set (None: not configured)."""
        problems = []
        for name in names:
            if not name:
                continue
            try:
                self.reveal_secret(name, connector)
            except FatalError as exc:
                problems.append((Exception.__str__(exc), "set that secret, then check again"))
        return problems

    def resolve_path(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


# --------------------------------------------------------------------------- interfaces
class ConnectorSettings(BaseModel):
    """Base of every connector's own settings model (the keys of its TOML table)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str


Problem = tuple[str, str]  # (what is wrong, what to do about it), as ``check()`` reports it


@runtime_checkable
class Source(Protocol):
    Settings: ClassVar[type[ConnectorSettings]]
    name: str

    def pull(self, context: PullContext) -> Iterator[Page]:
        """Yield pages oldest first. The core commits each page, then its cursor."""
        ...

    def check(self, online: bool = True) -> list[Problem]:
        """For ``rfm-sync doctor``: every (problem, fix) that would stop a pull; [] when none.
        Always: the settings, local files and that the credentials are present. ``online``: also
        one cheap authenticated read (``False`` sends nothing). A fault the service reports (a
        rejected token, a missing scope) may be raised as the pull would raise it."""
        ...


@runtime_checkable
class Destination(Protocol):
    Settings: ClassVar[type[ConnectorSettings]]
    name: str
    batch_size: int

    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        """Send one batch; return which outbox ids the far side accepted."""
        ...

    def check(self, online: bool = True) -> list[Problem]:
        """For ``rfm-sync doctor``: every (problem, fix) that would stop a push; as :meth:`Source.check`."""
        ...


@runtime_checkable
class WebhookSource(Protocol):
    """Optional: a source that can take order webhooks (the daemon's listener routes them here)."""

    name: str

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True only for a request genuinely signed by the shop (constant-time comparison)."""
        ...

    def orders_from_webhook(self, topic: str, headers: Mapping[str, str], body: bytes) -> list[Order]:
        """The orders a verified webhook is about (parsed from the body, or fetched by id)."""
        ...


def webhook_json(body: bytes, what: str, connector: str) -> dict[str, Any]:
    """A webhook body as a JSON object, or a :class:`RecordError` saying why not (never quoting it)."""
    try:
        payload = json.loads(body)
    except RecursionError:  # json gives up at the interpreter's recursion limit (about 1000 levels)
        raise RecordError(f"{what}: body is nested too deep to read", location="webhook", connector=connector) from None
    except ValueError:
        raise RecordError(f"{what}: body is not JSON", location="webhook", connector=connector) from None
    if not isinstance(payload, dict):
        raise RecordError(f"{what}: body is not a JSON object", location="webhook", connector=connector)
    return payload


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
