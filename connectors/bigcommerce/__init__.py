"""BigCommerce source: orders through the V2 orders API.

``source`` (the connector: cursor, quota, webhooks), ``parse`` (order JSON → orders).
"""

from .source import BigCommerceSource

__all__ = ["BigCommerceSource"]
