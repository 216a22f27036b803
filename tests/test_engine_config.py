"""[rfm] validation: thresholds, segment rules (named in every message), and the documented example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rfm_sync.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parent.parent


def problems(rfm: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"rfm": rfm})
    return "\n".join(info.value.problems)


def test_defaults_and_every_scheme_are_valid():
    assert parse_config({}).rfm.recalibrate_days == 30
    for scheme in ("klaviyo", "classic11", "thresholds"):
        assert parse_config({"rfm": {"scheme": scheme}}).rfm.scheme == scheme


def test_unknown_scheme_is_rejected():
    assert "rfm.scheme" in problems({"scheme": "rfm-magic"})


@pytest.mark.parametrize(
    "upto, words",
    [
        ([30, 30], "strictly increasing"),
        ([90, 30], "strictly increasing"),
        ([30], "need 2 bounds"),
        ([-1, 30], "negative"),
    ],
)
def test_overlapping_unsorted_or_missing_thresholds(upto, words):
    text = problems({"scheme": "thresholds", "thresholds": {"recency": {"labels": ["a", "b", "c"], "upto": upto}}})
    assert "rfm.thresholds.recency" in text and words in text


def test_duplicate_labels_and_money_precision_and_recency_window():
    assert "distinct" in problems({"thresholds": {"frequency": {"labels": ["x", "x"], "upto": [1]}}})
    assert "4 decimals" in problems({"thresholds": {"monetary": {"labels": ["a", "b"], "upto": ["0.00001"]}}})
    assert "recency has no window" in problems(
        {"thresholds": {"recency": {"labels": ["a", "b"], "upto": [1], "window_days": 30}}}
    )


def test_unknown_label_in_a_rule_names_the_rule_and_lists_the_labels():
    text = problems(
        {
            "scheme": "thresholds",
            "segments": [
                {"name": "Fine", "when": {"recency": "short"}},
                {"name": "Premium slipping", "when": {"monetary": "premum", "recency": "long"}},
            ],
        }
    )
    assert "segments[2] 'Premium slipping'" in text and "'premum' is not a monetary label" in text
    assert "'premium'" in text


def test_unknown_condition_and_out_of_range_score_and_unknown_group():
    text = problems(
        {
            "scheme": "classic11",
            "segments": [
                {"name": "A", "when": {"monetry": 5}},
                {"name": "B", "when": {"r": 6}},
                {"name": "C", "when": {"group": "Champs"}},
            ],
        }
    )
    assert "segments[1] 'A': unknown condition 'monetry'" in text
    assert "segments[2] 'B': 6 is not a score" in text
    assert "segments[3] 'C': 'Champs' is not a group" in text


def test_labels_only_exist_for_the_thresholds_scheme():
    assert "unknown condition 'monetary'" in problems(
        {"scheme": "klaviyo", "segments": [{"name": "A", "when": {"monetary": "premium"}}]}
    )


def test_rule_whose_conditions_exclude_each_other_can_never_match():
    text = problems(
        {"scheme": "classic11", "segments": [{"name": "Recent but lost", "when": {"r": 5, "group": "Lost"}}]}
    )
    assert "segments[1] 'Recent but lost': can never match: its conditions exclude each other" in text


def test_rule_shadowed_by_earlier_rules_can_never_match_and_names_them():
    text = problems(
        {
            "scheme": "thresholds",
            "segments": [
                {"name": "Long", "when": {"recency": "long"}},
                {"name": "Not long", "when": {"recency": ["short", "medium"]}},
                {"name": "Premium slipping", "when": {"monetary": "premium", "recency": "long"}},
            ],
        }
    )
    assert "segments[3] 'Premium slipping': can never match" in text
    assert "1 'Long'" in text and "2 'Not long'" not in text


def test_empty_value_list_can_never_match():
    assert "lists no values" in problems({"scheme": "klaviyo", "segments": [{"name": "A", "when": {"r": []}}]})


def test_macro_groups_need_classic11_and_hysteresis_range():
    assert "macro_groups needs scheme" in problems({"macro_groups": True})
    assert "rfm.hysteresis" in problems({"hysteresis": 1})
    assert "quintiles" in problems({"quintiles": [0.2, 0.4, 0.4, 0.8]})


def test_valid_rules_over_labels_and_scores_pass():
    parse_config(
        {
            "rfm": {
                "scheme": "thresholds",
                "fallback_segment": "Others",
                "segments": [
                    {"name": "Premium slipping", "when": {"monetary": "premium", "recency": "long"}},
                    {"name": "Premium", "when": {"monetary": "premium"}},
                    {"name": "Fans", "when": {"f": [2, 3]}},
                ],
            }
        }
    )
    parse_config(
        {
            "rfm": {
                "scheme": "classic11",
                "segments": [
                    {"name": "VIP", "when": {"group": ["Champions", "Loyal"]}},
                    {"name": "Top FM", "when": {"fm": "5"}},
                ],
            }
        }
    )


@pytest.mark.slow
def test_config_example_passes_check_config():
    done = subprocess.run(
        [sys.executable, "-m", "rfm_sync.cli", "check-config", str(REPO / "config.example.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    text = (REPO / "config.example.toml").read_text()
    for key in (
        "recalibrate_days",
        "hysteresis",
        "quintiles",
        "macro_groups",
        "fallback_segment",
        "[rfm.thresholds.recency]",
        "[rfm.label_properties]",
        "[[rfm.segments]]",
    ):
        assert key in text
