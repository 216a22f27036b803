"""Hostile configurations: every one ends in one clear line naming the file and the key, exit 2,
from ``check-config`` and from ``run`` alike (a problem ``check-config`` lets through would surface
in the first run, later and worse), never a traceback, and nothing written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rfm_sync import exit_codes
from rfm_sync.cli import main

BASE = """
[store]
url = "sqlite:///s.sqlite"
[[sources]]
type = "csv"
path = "orders.csv"
[[destinations]]
type = "file"
path = "p.jsonl"
"""

# (case, the config's text, words the message must hold: the key, and what is wrong or what to do)
CASES = [
    ("not TOML", "this is = = not toml", ["not valid TOML", "line 1"]),
    ("an unknown section", BASE + "[surprise]\nx = 1\n", ["surprise", "unknown key"]),
    ("a misspelt key", BASE + "[rfm]\nschema = 'klaviyo'\n", ["rfm.schema", "unknown key"]),
    ("an unknown scheme", BASE + "[rfm]\nscheme = 'nope'\n", ["rfm.scheme", "klaviyo"]),
    ("a number as text", BASE + "[rfm]\nwindow_days = 'seven'\n", ["rfm.window_days", "integer"]),
    ("a negative window", BASE + "[rfm]\nwindow_days = -1\n", ["rfm.window_days", "greater than 0"]),
    ("a window of a million days", BASE + "[rfm]\nwindow_days = 1000000\n", ["rfm.window_days"]),
    ("recency bounds out of order", BASE + "[rfm]\nrecency_bounds = [365, 180]\n", ["recency_bounds", "increasing"]),
    ("an unknown time zone", BASE + "[shop]\ntimezone = 'Mars/Olympus'\n", ["shop.timezone", "IANA"]),
    ("a currency that is not a code", BASE + "[shop]\ncurrency = 'euro'\n", ["shop.currency", "ISO 4217"]),
    (
        "a rate that is not a number",
        BASE + "[shop]\ncurrency = 'EUR'\n[shop.rates]\nUSD = 'abc'\n",
        ["shop.rates", "USD", "not a number"],
    ),
    ("a negative rate", BASE + "[shop]\ncurrency = 'EUR'\n[shop.rates]\nUSD = '-1'\n", ["USD", "positive"]),
    (
        "a rates file that is not there",
        BASE + "[shop]\ncurrency = 'EUR'\nrates_file = 'nope.csv'\n",
        ["shop.rates_file", "nope.csv"],
    ),
    (
        "an unknown destination type",
        BASE.replace('type = "file"', 'type = "fax"'),
        ["destinations[0].type", "fax", "known:"],
    ),
    (
        "a plug-in that is not a connector",
        BASE.replace('type = "file"', 'type = "os:system"'),
        ["destinations[0].type", "os:system", "not a destination"],
    ),
    (
        "a plug-in module that is not installed",
        BASE.replace('type = "file"', 'type = "nosuchmod:Thing"'),
        ["destinations[0].type", "nosuchmod"],
    ),
    (
        "two destinations with one name",
        BASE + '[[destinations]]\ntype = "file"\npath = "q.jsonl"\n',
        ["destinations[1].name", "twice"],
    ),
    ("a source without its type", BASE + "[[sources]]\npath = 'x.csv'\n", ["sources[1].type", "missing"]),
    ("sources as a table, not an array", '[sources]\ntype = "csv"\n', ["sources", "array of tables"]),
    ("a CSV source without its path", BASE.replace('path = "orders.csv"\n', ""), ["sources[0].path", "required"]),
    (
        "a two-character delimiter",
        BASE.replace('path = "orders.csv"', 'path = "orders.csv"\ndelimiter = ";;"'),
        ["sources[0].delimiter"],
    ),
    ("an unknown database", BASE.replace("sqlite:///s.sqlite", "nosuchdb://x"), ["store.url", "nosuchdb"]),
    ("a URL that is not a URL", BASE.replace("sqlite:///s.sqlite", "::::"), ["store.url", "not a database URL"]),
    (
        "a segment on a label the scheme lacks",
        BASE + "[rfm]\nscheme = 'klaviyo'\n[[rfm.segments]]\nname = 'X'\nwhen = { monetary = 'premium' }\n",
        ["segments", "monetary", "klaviyo"],
    ),
    (
        "thresholds with too many bounds",
        BASE + "[rfm]\nscheme = 'thresholds'\n[rfm.thresholds.recency]\nlabels = ['a', 'b']\nupto = [30, 10]\n",
        ["rfm.thresholds.recency", "upto"],
    ),
    (
        "two properties with one name",
        BASE + "[properties]\ncurrent_group = 'X'\nprevious_group = 'X'\n",
        ["properties", "current_group", "previous_group", "'X'"],
    ),
    ("an empty property name", BASE + "[properties]\nscore = ' '\n", ["properties", "score", "empty"]),
    (
        "a label property named like a property",
        BASE + "[rfm.label_properties]\nrecency = 'RFM score'\n",
        ["rfm.label_properties.recency", "properties.score"],
    ),
    (
        "a key pasted where the secret's name belongs",
        BASE + '[[destinations]]\ntype = "klaviyo"\napi_key_secret = "pk_3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"\n',
        ["destinations[1].api_key_secret", "pasted where the secret's name belongs"],
    ),
    ("a quarantine share above 1", BASE + "[pull]\nmax_quarantine_share = 2\n", ["pull.max_quarantine_share"]),
    ("zero webhook attempts", BASE + "[webhooks]\nmax_attempts = 0\n", ["webhooks.max_attempts"]),
    ("zero push attempts", BASE + "[push]\nmax_attempts = 0\n", ["push.max_attempts"]),
]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("text,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_hostile_config_is_one_clear_message_and_exit_2(tmp_path, command, text, words):
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    (tmp_path / "orders.csv").write_text("customer_id,placed_at,amount\nc1,2026-01-01,10\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["run", "--once", "-c", str(config)] if command == "run" else ["check-config", "-c", str(config)]
    result = invoke(*args)
    assert result.exit_code == exit_codes.CONFIG, result.output
    assert str(config) in result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, no output: nothing written
    assert "pk_3f9a8b7c" not in result.output  # a pasted key is never echoed


def test_a_config_that_is_not_utf8_names_the_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(b'[shop]\ntimezone = "Europe/Z\xfcrich"\n')  # Latin-1, as an old editor saves it
    result = invoke("check-config", "-c", str(config))
    assert result.exit_code == exit_codes.CONFIG
    assert "line 2" in result.output and "UTF-8" in result.output and "0xFC" in result.output


def test_a_store_driver_that_is_not_installed_is_named_with_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psycopg(name, *args, **kwargs):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    config = tmp_path / "config.toml"
    config.write_text(BASE.replace("sqlite:///s.sqlite", "postgresql+psycopg://rfm:hunter2@127.0.0.1:1/rfm"))
    result = invoke("check-config", "-c", str(config))
    assert result.exit_code == exit_codes.CONFIG
    assert "store.url" in result.output and "pip install" in result.output and "psycopg" in result.output
    assert "hunter2" not in result.output
