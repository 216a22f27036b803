"""The diff step, vectorised: scored customers vs. stored state → new state rows and outbox payloads.

Pure functions over DataFrames (no I/O); :meth:`rfm_sync.pipeline.Pipeline.diff` reads the
store, calls them and writes the result in one transaction. A per-row Python loop (a dict and a
``json.dumps`` per customer) would dominate the cycle at a million customers, so every property
is one column, JSON text is assembled with Arrow string kernels, and values that repeat (groups,
scores, labels, change times) are converted once per distinct value.

The JSON text is byte-identical to ``json.dumps(build_properties(...), sort_keys=True)``
(see :mod:`rfm_sync.properties`), so snapshots stay comparable with state written before.
Labels (per-dimension labels, the macro group) are written as their own properties, kept in
``customer_state.labels`` and reported in the transition when one changes.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .store.state import map_unique, parse_time, sqlite_time

_MINOR = ["" if m == 0 else "." + f"{m:04d}".rstrip("0") for m in range(10_000)]


@dataclass
class Changes:
    """Customers whose snapshot changed: their new state rows and what the outbox needs."""

    state: pd.DataFrame  # STATE_COLUMNS of rows to upsert
    outbox: pd.DataFrame  # customer_key, properties (JSON), changed_at, before, after, labels_before/after,
    #                       transition (bool), first_assignment (bool), labels (JSON of the snapshot's labels)
    gone: list[str]
    changed: int = 0
    transitions: dict[tuple[str | None, str | None], int] = field(default_factory=dict)


def _json_or_null(v: Any) -> str | None:
    return (
        None if v is None or (isinstance(v, float) and np.isnan(v)) else json.dumps(v if isinstance(v, str) else str(v))
    )


def _arrow(values: Any) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)


def join(*strings: pa.Array | str, null_handling: Literal["emit_null", "skip"] = "emit_null") -> pa.Array:
    """``pc.binary_join_element_wise``: the strings joined per row, the last one the separator. A
    ``str`` stands for the same text in every row."""
    # pyarrow broadcasts a str against the arrays; pyarrow-stubs accept only all arrays or all scalars
    return pc.binary_join_element_wise(*strings, null_handling=null_handling)  # type: ignore[arg-type]


def json_object(fields: dict[str, pa.Array], n: int) -> pa.Array:
    """``{"k": v, ...}`` per row with keys sorted, like ``json.dumps(sort_keys=True)``; null values omit the key."""
    parts = [join(json.dumps(k) + ": ", fields[k], "") for k in sorted(fields)]
    if not parts:
        return pa.array(["{}"] * n, type=pa.string())
    body = join(*parts, ", ", null_handling="skip")
    return join("{", body, "}", "")


def ints(values: pd.Series) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def money(amount_e4: pd.Series) -> pa.Array:
    """Exact amounts from integer ×10⁴ as JSON numbers: ``12``, ``12.5``, ``12.3456`` (never via floats)."""
    v = np.asarray(amount_e4, dtype=np.int64)
    major = pc.cast(pa.array(v // 10_000), pa.string())
    minor = pa.array(np.asarray(_MINOR, dtype=object)[v % 10_000], type=pa.string())
    return join(major, minor, "")


def _sqlite_text(stored: Any) -> str | None:
    """A stored time as the store's SQLite text (None: none)."""
    moment = parse_time(stored)
    return None if moment is None else sqlite_time(moment)


def _json_time(stored: Any) -> str | None:
    """A stored time as a JSON string, ISO-8601 UTC (None: none)."""
    moment = parse_time(stored)
    return None if moment is None else json.dumps(moment.isoformat())


def iso_utc(moment: Any) -> str | None:
    t = parse_time(moment)
    return None if t is None else t.isoformat(timespec="seconds").replace("+00:00", "Z")


