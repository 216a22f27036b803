"""The GraphQL documents the Shopify source and the write-back send, and the one place the API version is pinned.

Field names checked against the GraphQL Admin API reference (``Order``, ``MoneyBag``,
``BulkOperation``, ``AppInstallation``) for the pinned version. ``currentTotalPriceSet`` is the
order total after edits, returns and refunds; ``shopMoney`` is in the shop's currency.
"""

from __future__ import annotations

# Shopify releases a version each quarter and supports it for at least 12 months.
API_VERSION = "2026-10"

# The largest page the orders connection serves.
MAX_PAGE_SIZE = 250

ORDER_FIELDS = """
  id
  createdAt
  processedAt
  updatedAt
  cancelledAt
  test
  email
  displayFinancialStatus
  currencyCode
  currentTotalPriceSet { shopMoney { amount currencyCode } }
  customer { id defaultEmailAddress { emailAddress } }
"""

ORDERS_PAGE = (
    """
query OrdersPage($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {%s}
  }
}
"""
    % ORDER_FIELDS
)

ORDER_BY_ID = (
    """
query OrderById($id: ID!) {
  order(id: $id) {%s}
}
"""
    % ORDER_FIELDS
)

ACCESS_SCOPES = """
query AccessScopes { currentAppInstallation { accessScopes { handle } } }
"""

# The bulk query is a document inside a string; it may not take variables.
BULK_ORDERS = (
    """
{
  orders {
    edges { node {%s} }
  }
}
"""
    % ORDER_FIELDS
)

BULK_RUN = """
mutation BulkRun($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status createdAt }
    userErrors { field message code }
  }
}
"""

BULK_STATUS = """
query BulkStatus($id: ID!) {
  node(id: $id) {
    ... on BulkOperation { id status errorCode createdAt completedAt objectCount url partialDataUrl }
  }
}
"""


def updated_since(iso_utc: str) -> str:
    """The orders search filter for a closed start: ``updated_at:>='2026-01-01T00:00:00+00:00'``."""
    return f"updated_at:>='{iso_utc}'"


# ----------------------------------------------------------------------------- write-back (writeback.py)
# ``metafieldsSet`` takes at most 25 metafields per call (Admin API reference, 2026-10) and is atomic:
# one bad input and nothing of the call is stored. ``nodes(ids:)`` takes at most 250 ids.
MAX_METAFIELDS_PER_SET = 25
MAX_NODES_PER_READ = 250

# What a batch's customers have now: their tags and the metafields rfm-sync writes ("namespace.key").
CUSTOMER_STATE = """
query CustomerRfmState($ids: [ID!]!, $keys: [String!]!, $count: Int!) {
  nodes(ids: $ids) {
    ... on Customer {
      id
      tags
      metafields(keys: $keys, first: $count) { nodes { namespace key value } }
    }
  }
}
"""

METAFIELDS_SET = """
mutation RfmMetafieldsSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { namespace key }
    userErrors { field message code elementIndex }
  }
}
"""

METAFIELDS_DELETE = """
mutation RfmMetafieldsDelete($metafields: [MetafieldIdentifierInput!]!) {
  metafieldsDelete(metafields: $metafields) {
    deletedMetafields { ownerId namespace key }
    userErrors { field message }
  }
}
"""

TAGS_ADD = """
mutation RfmTagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) { userErrors { field message } }
}
"""

TAGS_REMOVE = """
mutation RfmTagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) { userErrors { field message } }
}
"""
