"""The profile properties written for each customer, from a scored row.

Names come from ``[properties]`` in the config. Values are plain JSON: the group and score as
strings, the single-dimension scores as integers, the change time as ISO-8601 UTC, spend as a
number with at most 4 decimals (converted once from the exact integer sum, never accumulated).

**The hold-out.** With ``holdout_percent`` above 0, every profile also gets ``holdout`` (true or
false): whether the customer's move — previous group → current group — fell in the hold-out, a
share of ``holdout_percent`` of every such cohort chosen by a hash of the customer and the move
(:func:`held_out`). The choice is random across customers but stable: the same customer making the
same move is always chosen alike, a re-sent snapshot carries the same value, and the value changes
only when the group does. Flows that filter out ``holdout = true`` leave a control group, and
``rfm-sync outcomes`` compares the two (:mod:`rfm_sync.outcomes`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .config import PropertyNames
from .store.schema import MONEY_SCALE


def money(amount_e4: int) -> float | int:
    value = (Decimal(int(amount_e4)) / MONEY_SCALE).normalize()
    return int(value) if value == value.to_integral_value() else float(value)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def held_out(key: str, previous: str | None, current: str | None, percent: float) -> bool:
    """Whether the move ``previous → current`` of customer ``key`` is in the hold-out of ``percent``
    (0–100) per cent: the first 8 bytes of a SHA-256 of the three, as a fraction of 2⁶⁴, below it."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"rfm-sync holdout|{key}|{previous or ''}|{current or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < percent / 100 * 2**64


def build_properties(names: PropertyNames, row: Any, previous: str | None, changed_at: datetime) -> dict[str, Any]:
    props: dict[str, Any] = {
        names.current_group: row.rfm_group,
        names.group_changed_at: iso_utc(changed_at),
        names.score: row.rfm_score,
        names.recency_score: int(row.r_score),
        names.frequency_score: int(row.f_score),
        names.monetary_score: int(row.m_score),
    }
    if previous is not None:
        props[names.previous_group] = previous
    if names.include_metrics:
        props[names.recency_days] = int(row.recency_days)
        props[names.orders] = int(row.frequency)
        props[names.spend] = money(row.monetary_e4)
    if names.holdout_percent > 0:
        props[names.holdout] = held_out(row.customer_key, previous, row.rfm_group, names.holdout_percent)
    return props


def cleared_properties(names: PropertyNames) -> dict[str, Any]:
    """Every RFM property set to null: the customer has no qualifying order any more."""
    keys = [
        names.current_group,
        names.previous_group,
        names.group_changed_at,
        names.score,
        names.recency_score,
        names.frequency_score,
        names.monetary_score,
    ]
    if names.include_metrics:
        keys += [names.recency_days, names.orders, names.spend]
    if names.holdout_percent > 0:
        keys.append(names.holdout)
    return dict.fromkeys(keys)
