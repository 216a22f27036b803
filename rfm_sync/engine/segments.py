"""Cross segments: ordered rules over labels or scores; the first matching rule names the group.

A rule is ``name`` plus ``when``: a mapping from a key to one value or a list of values (any of
them matches); all keys must match. Keys depend on the scheme (see each scheme's ``rule_space``):

* ``recency``, ``frequency``, ``monetary`` — labels (scheme ``thresholds``);
* ``r``, ``f``, ``m`` — scores (every scheme), ``fm`` (``classic11``);
* ``group`` — the scheme's own group (``klaviyo``, ``classic11``), to rename or merge groups.

An empty ``when`` matches everyone. Customers no rule matches get the fallback name.

:func:`check` finds every problem at start-up, naming the rule: unknown keys, unknown labels or
out-of-range scores, and rules that can never match — either because their conditions exclude each
other, or because every case they cover is already taken by earlier rules. Schemes have a small,
finite case space (at most 9³ combinations), so this is decided exactly by enumeration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bands import categorical

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

COLUMNS = {
    "r": "r_score",
    "f": "f_score",
    "m": "m_score",
    "fm": "fm_score",
    "group": "scheme_group",
    "recency": "recency_label",
    "frequency": "frequency_label",
    "monetary": "monetary_label",
}
SCORE_KEYS = {"r", "f", "m", "fm"}

# what a scheme's rules may test: key -> its values (scores are numbers, labels and groups text)
Allowed = dict[str, set[int | str]]
# one case of a scheme's case space: key -> its value (see each scheme's rule_space)
Case = dict[str, int | str]


@dataclass(frozen=True)
class Rule:
    name: str
    when: Mapping[str, frozenset[object]]  # key -> the values it matches, as configured (see check)


def _values(key: str, raw: Any) -> list[Any]:
    items = list(raw) if isinstance(raw, (list, tuple, set, frozenset)) else [raw]
    if key in SCORE_KEYS:  # "5" and 5 both mean score 5
        return [int(v) if isinstance(v, str) and v.strip().isdigit() else v for v in items]
    return items


def normalise(rules: Iterable[Any]) -> list[Rule]:
    """Config rule objects (``.name``, ``.when``) or dicts → :class:`Rule` with value sets."""
    out = []
    for rule in rules:
        name = rule["name"] if isinstance(rule, Mapping) else rule.name
        when = rule["when"] if isinstance(rule, Mapping) else rule.when
        out.append(Rule(name=name, when={k: frozenset(_values(k, v)) for k, v in (when or {}).items()}))
    return out


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check(rules: Iterable[Any], allowed: Allowed, cases: list[Case], scheme: str) -> list[str]:
    """Every problem with the rules, one message each, naming the rule (1-based position and name)."""
    problems: list[str] = []
    rules = normalise(rules)
    taken = [False] * len(cases)
    for i, rule in enumerate(rules, start=1):
        label = f"segments[{i}] {rule.name!r}"
        bad = False
        for key, values in rule.when.items():
            if key not in allowed:
                problems.append(
                    f"{label}: unknown condition {key!r} for scheme {scheme!r} "
                    f"(use one of: {', '.join(sorted(allowed))})"
                )
                bad = True
                continue
            if not values:
                problems.append(f"{label}: can never match: {key} lists no values")
                bad = True
            for value in sorted(values - allowed[key], key=str):
                choices = ", ".join(_describe(v) for v in sorted(allowed[key], key=str))
                what = "score" if key in SCORE_KEYS else ("group" if key == "group" else f"{key} label")
                problems.append(f"{label}: {_describe(value)} is not a {what} of scheme {scheme!r} (one of: {choices})")
                bad = True
        if bad:
            continue
        covers = [all(case[k] in v for k, v in rule.when.items()) for case in cases]
        if not any(covers):
            problems.append(f"{label}: can never match: its conditions exclude each other")
        elif all(t for t, c in zip(taken, covers) if c):
            earlier = [
                f"{j} {r.name!r}"
                for j, r in enumerate(rules[: i - 1], start=1)
                if any(c and all(case[k] in v for k, v in r.when.items()) for case, c in zip(cases, covers))
            ]
            problems.append(
                f"{label}: can never match: every case it covers is taken by earlier rules ({', '.join(earlier)})"
            )
        taken = [t or c for t, c in zip(taken, covers)]
    return problems


def apply(frame: pd.DataFrame, rules: Iterable[Any], fallback: str) -> pd.Series:
    """The segment of every row: the first rule whose conditions all hold, else ``fallback``."""
    import numpy as np

    rules = normalise(rules)
    n = len(frame)
    names = list(dict.fromkeys([r.name for r in rules] + [fallback]))
    code_of = {name: i for i, name in enumerate(names)}
    codes = np.full(n, code_of[fallback], dtype=np.int32)
    matched = first_match(frame, rules)
    for i, rule in enumerate(rules, start=1):
        codes[matched == i] = code_of[rule.name]
    return categorical(codes, names, frame.index)


def first_match(frame: pd.DataFrame, rules: Iterable[Any]) -> np.ndarray:
    """Per row, the 1-based position of the first rule whose conditions all hold (0: none matched).
    :func:`apply` names groups from it; ``rfm-sync explain`` says which rule matched."""
    import numpy as np

    rules = normalise(rules)
    out = np.zeros(len(frame), dtype=np.int32)
    for i, rule in enumerate(rules, start=1):
        mask = out == 0
        for key, values in rule.when.items():
            mask &= frame[COLUMNS[key]].isin(list(values)).to_numpy()
        out[mask] = i
    return out


def segment_names(rules: Iterable[Any], fallback: str) -> list[str]:
    return list(dict.fromkeys([r.name for r in normalise(rules)] + [fallback]))
