"""Shopify: the orders source and the customer write-back destination, through the GraphQL Admin API.

``source`` (the connector: cursor, backfill, webhooks), ``graphql`` (cost bucket, errors inside
200 responses, page size), ``bulk`` (the bulk-operation backfill), ``parse`` (payloads → orders),
``queries`` (the GraphQL documents; the pinned API version), ``writeback`` (the destination: RFM
groups as customer metafields and tags).
"""

from .source import ShopifySource
from .writeback import ShopifyWriteback

__all__ = ["ShopifySource", "ShopifyWriteback"]
