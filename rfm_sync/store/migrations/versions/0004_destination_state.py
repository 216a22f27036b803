"""destination_state: what each destination was last sent per customer (its own memory).

Back-filled from what the store already knows: where a destination's newest outbox row for a
customer was sent, that destination holds the customer's current state. Customers with a pending
row get no memory yet; their next send falls back to the outbox payload, as before.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from rfm_sync.store.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destination_state",
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("customer_key", sa.String(320), primary_key=True),
        sa.Column("rfm_group", sa.String(100)),
        sa.Column("previous_group", sa.String(100)),
        sa.Column("group_changed_at", sa.String(40)),
        sa.Column("labels", sa.Text),
        sa.Column("outbox_id", sa.Integer, nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        changed = "substr(cs.group_changed_at, 1, 10) || 'T' || substr(cs.group_changed_at, 12, 8) || 'Z'"
    else:
        changed = "to_char(cs.group_changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    op.execute(f"""
        INSERT INTO destination_state (destination, customer_key, rfm_group, previous_group, group_changed_at,
                                       labels, outbox_id, sent_at)
        SELECT o.destination, o.customer_key, cs.current_group, cs.previous_group, {changed}, cs.labels, o.id,
               COALESCE(o.sent_at, o.created_at)
        FROM outbox o
        JOIN (SELECT destination, customer_key, MAX(id) AS id FROM outbox GROUP BY destination, customer_key) newest
          ON newest.id = o.id
        JOIN customer_state cs ON cs.customer_key = o.customer_key
        WHERE o.status = 'sent'
    """)


def downgrade() -> None:
    op.drop_table("destination_state")
