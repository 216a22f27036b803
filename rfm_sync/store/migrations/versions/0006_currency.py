"""Currencies: a converted order keeps its own currency and amount; an index on ``orders.currency``.

``amount_e4`` and ``currency`` are the amount that is scored and its currency (the shop's, once
``[shop] currency`` is set); ``original_currency`` / ``original_amount_e4`` are the order's own,
set only when it was converted (see rfm_sync/currency.py). The index makes the check that the
store holds one currency two look-ups (``min``/``max``) instead of a scan.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"  # after 0005_webhook_attempts
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("original_currency", sa.String(8)))
        batch.add_column(sa.Column("original_amount_e4", sa.BigInteger))
    op.create_index("ix_orders_currency", "orders", ["currency"])


def downgrade() -> None:
    op.drop_index("ix_orders_currency", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("original_amount_e4")
        batch.drop_column("original_currency")
