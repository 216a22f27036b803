"""What one destination receives: an outbox snapshot seen through that destination's own memory.

The diff writes one snapshot per changed customer for every destination, with the transition
and ``Previous RFM group`` as the *store* saw them. A destination that was unreachable for a
while missed some of those snapshots, so the store's view is not its view: Champions → Recent →
At Risk while Klaviyo was down must reach Klaviyo as "Champions → At Risk" with
``Previous RFM group = Champions`` — the group Klaviyo last had — not ``Recent``, a group it
never saw. And a round trip (At Risk → Recent → At Risk) must send no event and leave the
previous group Klaviyo already shows.

So every destination keeps its own memory (``destination_state``: the group, previous group,
change time and labels it was last sent, written in the transaction that acknowledges the
send), and just before a batch goes out each snapshot is reconciled with it
(:func:`for_destination`): the transition's ``from`` is the group this destination was last
sent, its ``Previous RFM group`` the last *different* group it was sent, and the change time
the one it already shows when the group did not change for it. The event id stays
deterministic (the same row always gets the same id, so a resend after a crash is recorded
once by Klaviyo's ``unique_id``). Without a memory (the first send to a destination, or a store
from before the memory existed) the snapshot goes out as the diff wrote it.

Pure functions; :meth:`rfm_sync.pipeline.Pipeline.push` reads and writes the memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Memory:
    """What a destination was last sent for one customer."""

    group: str | None  # None: sent as cleared
    previous_group: str | None
    group_changed_at: str | None  # ISO-8601 UTC, as the property was sent
    labels: dict[str, Any] | None


def _labels(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    return json.loads(value)


def memory_from_row(row: Mapping[str, Any]) -> Memory:
    return Memory(
        group=row["rfm_group"],
        previous_group=row["previous_group"],
        group_changed_at=row["group_changed_at"],
        labels=_labels(row["labels"]),
    )


def sent_memory(payload: Mapping[str, Any], names: Any) -> Memory:
    """The memory a destination has after it accepted ``payload`` (as reconciled)."""
    props = payload["properties"]
    return Memory(
        group=props.get(names.current_group),
        previous_group=props.get(names.previous_group),
        group_changed_at=props.get(names.group_changed_at),
        labels=_labels(payload.get("labels")),
    )


def for_destination(
    key: str, row_id: int, payload: dict[str, Any], memory: Memory | None, names: Any
) -> dict[str, Any]:
    """``payload`` as this destination must receive it, given what it was last sent (``memory``)."""
    if memory is None:
        return payload
    props = dict(payload["properties"])
    group = props.get(names.current_group)
    labels = _labels(payload.get("labels"))
    group_moved = group != memory.group
    labels_moved = group is not None and labels is not None and labels != memory.labels and memory.group is not None
    out = dict(payload, properties=props)
    if group is not None:
        if group_moved:
            # a customer the destination last saw cleared (or never) starts afresh, like a new one
            previous = memory.group
        else:
            previous = memory.previous_group
            if memory.group_changed_at is not None:
                props[names.group_changed_at] = memory.group_changed_at
        if previous is None:
            props.pop(names.previous_group, None)
        else:
            props[names.previous_group] = previous
    if not (group_moved or labels_moved):
        out.update(transition=None, event_id=None, first_assignment=False)
        return out
    transition = {
        "from": memory.group,
        "to": group,
        "labels_before": memory.labels if labels_moved else None,
        "labels_after": labels if labels_moved else None,
    }
    own = payload.get("transition") or {}
    same = (own.get("from"), own.get("to"), own.get("labels_before") or None, own.get("labels_after") or None) == (
        transition["from"],
        transition["to"],
        transition["labels_before"],
        transition["labels_after"],
    )
    if same and payload.get("event_id"):
        out["transition"] = {**own, **transition}
        return out
    out["transition"] = transition
    out["first_assignment"] = memory.group is None and group is not None
    seed = json.dumps([key, row_id, transition], sort_keys=True)
    out["event_id"] = hashlib.sha256(seed.encode()).hexdigest()[:32]
    return out
