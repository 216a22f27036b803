"""Every scheme on hand-made cases, boundary by boundary (ties at cut points, equal values, empty windows)."""

from __future__ import annotations

from fractions import Fraction

import pandas as pd
import pytest

from rfm_sync import engine
from rfm_sync.engine import classic11
from rfm_sync.engine.quantiles import from_json
from rfm_sync.rfm_config import RfmConfig

from .engine_helpers import by_key, customers, score

SIX = [("a", 10, 1, 10), ("b", 20, 2, 20), ("c", 30, 3, 30), ("d", 40, 4, 40), ("e", 50, 5, 50), ("f", 60, 6, 60)]


# ---------------------------------------------------------------- classic11
def test_classic11_quintile_cut_points_are_exact_linear_interpolation():
    five = [(k, d, f, m) for k, d, f, m in SIX[:5]]  # n = 5: h = 4p → 0.8, 1.6, 2.4, 3.2
    cuts = classic11.calibrate(score(customers(five), scheme="classic11").frame, RfmConfig(scheme="classic11"))
    assert from_json(cuts["frequency"]) == [Fraction(9, 5), Fraction(13, 5), Fraction(17, 5), Fraction(21, 5)]
    assert from_json(cuts["recency_days"]) == [18, 26, 34, 42]
    assert from_json(cuts["monetary_e4"]) == [180_000, 260_000, 340_000, 420_000]


def test_classic11_values_on_a_cut_point_share_the_lower_score():
    # n = 6: h = 5p is whole, so the cut points are the values 20, 30, 40, 50 themselves
    result = score(customers(SIX), scheme="classic11")
    assert from_json(result.cut_points["frequency"]) == [2, 3, 4, 5]
    # F: 1 + cut points strictly below → 1 and 2 tie at score 1
    assert by_key(result, "f_score") == {"a": 1, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}
    assert by_key(result, "m_score") == {"a": 1, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}
    # R: 1 + cut points strictly above the days → 50 and 60 tie at score 1
    assert by_key(result, "r_score") == {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1, "f": 1}


def test_classic11_fm_is_the_rounded_up_mean_and_groups_follow_the_table():
    result = score(
        customers(SIX),
        scheme="classic11",
        cut_points={
            "recency_days": ["15", "25", "35", "45"],
            "frequency": ["1", "2", "3", "4"],
            "monetary_e4": ["100000", "200000", "300000", "400000"],
        },
    )
    # F = 1 + cuts below frequency, M = 1 + cuts below spend: a (1, 10) → F1 M1; f (6, 60) → F5 M5
    assert by_key(result, "fm_score") == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 5}
    assert by_key(result, "rfm_group") == {
        "a": "New Customers",
        "b": "Potential Loyalist",
        "c": "Potential Loyalist",
        "d": "At Risk",
        "e": "Can't Lose Them",
        "f": "Can't Lose Them",
    }


@pytest.mark.parametrize(
    "r, f, m, group",
    [
        (5, 5, 5, "Champions"),
        (5, 4, 3, "Champions"),
        (4, 5, 5, "Champions"),
        (5, 3, 2, "Loyal"),
        (3, 4, 4, "Loyal"),
        (5, 2, 1, "Potential Loyalist"),
        (4, 3, 2, "Potential Loyalist"),
        (5, 1, 1, "New Customers"),
        (4, 1, 1, "Promising"),
        (3, 1, 1, "Promising"),
        (3, 2, 2, "Need Attention"),
        (2, 3, 3, "Need Attention"),
        (2, 1, 1, "About To Sleep"),
        (2, 5, 4, "At Risk"),
        (1, 3, 2, "At Risk"),
        (1, 5, 5, "Can't Lose Them"),
        (1, 4, 3, "Can't Lose Them"),
        (1, 2, 2, "Hibernating"),
        (1, 1, 1, "Lost"),
        (1, 1, 2, "Hibernating"),
    ],
)
def test_classic11_group_of_r_and_fm(r, f, m, group):
    # cut points 1.5, 2.5, 3.5, 4.5 turn a value v in 1..5 into score v (and recency 6 − v into R = v)
    cuts = {
        "recency_days": ["3/2", "5/2", "7/2", "9/2"],
        "frequency": ["3/2", "5/2", "7/2", "9/2"],
        "monetary_e4": ["15000", "25000", "35000", "45000"],
    }
    result = score(customers([("x", 6 - r, f, m)]), scheme="classic11", cut_points=cuts)
    assert by_key(result, "r_score")["x"] == r and by_key(result, "f_score")["x"] == f
    assert by_key(result, "rfm_group")["x"] == group


