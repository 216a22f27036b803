"""Which class implements each connector ``type``.

Built-in types are listed here; any other ``type`` of the form ``package.module:Class`` is
imported as is, so a merchant can plug in their own source or destination without touching
rfm-sync. Modules are imported lazily: a CSV-only setup never imports the Shopify client.
"""

from __future__ import annotations

import importlib
from typing import Any

SOURCES: dict[str, str] = {
    "csv": "connectors.csv:CsvSource",
    "shopify": "connectors.shopify:ShopifySource",
    "bigcommerce": "connectors.bigcommerce:BigCommerceSource",
}

DESTINATIONS: dict[str, str] = {
    "file": "connectors.file:FileSink",
    "klaviyo": "connectors.klaviyo:KlaviyoDestination",
    "meta_audiences": "connectors.meta:MetaAudiencesDestination",
    "mailchimp": "connectors.mailchimp:MailchimpDestination",
    "shopify": "connectors.shopify:ShopifyWriteback",
}


class UnknownConnector(LookupError):
    pass


def connector_class(kind: str, type_: str) -> Any:
    table = SOURCES if kind == "source" else DESTINATIONS
    target = table.get(type_) or (type_ if ":" in type_ else None)
    if target is None:
        known = ", ".join(sorted(table))
        raise UnknownConnector(f"unknown {kind} type {type_!r} (known: {known}, or 'package.module:Class')")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownConnector(f"{kind} type {type_!r}: cannot load {target} ({exc})") from None
    except Exception as exc:  # a plug-in module that fails while importing
        raise UnknownConnector(
            f"{kind} type {type_!r}: importing {module_name} failed ({type(exc).__name__}: {exc})"
        ) from None
    if not _is_connector(cls, kind):
        method = "pull" if kind == "source" else "push"
        raise UnknownConnector(
            f"{kind} type {type_!r}: {target} is not a {kind} class (it needs a `Settings` "
            f"model derived from ConnectorSettings and a `{method}` method)"
        )
    return cls


def _is_connector(cls: Any, kind: str) -> bool:
    from .base import ConnectorSettings

    settings = getattr(cls, "Settings", None)
    return (
        isinstance(cls, type)
        and isinstance(settings, type)
        and issubclass(settings, ConnectorSettings)
        and callable(getattr(cls, "pull" if kind == "source" else "push", None))
    )
