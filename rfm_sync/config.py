"""TOML → typed, validated configuration, once at start-up.

Every error names the file, the key path and what was expected, e.g.
``shop.toml: rfm.window_days: Input should be greater than 0``. Connector tables
(``[[sources]]``, ``[[destinations]]``) are validated by the connector's own ``Settings`` model,
so adding a connector never touches this module. Secrets never live here: connectors hold the
*names* of secrets and resolve them through :mod:`rfm_sync.secrets`.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.base import ConnectorSettings
from connectors.registry import UnknownConnector, connector_class

from . import currency
from . import secrets as secret_names
from .daemon.config import DaemonConfig, LoggingConfig, ScheduleConfig, WebhooksConfig


class ConfigError(ValueError):
    """Raised with every problem found; ``problems`` lists them one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(Section):
    # SQLAlchemy URL; a relative sqlite path is taken relative to the config file
    url: str = "sqlite:///rfm-sync.sqlite"

    @field_validator("url")
    @classmethod
    def _known_database(cls, v: str) -> str:
        """A URL SQLAlchemy can parse, of a database whose driver is installed: checked here, once,
        so ``check-config`` finds it (not the first run, with a traceback). Never echoes a password."""
        return store_url_problem(v)


class ShopConfig(Section):
    timezone: str = "UTC"
    # the currency every amount is scored in (ISO 4217); see rfm_sync/currency.py
    currency: str | None = None
    # [shop.rates]: 1 unit of the key's currency = this many of the shop currency (exact decimals)
    rates: dict[str, Decimal] = {}
    # a CSV of daily rates, columns date,currency,rate (relative to the config file)
    rates_file: str | None = None

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, v: str | None) -> str | None:
        return None if v is None else currency.parse_code(v)

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> dict[str, Decimal]:
        if not isinstance(v, dict):
            raise ValueError('expected a table of currency = rate, e.g. JPY = "0.0061"')
        out = {}
        for code, rate in v.items():
            try:
                out[currency.parse_code(code)] = currency.parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"{code}: {exc}") from None
        return out

    @model_validator(mode="after")
    def _rates_need_currency(self) -> ShopConfig:
        if (self.rates or self.rates_file) and self.currency is None:
            raise ValueError("rates need [shop] currency (the currency they convert to)")
        if self.currency in self.rates:
            raise ValueError(f"rates: {self.currency} is the shop currency itself")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'Europe/Berlin')") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# [rfm]: scheme, windows, scheme options, segment rules and stable groups live in their own module
from .rfm_config import RfmConfig  # noqa: E402  (re-exported: rfm_sync.config.RfmConfig)


class PropertyNames(Section):
    current_group: str = "Current RFM group"
    previous_group: str = "Previous RFM group"
    group_changed_at: str = "RFM group last changed"
    score: str = "RFM score"
    recency_score: str = "RFM recency score"
    frequency_score: str = "RFM frequency score"
    monetary_score: str = "RFM monetary score"
    recency_days: str = "RFM days since last order"
    orders: str = "RFM orders"
    spend: str = "RFM spend"
    # also write the raw metrics (days since last order, orders, spend in the window)
    include_metrics: bool = False
    # a hold-out: this percentage of every move's cohort gets ``holdout`` = true (flows filter on it; 0 = off,
    # the property is not written). See rfm_sync/properties.py and docs/outcomes.md.
    holdout_percent: float = Field(0, ge=0, le=50)
    holdout: str = "RFM holdout"

    @model_validator(mode="after")
    def _distinct(self) -> PropertyNames:
        """Two values written under one name would overwrite each other in every destination."""
        seen: dict[str, str] = {}
        for key, name in self.model_dump().items():
            if isinstance(name, str):
                if not name.strip():
                    raise ValueError(f"{key}: a property name cannot be empty")
                if name in seen:
                    raise ValueError(f"{key} and {seen[name]} are both {name!r}: each property needs its own name")
                seen[name] = key
        return self


def store_url_problem(url: str) -> str:
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            "not a database URL (e.g. 'sqlite:///rfm-sync.sqlite' or 'postgresql+psycopg://user@host/rfm')"
        ) from None
    try:
        parsed.get_dialect().import_dbapi()  # the driver module itself, as create_engine imports it
    except sa.exc.NoSuchModuleError:
        raise ValueError(
            f"unknown database {parsed.drivername!r} (use 'sqlite:///FILE' or 'postgresql+psycopg://user@host/db')"
        ) from None
    except ImportError as exc:
        raise ValueError(
            f"the driver for {parsed.drivername!r} is not installed ({exc.name or exc}): "
            f"pip install {_DRIVER_PACKAGES.get(exc.name or '', exc.name or 'it')}"
        ) from None
    return url


# what to install for a driver module SQLAlchemy could not import
_DRIVER_PACKAGES = {"psycopg": "'rfm-sync[postgres]' (psycopg 3)", "psycopg2": "psycopg2-binary", "pymysql": "pymysql"}


class PushConfig(Section):
    # an outbox row that failed this many times is parked ("dead") and reported by `status`
    max_attempts: int = Field(20, gt=0)


class PullConfig(Section):
    # a run in which more than this share of the rows read were quarantined is "partial", not "ok"
    # (shown by `status`, /metrics and /healthz): a broken export must not look like a quiet day
    max_quarantine_share: float = Field(0.2, ge=0, le=1)


