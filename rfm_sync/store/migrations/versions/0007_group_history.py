"""group_history: every change of a customer's group, one row a change.

Back-filled from what the store already knows. Every run that moved a customer enqueued an outbox
row per destination whose payload carries the transition (``from``/``to``): one row per run and
customer is taken (the first), with the run's ``as_of`` and scheme, where the group changed (a change of
labels alone is not a group change). A customer with state but no such row (a store without
destinations) gets one row from ``customer_state``: previous → current group, as of the run that
wrote it. ``held_out`` (whether the move fell in ``[properties] holdout_percent``'s hold-out) is
unknown for all of them: None.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from rfm_sync.store.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "group_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scheme", sa.String(50), nullable=False),
        sa.Column("customer_key", sa.String(320), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("from_group", sa.String(100)),
        sa.Column("to_group", sa.String(100)),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        sa.Column("run_id", sa.Integer),
        sa.Column("held_out", sa.Boolean),
    )
    if op.get_bind().dialect.name == "sqlite":
        moved_from = "json_extract(o.payload, '$.transition.from')"
        moved_to = "json_extract(o.payload, '$.transition.to')"
        has_transition = "json_type(o.payload, '$.transition') = 'object'"
        differ = "IS NOT"
    else:
        moved_from = "(o.payload::json -> 'transition' ->> 'from')"
        moved_to = "(o.payload::json -> 'transition' ->> 'to')"
        has_transition = "json_typeof(o.payload::json -> 'transition') = 'object'"
        differ = "IS DISTINCT FROM"
    # the first row of each run and customer: an IN over the grouped ids (a hash look-up per row, not a
    # join against an unindexed subquery)
    op.execute(f"""
        INSERT INTO group_history (scheme, customer_key, as_of, from_group, to_group, changed_at, run_id)
        SELECT r.scheme, o.customer_key, r.as_of, {moved_from}, {moved_to}, o.created_at, o.run_id
        FROM outbox o
        JOIN runs r ON r.id = o.run_id
        WHERE o.id IN (SELECT MIN(id) FROM outbox GROUP BY run_id, customer_key)
          AND {has_transition} AND {moved_from} {differ} {moved_to}
        ORDER BY o.customer_key, o.id
    """)
    # one index: a customer's history in day order. Made after the bulk insert above (cheaper than
    # keeping it up to date row by row) and before the look-up below, which uses it. The first cycle of
    # a big shop writes a row per customer and every index costs there; the queries by day scan instead.
    op.create_index("ix_group_history_customer", "group_history", ["scheme", "customer_key", "as_of"])
    op.execute("""
        INSERT INTO group_history (scheme, customer_key, as_of, from_group, to_group, changed_at, run_id)
        SELECT r.scheme, cs.customer_key, r.as_of, cs.previous_group, cs.current_group, cs.group_changed_at, r.id
        FROM customer_state cs
        JOIN runs r ON r.id = cs.run_id
        WHERE NOT EXISTS (
            SELECT 1 FROM group_history h WHERE h.scheme = r.scheme AND h.customer_key = cs.customer_key
        )
        ORDER BY cs.customer_key
    """)


def downgrade() -> None:
    op.drop_index("ix_group_history_customer", table_name="group_history")
    op.drop_table("group_history")
