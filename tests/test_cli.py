"""Every command has help text and is mentioned in the README; `demo` runs end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner

from rfm_sync.cli import main
from tests.conftest import REPO


def all_commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield prefix + name, cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + name + " ")


def test_every_command_has_help_and_readme_mention():
    readme = (REPO / "README.md").read_text()
    for name, cmd in all_commands(main):
        assert cmd.help and cmd.help.strip(), f"command {name!r} has no help text"
        assert f"rfm-sync {name}" in readme, f"README does not mention `rfm-sync {name}`"
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, f"option {param.opts} of {name!r} has no help text"


@pytest.mark.slow  # a whole demo run
def test_demo_runs_two_cycles_and_writes_profiles(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo"), "--customers", "400"])
    assert result.exit_code == 0, result.output
    assert "RFM groups as of" in result.output and "changed group" in result.output
    lines = (tmp_path / "demo" / "profiles.jsonl").read_text().splitlines()
    assert lines and all("Current RFM group" in json.loads(line)["properties"] for line in lines)


@pytest.mark.slow
def test_status_shows_runs_and_backlog(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--dir", str(tmp_path), "--customers", "300"]).exit_code == 0
    result = runner.invoke(main, ["status", "-c", str(tmp_path / "config.toml")])
    assert result.exit_code == 0, result.output
    assert "last runs" in result.output and "profiles-file" in result.output
    assert datetime.now(UTC).date().isoformat() in result.output  # the demo shop's today (UTC)


def test_run_is_exactly_one_cycle_with_or_without_once(write_config, write_csv):
    """One meaning: `run` runs one cycle and exits; `--once` (kept for scripts) changes nothing; the
    schedule is the daemon's. Help and hints say `run`, not `run --once`."""
    from rfm_sync.store import Store
    from rfm_sync.store.runs import recent_runs

    runner = CliRunner()
    shown = runner.invoke(main, ["run", "--help"]).output
    assert "exactly one cycle" in shown and "rfm-sync daemon" in shown and "--once" not in shown
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\n")
    config = write_config('[store]\nurl = "sqlite:///s.sqlite"\n[[sources]]\ntype = "csv"\npath = "orders.csv"\n')
    hint = runner.invoke(main, ["doctor", "-c", str(config)]).output
    assert "run `rfm-sync run -c CONFIG` to pull them" in hint
    for args in (["run"], ["run", "--once"]):
        assert runner.invoke(main, [*args, "-c", str(config)]).exit_code == 0
    store = Store.open("sqlite:///" + str(config.parent / "s.sqlite"))
    try:
        assert [r["status"] for r in recent_runs(store, 10)] == ["ok", "ok"]  # one cycle each
    finally:
        store.close()


def test_status_piped_cuts_no_table_at_80_columns(write_config, write_csv, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    name = "profiles-for-the-marketing-team-north-east-weekly-export"
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\nc2,2026-01-02,20\n")
    config = write_config(
        '[store]\nurl = "sqlite:///s.sqlite"\n[[sources]]\ntype = "csv"\npath = "orders.csv"\n'
        f'[[destinations]]\ntype = "file"\nname = "{name}"\n'
    )
    runner = CliRunner()  # its output is not a terminal, like a pipe
    assert runner.invoke(main, ["run", "-c", str(config), "--no-push"]).exit_code == 0
    result = runner.invoke(main, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if name in line)  # whole, on one line
    assert "…" not in result.output and len(row.rstrip()) > 80
    cells = [cell.strip() for cell in row.strip().strip("│").split("│")]
    assert cells == [name, "2", "0", "0", "0", "0"]  # pending, sending, sent, superseded, dead


def test_the_run_table_says_why_rows_failed(tmp_path, write_config, write_csv, monkeypatch):
    """A destination that refuses some rows: the run's table gives a reason, not only a count."""
    monkeypatch.setenv("RFM_SYNC_SECRET_KLAVIYO_KEY", "pk_test")
    write_csv("customer_id,placed_at,amount\nc1,2026-01-01,10\n")  # no email: Klaviyo cannot identify c1
    config = write_config("""
        [store]
        url = "sqlite:///s.sqlite"
        [[sources]]
        type = "csv"
        path = "orders.csv"
        [[destinations]]
        type = "klaviyo"
        api_key_secret = "klaviyo_key"
    """)
    result = CliRunner().invoke(main, ["run", "-c", str(config)])
    assert "1 failed, e.g." in result.output and "identif" in result.output.lower(), result.output
