"""Webhook events: how often processing was tried, and when the next try is due.

An event whose order cannot be fetched right now (a retryable connector error, or a rescore that
failed) stays pending with ``attempts`` counted up and ``next_attempt_at`` pushed back; after
``[webhooks] max_attempts`` it is marked failed. New statuses: ``dropped`` (set aside by hand;
the row stays for replay detection).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

from rfm_sync.store.schema import UtcDateTime

revision = "0005"
down_revision = "0004"  # after 0004_destination_state
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", UtcDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")
