"""`rfm-sync score` reproduces the klaviyo scheme's rules on hand-made cases."""

from __future__ import annotations

import csv
import itertools
from datetime import date, timedelta
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from rfm_sync.cli import main
from rfm_sync.engine.quantiles import count_above, cut_points

AS_OF = date(2026, 6, 30)

# The table, written out independently of the engine's own lookup.
EXPECTED_GROUP = {}
for group, codes in {
    "Champions": "333 332 323",
    "Loyal": "321 322 331 232 233",
    "Recent": "312 313 311 222 223",
    "Needs Attention": "213 221 123 132 133",
    "At Risk": "231 212 122 131 211",
    "Inactive": "111 112 113 121",
}.items():
    for code in codes.split():
        EXPECTED_GROUP[code] = group


def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat() + "T12:00:00Z"


def score(tmp_path, rows, as_of=AS_OF, header="order_id,customer_id,placed_at,amount,status,refunded", extra=()):
    src = tmp_path / "orders.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows(rows)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        main, ["score", "--orders", str(src), "--out", str(out), "--as-of", as_of.isoformat(), "--quiet", *extra]
    )
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        return {r["customer_id"]: r for r in csv.DictReader(fh)}


def test_all_27_combinations(tmp_path):
    recency = {3: 10, 2: 200, 1: 400}  # days since last order
    spend = {1: 6, 2: 60, 3: 600}  # total, divisible by 1, 2 and 3 orders
    rows, n = [], 0
    for r, f, m in itertools.product((1, 2, 3), repeat=3):
        cid = f"c{r}{f}{m}"
        for k in range(f):  # f orders, the last one `recency[r]` days ago, all inside the 730-day window
            n += 1
            rows.append([f"o{n}", cid, day(recency[r] + 30 * k), f"{spend[m] / f:.2f}", "paid", ""])
    scores = score(tmp_path, rows)
    assert len(scores) == 27
    for r, f, m in itertools.product((1, 2, 3), repeat=3):
        row = scores[f"c{r}{f}{m}"]
        assert (row["r_score"], row["f_score"], row["m_score"]) == (str(r), str(f), str(m))
        assert row["rfm_score"] == f"{r}{f}{m}"
        assert row["rfm_group"] == EXPECTED_GROUP[f"{r}{f}{m}"]
        assert row["frequency"] == str(f)
        assert row["monetary"] == f"{spend[m]}.00"


@pytest.mark.parametrize("days_ago,expected_r", [(0, "3"), (180, "3"), (181, "2"), (365, "2"), (366, "1"), (729, "1")])
def test_recency_bounds_are_inclusive(tmp_path, days_ago, expected_r):
    rows = [["o1", "a", day(days_ago), "10.00", "paid", ""], ["o2", "b", day(5), "10.00", "paid", ""]]
    scores = score(tmp_path, rows)
    assert scores["a"]["recency_days"] == str(days_ago)
    assert scores["a"]["r_score"] == expected_r


def test_configurable_recency_bounds(tmp_path, write_config):
    cfg = write_config("[rfm]\nrecency_bounds = [30, 60]\n")
    rows = [
        ["o1", "a", day(30), "1", "paid", ""],
        ["o2", "b", day(31), "1", "paid", ""],
        ["o3", "c", day(61), "1", "paid", ""],
    ]
    scores = score(tmp_path, rows, extra=("-c", str(cfg)))
    assert [scores[k]["r_score"] for k in "abc"] == ["3", "2", "1"]


def test_ties_at_cut_points_share_a_score(tmp_path):
    # frequencies 1,1,1,2,2,2,3 → q1 = 1 (exactly, h = 2), q2 = 2 (exactly, h = 4): v > q is strict
    freqs = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2, "f": 2, "g": 3}
    rows, n = [], 0
    for cid, f in freqs.items():
        for k in range(f):
            n += 1
            rows.append([f"o{n}", cid, day(10 + k), "10.00", "paid", ""])
    scores = score(tmp_path, rows)
    assert {cid: scores[cid]["f_score"] for cid in freqs} == {
        "a": "1",
        "b": "1",
        "c": "1",
        "d": "2",
        "e": "2",
        "f": "2",
        "g": "3",
    }


def test_money_cut_points_are_exact_not_float(tmp_path):
    # monetary 0.10, 0.20, 0.30, 0.40: q(1/3) = 0.20 and q(2/3) = 0.30 exactly (h = 1 and 2);
    # a value equal to a cut point is not above it
    rows = [[f"o{i}", f"c{i}", day(5), f"0.{i}0", "paid", ""] for i in range(1, 5)]
    scores = score(tmp_path, rows)
    assert [scores[f"c{i}"]["m_score"] for i in range(1, 5)] == ["1", "1", "2", "3"]


