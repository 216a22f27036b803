"""``rfm-sync report --html FILE``: one self-contained page of charts, readable with no network.

The charts are plotly.js figures built with plotly's Python objects (validated as they are
built) and drawn by the plotly.js bundle that ships inside the ``plotly`` package, inlined once
into the page: nothing is fetched when the page opens. Every number comes from
:func:`rfm_sync.insight.gather` (run records, the calibration in force, a ``GROUP BY`` over the
customer state), so the page costs about the same for a thousand customers as for a million —
but for its outcomes section, which reads the group history and the movers' orders
(:mod:`rfm_sync.outcomes`): its cost grows with the moves recorded.

The page records its own faults: a small script that runs before anything else notes every
script error, failed load and ``console.error`` in ``data-errors`` on ``<html>`` and shows them
in a red box; each chart marks itself ``data-rendered="1"`` once drawn. The browser test
(``tests/test_report_browser.py``) reads those, and people see a broken chart said so.

No full email address is in the page: samples are masked, free text (errors, warnings) is
masked, and the assembled page (outside the plotly bundle) is masked once more as a last guard.
The one address in the bundle, in a licence comment, is written with " at " instead of "@".
"""

from __future__ import annotations

import html
import json
from datetime import date
from pathlib import Path
from typing import Any

from . import atomic
from .insight import DIMENSIONS, UNITS, Summary, buckets, dimension_rows, gather, group_rows, mask_text, readable
from .masking import EMAIL

PALETTE = [
    "#1b9e77",
    "#66a61e",
    "#7570b3",
    "#e6ab02",
    "#d95f02",
    "#e7298a",
    "#a6761d",
    "#1f78b4",
    "#b2df8a",
    "#fb9a99",
    "#cab2d6",
    "#ffff99",
    "#666666",
]
CHART_CONFIG = {"displaylogo": False, "responsive": True}


