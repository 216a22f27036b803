"""The oracle: what every destination should show, computed from the fake shop's final orders alone.

This is deliberately *not* rfm-sync's code: a small, plain implementation of the ``klaviyo`` scheme
as the README states it (qualifying orders; R by recency bounds 180/365; F and M by the 1/3 and 2/3
quantiles with linear interpolation over customers with frequency >= 1, computed exactly as
fractions; the group table), over the order lists the fake shops hold at the end. BigCommerce
orders are first read by docs/shops.md's rules (:func:`bigcommerce_orders`); with ``merge_by_email``
(``[identity] merge_by = "email"``) a customer is their trimmed, lower-case email, across shops.

:func:`compare` then checks what the fakes hold against it:

* every Klaviyo profile property (current group, score, R/F/M scores; cleared customers have none);
* every Meta audience (members = hashed emails of customers in the audience's groups);
* Klaviyo's event log, per profile, in time order: each event starts where the previous one ended
  (a break is a missing or a duplicated event), consecutive identical changes are duplicates, the
  last event ends at the profile's current group, and "Previous RFM group" agrees with the events.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from fractions import Fraction
from typing import Any

GROUPS = {
    "Champions": ["333", "332", "323"],
    "Loyal": ["321", "322", "331", "232", "233"],
    "Recent": ["312", "313", "311", "222", "223"],
    "Needs Attention": ["213", "221", "123", "132", "133"],
    "At Risk": ["231", "212", "122", "131", "211"],
    "Inactive": ["111", "112", "113", "121"],
}
GROUP_OF = {score: name for name, scores in GROUPS.items() for score in scores}
NON_PURCHASE = {"VOIDED", "EXPIRED"}
# BigCommerce status ids that are purchases (docs/shops.md); 12 and 13 count only when switched on (never here)
BIGCOMMERCE_PURCHASE = {2, 3, 8, 9, 10, 11, 14}
PROPS = {
    "group": "Current RFM group",
    "previous": "Previous RFM group",
    "score": "RFM score",
    "r": "RFM recency score",
    "f": "RFM frequency score",
    "m": "RFM monetary score",
}


@dataclass
class Expected:
    email: str
    group: str | None  # None: no qualifying order, every RFM property cleared
    score: str | None = None
    r: int | None = None
    f: int | None = None
    m: int | None = None


def quantile(sorted_values: list[Fraction], p: Fraction) -> Fraction:
    """Linear interpolation between closest ranks (numpy's default), exactly."""
    h = (len(sorted_values) - 1) * p
    low = int(h)  # floor: h >= 0
    if low + 1 >= len(sorted_values):
        return sorted_values[low]
    return sorted_values[low] + (h - low) * (sorted_values[low + 1] - sorted_values[low])


def bigcommerce_orders(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BigCommerce orders (as the fake holds them) in the shape :func:`expected_state` reads: the amount
    is ``total_inc_tax - refunded_amount``; an order counts if its status is a purchase and it is not
    archived; a guest (customer id 0) is their billing email; dates are RFC-2822."""
    out = []
    for o in raw:
        out.append(
            {
                "customer_id": None if o["customer_id"] in (0, "0") else f"bigcommerce:{o['customer_id']}",
                "email": o["email"],
                "total": str(Decimal(o["total_inc_tax"]) - Decimal(o["refunded_amount"])),
                "created_at": parsedate_to_datetime(o["date_created"]).isoformat(),
                "test": False,
                "cancelled": o["status_id"] not in BIGCOMMERCE_PURCHASE or bool(o["is_deleted"]),
                "financial_status": "",
            }
        )
    return out


def expected_state(
    orders: list[dict[str, Any]],
    as_of: date,
    *,
    window_days: int = 730,
    bounds: tuple[int, int] = (180, 365),
    merge_by_email: bool = False,
) -> dict[str, Expected]:
    """customer id -> what its profile must say, as of ``as_of`` (shop time zone UTC)."""
    window_start = as_of - timedelta(days=window_days - 1)
    email: dict[str, str] = {}
    last: dict[str, date] = {}
    freq: dict[str, int] = defaultdict(int)
    spend: dict[str, Fraction] = defaultdict(Fraction)
    for o in orders:
        if (merge_by_email and o.get("email")) or o["customer_id"] is None:
            cid = "email:" + o["email"].strip().lower()
        else:
            cid = str(o["customer_id"])
        if o.get("email"):
            email.setdefault(cid, o["email"].strip().lower())
        total = Decimal(o["total"])
        placed = datetime.fromisoformat(o["created_at"]).astimezone(UTC).date()
        if total <= 0 or o["test"] or o["cancelled"] or o["financial_status"] in NON_PURCHASE or placed > as_of:
            continue
        last[cid] = max(last.get(cid, placed), placed)
        if placed >= window_start:
            freq[cid] += 1
            spend[cid] += Fraction(total)
    active = [c for c in last if freq[c] >= 1]
    cuts = {}
    for name, values in (("f", [Fraction(freq[c]) for c in active]), ("m", [spend[c] for c in active])):
        ordered = sorted(values)
        cuts[name] = (quantile(ordered, Fraction(1, 3)), quantile(ordered, Fraction(2, 3))) if ordered else None
    result: dict[str, Expected] = {}
    for cid, mail in email.items():
        if cid not in last:
            result[cid] = Expected(email=mail, group=None)
            continue
        days = (as_of - last[cid]).days
        r = 3 if days <= bounds[0] else 2 if days <= bounds[1] else 1
        f = m = 1
        if freq[cid] >= 1:
            f = 1 + sum(Fraction(freq[cid]) > q for q in cuts["f"])
            m = 1 + sum(spend[cid] > q for q in cuts["m"])
        score = f"{r}{f}{m}"
        result[cid] = Expected(email=mail, group=GROUP_OF[score], score=score, r=r, f=f, m=m)
    return result


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Verdict:
    customers: int = 0
    mismatches: list[str] = field(default_factory=list)  # every problem, one line each
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicate_events: int = 0
    events: int = 0
    changes_seen_without_event: int = 0

    def add(self, kind: str, text: str) -> None:
        self.kinds[kind] += 1
        if len(self.mismatches) < 200:
            self.mismatches.append(f"{kind}: {text}")


def compare(
    expected: dict[str, Expected], klaviyo: dict[str, Any], meta: dict[str, Any], audiences: dict[str, list[str]]
) -> Verdict:
    verdict = Verdict(customers=len(expected))
    profiles = klaviyo["profiles"]
    by_profile: dict[str, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
    for n, event in enumerate(klaviyo["events"]):
        by_profile[event["key"]].append((event["time"] or "", n, event))
    verdict.events = len(klaviyo["events"])
    for cid, want in expected.items():
        key = "email:" + want.email
        props = profiles.get(key) or {}
        got = {k: props.get(name) for k, name in PROPS.items()}
        wanted = {"group": want.group, "score": want.score, "r": want.r, "f": want.f, "m": want.m}
        for k, value in wanted.items():
            if got[k] != value:
                verdict.add("klaviyo_property", f"customer {cid} {PROPS[k]!r}: expected {value!r}, found {got[k]!r}")
        if want.group is None and got["previous"] is not None:
            verdict.add("klaviyo_property", f"customer {cid}: cleared but 'Previous RFM group' = {got['previous']!r}")
        check_events(
            verdict,
            cid,
            [e for _, _, e in sorted(by_profile.get(key, []), key=lambda t: t[:2])],
            got["group"],
            got["previous"],
        )
    members = {a: set(meta["members"].get(a, [])) for a in audiences}
    for audience, groups in audiences.items():
        want_members = {sha256(w.email) for w in expected.values() if w.group in groups}
        for missing in want_members - members[audience]:
            verdict.add("meta_audience", f"audience {audience}: member missing ({missing[:12]}…)")
        for extra in members[audience] - want_members:
            verdict.add("meta_audience", f"audience {audience}: not a member any more ({extra[:12]}…)")
    shown: dict[str, list[Any]] = defaultdict(list)
    for key, _before, after in klaviyo.get("group_changes", []):
        shown[key].append(after)
    for key, values in shown.items():
        targets = {e["to_group"] for _, _, e in by_profile.get(key, [])}
        verdict.changes_seen_without_event += sum(1 for v in set(values) if v is not None and v not in targets)
    return verdict


def check_events(verdict: Verdict, cid: str, events: list[dict[str, Any]], current: Any, previous: Any) -> None:
    """One profile's events, oldest first, must chain from nothing to its current group."""
    at: Any = None
    last_change: tuple[Any, Any] | None = None
    for event in events:
        change = (event["from_group"], event["to_group"])
        if change == last_change:
            verdict.duplicate_events += 1
            verdict.add("event_duplicate", f"customer {cid}: {change[0]} -> {change[1]} twice")
        elif event["from_group"] != at:
            verdict.add(
                "event_chain",
                f"customer {cid}: event {change[0]} -> {change[1]} while the last event "
                f"left the profile at {at!r} (an event is missing)",
            )
        at, last_change = event["to_group"], change
    if at != current:
        verdict.add("event_final", f"customer {cid}: events end at {at!r}, the profile shows {current!r}")
    if events and events[-1]["from_group"] is not None and current is not None and previous != events[-1]["from_group"]:
        verdict.add(
            "previous_group",
            f"customer {cid}: 'Previous RFM group' = {previous!r}, the last event "
            f"came from {events[-1]['from_group']!r}",
        )
