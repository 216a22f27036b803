"""`rfm-sync report`, `customers` and `explain` over the fixture shop of tests/test_pipeline.py: 30
customers, one of whom loses every qualifying order and is cleared."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.file.destination import read_state
from rfm_sync import insight, lookup, masking
from rfm_sync.cli import main
from rfm_sync.config import load_config
from rfm_sync.pipeline import Pipeline
from rfm_sync.store import Store
from rfm_sync.store.schema import orders
from tests.test_pipeline import AS_OF, base_rows, config_text, day, write_orders

pytestmark = pytest.mark.slow  # every test here runs whole cycles and CLI commands over one shop

# 30 customers are few: let their cut points be frozen, so runs after the first use the same ones
EXTRA = "[rfm]\nmin_calibration_customers = 10\n"


class Shop:
    def __init__(self, folder, rows, extra=EXTRA):
        self.folder, self.rows = folder, rows
        write_orders(folder / "orders.csv", rows)
        (folder / "config.toml").write_text(extra + config_text(metrics="false", url="sqlite:///state.sqlite"))
        self.config_path = folder / "config.toml"
        self.config = load_config(self.config_path)
        self.store = Store.open(self.config.store.url, self.config.base_dir)

    def run(self, as_of=AS_OF):
        write_orders(self.folder / "orders.csv", self.rows)
        return Pipeline(self.config, self.store).run_cycle(as_of)

    def sink(self):
        return read_state(self.folder / "profiles.jsonl")

    def cli(self, *args):
        return CliRunner().invoke(main, [args[0], "-c", str(self.config_path), *args[1:]])


@pytest.fixture
def shop(tmp_path):
    """Run 1 scores everyone; then c00's orders are cancelled and run 2 clears c00."""
    s = Shop(tmp_path, base_rows())
    s.first = s.run()
    s.group_before = {k: v["Current RFM group"] for k, v in s.sink().items()}
    for row in s.rows:
        if row[1] == "c00":
            row[5] = "cancelled"
    s.second = s.run()
    return s


def test_runs_record_new_and_cleared_customers_as_transitions(shop):
    # new customers were filed under "" (not None) by the diff under pandas 3, so tables lost the "(new)" row
    assert set(shop.first.transitions) == {(None, g) for g in shop.first.group_counts}
    assert sum(shop.first.transitions.values()) == 30
    assert shop.second.transitions == {(shop.group_before["c00"], None): 1}
    first, second = insight.read_runs(shop.store)
    assert first.transitions == shop.first.transitions and second.transitions == shop.second.transitions


def test_a_full_run_records_its_insight(shop):
    record = insight.read_runs(shop.store)[-1]
    groups = record.insight["groups"]
    assert {g: v["customers"] for g, v in groups.items()} == shop.second.group_counts
    with shop.store.engine.connect() as conn:  # spend in the window of every qualifying order (all are inside)
        spend = conn.execute(sa.select(sa.func.sum(orders.c.amount_e4)).where(orders.c.qualifies)).scalar()
    assert sum(v["monetary_e4"] for v in groups.values()) == spend
    for dim in insight.DIMENSIONS:
        hist = record.insight["distributions"][dim]
        assert sum(hist["counts"]) + hist["over"] + hist["below"] == 29
        assert sum(record.insight["scores"][dim[0]].values()) == 29


def test_customers_lists_who_is_where_with_their_values_and_the_cleared_one(shop):
    result = shop.cli("customers", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["customer_key"]: r for r in map(json.loads, result.output.splitlines())}
    assert len(rows) == 30
    sink = shop.sink()
    for key, row in rows.items():
        if key == "c00":
            continue
        props = sink[key]
        assert (row["group"], row["rfm_score"], row["status"]) == (
            props["Current RFM group"],
            props["RFM score"],
            "scored",
        )
        assert (row["r_score"], row["f_score"], row["m_score"]) == (
            props["RFM recency score"],
            props["RFM frequency score"],
            props["RFM monetary score"],
        )
    # c01 ordered 45 and 46 days before AS_OF, 17.50 each (tests/test_pipeline.base_rows)
    assert (rows["c01"]["recency_days"], rows["c01"]["frequency"], rows["c01"]["monetary"]) == (45, 2, "35.00")
    cleared = rows["c00"]
    assert cleared["status"] == "cleared" and cleared["group"] is None
    assert cleared["previous_group"] == shop.group_before["c00"] and cleared["group_changed_at"]


