"""Reading back what a test put in the store."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from rfm_sync.store import Store
from rfm_sync.store.schema import MONEY_SCALE, orders


def stored(store: Store, source_name: str) -> dict[str, tuple[Decimal, bool]]:
    """order_id -> (amount as an exact Decimal, qualifies) for one source's stored orders."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(orders.c.order_id, orders.c.amount_e4, orders.c.qualifies).where(orders.c.source == source_name)
        ).all()
    return {r.order_id: (Decimal(r.amount_e4) / MONEY_SCALE, bool(r.qualifies)) for r in rows}
