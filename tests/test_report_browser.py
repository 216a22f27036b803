"""The demo's HTML report in a real browser (headless Chromium): every chart drawn, no errors, nothing
fetched, and a screenshot that is not blank. Skips, saying why, where Chromium is not installed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rfm_sync.demo import run_demo
from tests.browser import dump_dom, find_chromium, not_blank, png_pixels, screenshot, tags

pytestmark = pytest.mark.slow  # headless Chromium

CHARTS = {
    "chart-groups",
    "chart-revenue-share",
    "chart-aov",
    "chart-growth-customers",
    "chart-growth-revenue",
    "chart-growth-flow",
    "chart-sankey",
    "chart-matrix",
    "chart-outcomes",
    "chart-recency",
    "chart-frequency",
    "chart-monetary",
}
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it "
            "where apt-get and root are available): the report's browser test cannot run here"
        )
    return binary


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    return run_demo(folder / "demo", customers=600).report_path


def _remote_links(html_text: str) -> list[str]:
    return [
        f"<{tag} {name}={value}>"
        for tag, attrs in tags(html_text)
        for name, value in attrs.items()
        if name in ("src", "href", "xlink:href", "action", "poster", "data") and value and REMOTE.match(value)
    ]


def test_every_chart_renders_without_errors_and_nothing_is_fetched(chromium, demo_report, tmp_path):
    static = demo_report.read_text(encoding="utf-8")
    assert {a["id"] for _, a in tags(static) if a.get("data-chart")} == CHARTS
    assert _remote_links(static) == []
    dom, console = dump_dom(chromium, demo_report, tmp_path / "profile")
    found = tags(dom)
    root = next(attrs for tag, attrs in found if tag == "html")
    box = next(attrs for tag, attrs in found if attrs.get("id") == "report-errors")
    assert root.get("data-errors") == "0" and "hidden" in box, (root, console)
    body = next(attrs for tag, attrs in found if tag == "body")
    assert body.get("data-charts") == str(len(CHARTS))  # set once every chart's Plotly.newPlot resolved
    rendered = {a["id"] for _, a in found if a.get("data-chart") and a.get("data-rendered") == "1"}
    assert rendered == CHARTS
    for chart in CHARTS:  # each chart's own part of the DOM holds plotly's drawing
        start = dom.index(f'id="{chart}"')
        following = [dom.index(f'id="{c}"') for c in CHARTS if dom.index(f'id="{c}"') > start]
        part = dom[start : min(following, default=len(dom))]
        assert 'class="main-svg"' in part, f"{chart}: nothing drawn"
    assert 'class="sankey"' in dom and "heatmaplayer" in dom
    assert [line for line in console if re.search(r"Uncaught|Error", line)] == []
    assert _remote_links(dom) == []


def test_a_script_error_in_the_page_is_caught(chromium, demo_report, tmp_path):
    """The capture the test above relies on sees a broken page (so data-errors=0 means something)."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        demo_report.read_text(encoding="utf-8").replace(
            "</body>", "<script>console.error('chart data missing'); noSuchFunction();</script></body>"
        ),
        encoding="utf-8",
    )
    dom, _ = dump_dom(chromium, broken, tmp_path / "profile")
    root = next(attrs for tag, attrs in tags(dom) if tag == "html")
    assert int(root["data-errors"]) >= 2
    assert "chart data missing" in dom and "noSuchFunction" in dom  # shown in the page's error box


def test_screenshot_is_not_blank(chromium, demo_report, tmp_path):
    shot = screenshot(chromium, demo_report, tmp_path / "report.png", tmp_path / "profile")
    pixels = png_pixels(shot)
    assert pixels.shape[:2] == (1600, 1280)
    colours, drawn = not_blank(pixels)
    assert colours > 50 and drawn > 0.05, (colours, drawn)


def test_blank_page_screenshot_is_seen_as_blank(chromium, tmp_path):
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>", encoding="utf-8")
    colours, drawn = not_blank(
        png_pixels(screenshot(chromium, page, tmp_path / "blank.png", tmp_path / "profile", size=(400, 300)))
    )
    assert colours == 1 and drawn == 0