def test_customers_filters(shop):
    sink = shop.sink()
    group = shop.group_before["c05"]
    out = shop.cli("customers", "--group", group, "--format", "csv")
    assert out.exit_code == 0, out.output
    listed = {r["customer_key"] for r in csv.DictReader(io.StringIO(out.output))}
    assert listed == {k for k, v in sink.items() if v["Current RFM group"] == group}
    moved = shop.cli("customers", "--moved-from", shop.group_before["c00"], "--format", "json")
    assert [json.loads(line)["customer_key"] for line in moved.output.splitlines()] == ["c00"]
    only = shop.cli("customers", "--cleared", "--format", "json")
    assert [json.loads(line)["customer_key"] for line in only.output.splitlines()] == ["c00"]
    later = shop.cli("customers", "--since", (AS_OF + timedelta(days=3650)).isoformat(), "--format", "json")
    assert later.exit_code == 0 and later.output == ""
    table = shop.cli("customers", "--limit", "5")
    assert table.exit_code == 0 and "30 customers" in table.output and "25 more" in table.output
    bad = shop.cli("customers", "--group", "Platinum")
    assert bad.exit_code == 2 and "no group 'Platinum'" in bad.output and "Champions" in bad.output


def test_explain_gives_values_cut_points_and_the_rule(shop):
    result = shop.cli("explain", "c01")
    assert result.exit_code == 0, result.output
    group = shop.sink()["c01"]["Current RFM group"]
    score = shop.sink()["c01"]["RFM score"]
    assert f"group: {group}" in result.output and f"score {score}:" in result.output
    assert "45 days since the last order" in result.output and "2 qualifying orders" in result.output
    assert "35.00 spent" in result.output and "scores 3 at ≤ 180 days, 2 at ≤ 365 days, else 1" in result.output
    assert f"score {score} is one of {group}'s scores" in result.output
    by_email = shop.cli("explain", "c1@example.com")
    assert by_email.output == result.output
    missing = shop.cli("explain", "nobody")
    assert missing.exit_code == 1 and "no customer 'nobody'" in missing.output


def test_explain_says_what_would_move_them_and_it_does(shop):
    """The orders `explain` says would raise F do raise it in a real run (with the same frozen cut points),
    and one order fewer does not."""
    e = lookup.explain(shop.config, shop.store, "c01")
    move = next(m for m in e.moves if m.dimension == "frequency")
    n = int(re.match(r"(\d+) more", move.needs).group(1))

    def f_after(extra: int) -> int:
        rows = [r for r in shop.rows if not r[0].startswith("extra")]
        rows += [[f"extra{k}", "c01", "c1@example.com", day(45), "0.01", "paid"] for k in range(extra)]
        shop.rows[:] = rows
        shop.run()
        return shop.sink()["c01"]["RFM frequency score"]

    assert f_after(n - 1) == move.score_from
    assert f_after(n) == move.score_to == move.score_from + 1


def test_explain_a_cleared_customer(shop):
    result = shop.cli("explain", "c00")
    assert result.exit_code == 0, result.output
    assert f"no group (cleared, cleared from {shop.group_before['c00']}" in result.output
    assert "cancelled" in result.output and "every RFM property was cleared" in result.output
    assert "one qualifying order" in result.output


def test_report_in_the_terminal(shop):
    result = shop.cli("report")
    assert result.exit_code == 0, result.output
    for title in (
        "groups as of",
        "customers per group per week",
        "moves, last 30 days",
        "cut points in force",
        "last runs",
        "outbox per destination",
    ):
        assert title in result.output


