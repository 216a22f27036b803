"""Config TOML for tests, built from a few parameters instead of a preamble copied into every test file.

Most tests run on one shape: a ``[store]``, one CSV source named ``shop`` reading ``orders.csv`` and one
file sink named ``sink`` writing ``profiles.jsonl``. ``config_toml`` writes that shape; a test passes only
what differs — the store URL, extra sections (as TOML text, written after ``[store]``), other sources or
destinations::

    config_toml("sqlite:///s.sqlite", table("[webhooks]", enabled=True),
                sources=[csv_source(type="tests.daemon_fakes:FakeWebhookSource")], destinations=())

Values given as keywords are written as TOML values (``True`` → ``true``, strings quoted); a key set to
``None`` is left out, so ``csv_source(name=None)`` is a CSV source without a name. What it returns is
plain text, so a test may append to it (an appended ``[sources.columns]`` belongs to the last source,
as TOML says).
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def toml_value(value: object) -> str:
    """One value as TOML: booleans, numbers, strings (JSON's quoting is valid TOML) and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def table(header: str, **keys: object) -> str:
    """``header`` (as written: ``"[daemon]"``, ``"[[destinations]]"``) and its keys, one a line, in order."""
    lines = [header] + [f"{key} = {toml_value(value)}" for key, value in keys.items() if value is not None]
    return "\n".join(lines) + "\n"


def source(**keys: object) -> str:
    """One ``[[sources]]`` entry with exactly these keys."""
    return table("[[sources]]", **keys)


def destination(**keys: object) -> str:
    """One ``[[destinations]]`` entry with exactly these keys."""
    return table("[[destinations]]", **keys)


def csv_source(**keys: object) -> str:
    """The usual source: CSV ``shop`` reading ``orders.csv``; keywords replace or add keys (``type`` too)."""
    return source(**{"type": "csv", "name": "shop", "path": "orders.csv", **keys})


def file_sink(**keys: object) -> str:
    """The usual destination: file ``sink`` writing ``profiles.jsonl``; keywords replace or add keys."""
    return destination(**{"type": "file", "name": "sink", "path": "profiles.jsonl", **keys})


def config_toml(
    url: str = "sqlite:///state.sqlite",
    *sections: str,
    sources: Iterable[str] | None = None,
    destinations: Iterable[str] | None = None,
) -> str:
    """A whole config: ``[store] url``, the extra sections, the sources (default: ``csv_source()``), the
    destinations (default: ``file_sink()``; ``()`` for none)."""
    sources = [csv_source()] if sources is None else list(sources)
    destinations = [file_sink()] if destinations is None else list(destinations)
    parts = [table("[store]", url=url), *(_line_ended(s) for s in sections), *sources, *destinations]
    return "".join(parts)


def _line_ended(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