def test_classic11_equal_values_everywhere_score_alike():
    result = score(customers([(k, 7, 2, 30) for k in "abcd"]), scheme="classic11")
    assert set(by_key(result, "rfm_score").values()) == {"111"}  # no cut point strictly below/above anyone


def test_classic11_empty_window_scores_f_and_m_one_and_is_left_out_of_calibration():
    rows = SIX + [("old", 800, 0, 0)]
    result = score(customers(rows), scheme="classic11")
    assert from_json(result.cut_points["frequency"]) == [2, 3, 4, 5]  # as without "old"
    assert (by_key(result, "f_score")["old"], by_key(result, "m_score")["old"]) == (1, 1)
    assert by_key(result, "r_score")["old"] == 1


def test_classic11_no_customers_gives_empty_cut_points_and_no_rows():
    result = score(customers([]), scheme="classic11")
    assert result.cut_points == {"recency_days": [], "frequency": [], "monetary_e4": []}
    assert len(result.frame) == 0


def test_classic11_macro_groups_as_a_label():
    result = score(customers(SIX), scheme="classic11", macro_groups=True)
    assert result.labels == {"macro_group": "macro_group"}
    groups, macros = by_key(result, "rfm_group"), by_key(result, "macro_group")
    for key, group in groups.items():
        assert group in classic11.MACRO_GROUPS[macros[key]]


# ---------------------------------------------------------------- thresholds
def thresholds_frame(rows):
    """rows: (key, days, orders in 180 d, spend in 90 d); the main window gets the same numbers."""
    return customers(
        [(k, d, f, m) for k, d, f, m in rows],
        frequency_180d=[r[2] for r in rows],
        monetary_e4_180d=[0 for _ in rows],
        frequency_90d=[0 for _ in rows],
        monetary_e4_90d=[int(r[3] * 10_000) for r in rows],
    )


@pytest.mark.parametrize(
    "days, label, r",
    [(0, "short", 3), (30, "short", 3), (31, "medium", 2), (90, "medium", 2), (91, "long", 1), (800, "long", 1)],
)
def test_thresholds_recency_bounds_are_inclusive(days, label, r):
    result = score(thresholds_frame([("x", days, 1, 10)]), scheme="thresholds")
    assert by_key(result, "recency_label")["x"] == label and by_key(result, "r_score")["x"] == r


@pytest.mark.parametrize(
    "orders, label", [(0, "occasional"), (1, "occasional"), (2, "regular"), (3, "regular"), (4, "frequent")]
)
def test_thresholds_frequency_counts_its_own_window(orders, label):
    result = score(thresholds_frame([("x", 5, orders, 10)]), scheme="thresholds")
    assert by_key(result, "frequency_label")["x"] == label


@pytest.mark.parametrize(
    "spend, label", [(0, "saver"), (50, "saver"), (50.0001, "average"), (200, "average"), (200.0001, "premium")]
)
def test_thresholds_monetary_bounds_are_exact_money(spend, label):
    result = score(thresholds_frame([("x", 5, 1, spend)]), scheme="thresholds")
    assert by_key(result, "monetary_label")["x"] == label


def test_thresholds_without_rules_groups_by_the_three_labels_and_asks_for_its_windows():
    result = score(thresholds_frame([("x", 100, 4, 10)]), scheme="thresholds")
    assert by_key(result, "rfm_group")["x"] == "long / frequent / saver"
    assert result.labels == {"recency": "recency_label", "frequency": "frequency_label", "monetary": "monetary_label"}
    assert engine.windows(RfmConfig(scheme="thresholds")) == {"180d": 180, "90d": 90}
    assert result.cut_points == {}