def properties_json(frame: pd.DataFrame, names: Any, label_props: dict[str, str]) -> pa.Array:
    """The property snapshot of every row: group, previous, changed_at, scores, metrics, the hold-out
    flag (column ``held_out``, with ``holdout_percent``), labels."""
    n = len(frame)
    fields = {
        names.current_group: _arrow(map_unique(frame["rfm_group"], _json_or_null)),
        names.group_changed_at: _arrow(map_unique(frame["changed_at"], lambda t: _json_or_null(iso_utc(t)))),
        names.score: _arrow(map_unique(frame["rfm_score"], _json_or_null)),
        names.recency_score: ints(frame["r_score"]),
        names.frequency_score: ints(frame["f_score"]),
        names.monetary_score: ints(frame["m_score"]),
        names.previous_group: _arrow(map_unique(frame["previous_group"], _json_or_null)),
    }
    if names.include_metrics:
        fields[names.recency_days] = ints(frame["recency_days"])
        fields[names.orders] = ints(frame["frequency"])
        fields[names.spend] = money(frame["monetary_e4"])
    if names.holdout_percent > 0:  # the row's hold-out flag (column held_out, see _compute)
        fields[names.holdout] = pa.array(np.where(frame["held_out"].to_numpy(dtype=bool), "true", "false"))
    for column, prop in label_props.items():
        fields[prop] = _arrow(map_unique(frame[column], _json_or_null))
    return json_object(fields, n)


def held_out_flags(keys: Any, previous: Any, current: Any, percent: float) -> np.ndarray:
    """:func:`rfm_sync.properties.held_out` of every row (missing groups as None)."""
    from .properties import held_out

    def text(v: Any) -> str | None:
        return None if pd.isna(v) else str(v)

    return np.fromiter(
        (
            held_out(str(k), text(b), text(a), percent)
            for k, b, a in zip(
                np.asarray(keys, dtype=object), np.asarray(previous, dtype=object), np.asarray(current, dtype=object)
            )
        ),
        dtype=bool,
        count=len(keys),
    )


def labels_json(frame: pd.DataFrame, labels: dict[str, str]) -> np.ndarray:
    """``{"frequency": "regular", ...}`` per row (None when the scheme has no labels)."""
    if not labels:
        return np.full(len(frame), None, dtype=object)
    fields = {dim: _arrow(map_unique(frame[col], _json_or_null)) for dim, col in labels.items()}
    return np.asarray(json_object(fields, len(frame)).to_pylist(), dtype=object)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while building millions of short-lived strings: with large
    object arrays alive, every automatic collection walks them all. Nothing here makes cycles.
    ``@paused_gc()`` on the functions that build them (a context manager is also a decorator)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _text(values: Any) -> pd.Series:
    """An object column, kept as such: pandas 3 would otherwise convert every text column to its
    Arrow string type and back again on each ``to_numpy``."""
    return pd.Series(np.asarray(values, dtype=object), dtype=object, copy=False)