def test_empty_window_still_scored_and_drops(tmp_path):
    rows = [["o1", "old", day(800), "999.00", "paid", ""], ["o2", "new", day(3), "5.00", "paid", ""]]
    scores = score(tmp_path, rows)
    old = scores["old"]
    assert (old["frequency"], old["monetary"], old["f_score"], old["m_score"]) == ("0", "0.00", "1", "1")
    assert old["rfm_group"] == "Inactive" and old["recency_days"] == "800"


def test_refunds_cancelled_test_and_future_orders(tmp_path):
    rows = [
        ["o1", "full-refund", day(5), "50.00", "paid", "50.00"],  # net 0: not qualifying
        ["o2", "part-refund", day(5), "50.00", "paid", "20.00"],  # net 30
        ["o3", "cancelled", day(5), "50.00", "Cancelled", ""],
        ["o4", "test", day(5), "50.00", "test", ""],
        ["o5", "future", (AS_OF + timedelta(days=1)).isoformat() + "T00:30:00Z", "50.00", "paid", ""],
        ["o6", "part-refund", day(400), "10.00", "refunded", ""],  # status refunded: not a purchase
        ["o7", "zero", day(5), "0.00", "paid", ""],
    ]
    scores = score(tmp_path, rows)
    assert set(scores) == {"part-refund"}
    assert scores["part-refund"]["monetary"] == "30.00"
    assert scores["part-refund"]["frequency"] == "1"


def test_identifiers_stay_opaque_strings(tmp_path):
    rows = [["o1", "00042", day(1), "1.00", "paid", ""], ["o2", "42", day(1), "2.00", "paid", ""]]
    scores = score(tmp_path, rows)
    assert set(scores) == {"00042", "42"}


def test_store_timezone_decides_the_calendar_day(tmp_path, write_config):
    # 2026-06-29 23:30 in New York is 2026-06-30 03:30 UTC: one day ago in New York, zero in UTC
    rows = [["o1", "a", "2026-06-30T03:30:00Z", "1.00", "paid", ""]]
    utc = score(tmp_path, rows)
    cfg = write_config('[shop]\ntimezone = "America/New_York"\n')
    ny = score(tmp_path, rows, extra=("-c", str(cfg)))
    assert utc["a"]["recency_days"] == "0" and ny["a"]["recency_days"] == "1"


def test_bad_rows_are_quarantined_with_line_and_the_rest_scored(tmp_path):
    rows = [
        ["o1", "a", day(1), "1.00", "paid", ""],
        ["o2", "b", "yesterday", "1.00", "paid", ""],
        ["o3", "c", day(1), "1,00", "paid", ""],
        ["o4", "", day(1), "1.00", "paid", ""],
        ["o5", "e", day(2), "3.00", "paid", ""],
    ]
    scores = score(tmp_path, rows)
    assert set(scores) == {"a", "e"}
    with (tmp_path / "scores.csv.quarantine.csv").open() as fh:
        bad = list(csv.DictReader(fh))
    assert [(b["line"], b["reason"].split(":")[0]) for b in bad] == [
        ("3", "placed_at is not a date/time"),
        ("4", "amount is not a number"),
        ("5", "customer_id is empty (and no email to identify a guest)"),
    ]
    assert all(b["file"].endswith("orders.csv") for b in bad)


def test_exact_cut_points_match_numpy_linear_where_floats_are_exact():
    rng = np.random.default_rng(3)
    for _ in range(50):
        values = rng.integers(0, 1000, size=int(rng.integers(1, 60)))
        exact = cut_points(values, [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)])
        approx = np.quantile(values, [0.25, 0.5, 0.75])
        assert np.allclose([float(c) for c in exact], approx)
        # scoring counts the cut points strictly below each value
        expected = (values[:, None] > np.array([float(c) for c in exact])[None, :]).sum(axis=1)
        assert (count_above(values, exact) == expected).all()


def test_score_without_quiet_shows_progress_then_a_summary_on_stderr(tmp_path):
    """The interactive form (no --quiet): a progress bar while scoring, then the group table, the
    quarantine count and the customer count on stderr; the scores file is written all the same."""
    src = tmp_path / "orders.csv"
    src.write_text(
        "order_id,customer_id,placed_at,amount\no1,a,2026-06-01,10\no2,b,2026-05-01,5\no3,c,not a date,5\n",
        encoding="utf-8",
    )
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["score", "--orders", str(src), "--out", str(out), "--as-of", "2026-06-30"])
    assert result.exit_code == 0, result.output
    assert "RFM groups as of 2026-06-30" in result.stderr
    assert "1 bad rows quarantined" in result.stderr and "2 customers" in result.stderr
    assert result.stdout == ""
    assert len(out.read_text().splitlines()) == 3
