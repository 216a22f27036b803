"""The group history (recorded by the diff, back-filled by migration 0007, reconstructed by the back-test)
and the outcomes computed from it."""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rfm_sync import backtest, outcomes
from rfm_sync.cli import main
from rfm_sync.config import load_config
from rfm_sync.pipeline import CycleReport, Pipeline
from rfm_sync.store import Store, history, runs
from rfm_sync.store.schema import customer_state, group_history, orders, outbox
from tests.configs import config_toml, table
from tests.test_pipeline import AS_OF, base_rows, write_orders

D0 = date(2026, 1, 1)
ORDER_IDS = itertools.count(1)
ZONE = "America/New_York"


def open_config(tmp_path, url, *sections):
    (tmp_path / "config.toml").write_text(config_toml(url, *sections))
    config = load_config(tmp_path / "config.toml")
    return config, Store.open(config.store.url, config.base_dir)


def add_moves(store, day, moves, run_id=1):
    """Record ``moves`` ([(customer, before, after)]) as of ``D0 + day``."""
    frame = pd.DataFrame(moves, columns=["customer_key", "before", "after"], dtype=object)
    with store.begin() as conn:
        history.record(
            conn,
            frame,
            scheme="klaviyo",
            as_of=D0 + timedelta(days=day),
            changed_at=datetime.now(ZoneInfo("UTC")),
            run_id=run_id,
        )


def add_order(store, key, day, local_time, amount_e4, qualifies=True):
    placed = datetime.combine(D0 + timedelta(days=day), local_time, ZoneInfo(ZONE))
    with store.begin() as conn:
        conn.execute(
            orders.insert().values(
                source="shop",
                order_id=f"o{next(ORDER_IDS)}",
                customer_key=key,
                placed_at=placed,
                amount_e4=amount_e4,
                currency="USD",
                is_test=False,
                is_cancelled=False,
                is_deleted=False,
                qualifies=qualifies,
                ingested_at=placed,
            )
        )


def hand_built(store):
    """Five customers' histories (see the test for what each one exercises); groups known up to D0 + 120."""
    add_moves(
        store,
        0,
        [
            ("a", None, "Champions"),
            ("b", None, "Loyal"),
            ("c", None, "Champions"),
            ("d", None, "Champions"),
            ("e", None, "Champions"),
        ],
    )
    add_moves(store, 5, [("e", "Champions", "Gold")])  # a group the settings do not have
    add_moves(store, 10, [("a", "Champions", "At Risk"), ("b", "Loyal", "At Risk"), ("c", "Champions", "At Risk")])
    add_moves(store, 20, [("e", "Gold", "Champions")])
    add_moves(store, 25, [("a", "At Risk", "Loyal")])
    add_moves(store, 40, [("c", "At Risk", "Recent")])
    add_moves(store, 40, [("c", "Recent", "Needs Attention")], run_id=2)  # a second run that day: the last wins
    add_moves(store, 50, [("b", "At Risk", "Inactive")])
    add_moves(store, 70, [("b", "Inactive", None)])  # cleared: no qualifying order any more
    add_moves(store, 100, [("d", "Champions", "At Risk")])
    run_id = runs.start_run(store, D0 + timedelta(days=120), "klaviyo")
    with store.begin() as conn:
        runs.finish_run(conn, run_id, status="ok", cut_points={})
    # a: an order late on the move's day (the next day in UTC) is not after the move; one just after
    # midnight is; the 40th day is inside 30 days, the 41st is not
    add_order(store, "a", 10, time(23, 30), 990_000)
    add_order(store, "a", 11, time(0, 30), 123_456)
    add_order(store, "a", 40, time(12), 1_000_000)
    add_order(store, "a", 41, time(12), 500_000)
    add_order(store, "b", 20, time(12), 9_990_000, qualifies=False)  # not qualifying: never counted
    add_order(store, "c", 12, time(12), 0)  # a zero-amount order: bought, no revenue
    add_order(store, "d", 101, time(12), 770_000)  # d's horizons have not passed