@paused_gc()
def compute(
    scored: pd.DataFrame,
    state: pd.DataFrame,
    *,
    names: Any,
    labels: dict[str, str],
    label_names: dict[str, str],
    now: datetime,
    run_id: int,
    only: set[str] | None = None,
) -> Changes:
    """Compare every scored customer with its stored state (``state``: customer_state columns).

    ``labels``: label dimension → column of ``scored``; ``label_names``: dimension → property name.
    ``only``: the scores cover just these customers (the others keep their state).
    """
    st = state.set_index("customer_key")
    keys = scored["customer_key"].astype(object)
    old = st.reindex(keys.to_numpy())
    before = old["current_group"].to_numpy(dtype=object)
    group = scored["rfm_group"].astype(object).to_numpy()
    known = pd.notna(before)
    moved = ~known | (before != group)
    # change times as the store's text (a handful of distinct values: one per run), never per-row datetimes
    old_changed = map_unique(old["group_changed_at"], _sqlite_text)
    changed_at = pd.Categorical(np.where(moved, sqlite_time(now), old_changed))
    # numpy takes None as an object scalar; numpy's stubs leave None out of ArrayLike
    kept_previous = np.where(known, old["previous_group"].to_numpy(dtype=object), None)  # type: ignore[call-overload]
    frame = pd.DataFrame(
        {
            "customer_key": _text(keys),
            "rfm_group": _text(group),
            "rfm_score": _text(scored["rfm_score"].astype(object)),
            "r_score": scored["r_score"].to_numpy(),
            "f_score": scored["f_score"].to_numpy(),
            "m_score": scored["m_score"].to_numpy(),
            "previous_group": _text(np.where(known & moved, before, kept_previous)),
            "changed_at": changed_at,
        }
    )
    for col in ("recency_days", "frequency", "monetary_e4"):
        frame[col] = scored[col].to_numpy()
    for col in labels.values():
        frame[col] = scored[col].to_numpy()
    holdout = names.holdout_percent
    if holdout > 0:  # hashed once: for the property and for the history row of a move (store/history.py)
        frame["held_out"] = held_out_flags(frame["customer_key"], frame["previous_group"], frame["rfm_group"], holdout)
    props = np.asarray(
        properties_json(frame, names, {labels[d]: label_names[d] for d in labels}).to_pylist(), dtype=object
    )
    label_text = labels_json(frame, labels)
    changed = props != old["properties"].to_numpy(dtype=object)
    rows = frame[changed]
    state_rows = pd.DataFrame(
        {
            "customer_key": _text(rows["customer_key"]),
            "current_group": _text(rows["rfm_group"]),
            "previous_group": _text(rows["previous_group"]),
            "group_changed_at": _text(rows["changed_at"].to_numpy(dtype=object)),
            "rfm_score": _text(rows["rfm_score"]),
            "properties": _text(props[changed]),
            "labels": _text(label_text[changed]),
            "run_id": run_id,
        }
    )
    old_labels = old["labels"].to_numpy(dtype=object)[changed]
    label_moved = known[changed] & (label_text[changed] != old_labels) & pd.notna(label_text[changed])
    out = pd.DataFrame(
        {
            "customer_key": _text(rows["customer_key"]),
            "properties": _text(props[changed]),
            "changed_at": _text(rows["changed_at"].to_numpy(dtype=object)),
            "before": _text(before[changed]),
            "after": _text(group[changed]),
            "labels_before": _text(np.where(label_moved, old_labels, None)),
            "labels_after": _text(np.where(label_moved, label_text[changed], None)),
            "transition": moved[changed] | label_moved,
            "first_assignment": ~known[changed],
            "labels": _text(label_text[changed]),
            "held_out": _text(rows["held_out"]) if holdout > 0 else None,
        }
    )
    in_scores = set(keys)
    gone = [k for k in st.index if k not in in_scores and (only is None or k in only)]
    if gone:
        cleared = cleared_json(names, label_names.values() if labels else ())
        out = pd.concat(
            [
                out,
                pd.DataFrame(
                    {
                        "customer_key": gone,
                        "properties": cleared,
                        "changed_at": sqlite_time(now),
                        "before": st.loc[gone, "current_group"].to_numpy(dtype=object),
                        "after": None,
                        "labels_before": None,
                        "labels_after": None,
                        "transition": True,
                        "first_assignment": False,
                        "labels": None,
                        "held_out": (
                            held_out_flags(gone, st.loc[gone, "current_group"], [None] * len(gone), holdout)
                            if holdout > 0
                            else None
                        ),
                    }
                ),
            ],
            ignore_index=True,
        )
    transitions: dict[tuple[str | None, str | None], int] = {}
    grp = out[out["before"].astype(object).to_numpy() != out["after"].astype(object).to_numpy()]
    # missing groups (new customers, cleared ones) stay keys: dropna=False, then NaN → None (not a
    # stand-in such as "\0": pandas 3's string grouping gives it back as "", filing new customers under "")
    for (b, a), count in grp.groupby([grp["before"], grp["after"]], dropna=False).size().items():
        transitions[(None if pd.isna(b) else b, None if pd.isna(a) else a)] = int(count)
    return Changes(state=state_rows, outbox=out, gone=gone, changed=int(changed.sum()), transitions=transitions)


