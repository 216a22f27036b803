"""Initial schema: orders, customers, state, runs, calibrations, cursors, outbox, quarantine, locks.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from rfm_sync.store.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("order_id", sa.String(255), primary_key=True),
        sa.Column("customer_key", sa.String(320), nullable=False),
        sa.Column("source_customer_id", sa.String(255)),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(64)),
        sa.Column("placed_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime()),
        sa.Column("amount_e4", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8)),
        sa.Column("status", sa.String(64)),
        sa.Column("is_test", sa.Boolean, nullable=False),
        sa.Column("is_cancelled", sa.Boolean, nullable=False),
        sa.Column("is_deleted", sa.Boolean, nullable=False),
        sa.Column("qualifies", sa.Boolean, nullable=False),
        sa.Column("ingested_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_orders_customer_key", "orders", ["customer_key"])
    op.create_table(
        "customers",
        sa.Column("customer_key", sa.String(320), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(64)),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "customer_state",
        sa.Column("customer_key", sa.String(320), primary_key=True),
        sa.Column("current_group", sa.String(100), nullable=False),
        sa.Column("previous_group", sa.String(100)),
        sa.Column("group_changed_at", UtcDateTime(), nullable=False),
        sa.Column("rfm_score", sa.String(16), nullable=False),
        sa.Column("properties", sa.Text, nullable=False),
        sa.Column("labels", sa.Text),
        sa.Column("run_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("scheme", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stats", sa.Text),
        sa.Column("group_counts", sa.Text),
        sa.Column("cut_points", sa.Text),
        sa.Column("warnings", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scheme", sa.String(50), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("computed_at", UtcDateTime(), nullable=False),
        sa.Column("cut_points", sa.Text, nullable=False),
        sa.Column("run_id", sa.Integer),
    )
    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("customer_key", sa.String(320), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime()),
    )
    op.create_index("ix_outbox_pending", "outbox", ["destination", "status", "id"])
    op.create_index("ix_outbox_customer", "outbox", ["destination", "customer_key", "status"])
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("location", sa.String(500), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("locks", "quarantine", "outbox", "source_cursors", "calibrations", "runs",
                  "customer_state", "customers", "orders"):
        op.drop_table(table)