def test_outcomes_of_a_hand_built_history_are_exact(tmp_path):
    config, store = open_config(tmp_path, "sqlite:///s.sqlite", table("[shop]", timezone=ZONE))
    hand_built(store)
    result = outcomes.compute(config, store)
    assert result.known_until == D0 + timedelta(days=120)
    assert result.left_out == 2  # Champions → Gold and Gold → Champions
    got = {
        (r["from_group"], r["to_group"], r["horizon_days"]): (
            r["moved"],
            r["observed"],
            r["up"],
            r["stayed"],
            r["down"],
            r["buyers"],
            r["revenue_e4"],
        )
        for r in result.table.to_dict("records")
    }
    assert got == {
        # a (Loyal later) and c (Needs Attention from day 40) moved up; d's horizons end after day 120
        ("Champions", "At Risk", 30): (3, 2, 2, 0, 0, 2, 1_123_456),
        ("Champions", "At Risk", 60): (3, 2, 2, 0, 0, 2, 1_623_456),
        ("Champions", "At Risk", 90): (3, 2, 2, 0, 0, 2, 1_623_456),
        # b: At Risk on day 40, Inactive then cleared by day 70 and 100: down
        ("Loyal", "At Risk", 30): (1, 1, 0, 1, 0, 0, 0),
        ("Loyal", "At Risk", 60): (1, 1, 0, 0, 1, 0, 0),
        ("Loyal", "At Risk", 90): (1, 1, 0, 0, 1, 0, 0),
        ("At Risk", "Loyal", 30): (1, 1, 0, 1, 0, 1, 1_500_000),
        ("At Risk", "Loyal", 60): (1, 1, 0, 1, 0, 1, 1_500_000),
        ("At Risk", "Loyal", 90): (1, 1, 0, 1, 0, 1, 1_500_000),
        # c went At Risk → Needs Attention on day 40 (the Recent of that morning's run is not a day's group)
        ("At Risk", "Needs Attention", 30): (1, 1, 0, 1, 0, 0, 0),
        ("At Risk", "Needs Attention", 60): (1, 1, 0, 1, 0, 0, 0),
        ("At Risk", "Needs Attention", 90): (1, 0, 0, 0, 0, 0, 0),
        ("At Risk", "Inactive", 30): (1, 1, 0, 0, 1, 0, 0),
        ("At Risk", "Inactive", 60): (1, 1, 0, 0, 1, 0, 0),
        ("At Risk", "Inactive", 90): (1, 0, 0, 0, 0, 0, 0),
    }
    # best group first, as the scheme lists them
    cohorts = list(dict.fromkeys(zip(result.table["from_group"], result.table["to_group"])))
    assert cohorts == [
        ("Champions", "At Risk"),
        ("Loyal", "At Risk"),
        ("At Risk", "Loyal"),
        ("At Risk", "Needs Attention"),
        ("At Risk", "Inactive"),
    ]
    only = outcomes.compute(config, store, outcomes.Moves(from_group="Champions", since=D0 + timedelta(days=50)))
    assert only.table["moved"].unique().tolist() == [1]  # d alone moved from Champions after day 50
    assert only.table["observed"].sum() == 0
    money = {(r["from_group"], r["horizon_days"]): r["revenue"] for r in outcomes.records(result)}
    assert money[("Champions", 60)] == "162.3456"


def test_groups_on_a_day_is_the_newest_row_up_to_it(tmp_path):
    config, store = open_config(tmp_path, "sqlite:///s.sqlite")
    hand_built(store)
    on = lambda day: history.groups_on(store, "klaviyo", D0 + timedelta(days=day))  # noqa: E731
    assert on(-1) == {}
    assert on(10) == {"a": "At Risk", "b": "At Risk", "c": "At Risk", "d": "Champions", "e": "Gold"}
    assert on(40)["c"] == "Needs Attention"
    assert on(69)["b"] == "Inactive" and on(70)["b"] is None
    assert history.groups_on(store, "klaviyo", D0 + timedelta(days=70), keys=["b"]) == {"b": None}
    assert history.groups_on(store, "classic11", D0 + timedelta(days=70)) == {}


def make_pipeline(tmp_path, url, *sections):
    write_orders(tmp_path / "orders.csv", base_rows())
    config, store = open_config(tmp_path, url, *sections)
    return config, store, Pipeline(config, store)


def history_rows(store, real_runs_only=False):
    c = group_history.c
    query = sa.select(c.customer_key, c.as_of, c.from_group, c.to_group)
    if real_runs_only:
        query = query.where(c.run_id.is_not(None))
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(query))


def current_groups(store):
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(customer_state.c.customer_key, customer_state.c.current_group)).all())


