"""`rfm-sync score` (offline, DuckDB) with every scheme: windows, labels, duplicates, quarantine, output."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from rfm_sync.config import load_config, parse_config
from rfm_sync.offline import OUTPUT_COLUMNS, aggregate_csv, score_csv

AS_OF = date(2026, 6, 30)

ORDERS = """\
order_id,customer_id,placed_at,amount,status
1,a,2026-06-30T10:00:00Z,10.00,paid
2,a,2026-03-01T10:00:00Z,300.00,paid
3,b,2026-06-01T10:00:00Z,20.50,paid
4,b,2026-06-02T10:00:00Z,20.25,paid
5,c,2025-01-01T10:00:00Z,5.00,paid
6,c,2026-06-29T10:00:00Z,7.00,cancelled
"""


def test_aggregates_carry_the_extra_windows_first_order_and_order_count(write_csv):
    from connectors.csv.source import CsvSettings

    path = write_csv(ORDERS)
    config = parse_config({"rfm": {"scheme": "thresholds"}})
    aggregates = aggregate_csv(Path(path), CsvSettings(name="csv", path=str(path)), config, AS_OF)
    aggregates.conn.close()
    frame = aggregates.frame
    row = frame.set_index("customer_key").loc["a"]
    assert (row["orders"], row["frequency"], row["frequency_180d"], row["frequency_90d"]) == (2, 2, 2, 1)
    assert (row["monetary_e4"], row["monetary_e4_180d"], row["monetary_e4_90d"]) == (3_100_000, 3_100_000, 100_000)
    assert str(frame.set_index("customer_key").loc["c", "first_order_at"].date()) == "2025-01-01"


def test_thresholds_scores_write_each_label_as_a_column(write_csv, tmp_path):
    out = tmp_path / "scores.csv"
    result = score_csv(Path(write_csv(ORDERS)), out, parse_config({"rfm": {"scheme": "thresholds"}}), AS_OF)
    table = pd.read_csv(out, dtype=str).set_index("customer_id")
    assert table.loc["a", "recency_label"] == "short" and table.loc["a", "frequency_label"] == "regular"
    assert table.loc["a", "monetary_label"] == "saver"  # 10.00 in the last 90 days; the 300 is older
    assert table.loc["c", "recency_label"] == "long" and table.loc["c", "frequency_label"] == "occasional"
    assert table.loc["b", "monetary"] == "40.75"
    assert result.customers == 3


def test_classic11_scores_write_fm_and_macro_group(write_csv, write_config, tmp_path):
    config = load_config(write_config('[rfm]\nscheme = "classic11"\nmacro_groups = true\n'))
    out = tmp_path / "scores.csv"
    score_csv(Path(write_csv(ORDERS)), out, config, AS_OF)
    table = pd.read_csv(out, dtype=str)
    assert list(table.columns) == OUTPUT_COLUMNS + ["fm_score", "macro_group"]
    assert list(table["customer_id"]) == ["a", "b", "c"]


@pytest.mark.slow
def test_a_repeated_order_id_counts_once_with_the_later_line(write_csv, tmp_path):
    path = write_csv(ORDERS + "3,b,2026-06-01T10:00:00Z,99.00,paid\n")
    out = tmp_path / "scores.csv"
    score_csv(Path(path), out, parse_config({}), AS_OF)
    table = pd.read_csv(out, dtype=str).set_index("customer_id")
    assert table.loc["b", "frequency"] == "2" and table.loc["b", "monetary"] == "119.25"


@pytest.mark.slow
def test_bad_rows_are_quarantined_and_the_rest_scored(write_csv, tmp_path):
    path = write_csv(ORDERS + "7,d,not a date,5.00,paid\n")
    out = tmp_path / "scores.csv"
    result = score_csv(Path(path), out, parse_config({}), AS_OF)
    assert result.quarantined == 1 and result.customers == 3
    assert "placed_at is not a date" in result.quarantine_file.read_text()