def test_report_html_has_no_email_address(shop, tmp_path):
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    result = shop.cli("report", "--html", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "c1@example.com" in (shop.folder / "profiles.jsonl").read_text()  # the store has addresses ...
    assert masking.EMAIL.findall(text) == []  # ... the page none (the one address pattern, rfm_sync/masking.py)
    assert "c***@example.com" in text  # masked samples
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_report_html_says_when_no_move_has_been_followed_yet(shop, tmp_path):
    out = tmp_path / "report.html"
    assert shop.cli("report", "--html", str(out)).exit_code == 0
    text = out.read_text(encoding="utf-8")
    assert "What followed each move" in text and 'id="chart-outcomes"' not in text
    assert f"no move has been followed for 30 days yet (groups known up to {AS_OF})" in text


def test_report_html_output_problems(shop, tmp_path):
    folder = shop.cli("report", "--html", str(tmp_path))
    assert folder.exit_code == 2 and "is a directory" in folder.output  # refused before anything is read
    missing = shop.cli("report", "--html", str(tmp_path / "nowhere" / "r.html"))
    assert missing.exit_code == 6 and "folder does not exist" in missing.output and "Traceback" not in missing.output


def test_run_ends_with_its_transition_table(shop):
    for row in shop.rows:
        if row[1] == "c00":
            row[5] = "paid"
    write_orders(shop.folder / "orders.csv", shop.rows)
    result = shop.cli("run", "--once", "--as-of", AS_OF.isoformat())
    assert result.exit_code == 0, result.output
    assert "previous → current group in run 3" in result.output and "(new)" in result.output
    again = shop.cli("run", "--once", "--as-of", AS_OF.isoformat())
    assert "run 4: no customer changed group" in again.output


def test_demo_writes_the_report(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo"), "--customers", "300"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    page = tmp_path / "demo" / "report.html"
    assert page.is_file() and 'id="chart-sankey"' in page.read_text(encoding="utf-8")
    assert 'id="chart-outcomes"' in page.read_text(encoding="utf-8")  # the demo back-tests its history
    assert "report.html" in json.loads((tmp_path / "demo" / ".rfm-sync-demo").read_text())["files"]


def test_explain_names_the_segment_rule_that_matched(tmp_path):
    extra = (
        '[rfm]\nscheme = "thresholds"\n[[rfm.segments]]\nname = "Recent buyers"\nwhen = { recency = "short" }\n'
        '[[rfm.segments]]\nname = "Everyone else"\nwhen = {}\n'
    )
    shop = Shop(tmp_path, base_rows(), extra)
    shop.run()
    # c00 last ordered 5 days before AS_OF (short), c03 125 days (long): tests/test_pipeline.base_rows
    recent, rest = shop.cli("explain", "c00").output, shop.cli("explain", "c03").output
    assert "group: Recent buyers" in recent and "segment rule 1 'Recent buyers' matched" in recent
    assert "group: Everyone else" in rest and "segment rule 2 'Everyone else' matched (when no conditions)" in rest
    assert "1 qualifying order in the last 180 days" in rest  # the scheme's own frequency window
    assert "R 1 → 2: a last order at most 90 days before" in rest


def test_customers_masks_emails_unless_asked(shop):
    masked = [json.loads(line) for line in shop.cli("customers", "--format", "json").output.splitlines()]
    shown = [
        json.loads(line) for line in shop.cli("customers", "--format", "json", "--show-emails").output.splitlines()
    ]
    assert any(r["email"] for r in shown), "the fixture shop has emails"
    for hidden, full in zip(masked, shown):
        assert hidden["customer_key"] == full["customer_key"] or "***@" in hidden["customer_key"]
        if full["email"]:
            local, domain = full["email"].split("@")
            assert hidden["email"] == f"{local[0]}***@{domain}" != full["email"]
    table = shop.cli("customers").output
    assert "@" not in table.replace("***@", "")