def test_every_cycle_records_its_group_changes(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, store_url)
    first = pipeline.run_cycle(AS_OF)
    after_first = current_groups(store)
    rows = history_rows(store)
    assert len(rows) == first.scored == 30
    assert all(r[1] == AS_OF and r[2] is None for r in rows)  # first assignments, as of the run's day
    later = AS_OF + timedelta(days=60)
    second = Pipeline(config, store).run_cycle(later)
    moved = [r for r in history_rows(store) if r[1] == later]
    assert moved, "60 days on, some customers change group"
    assert len(moved) == sum(n for (b, a), n in second.transitions.items() if b != a)
    assert all(after_first[key] == before for key, _, before, _ in moved)
    assert history.groups_on(store, "klaviyo", later) == current_groups(store)
    assert history.groups_on(store, "klaviyo", later - timedelta(days=1)) == after_first
    count = len(history_rows(store))
    Pipeline(config, store).run_cycle(later)  # nothing changed: nothing recorded
    assert len(history_rows(store)) == count


def test_history_is_written_in_the_diffs_transaction(tmp_path, monkeypatch):
    config, store, pipeline = make_pipeline(tmp_path, "sqlite:///s.sqlite")

    def broken(conn, rows):
        raise RuntimeError("disk full while writing the outbox")

    monkeypatch.setattr("rfm_sync.pipeline.outbox.enqueue", broken)
    with pytest.raises(RuntimeError):
        pipeline.run_cycle(AS_OF)
    assert history_rows(store) == [] and current_groups(store) == {}


