"""The store's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create them.

Money is an integer: ``amount_e4`` is the amount × 10⁴ (enough for every ISO-4217 currency),
so sums are exact in SQL and in pandas. It is in one currency, ``currency`` (the shop's once
``[shop] currency`` is set: orders in another are converted at ingest, see rfm_sync/currency.py). Times are UTC; see :class:`UtcDateTime`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

MONEY_SCALE = 10_000


class UtcDateTime(TypeDecorator):
    """Stores aware datetimes as UTC (naive in SQLite, timestamptz elsewhere); returns them aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("source", sa.String(100), primary_key=True),
    sa.Column("order_id", sa.String(255), primary_key=True),
    sa.Column("customer_key", sa.String(320), nullable=False, index=True),
    sa.Column("source_customer_id", sa.String(255)),
    sa.Column("email", sa.String(320)),
    sa.Column("phone", sa.String(64)),
    sa.Column("placed_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime()),
    sa.Column("amount_e4", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(8)),  # of amount_e4: the shop currency once [shop] currency is set
    sa.Column("status", sa.String(64)),
    sa.Column("is_test", sa.Boolean, nullable=False, default=False),
    sa.Column("is_cancelled", sa.Boolean, nullable=False, default=False),
    sa.Column("is_deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("qualifies", sa.Boolean, nullable=False),
    sa.Column("ingested_at", UtcDateTime(), nullable=False),
    # covering index for scoring (migration 0002): aggregates read it alone, in customer order
    sa.Index("ix_orders_scoring", "customer_key", "qualifies", "placed_at", "amount_e4"),
    # a converted order's own currency and amount (migration 0004_currency; NULL when not converted)
    sa.Column("original_currency", sa.String(8)),
    sa.Column("original_amount_e4", sa.BigInteger),
    sa.Index("ix_orders_currency", "currency"),  # one-currency check: min/max look-ups
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_key", sa.String(320), primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("phone", sa.String(64)),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

customer_state = sa.Table(
    "customer_state",
    metadata,
    sa.Column("customer_key", sa.String(320), primary_key=True),
    sa.Column("current_group", sa.String(100), nullable=False),
    sa.Column("previous_group", sa.String(100)),
    sa.Column("group_changed_at", UtcDateTime(), nullable=False),
    sa.Column("rfm_score", sa.String(16), nullable=False),
    sa.Column("properties", sa.Text, nullable=False),  # JSON of the last snapshot sent to the outbox
    sa.Column("labels", sa.Text),  # JSON of per-dimension labels (label schemes)
    sa.Column("run_id", sa.Integer, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("scheme", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # running | ok | failed
    sa.Column("stats", sa.Text),  # JSON: counts and durations per step
    sa.Column("group_counts", sa.Text),  # JSON
    sa.Column("cut_points", sa.Text),  # JSON: thresholds used
    sa.Column("warnings", sa.Text),  # JSON list
    sa.Column("error", sa.Text),
)

calibrations = sa.Table(
    "calibrations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scheme", sa.String(50), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("computed_at", UtcDateTime(), nullable=False),
    sa.Column("cut_points", sa.Text, nullable=False),  # JSON
    sa.Column("run_id", sa.Integer),
)

source_cursors = sa.Table(
    "source_cursors",
    metadata,
    sa.Column("source", sa.String(100), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("destination", sa.String(100), nullable=False),
    sa.Column("customer_key", sa.String(320), nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON snapshot (see pipeline.outbox_payload)
    sa.Column("status", sa.String(20), nullable=False),  # pending | sending | sent | superseded | dead
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime()),
    sa.Index("ix_outbox_pending", "destination", "status", "id"),
    sa.Index("ix_outbox_customer", "destination", "customer_key", "status"),
)

# What each destination was last sent per customer (migration 0004): its own memory, so a change
# folded while it was unreachable starts from the group *it* had, and its "Previous RFM group" is
# the last different group *it* was sent. Written in the transaction that acknowledges the send.
destination_state = sa.Table(
    "destination_state",
    metadata,
    sa.Column("destination", sa.String(100), primary_key=True),
    sa.Column("customer_key", sa.String(320), primary_key=True),
    sa.Column("rfm_group", sa.String(100)),  # None: sent as cleared
    sa.Column("previous_group", sa.String(100)),
    sa.Column("group_changed_at", sa.String(40)),  # ISO-8601 UTC, as sent in the properties
    sa.Column("labels", sa.Text),  # JSON of the labels sent (label schemes)
    sa.Column("outbox_id", sa.Integer, nullable=False),  # the row that was sent last
    sa.Column("sent_at", UtcDateTime(), nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("location", sa.String(500), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),  # X-Shopify-Event-Id, else sha256 of the body
    sa.Column("topic", sa.String(100), nullable=False),
    sa.Column("headers", sa.Text, nullable=False),  # JSON of the non-secret headers the source may need
    sa.Column("body", sa.LargeBinary),  # the verified raw body; cleared once processed
    sa.Column("status", sa.String(20), nullable=False),  # pending | done | failed | dropped
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("processed_at", UtcDateTime()),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # tries that hit a retryable error
    sa.Column("next_attempt_at", UtcDateTime()),  # a pending event is not tried again before this
    sa.UniqueConstraint("source", "event_id", name="uq_webhook_events_source_event"),
    sa.Index("ix_webhook_events_status", "status", "id"),
)

# Every change of a customer's group (migration 0007), one row a change, so "which group was this
# customer in on day D" is one query (see rfm_sync/store/history.py). ``as_of``: the day the run scored
# as of, from which the customer is in ``to_group``; ``run_id`` None: reconstructed by a back-test.
group_history = sa.Table(
    "group_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scheme", sa.String(50), nullable=False),
    sa.Column("customer_key", sa.String(320), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("from_group", sa.String(100)),
    sa.Column("to_group", sa.String(100)),  # None: cleared (no qualifying order any more)
    sa.Column("changed_at", UtcDateTime(), nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("held_out", sa.Boolean),  # in the hold-out of [properties] holdout_percent; None: none was set
    sa.Index("ix_group_history_customer", "scheme", "customer_key", "as_of"),
)
