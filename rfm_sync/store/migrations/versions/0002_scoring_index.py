"""Covering index for scoring: per-customer aggregates read the index alone, in customer order.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_scoring", "orders", ["customer_key", "qualifies", "placed_at", "amount_e4"])


def downgrade() -> None:
    op.drop_index("ix_orders_scoring", table_name="orders")