def test_migration_back_fills_the_history_a_store_already_holds(tmp_path, store_url):
    config, store, pipeline = make_pipeline(tmp_path, store_url)
    for days in (0, 40, 80, 160):
        Pipeline(config, store).run_cycle(AS_OF + timedelta(days=days))
    recorded = history_rows(store)
    assert len({r[1] for r in recorded}) >= 3  # moves on several days, first assignments, clearings
    with store.begin() as conn:  # the store as revision 0006 left it
        conn.execute(sa.text("DROP TABLE group_history"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    store.close()
    reopened = Store.open(config.store.url, config.base_dir)
    assert history_rows(reopened) == recorded


def test_migration_back_fills_from_state_without_destinations(tmp_path):
    write_orders(tmp_path / "orders.csv", base_rows())
    config, store = open_config(tmp_path, "sqlite:///s.sqlite")
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///s.sqlite", destinations=()))
    config = load_config(tmp_path / "config.toml")
    Pipeline(config, store).run_cycle(AS_OF)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0
    with store.begin() as conn:
        conn.execute(sa.text("DROP TABLE group_history"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    store.close()
    reopened = Store.open(config.store.url, config.base_dir)
    assert history.groups_on(reopened, "klaviyo", AS_OF) == current_groups(reopened)


THRESHOLDS = """[rfm]
scheme = "thresholds"
[rfm.thresholds.recency]
labels = ["short", "medium", "long"]
upto = [30, 90]
[rfm.thresholds.frequency]
labels = ["occasional", "regular", "frequent"]
upto = [1, 2]
window_days = 180
[rfm.thresholds.monetary]
labels = ["saver", "average", "premium"]
upto = [50, 150]
window_days = 90
"""


def test_a_backtest_records_what_runs_on_those_days_would_have(tmp_path):
    """With fixed thresholds (no cut points computed per run) a back-test's history equals the history
    of real cycles run on the same days."""
    days = [AS_OF - timedelta(days=n) for n in (56, 42, 28, 14, 0)]
    real = tmp_path / "real"
    real.mkdir()
    config, store, _ = make_pipeline(real, "sqlite:///s.sqlite", THRESHOLDS)
    for d in days:
        Pipeline(config, store).run_cycle(d)
    expected = history_rows(store)

    test = tmp_path / "test"
    test.mkdir()
    config, store, pipeline = make_pipeline(test, "sqlite:///s.sqlite", THRESHOLDS)
    pipeline.pull(None, CycleReport(run_id=0, as_of=AS_OF))
    result = backtest.run_backtest(config, store, since=days[0], every=14, before=AS_OF + timedelta(days=1))
    assert result.days == 5 and result.until == AS_OF
    assert history_rows(store) == expected
    assert current_groups(store) == {}  # no state, no outbox, no run: only history
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0
    again = backtest.run_backtest(config, store, since=days[0], every=14, before=AS_OF + timedelta(days=1))
    assert again.changes == result.changes and history_rows(store) == expected  # replaced, not added


def test_a_backtest_stops_before_the_first_run_and_keeps_its_rows(tmp_path):
    config, store, pipeline = make_pipeline(tmp_path, "sqlite:///s.sqlite", THRESHOLDS)
    pipeline.run_cycle(AS_OF)
    from_runs = history_rows(store, real_runs_only=True)
    result = backtest.run_backtest(config, store, since=AS_OF - timedelta(days=60), every=30)
    assert result.until == AS_OF - timedelta(days=1)
    assert history_rows(store, real_runs_only=True) == from_runs
    assert max(r[1] for r in history_rows(store) if r not in from_runs) < AS_OF


def test_backtest_days_reach_the_day_before_the_first_run():
    assert backtest.days_to_score(date(2026, 1, 1), date(2026, 1, 20), 7) == [
        date(2026, 1, 1),
        date(2026, 1, 8),
        date(2026, 1, 15),
        date(2026, 1, 19),
    ]
    assert backtest.days_to_score(date(2026, 1, 1), date(2026, 1, 1), 7) == []


@pytest.mark.slow  # runs the demo
def test_outcomes_and_backtest_commands(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "demo"
    assert runner.invoke(main, ["demo", "--dir", str(folder)]).exit_code == 0
    cfg = str(folder / "config.toml")
    shown = runner.invoke(main, ["outcomes", "-c", cfg], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "what followed each move" in shown.output and "At Risk" in shown.output
    data = json.loads(runner.invoke(main, ["outcomes", "-c", cfg, "--json"]).output)
    cohorts = data["cohorts"]
    assert data["currency"] == "USD" and any(c["observed"] for c in cohorts)
    assert all(c["up"] + c["stayed"] + c["down"] == c["observed"] <= c["moved"] for c in cohorts)
    narrowed = json.loads(runner.invoke(main, ["outcomes", "-c", cfg, "--json", "--to", "At Risk"]).output)
    assert narrowed["cohorts"] and {c["to_group"] for c in narrowed["cohorts"]} == {"At Risk"}

    bad = runner.invoke(main, ["outcomes", "-c", cfg, "--from", "Gold"])
    assert bad.exit_code == 2 and "--from: no group 'Gold' in scheme klaviyo" in bad.output
    late = runner.invoke(main, ["backtest", "-c", cfg, "--since", date.today().isoformat()])
    assert late.exit_code == 2 and "nothing to reconstruct" in late.output
    again = runner.invoke(main, ["backtest", "-c", cfg, "--since", (date.today() - timedelta(days=400)).isoformat()])
    assert again.exit_code == 0 and "group changes recorded" in again.output


def test_outcomes_without_history_says_what_to_do(tmp_path):
    open_config(tmp_path, "sqlite:///s.sqlite")
    out = CliRunner().invoke(main, ["outcomes", "-c", str(tmp_path / "config.toml")])
    assert out.exit_code == 0 and "no group history yet" in out.output and "rfm-sync backtest" in out.output


def test_the_hold_out_is_a_stable_share_of_every_move():
    from rfm_sync.properties import held_out

    keys = [f"customer{i}" for i in range(20_000)]
    chosen = [held_out(k, "Champions", "At Risk", 10) for k in keys]
    assert 0.09 < sum(chosen) / len(keys) < 0.11
    assert chosen == [held_out(k, "Champions", "At Risk", 10) for k in keys]  # the same every time
    other = [held_out(k, "Loyal", "At Risk", 10) for k in keys]
    assert 0.005 < sum(a and b for a, b in zip(chosen, other)) / len(keys) < 0.015  # independent per move
    assert not any(held_out(k, "Champions", "At Risk", 0) for k in keys)
    assert all(held_out(k, None, "Champions", 10) == held_out(k, None, "Champions", 10.0) for k in keys[:100])


def test_a_hold_out_is_written_as_a_property_and_recorded_with_each_move(tmp_path):
    from rfm_sync.properties import held_out

    config, store, pipeline = make_pipeline(tmp_path, "sqlite:///s.sqlite", table("[properties]", holdout_percent=40))
    pipeline.run_cycle(AS_OF)
    later = AS_OF + timedelta(days=60)
    Pipeline(config, store).run_cycle(later)
    with store.engine.connect() as conn:
        states = conn.execute(
            sa.select(
                customer_state.c.customer_key,
                customer_state.c.previous_group,
                customer_state.c.current_group,
                customer_state.c.properties,
            )
        ).all()
        rows = conn.execute(
            sa.select(
                group_history.c.customer_key,
                group_history.c.from_group,
                group_history.c.to_group,
                group_history.c.held_out,
            ).order_by(group_history.c.id)
        ).all()
    flags = {key: json.loads(props)["RFM holdout"] for key, _, _, props in states}
    assert flags == {key: held_out(key, prev, cur, 40) for key, prev, cur, _ in states}
    assert 0 < sum(flags.values()) < len(flags)  # some held out, some reached
    latest = {key: (src, dst, bool(h)) for key, src, dst, h in rows}  # rows come in id order: the newest last
    for key, _previous, current, _ in states:
        assert latest[key][1] == current  # the newest row is the move to the current group ...
        assert latest[key][2] == flags[key] == held_out(key, latest[key][0], current, 40)  # ... flagged as written
    lines = len((tmp_path / "profiles.jsonl").read_text().splitlines())
    Pipeline(config, store).run_cycle(later)  # nothing changed: the flags are stable, nothing is re-sent
    assert len((tmp_path / "profiles.jsonl").read_text().splitlines()) == lines


def test_outcomes_compare_the_reached_with_the_held_out(tmp_path):
    config, store = open_config(tmp_path, "sqlite:///s.sqlite")
    now = datetime.now(ZoneInfo("UTC"))

    def row(key, day, src, dst, flag):
        return {
            "scheme": "klaviyo",
            "customer_key": key,
            "as_of": D0 + timedelta(days=day),
            "from_group": src,
            "to_group": dst,
            "changed_at": now,
            "run_id": 1,
            "held_out": flag,
        }

    rows = [row(k, 0, None, "Loyal", None) for k in ("h1", "h2", "r1", "r2", "r3")]
    rows += [row(k, 10, "Loyal", "At Risk", k.startswith("h")) for k in ("h1", "h2", "r1", "r2", "r3")]
    rows += [
        row("h1", 30, "At Risk", "Recent", False),
        row("r1", 30, "At Risk", "Loyal", False),
        row("r2", 35, "At Risk", "Recent", False),
    ]
    with store.begin() as conn:
        conn.execute(group_history.insert(), rows)
    run_id = runs.start_run(store, D0 + timedelta(days=50), "klaviyo")
    with store.begin() as conn:
        runs.finish_run(conn, run_id, status="ok", cut_points={})
    result = outcomes.compute(config, store, horizons=(30,))
    arms = {
        r["arm"]: (r["moved"], r["observed"], r["up"], r["stayed"])
        for r in result.table.to_dict("records")
        if r["to_group"] == "At Risk"
    }
    assert arms == {"held out": (2, 2, 1, 1), "reached": (3, 3, 2, 1)}
    effect = outcomes.effects(result)
    at_risk = effect[effect["to_group"] == "At Risk"].iloc[0]
    assert (at_risk["reached"], at_risk["held_out"]) == (3, 2)
    assert at_risk["up_reached"] == pytest.approx(2 / 3) and at_risk["up_held_out"] == pytest.approx(1 / 2)
    half = 1.96 * ((2 / 3) * (1 / 3) / 3 + 0.25 / 2) ** 0.5
    assert at_risk["difference"] == pytest.approx(1 / 6)
    assert (at_risk["low"], at_risk["high"]) == (pytest.approx(1 / 6 - half), pytest.approx(1 / 6 + half))
    shown = CliRunner().invoke(main, ["outcomes", "-c", str(tmp_path / "config.toml")], env={"COLUMNS": "220"})
    assert "reached against held out" in shown.output and "+16.7%" in shown.output


def test_a_hold_out_above_half_is_refused(tmp_path):
    (tmp_path / "config.toml").write_text(config_toml("sqlite:///s.sqlite", table("[properties]", holdout_percent=60)))
    out = CliRunner().invoke(main, ["check-config", "-c", str(tmp_path / "config.toml")])
    assert out.exit_code == 2 and "properties.holdout_percent" in out.output


def test_outcomes_never_sum_two_currencies(tmp_path):
    config, store = open_config(tmp_path, "sqlite:///s.sqlite", table("[shop]", timezone=ZONE))
    hand_built(store)
    with store.begin() as conn:
        conn.execute(orders.update().where(orders.c.customer_key == "c").values(currency="EUR"))
    out = CliRunner().invoke(main, ["outcomes", "-c", str(tmp_path / "config.toml")])
    assert out.exit_code == 1 and "EUR" in out.output and "USD" in out.output and "Traceback" not in out.output
