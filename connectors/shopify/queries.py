"""The GraphQL documents the Shopify source sends, and the one place the API version is pinned.

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