def _colors(order: list[str]) -> dict[str, str]:
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(order)}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    base = {
        "title": {"text": title, "x": 0, "font": {"size": 15}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 360,
        "template": "plotly_white",
        "font": {"family": "system-ui, sans-serif", "size": 12},
    }
    base.update(extra)
    return base


# ---------------------------------------------------------------------- figures
def groups_figures(summary: Summary, currency: str) -> dict[str, Any]:
    import plotly.graph_objects as go

    rows = group_rows(summary)
    colors = _colors(summary.order)
    names = [r["group"] for r in rows]
    figs = {
        "chart-groups": go.Figure(
            go.Bar(
                x=names,
                y=[r["customers"] for r in rows],
                marker_color=[colors[n] for n in names],
                text=[f"{r['customers']:,} ({r['share']:.0%})" for r in rows],
                textposition="auto",
            ),
            layout=_layout("Customers per group now", yaxis={"title": "customers"}),
        )
    }
    if rows and "revenue" in rows[0]:
        figs["chart-revenue-share"] = go.Figure(
            go.Bar(
                x=names,
                y=[100 * r["revenue_share"] for r in rows],
                marker_color=[colors[n] for n in names],
                text=[f"{r['revenue_share']:.1%}" for r in rows],
                textposition="auto",
            ),
            layout=_layout("Share of revenue in the window", yaxis={"title": "% of revenue"}),
        )
        figs["chart-aov"] = go.Figure(
            go.Bar(
                x=names,
                y=[r["aov"] or 0 for r in rows],
                marker_color=[colors[n] for n in names],
                text=[f"{r['aov']:,.2f}" if r["aov"] is not None else "–" for r in rows],
                textposition="auto",
            ),
            layout=_layout("Average order value", yaxis={"title": f"per order {currency}".strip()}),
        )
    return figs


def growth_figures(summary: Summary, currency: str) -> dict[str, Any]:
    """Customers, revenue and net flow per group per week and per month (buttons switch)."""
    import plotly.graph_objects as go

    colors = _colors(summary.order)
    series = {by: buckets(summary, by) for by in ("week", "month")}
    figs = {}
    for fig_id, title, what, kind in (
        ("chart-growth-customers", "Customers per group", "customers", "line"),
        ("chart-growth-revenue", f"Revenue per group in the window {currency}".strip(), "revenue", "line"),
        ("chart-growth-flow", "Net flow into each group (moves in − moves out)", "net", "bar"),
    ):
        fig = go.Figure(layout=_layout(title, barmode="relative", legend={"orientation": "h", "y": -0.2}, height=400))
        visible = []
        for by in ("week", "month"):
            points = series[by]
            for group in summary.order:
                xs, ys = [], []
                for b in points:
                    values = b[what] if what != "revenue" else b["revenue"]
                    if values is None or (what == "net" and not b["moves_recorded"]):
                        continue  # not recorded for this bucket
                    xs.append(b["start"].isoformat())
                    ys.append(values.get(group, 0))
                name = group
                if kind == "line":
                    fig.add_trace(
                        go.Scatter(
                            x=xs,
                            y=ys,
                            name=name,
                            mode="lines+markers",
                            legendgroup=group,
                            line={"color": colors[group]},
                            visible=by == "week",
                        )
                    )
                else:
                    fig.add_trace(
                        go.Bar(
                            x=xs, y=ys, name=name, marker_color=colors[group], legendgroup=group, visible=by == "week"
                        )
                    )
                visible.append(by)
        fig.update_layout(
            updatemenus=[
                {
                    "type": "buttons",
                    "direction": "right",
                    "x": 1,
                    "xanchor": "right",
                    "y": 1.15,
                    "showactive": True,
                    "buttons": [
                        {"label": f"per {by}", "method": "update", "args": [{"visible": [v == by for v in visible]}]}
                        for by in ("week", "month")
                    ],
                }
            ],
            xaxis={"title": "week (Monday) / month of the run's as-of day", "type": "date"},
        )
        figs[fig_id] = fig
    return figs


def _moves_choices(summary: Summary) -> list[tuple[str, dict]]:
    choices = [
        (f"{label} ({summary.period_runs.get(label, 0)} run(s) recorded)", moves)
        for label, moves in summary.periods.items()
    ]
    last_change: dict[tuple[str | None, str | None], int] = {
        k: n for k, n in summary.state_moves.items() if k[0] is not None
    }
    choices.append(("every customer's last change (Previous → Current RFM group)", last_change))
    return choices


def default_choice(summary: Summary) -> int:
    labels = list(summary.periods)
    wanted = next((label for label in labels if label.startswith("since ")), "last 30 days")
    return labels.index(wanted) if wanted in labels else 0


def movement_figures(summary: Summary) -> dict[str, Any]:
    """A Sankey of previous → current group and the same as a matrix, per period (a menu chooses)."""
    import plotly.graph_objects as go

    colors = _colors(summary.order)
    choices = _moves_choices(summary)
    chosen = default_choice(summary)
    left = ["(new)"] + summary.order
    right = summary.order + ["(cleared)"]
    sankey = go.Figure(layout=_layout("Who moved where", height=520))
    matrix = go.Figure(
        layout=_layout(
            "Moves as a matrix (rows: previous group, columns: current group)",
            height=480,
            yaxis={"autorange": "reversed", "title": "previous"},
            xaxis={"title": "current", "side": "top"},
            margin={"l": 130, "t": 110},
        )
    )
    for i, (_label, moves) in enumerate(choices):
        links = [
            (left.index(a if a is not None else "(new)"), right.index(b if b is not None else "(cleared)"), n)
            for (a, b), n in sorted(moves.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
            if n and a != b and (a is None or a in left) and (b is None or b in right)
        ]
        node_colors = (
            ["#999999"] + [colors[g] for g in summary.order] + [colors[g] for g in summary.order] + ["#999999"]
        )
        sankey.add_trace(
            go.Sankey(
                visible=i == chosen,
                arrangement="snap",
                node={
                    "label": [f"{g} (before)" for g in left] + [f"{g} (after)" for g in right],
                    "color": node_colors,
                    "pad": 12,
                    "thickness": 14,
                },
                link={
                    "source": [a for a, _, _ in links],
                    "target": [len(left) + b for _, b, _ in links],
                    "value": [n for _, _, n in links],
                    "color": [_fade(node_colors[a]) for a, _, _ in links],
                },
            )
        )
        z = [
            [
                moves.get((None if a == "(new)" else a, None if b == "(cleared)" else b), 0) if a != b else 0
                for b in right
            ]
            for a in left
        ]
        matrix.add_trace(
            go.Heatmap(
                z=z,
                x=right,
                y=left,
                visible=i == chosen,
                colorscale="Blues",
                texttemplate="%{z:,}",
                hovertemplate="%{y} → %{x}: %{z:,}<extra></extra>",
                showscale=False,
            )
        )
    for fig in (sankey, matrix):  # the title to the right of the menu (top left), so neither hides the other
        fig.update_layout(title={"x": 0.98, "xanchor": "right"})
        fig.update_layout(
            updatemenus=[
                {
                    "type": "dropdown",
                    "x": 0,
                    "xanchor": "left",
                    "y": 1.12 if fig is sankey else 1.28,
                    "active": chosen,
                    "buttons": [
                        {
                            "label": label,
                            "method": "update",
                            "args": [{"visible": [j == i for j in range(len(choices))]}],
                        }
                        for i, (label, _) in enumerate(choices)
                    ],
                }
            ]
        )
    return {"chart-sankey": sankey, "chart-matrix": matrix}


OUTCOME_COLORS = {"up": "#1b9e77", "stayed": "#bbbbbb", "down": "#d95f02"}
OUTCOME_COHORTS = 12  # the largest cohorts; `rfm-sync outcomes` lists them all


def outcome_figures(summary: Summary) -> dict[str, Any]:
    """What followed each move (:mod:`rfm_sync.outcomes`): per cohort, the shares back up, stayed and
    down on the horizon's last day, as stacked bars; a menu switches between the horizons."""
    import plotly.graph_objects as go

    result = summary.outcomes
    if result is None or result.table.empty:
        return {}
    table = result.table
    observed = table[table["observed"] > 0]
    sizes = observed.groupby(["from_group", "to_group"], sort=False)["moved"].first()
    largest = set(sizes.sort_values(ascending=False, kind="stable").index[:OUTCOME_COHORTS])
    horizons = sorted(table["horizon_days"].unique().tolist())
    chosen = horizons.index(60) if 60 in horizons else 0
    fig = go.Figure(
        layout=_layout(
            "What followed each move: the group on the horizon's last day",
            barmode="stack",
            height=max(360, 60 + 34 * len(largest)),
            xaxis={"title": "% of the observed members", "range": [0, 100]},
            yaxis={"autorange": "reversed"},
            margin={"l": 260},
            legend={"orientation": "h", "y": -0.15},
        )
    )
    for i, horizon in enumerate(horizons):
        rows = observed[(observed["horizon_days"] == horizon)]
        rows = rows[[(f, t) in largest for f, t in zip(rows["from_group"], rows["to_group"])]]
        labels = [f"{f} → {t} ({n:,})" for f, t, n in zip(rows["from_group"], rows["to_group"], rows["observed"])]
        for outcome, color in OUTCOME_COLORS.items():
            share = (100 * rows[outcome] / rows["observed"]).round(1).tolist()
            fig.add_trace(
                go.Bar(
                    y=labels,
                    x=share,
                    orientation="h",
                    name=outcome,
                    marker_color=color,
                    legendgroup=outcome,
                    showlegend=i == chosen,
                    visible=i == chosen,
                    text=[f"{v:.0f}%" if v >= 5 else "" for v in share],
                    textposition="inside",
                    hovertemplate="%{y}: " + outcome + " %{x:.1f}%<extra></extra>",
                )
            )
    fig.update_layout(
        title={"x": 0.98, "xanchor": "right"},
        updatemenus=[
            {
                "type": "dropdown",
                "x": 0,
                "xanchor": "left",
                "y": 1.15,
                "active": chosen,
                "buttons": [
                    {
                        "label": f"within {h} days",
                        "method": "update",
                        "args": [
                            {
                                "visible": [j == i for j in range(len(horizons)) for _ in OUTCOME_COLORS],
                                "showlegend": [j == i for j in range(len(horizons)) for _ in OUTCOME_COLORS],
                            }
                        ],
                    }
                    for i, h in enumerate(horizons)
                ],
            }
        ],
    )
    return {"chart-outcomes": fig}


def _fade(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},0.45)"


def distribution_figures(summary: Summary, currency: str) -> dict[str, Any]:
    """R, F and M histograms with the cut points in force as lines."""
    import plotly.graph_objects as go

    figs = {}
    for row in dimension_rows(summary):
        dim, hist = row["dimension"], row["histogram"]
        unit = UNITS[dim] + (f" ({currency})" if dim == "monetary" and currency else "")
        fig = go.Figure(
            layout=_layout(
                f"{dim.capitalize()}: {unit}",
                xaxis={"title": unit},
                yaxis={"title": "customers"},
                bargap=0.05,
                showlegend=False,
            )
        )
        if hist:
            scale = 10_000 if dim == "monetary" else 1
            width = hist["width"] / scale
            xs = [(hist["low"] + (i + 0.5) * hist["width"]) / scale for i in range(len(hist["counts"]))]
            fig.add_trace(
                go.Bar(
                    x=xs,
                    y=hist["counts"],
                    width=[width] * len(xs),
                    marker_color="#7f9cc7",
                    hovertemplate="%{x}: %{y:,} customers<extra></extra>",
                )
            )
            notes = []
            if hist["over"]:
                notes.append(f"{hist['over']:,} above the last bin")
            if hist["below"]:
                notes.append(f"{hist['below']:,} with none in the window")
            if notes:
                fig.add_annotation(
                    text="; ".join(notes),
                    xref="paper",
                    yref="paper",
                    x=1,
                    y=1.08,
                    showarrow=False,
                    xanchor="right",
                    font={"size": 11, "color": "#555"},
                )
        else:
            fig.add_annotation(
                text="not recorded yet: the next full run records it",
                xref="paper",
                yref="paper",
                x=0.5,
                y=0.5,
                showarrow=False,
            )
        for k, cut in enumerate(row["cuts"]):
            value = float(cut) / (10_000 if dim == "monetary" else 1)
            fig.add_vline(x=value, line={"color": "#c0392b", "dash": "dash", "width": 2})
            fig.add_annotation(
                x=value,
                y=1 - 0.07 * (k % 2),
                yref="paper",
                text=f"cut {k + 1}: {readable(dim, cut)}",
                showarrow=False,
                yanchor="bottom",
                font={"color": "#c0392b", "size": 11},
            )
        scores = row["scores"]
        if scores:
            fig.add_annotation(
                text="customers per score: " + ", ".join(f"{s}: {n:,}" for s, n in scores.items()),
                xref="paper",
                yref="paper",
                x=0,
                y=-0.28,
                showarrow=False,
                xanchor="left",
                font={"size": 11, "color": "#555"},
            )
        fig.update_layout(margin={"b": 80})
        figs[f"chart-{dim}"] = fig
    figs["_caption"] = f"cut points {summary.cut_points_origin}" + (
        f" over {summary.calibration_population:,} customers" if summary.calibration_population is not None else ""
    )
    return figs


# ---------------------------------------------------------------------- tables
def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(mask_text(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))


def runs_table(summary: Summary, limit: int = 20) -> str:
    dests = sorted({d for r in summary.runs for d in (r.stats.get("pushed") or {})} | set(summary.destinations))
    headers = (
        ["run", "as of", "started (UTC)", "took", "status", "pulled", "quarantined", "scored", "changed", "cleared"]
        + [f"{d}: accepted / failed" for d in dests]
        + ["error"]
    )
    rows = []
    for r in summary.recent(limit):
        s = r.stats
        pulled = ", ".join(f"{k}: {v:,}" for k, v in (s.get("pulled") or {}).items())
        rows.append(
            [
                r.id,
                r.as_of.isoformat(),
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{r.seconds:.1f} s" if r.seconds is not None else "running",
                r.status,
                pulled,
                _n(s.get("quarantined", 0)),
                _n(s.get("scored", 0)),
                _n(s.get("changed", 0)),
                _n(s.get("cleared", 0)),
            ]
            + [
                f"{(s.get('pushed') or {}).get(d, 0):,} / {(s.get('failed') or {}).get(d, 0):,}"
                if d in (s.get("pushed") or {})
                else "–"
                for d in dests
            ]
            + [(r.error or "")[:200]]
        )
    return _table(headers, rows, "runs")


def _outcomes_note(summary: Summary) -> str:
    result = summary.outcomes
    if result is None or result.known_until is None:
        return (
            "<p>no group history yet: it grows with every run; <code>rfm-sync backtest -c CONFIG --since "
            "YYYY-MM-DD</code> reconstructs the days before the first run from the stored orders.</p>"
        )
    if result.table.empty or not (result.table["observed"] > 0).any():
        return f"<p>no move has been followed for 30 days yet (groups known up to {result.known_until}).</p>"
    return (
        f'<p class="note">Everyone who moved from one group to another (the {OUTCOME_COHORTS} largest moves), '
        "and where they were 30, 60 or 90 days later: a better group than the one they moved to (up), the same, "
        f"or a worse one or none (down); groups known up to {result.known_until}. Counts, what they spent and "
        "every move: <code>rfm-sync outcomes -c CONFIG</code>. This describes what followed a move, not what "
        "caused it (docs/outcomes.md).</p>"
    )


def page(summary: Summary, *, currency: str = "", title: str = "rfm-sync report") -> str:
    figs: dict[str, Any] = {}
    figs.update(groups_figures(summary, currency))
    figs.update(growth_figures(summary, currency))
    figs.update(movement_figures(summary))
    figs.update(outcome_figures(summary))
    dist = distribution_figures(summary, currency)
    caption = dist.pop("_caption")
    figs.update(dist)
    data = {fig_id: json.loads(fig.to_json()) for fig_id, fig in figs.items()}

    def charts(*ids: str) -> str:
        return "".join(f'<div class="chart" id="{i}" data-chart="{i}"></div>' for i in ids if i in figs)

    latest = summary.latest
    head = f"as of {latest.as_of} (run {latest.id}, {latest.status})" if latest else "no scored run yet"
    rows = group_rows(summary)
    group_table = _table(
        ["group", "customers", "share"]
        + (["revenue", "revenue share", "orders", "avg order value"] if rows and "revenue" in rows[0] else []),
        [
            [r["group"], f"{r['customers']:,}", f"{r['share']:.1%}"]
            + (
                [
                    f"{r['revenue']:,.2f}",
                    f"{r['revenue_share']:.1%}",
                    f"{r['orders']:,}",
                    f"{r['aov']:,.2f}" if r["aov"] is not None else "–",
                ]
                if "revenue" in r
                else []
            )
            for r in rows
        ],
    )
    warnings = (latest.warnings if latest else []) or []
    warn_html = (
        "<ul>" + "".join(f"<li>{html.escape(mask_text(w))}</li>" for w in warnings) + "</ul>"
        if warnings
        else "<p>none: the shop meets every eligibility check.</p>"
    )
    backlog = _table(
        ["destination", "pending", "sending", "sent", "superseded", "dead (gave up)"],
        [
            [d]
            + [
                f"{summary.backlog.get(d, {}).get(s, 0):,}"
                for s in ("pending", "sending", "sent", "superseded", "dead")
            ]
            for d in sorted(set(summary.destinations) | set(summary.backlog))
        ],
    )
    samples = "".join(
        f"<h3>{html.escape(g)}</h3>"
        + _table(
            ["customer", "email", "score", "previous group", "changed (UTC)"],
            [
                [
                    s["customer"],
                    s["email"] or "–",
                    s["score"],
                    s["previous"] or "–",
                    s["changed"].strftime("%Y-%m-%d %H:%M") if s["changed"] else "",
                ]
                for s in summary.samples.get(g, [])
            ],
            "samples",
        )
        for g in summary.order
        if summary.samples.get(g)
    )
    figure_json = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    body = f"""
<header><h1>{html.escape(title)}</h1>
<p>{html.escape(head)} · scheme {html.escape(summary.scheme)} · {summary.state_customers:,} customers with a group ·
store {html.escape(mask_text(summary.store))} · written {summary.generated_at.strftime("%Y-%m-%d %H:%M UTC")}</p>
<pre id="report-errors" class="errors" hidden></pre></header>
<section><h2>Groups now</h2><div class="grid3">{charts("chart-groups", "chart-revenue-share", "chart-aov")}</div>
{group_table}</section>
<section><h2>How each group grows or shrinks</h2>
<p class="note">From the run records: each week's or month's last run; the net flow sums every run's moves in it
(new customers flow in, cleared ones out).</p>
<div class="grid1">{charts("chart-growth-customers", "chart-growth-revenue", "chart-growth-flow")}</div></section>
<section><h2>Movements</h2><p class="note">Choose the period in the menu. Moves are summed over the runs in it: a
customer who moved twice counts twice. The last choice is every customer's own last change, as the platforms see
it.</p>
<div class="grid1">{charts("chart-sankey", "chart-matrix")}</div></section>
<section><h2>What followed each move</h2>{_outcomes_note(summary)}
<div class="grid1">{charts("chart-outcomes")}</div></section>
<section><h2>Recency, frequency and monetary, with the cut points in force</h2>
<p class="note">{html.escape(caption)}.</p>
<div class="grid3">{charts(*(f"chart-{d}" for d in DIMENSIONS))}</div></section>
<section><h2>Eligibility warnings</h2>{warn_html}</section>
<section><h2>Last runs</h2>{runs_table(summary)}<h3>Outbox per destination</h3>{backlog}</section>
<section><h2>Who is in each group (a few, masked)</h2>
<p class="note">Everyone, with their values: <code>rfm-sync customers -c CONFIG --group NAME</code>; why one customer is
where they are: <code>rfm-sync explain -c CONFIG CUSTOMER</code>.</p>{samples or "<p>no customers yet.</p>"}</section>
"""
    body = mask_text(body)  # the last guard: no address in what this page says
    figure_json = mask_text(figure_json)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<script>{ERROR_CAPTURE}</script>
<style>{STYLE}</style>
<script>{plotly_bundle()}</script>
</head><body>{body}
<script type="application/json" id="report-figures">{figure_json}</script>
<script>{RENDER}</script>
</body></html>
"""


ERROR_CAPTURE = """
(function () {
  var errors = [];
  function note(message) {
    errors.push(String(message));
    document.documentElement.setAttribute("data-errors", String(errors.length));
    var box = document.getElementById("report-errors");
    if (box) { box.hidden = false; box.textContent = errors.join("\\n"); }
  }
  window.reportError = note;
  window.reportErrors = errors;
  window.addEventListener("error", function (e) {
    var t = e.target;
    note(e.message || ("could not load " + ((t && (t.src || t.href)) || "a resource")));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    note("unhandled: " + ((e.reason && e.reason.message) || e.reason));
  });
  var original = console.error;
  console.error = function () { note(Array.prototype.join.call(arguments, " ")); return original.apply(console, arguments); };
  document.documentElement.setAttribute("data-errors", "0");
})();
"""

RENDER = f"""
(function () {{
  var figures = JSON.parse(document.getElementById("report-figures").textContent);
  var config = {json.dumps(CHART_CONFIG)};
  var jobs = Object.keys(figures).map(function (id) {{
    var el = document.getElementById(id);
    if (!el) {{ window.reportError("no place for chart " + id); return Promise.resolve(); }}
    return Plotly.newPlot(el, figures[id].data, figures[id].layout, config).then(
      function () {{ el.setAttribute("data-rendered", "1"); }},
      function (err) {{ window.reportError("chart " + id + ": " + err); }});
  }});
  Promise.all(jobs).then(function () {{
    document.body.setAttribute("data-charts", String(document.querySelectorAll("[data-rendered='1']").length));
  }});
}})();
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 16px 24px; color: #222; }
header h1 { margin-bottom: 4px; } header p { color: #555; margin-top: 0; }
section { margin: 28px 0; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; }
.grid3 { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 12px; }
.grid1 { display: grid; grid-template-columns: 1fr; gap: 12px; }
.chart { min-height: 360px; border: 1px solid #eee; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f4f4; }
table.runs td:last-child { text-align: left; max-width: 420px; }
.note { color: #555; font-size: 13px; } .errors { background: #fdd; color: #900; padding: 8px; }
code { background: #f4f4f4; padding: 1px 4px; }
"""


def plotly_bundle() -> str:
    """plotly.js as shipped in the plotly package, its one email address (a licence comment) written with " at "."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    return EMAIL.sub(lambda m: m.group(0).replace("@", " at "), js).replace("</script", "<\\/script")


def write(summary: Summary, path: Path, *, currency: str = "") -> Path:
    """Write the page to ``path`` whole or not at all (:mod:`rfm_sync.atomic`)."""
    text = page(summary, currency=currency)
    atomic.write_text(Path(path), text)
    return Path(path)


def write_report(config: Any, store: Any, path: Path, since: date | None = None) -> Path:
    """The HTML report of this store at ``path`` (``rfm-sync report --html`` and the demo), with what
    followed each move (read from the group history only here: the terminal report does not show it)."""
    from . import outcomes

    summary = gather(config, store, since=since)
    summary.outcomes = outcomes.compute(config, store)
    return write(summary, path, currency=config.shop.currency or "")
