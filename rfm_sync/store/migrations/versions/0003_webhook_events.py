"""Webhook events: verified order webhooks waiting to be processed, and the ids seen (replays).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from rfm_sync.store.schema import UtcDateTime

revision = "0003"
down_revision = "0002"  # after 0002_scoring_index (engine)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("processed_at", UtcDateTime()),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("source", "event_id", name="uq_webhook_events_source_event"),
    )
    op.create_index("ix_webhook_events_status", "webhook_events", ["status", "id"])


def downgrade() -> None:
    op.drop_table("webhook_events")
