"""Shopify source: orders through the GraphQL Admin API.

``source`` (the connector: cursor, backfill, webhooks), ``graphql`` (cost bucket, errors inside
200 responses, page size), ``bulk`` (the bulk-operation backfill), ``parse`` (payloads → orders),
``queries`` (the GraphQL documents; the pinned API version).
"""

from .source import ShopifySource

__all__ = ["ShopifySource"]