class IdentityConfig(Section):
    # customer_id: a customer is the source's customer id (one shop);
    # email: customers are merged across sources by normalised email (several shops)
    merge_by: Literal["customer_id", "email"] = "customer_id"


class Config(Section):
    store: StoreConfig = StoreConfig()
    shop: ShopConfig = ShopConfig()
    rfm: RfmConfig = RfmConfig()
    properties: PropertyNames = PropertyNames()
    pull: PullConfig = PullConfig()
    push: PushConfig = PushConfig()
    identity: IdentityConfig = IdentityConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    daemon: DaemonConfig = DaemonConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: list[ConnectorSettings] = []
    destinations: list[ConnectorSettings] = []
    path: Path | None = None  # the file this was read from (not a TOML key)
    currency_rates: Any = None  # [shop] currency, rates and rates_file read (not a TOML key; see shop_rates)
    extra: dict[str, Any] = {}  # sections owned by optional features, validated by them

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @model_validator(mode="after")
    def _labels_have_their_own_names(self) -> Config:
        taken = {
            name: f"properties.{key}" for key, name in self.properties.model_dump().items() if isinstance(name, str)
        }
        for key, name in self.rfm.label_properties.model_dump().items():
            if name in taken:
                raise ValueError(
                    f"rfm.label_properties.{key} and {taken[name]} are both {name!r}: each property needs its own name"
                )
            taken[name] = f"rfm.label_properties.{key}"
        return self

    def today(self, now: datetime | None = None) -> date:
        """Today in the shop's time zone (``[shop] timezone``), the one rule for "today" everywhere
        (``run``, ``score``, ``recalibrate``, the daemon): ``now`` (aware) or the clock, never the
        machine's own zone."""
        return (now or datetime.now(UTC)).astimezone(self.shop.zone).date()


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _connector_settings(kind: str, tables: Any, key: str, problems: list[str], where: str) -> list[ConnectorSettings]:
    if not isinstance(tables, list):
        problems.append(f"{where}: {key}: expected an array of tables ([[{key}]])")
        return []
    out: list[ConnectorSettings] = []
    names: set[str] = set()
    for i, table in enumerate(tables):
        at = f"{key}[{i}]"
        if not isinstance(table, dict) or "type" not in table:
            problems.append(f"{where}: {at}.type: missing (which {kind} is this?)")
            continue
        try:
            cls = connector_class(kind, str(table["type"]))
        except UnknownConnector as exc:
            problems.append(f"{where}: {at}.type: {exc}")
            continue
        table = {"name": str(table["type"]), **table}
        try:
            settings = cls.Settings.model_validate(table)
        except ValidationError as exc:
            for err in exc.errors():
                problems.append(f"{where}: {at}.{_loc(err['loc'])}: {err['msg']}")
            continue
        for field_name, value in settings.model_dump().items():
            if field_name.endswith("_secret") and isinstance(value, str) and secret_names.looks_like_a_value(value):
                # the credential itself pasted where its name belongs: never echoed, never looked up
                problems.append(
                    f"{where}: {at}.{field_name}: {secret_names.PASTED}; {secret_names.RENAME} "
                    "(and rotate the key: it was written in this file)"
                )
        if settings.name in names:
            problems.append(f"{where}: {at}.name: {settings.name!r} is used twice; names must be unique")
        names.add(settings.name)
        out.append(settings)
    return out


def parse_config(data: dict[str, Any], *, where: str = "config", path: Path | None = None) -> Config:
    problems: list[str] = []
    data = dict(data)
    sources = _connector_settings("source", data.pop("sources", []), "sources", problems, where)
    destinations = _connector_settings("destination", data.pop("destinations", []), "destinations", problems, where)
    extra = {k: data.pop(k) for k in list(data) if k in OPTIONAL_SECTIONS}
    config = None
    try:
        config = Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        for err in exc.errors():
            loc = _loc(err["loc"])
            msg = (
                "unknown key (check its spelling)"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{where}: {loc}: {msg}")
    rates = None
    if config is not None:
        try:
            rates = _shop_rates(config.shop, path)
        except ValueError as exc:
            problems.append(f"{where}: shop.rates_file: {exc}")
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config.model_copy(
        update={"sources": sources, "destinations": destinations, "extra": extra, "currency_rates": rates}
    )


def _shop_rates(shop: ShopConfig, path: Path | None) -> currency.Rates:
    daily = {}
    if shop.rates_file:
        file = Path(shop.rates_file).expanduser()
        if not file.is_absolute():
            file = (path.parent if path else Path.cwd()) / file
        daily = currency.load_rates_file(file)
        if shop.currency in daily:
            raise ValueError(f"{file}: has rates for {shop.currency}, the shop currency itself")
    return currency.Rates(currency=shop.currency, fixed=dict(shop.rates), daily=daily)


def shop_rates(config: Config) -> currency.Rates:
    """The currency rule of this config (read once by ``parse_config``)."""
    return config.currency_rates if config.currency_rates is not None else _shop_rates(config.shop, config.path)


# Sections that later features (daemon, webhooks) validate themselves.
OPTIONAL_SECTIONS: set[str] = set()


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"{path}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02X}); "
                "TOML files are UTF-8: save it as UTF-8"
            ]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data, where=str(path), path=path.resolve())


def resolve_path(config: Config, value: str | Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else config.base_dir / p