def cleared_json(names: Any, label_props: Any = ()) -> str:
    """Every RFM property set to null: the customer has no qualifying order any more."""
    from .properties import cleared_properties

    props = cleared_properties(names)
    props.update(dict.fromkeys(label_props))
    return json.dumps(props, sort_keys=True)


def event_id(
    key: str,
    before: str | None,
    after: str | None,
    run_id: int,
    labels_before: str | None = None,
    labels_after: str | None = None,
) -> str:
    text = f"{key}|{before}|{after}|{run_id}"
    if labels_before is not None or labels_after is not None:
        text += f"|{labels_before}|{labels_after}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def outbox_rows(changes: pd.DataFrame, destinations: list[str], run_id: int) -> pd.DataFrame:
    """One outbox row per destination and change (destination, customer_key, run_id, payload), from
    ``changes`` with its ``payload`` column (:func:`payloads`)."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "destination": name,
                    "customer_key": changes["customer_key"].to_numpy(),
                    "run_id": run_id,
                    "payload": changes["payload"].to_numpy(),
                }
            )
            for name in destinations
        ]
        or [pd.DataFrame(columns=["destination"])],
        ignore_index=True,
    )


@paused_gc()
def payloads(changes: pd.DataFrame, contacts: pd.DataFrame, run_id: int) -> np.ndarray:
    """The outbox payload JSON of every change (the format :func:`rfm_sync.pipeline.update_from_row` reads)."""
    n = len(changes)
    if n == 0:
        return np.empty(0, dtype=object)
    c = contacts.drop_duplicates("customer_key").set_index("customer_key").reindex(changes["customer_key"].to_numpy())
    email = np.array([None if v is None or v != v else json.dumps(v) for v in c["email"].tolist()], dtype=object)
    phone = np.array([None if v is None or v != v else json.dumps(v) for v in c["phone"].tolist()], dtype=object)
    trans = changes["transition"].to_numpy(dtype=bool)
    keys, bef, aft = (changes[k].tolist() for k in ("customer_key", "before", "after"))
    lb, la = changes["labels_before"].tolist(), changes["labels_after"].tolist()
    ids = np.array(
        [json.dumps(event_id(keys[i], bef[i], aft[i], run_id, lb[i], la[i])) if trans[i] else None for i in range(n)],
        dtype=object,
    )
    tfields = {
        "from": _arrow(map_unique(changes["before"], _json_or_null)),
        "to": _arrow(map_unique(changes["after"], _json_or_null)),
    }
    if changes["labels_after"].notna().any():
        tfields["labels_before"] = _arrow(changes["labels_before"].to_numpy(dtype=object))
        tfields["labels_after"] = _arrow(changes["labels_after"].to_numpy(dtype=object))
    # a missing "from"/"to" is written as null, not left out
    tfields["from"] = tfields["from"].fill_null("null")
    tfields["to"] = tfields["to"].fill_null("null")
    transition = json_object(tfields, n)
    transition = pc.if_else(pa.array(trans), transition, pa.scalar("null"))
    fields = {
        "changed_at": _arrow(map_unique(changes["changed_at"], _json_time)),
        "email": _arrow(email).fill_null("null"),
        "phone": _arrow(phone).fill_null("null"),
        "event_id": _arrow(ids).fill_null("null"),
        "first_assignment": pa.array(
            np.where(changes["first_assignment"].to_numpy(dtype=bool), "true", "false"), type=pa.string()
        ),
        "properties": _arrow(changes["properties"].to_numpy(dtype=object)),
        "transition": transition,
    }
    if "labels" in changes and changes["labels"].notna().any():  # the labels this snapshot carries (JSON)
        fields["labels"] = _arrow(changes["labels"].to_numpy(dtype=object))
    return np.asarray(json_object(fields, n).to_pylist(), dtype=object)