def test_thresholds_first_matching_segment_wins_else_fallback():
    rules = [
        {"name": "Premium slipping", "when": {"monetary": "premium", "recency": "long"}},
        {"name": "Premium", "when": {"monetary": "premium"}},
        {"name": "Regulars", "when": {"frequency": ["regular", "frequent"]}},
    ]
    rows = [("slip", 200, 1, 500), ("prem", 3, 1, 500), ("reg", 3, 3, 10), ("none", 3, 1, 10)]
    result = score(thresholds_frame(rows), scheme="thresholds", segments=rules, fallback_segment="Everyone else")
    assert by_key(result, "rfm_group") == {
        "slip": "Premium slipping",
        "prem": "Premium",
        "reg": "Regulars",
        "none": "Everyone else",
    }
    assert by_key(result, "scheme_group")["none"] == "short / occasional / saver"


def test_thresholds_custom_labels_and_bounds():
    t = {
        "recency": {"labels": ["hot", "cold"], "upto": [7]},
        "frequency": {"labels": ["one", "two", "many"], "upto": [1, 2]},  # main window: no window_days
        "monetary": {"labels": ["low", "high"], "upto": ["99.99"], "window_days": 90},
    }
    result = score(thresholds_frame([("x", 7, 2, 99.99), ("y", 8, 3, 100)]), scheme="thresholds", thresholds=t)
    assert [by_key(result, c)["x"] for c in ("recency_label", "frequency_label", "monetary_label")] == [
        "hot",
        "two",
        "low",
    ]
    assert [by_key(result, c)["y"] for c in ("recency_label", "frequency_label", "monetary_label")] == [
        "cold",
        "many",
        "high",
    ]


# ---------------------------------------------------------------- segment rules over scores
def test_rules_over_scores_rename_and_merge_classic11_groups():
    rules = [{"name": "VIP", "when": {"group": ["Champions", "Loyal"]}}, {"name": "Recent", "when": {"r": [4, 5]}}]
    result = score(customers(SIX), scheme="classic11", segments=rules, fallback_segment="Rest")
    groups, original = by_key(result, "rfm_group"), by_key(result, "scheme_group")
    for key in groups:
        expected = (
            "VIP"
            if original[key] in ("Champions", "Loyal")
            else ("Recent" if by_key(result, "r_score")[key] >= 4 else "Rest")
        )
        assert groups[key] == expected
    assert engine.group_names(RfmConfig(scheme="classic11", segments=rules, fallback_segment="Rest")) == [
        "VIP",
        "Recent",
        "Rest",
    ]


def test_rules_over_klaviyo_scores():
    rules = [{"name": "Big spenders", "when": {"m": 3}}]
    result = score(customers(SIX), scheme="klaviyo", segments=rules)
    assert {k for k, g in by_key(result, "rfm_group").items() if g == "Big spenders"} == {
        k for k, m in by_key(result, "m_score").items() if m == 3
    }


# ---------------------------------------------------------------- eligibility warnings (Klaviyo's gates)
def test_warnings_name_each_of_klaviyos_gates():
    small = score(customers([("a", 40, 1, 10), ("b", 45, 2, 10)]))
    text = " | ".join(small.warnings)
    assert "only 2 customers" in text
    assert "less than 180 days of order history" in text
    assert "no orders in the last 30 days" in text
    assert "no customer has 3 or more orders" in text


def test_no_warnings_for_a_healthy_shop():
    rows = [(f"c{i}", i % 400, 1 + i % 4, 10 + i) for i in range(600)]
    assert score(customers(rows)).warnings == []


def test_history_comes_from_the_first_order_not_the_last():
    frame = customers([(f"c{i}", i % 20, 3, 10) for i in range(600)])
    frame["first_order_at"] = frame["last_order_at"] - pd.Timedelta(days=400)
    assert not any("history" in w for w in score(frame).warnings)
    frame["first_order_at"] = frame["last_order_at"]
    assert any("history" in w for w in score(frame).warnings)


def test_an_order_29_days_ago_counts_as_the_last_30_days():
    rows = [(f"c{i}", 29 + i % 300, 3, 10) for i in range(600)]
    assert not any("30 days" in w for w in score(customers(rows)).warnings)
    rows = [(f"c{i}", 30 + i % 300, 3, 10) for i in range(600)]
    assert any("30 days" in w for w in score(customers(rows)).warnings)
