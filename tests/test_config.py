"""Config errors name the file, the key path and what was expected; nothing else is lost."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rfm_sync.cli import main
from rfm_sync.config import ConfigError, load_config
from tests.conftest import REPO


def problems(write_config, text):
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, info.value.problems


def test_example_config_is_valid():
    config = load_config(REPO / "config.example.toml")
    assert config.rfm.window_days == 730
    assert [s.type for s in config.sources][:1] == ["csv"]


def test_every_problem_names_file_and_key(write_config):
    path, errs = problems(
        write_config,
        """
        [rfm]
        window_days = -3
        recency_bounds = [365, 180]
        [shop]
        timezone = "Mars/Olympus"
        [[sources]]
        type = "csv"
        name = "a"
        pth = "orders.csv"
        [[destinations]]
        type = "carrier-pigeon"
    """,
    )
    text = "\n".join(errs)
    assert all(e.startswith(f"{path}: ") for e in errs)
    assert "rfm.window_days: Input should be greater than 0" in text
    assert "shop.timezone: unknown time zone 'Mars/Olympus'" in text
    assert "sources[0].path: Field required" in text
    assert "sources[0].pth: Extra inputs are not permitted" in text
    assert "destinations[0].type: unknown destination type 'carrier-pigeon'" in text


def test_recency_bounds_must_increase(write_config):
    _, errs = problems(write_config, "[rfm]\nrecency_bounds = [365, 180]\n")
    assert any(": rfm" in e and "recency_bounds" in e for e in errs), errs


def test_unknown_top_level_key_and_bad_toml(write_config):
    _, errs = problems(write_config, "[stroe]\nurl = 'x'\n")
    assert any(e.endswith("stroe: unknown key (check its spelling)") for e in errs)
    _, errs = problems(write_config, "[rfm\n")
    assert "not valid TOML" in errs[0]


def test_duplicate_connector_names(write_config):
    _, errs = problems(
        write_config,
        """
        [[sources]]
        type = "csv"
        name = "x"
        path = "a.csv"
        [[sources]]
        type = "csv"
        name = "x"
        path = "b.csv"
    """,
    )
    assert any("sources[1].name: 'x' is used twice" in e for e in errs)


def test_check_config_exit_codes(write_config):
    good = write_config("[rfm]\nwindow_days = 365\n", name="good.toml")
    bad = write_config("[rfm]\nwindow_days = 'soon'\n", name="bad.toml")
    runner = CliRunner()
    ok = runner.invoke(main, ["check-config", str(good)])
    assert ok.exit_code == 0 and "OK" in ok.output
    res = runner.invoke(main, ["check-config", str(bad)])
    assert res.exit_code == 2
    assert "rfm.window_days" in res.output


def test_check_config_takes_an_empty_argument_as_a_path(tmp_path, monkeypatch):
    """``check-config ""`` is the path "" given as the argument, read (and refused) as ``-c ""`` is;
    it was taken for no argument, and the command failed on a None path with a TypeError."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    by_option = runner.invoke(main, ["check-config", "-c", ""])
    by_argument = runner.invoke(main, ["check-config", ""])
    assert by_option.exit_code == 2 and "cannot read" in by_option.output
    assert (by_argument.exit_code, by_argument.output) == (by_option.exit_code, by_option.output)
