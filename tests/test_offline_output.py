"""`rfm-sync score` never replaces its input, and writes its outputs whole or not at all."""

from __future__ import annotations

import os
from datetime import date

import pytest
from click.testing import CliRunner

from rfm_sync import exit_codes, offline
from rfm_sync.cli import main
from rfm_sync.config import parse_config

AS_OF = "2026-06-30"
GOOD = "customer_id,placed_at,amount\na,2026-01-01T00:00:00Z,10.00\nb,2026-02-01T00:00:00Z,20.00\n"
WITH_BAD_ROW = GOOD + "c,not a date,5.00\n"


def score(*args):
    return CliRunner().invoke(main, ["score", *args, "--as-of", AS_OF, "--quiet"])


@pytest.fixture
def orders(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(GOOD)
    return path


@pytest.mark.parametrize("how", ["same name", "other spelling", "symlink", "hard link"])
def test_score_refuses_to_write_over_its_orders_file(tmp_path, orders, how):
    if how == "same name":
        out = orders
    elif how == "other spelling":
        (tmp_path / "sub").mkdir()
        out = tmp_path / "sub" / ".." / "orders.csv"
    elif how == "symlink":
        out = tmp_path / "link.csv"
        out.symlink_to(orders)
    else:
        out = tmp_path / "hard.csv"
        os.link(orders, out)
    result = score("--orders", str(orders), "--out", str(out))
    assert result.exit_code == exit_codes.REFUSED, result.output
    assert "is the orders file" in result.output and "Traceback" not in result.output
    assert orders.read_text() == GOOD


def test_score_refuses_when_the_quarantine_file_would_be_the_orders_file(tmp_path):
    orders = tmp_path / "x.csv.quarantine.csv"
    orders.write_text(WITH_BAD_ROW)
    result = score("--orders", str(orders), "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == exit_codes.REFUSED, result.output
    assert orders.read_text() == WITH_BAD_ROW and not (tmp_path / "x.csv").exists()


def test_a_failed_write_leaves_the_previous_output_intact(tmp_path, orders, monkeypatch):
    out = tmp_path / "scores.csv"
    assert score("--orders", str(orders), "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    real = offline.write_scores

    def disk_full(conn, table, target):  # the scores are half written when the disk fills up
        real(conn, table, target)
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(offline, "write_scores", disk_full)
    orders.write_text(GOOD + "d,2026-03-01T00:00:00Z,30.00\n")
    result = score("--orders", str(orders), "--out", str(out))
    assert result.exit_code == exit_codes.OUTPUT and "the disk is full" in result.output and str(out) in result.output
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "scores.csv"]  # no temporary file left


def test_a_failed_quarantine_file_leaves_both_outputs_as_they_were(tmp_path, orders):
    out = tmp_path / "scores.csv"
    assert score("--orders", str(orders), "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    (tmp_path / "scores.csv.quarantine.csv").mkdir()  # cannot become a file
    orders.write_text(WITH_BAD_ROW + "d,2026-03-01T00:00:00Z,30.00\n")
    result = score("--orders", str(orders), "--out", str(out))
    assert result.exit_code == exit_codes.OUTPUT and "scores.csv.quarantine.csv" in result.output, result.output
    assert out.read_bytes() == before


def test_outputs_replace_older_ones_keep_permissions_and_follow_a_symlinked_out(tmp_path, orders):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "scores.csv"
    link.symlink_to(real)
    result = offline.score_csv(orders, link, parse_config({}), date.fromisoformat(AS_OF))
    assert result.customers == 2
    assert link.is_symlink() and real.read_text().startswith("customer_id,")
    assert real.stat().st_mode & 0o777 == 0o640


def test_a_quarantine_file_of_an_earlier_run_never_outlives_its_scores(tmp_path, orders):
    out = tmp_path / "scores.csv"
    orders.write_text(WITH_BAD_ROW)
    assert score("--orders", str(orders), "--out", str(out)).exit_code == 0
    quarantine = tmp_path / "scores.csv.quarantine.csv"
    assert len(quarantine.read_text().splitlines()) == 2  # header + the bad row
    orders.write_text(GOOD)  # the bad row fixed
    result = score("--orders", str(orders), "--out", str(out))
    assert result.exit_code == 0
    assert quarantine.read_text().splitlines() == ["file,line,reason"]  # it no longer lists the fixed row
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "scores.csv", "scores.csv.quarantine.csv"]
