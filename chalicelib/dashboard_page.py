"""The dashboard's HTML: one self-contained page (inline CSS, server-rendered SVG charts, no
script, no external resource) rendered from the dictionary that ``/admin/dashboard/data``
returns. Every value printed goes through ``esc``: journey, step, variant and segment names
come from users.

Every number cell carries its raw value in ``data-value`` and its measure in ``data-field``,
so a test (or a scraper) reads exactly what the JSON says.
"""

from __future__ import annotations

from html import escape
from typing import Any

NO_DATA = "no data yet"
KPI_COLUMNS = [
    ("sent", "Sent", "count"), ("delivered", "Delivered", "count"), ("opened", "Opened", "count"),
    ("clicked", "Clicked", "count"), ("ctr", "CTR", "percent"), ("conversions", "Conversions", "count"),
    ("conversion_rate", "Conv. rate", "percent"), ("revenue", "Revenue", "money"), ("cost", "Cost", "money"),
    ("romi", "ROMI", "romi"), ("cac", "CAC", "money"),
]
GROUP_TITLES = {"journey": "per journey", "channel": "per channel", "step": "per step", "variant": "per variant",
                "template": "per template", "segment": "per segment"}
PALETTE = ["#2f6fdf", "#e07b39", "#3aa76d", "#c0427f", "#8c6bd1", "#b8a135", "#4aa3b5", "#7d7d7d"]


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def fmt(value: Any, kind: str, currency: str = "") -> str:
    """The page's number formats: the test formats the JSON's numbers with this same function."""
    if value is None:
        return "—"
    if kind == "count":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    if kind == "percent":
        return f"{value:.1%}"
    if kind == "money":
        return f"{value:,.2f} {currency}".strip()
    if kind == "romi":
        return f"{value:+,.0%}"
    if kind == "signed_percent":
        return f"{value:+.1%}"
    return str(value)


def cell(value: Any, field: str, kind: str, currency: str = "", tag: str = "td") -> str:
    raw = "" if value is None else value
    cls = ' class="num"' if tag == "td" else ""
    return f'<{tag}{cls} data-field="{esc(field)}" data-value="{esc(raw)}">{esc(fmt(value, kind, currency))}</{tag}>'


def empty(what: str = NO_DATA) -> str:
    return f'<p class="empty">{esc(what)}</p>'


# --------------------------------------------------------------------------- sections
def totals_section(d: dict[str, Any]) -> str:
    t, cur = d["totals"], d["currency"]
    tiles = [("sent", "Sent", "count"), ("ctr", "CTR", "percent"), ("conversions", "Conversions", "count"),
             ("conversion_rate", "Conversion rate", "percent"), ("revenue", "Revenue", "money"),
             ("cost", "Cost", "money"), ("romi", "ROMI", "romi"), ("cac", "CAC", "money")]
    items = "".join(
        f'<div class="tile"><div class="label">{esc(label)}</div>{cell(t.get(f), f, kind, cur, "div")}</div>'
        for f, label, kind in tiles
    )
    return f'<section id="totals" class="wide"><div class="tiles">{items}</div></section>'


def funnel_section(d: dict[str, Any]) -> str:
    stages = d["funnel"]
    body = empty() if not stages else funnel_svg(stages) + funnel_table(stages)
    note = ('<p class="note">Opened and clicked count messages with at least one human open or click; converted '
            "counts attributed orders (a click, an open or a delivery within its window), so it can exceed clicked."
            "</p>") if stages else ""
    return f'<section id="funnel"><h2>Funnel</h2>{body}{note}</section>'


def funnel_svg(stages: list[dict[str, Any]]) -> str:
    width, bar_h, gap, label_w = 560, 26, 8, 90
    top = max((s["count"] or 0) for s in stages) or 1
    parts = []
    for i, s in enumerate(stages):
        y = i * (bar_h + gap)
        w = 0 if s["count"] is None else max(1.0, (width - label_w - 80) * s["count"] / top)
        parts.append(
            f'<text x="0" y="{y + 17}" class="axis">{esc(s["stage"])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}" '
            f'opacity="{1 - i * 0.13:.2f}"><title>{esc(s["stage"])}: {esc(fmt(s["count"], "count"))}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" class="value">{esc(fmt(s["count"], "count"))}</text>'
        )
    h = len(stages) * (bar_h + gap)
    return (f'<svg class="chart" width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img" '
            'aria-label="Funnel from sent to converted">'
            f'{"".join(parts)}</svg>')


def funnel_table(stages: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr data-stage="{esc(s["stage"])}"><th scope="row">{esc(s["stage"])}</th>'
        f'{cell(s["count"], "count", "count")}{cell(s["of_previous"], "of_previous", "percent")}'
        f'{cell(s["of_sent"], "of_sent", "percent")}</tr>'
        for s in stages
    )
    return ('<table class="funnel"><thead><tr><th>stage</th><th>count</th><th>of previous stage</th>'
            f'<th>of sent</th></tr></thead><tbody>{rows}</tbody></table>')


def series_section(d: dict[str, Any]) -> str:
    series = d["series"]
    if not series or not series["rows"]:
        return f'<section id="series" class="wide"><h2>KPIs over time</h2>{empty()}</section>'
    period = series["period"]
    rows, cur = series["rows"], d["currency"]
    table_rows = "".join(
        f'<tr data-key="{esc(r["name"])}"><th scope="row">{esc(r["name"])}</th>'
        + "".join(cell(r.get(f), f, k, cur) for f, _, k in KPI_COLUMNS)
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in KPI_COLUMNS)
    return (
        f'<section id="series" class="wide"><h2>KPIs over time (per {esc(period)})</h2>'
        f'{series_svg(rows, cur)}'
        f'<details><summary>the numbers per {esc(period)}</summary><table class="kpis">'
        f'<thead><tr><th>{esc(period)}</th>{head}</tr></thead><tbody>{table_rows}</tbody></table></details></section>'
    )


def series_svg(rows: list[dict[str, Any]], currency: str) -> str:
    """Bars: messages sent per period (left axis). Line: attributed revenue (right axis)."""
    width, height, left, right, top, bottom = 900, 240, 56, 100, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(rows)
    max_sent = max((r["sent"] or 0) for r in rows) or 1
    max_rev = max((r["revenue"] or 0) for r in rows) or 1
    slot = plot_w / n
    bar_w = min(48.0, max(2.0, slot * 0.7))
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="grid"/>']
    for frac in (0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid light"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{esc(fmt(max_sent * frac, "count"))}</text>'
                     f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" class="axis">'
                     f'{esc(f"{max_rev * frac:,.0f} {currency}")}</text>')
    points = []
    label_every = max(1, n // 10)
    for i, r in enumerate(rows):
        x = left + i * slot + (slot - bar_w) / 2
        h = plot_h * (r["sent"] or 0) / max_sent
        tip = (f'{r["name"]}: sent {fmt(r["sent"], "count")}, clicked {fmt(r["clicked"], "count")}, '
               f'conversions {fmt(r["conversions"], "count")}, revenue {fmt(r["revenue"], "money", currency)}')
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'fill="{PALETTE[0]}" opacity="0.75"><title>{esc(tip)}</title></rect>')
        cx = left + i * slot + slot / 2
        points.append(f"{cx:.1f},{top + plot_h * (1 - (r['revenue'] or 0) / max_rev):.1f}")
        if i % label_every == 0:
            parts.append(f'<text x="{cx:.1f}" y="{height - bottom + 16}" class="axis" text-anchor="middle">'
                         f'{esc(r["name"][5:] or r["name"])}</text>')  # 03-02, W36
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{PALETTE[1]}" stroke-width="2"/>')
    legend = (f'<rect x="{left}" y="{height - 14}" width="10" height="10" fill="{PALETTE[0]}"/>'
              f'<text x="{left + 14}" y="{height - 5}" class="axis">messages sent</text>'
              f'<line x1="{left + 120}" y1="{height - 9}" x2="{left + 134}" y2="{height - 9}" '
              f'stroke="{PALETTE[1]}" stroke-width="2"/>'
              f'<text x="{left + 138}" y="{height - 5}" class="axis">attributed revenue ({esc(currency)})</text>')
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="Messages sent and revenue '
            f'over time">{"".join(parts)}{legend}</svg>')


def lift_section(d: dict[str, Any]) -> str:
    items = d["lift"]
    if not items:
        note = NO_DATA + ": lift needs a holdout (send_policy.holdout_percent or a journey holdout) and sends"
        return f'<section id="lift"><h2>Incremental conversion (holdout)</h2>{empty(note)}</section>'
    lo = min(0.0, *(i["low"] for i in items))
    hi = max(0.0, *(i["high"] for i in items))
    rows = "".join(lift_row(i, lo, hi) for i in items)
    return (
        '<section id="lift"><h2>Incremental conversion (holdout)</h2>'
        '<p class="note">Conversion rate of customers who got the messages minus that of the holdout '
        '(percentage points), with its confidence interval; the bar is the estimate, the whisker the interval. '
        'Every unit so far, whatever the period.</p>'
        f'<div class="lifts">{rows}</div></section>'
    )


def lift_row(item: dict[str, Any], lo: float, hi: float) -> str:
    width, height, pad = 420, 38, 10
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return pad + (width - 2 * pad) * (v - lo) / span

    zero, est = x(0.0), x(item["value"])
    colour = PALETTE[2] if item["low"] > 0 else (PALETTE[3] if item["high"] < 0 else PALETTE[7])
    svg = (
        f'<svg class="liftbar" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(item["text"])}">'
        f'<rect x="{min(zero, est):.1f}" y="8" width="{max(1.0, abs(est - zero)):.1f}" height="14" fill="{colour}"/>'
        f'<line x1="{x(item["low"]):.1f}" y1="15" x2="{x(item["high"]):.1f}" y2="15" class="whisker"/>'
        f'<line x1="{x(item["low"]):.1f}" y1="9" x2="{x(item["low"]):.1f}" y2="21" class="whisker"/>'
        f'<line x1="{x(item["high"]):.1f}" y1="9" x2="{x(item["high"]):.1f}" y2="21" class="whisker"/>'
        f'<line x1="{zero:.1f}" y1="2" x2="{zero:.1f}" y2="28" class="zero"/>'
        f'<text x="{zero:.1f}" y="35" class="axis" text-anchor="middle">0</text>'
        + "".join(  # the ends of the shared scale, unless they would sit on the zero label
            f'<text x="{x(v):.1f}" y="35" class="axis" text-anchor="{anchor}">{esc(fmt(v, "signed_percent"))}</text>'
            for v, anchor in ((lo, "start"), (hi, "end")) if abs(x(v) - zero) > 48
        )
        + "</svg>"
    )
    counts = ""
    if item["treated_units"] is not None and item["control_units"] is not None:
        counts = (f'<div class="note">{esc(fmt(item["treated_rate"], "percent"))} of '
                  f'{esc(fmt(item["treated_units"], "count"))} treated vs {esc(fmt(item["control_rate"], "percent"))}'
                  f' of {esc(fmt(item["control_units"], "count"))} in the holdout</div>')
    return (
        f'<div class="lift" data-name="{esc(item["name"])}" data-value="{esc(item["value"])}" '
        f'data-low="{esc(item["low"])}" data-high="{esc(item["high"])}">'
        f'<div class="liftname">{esc(item["name"])}</div><div class="lifttext">{esc(item["text"])}</div>'
        f'{svg}{counts}</div>'
    )


def experiments_section(d: dict[str, Any]) -> str:
    if not d["experiments"]:
        return ""
    blocks = []
    for exp in d["experiments"]:
        rows = "".join(
            f'<tr data-key="{esc(v["variant"])}"><th scope="row">{esc(v["variant"])}'
            f'{" (control)" if v["control"] else ""}</th>{cell(v["units"], "units", "count")}'
            f'{cell(v["conversions"], "conversions", "count")}{cell(v["rate"], "rate", "percent")}'
            f'<td class="text">{esc(v["text"] or "—")}</td>'
            f'{cell(v["probability_to_beat_control"], "probability_to_beat_control", "percent")}</tr>'
            for v in exp["variants"]
        )
        blocks.append(
            f'<div class="experiment" data-journey="{esc(exp["journey"])}"><h3>{esc(exp["journey"])}</h3>'
            f'<p class="note">{esc(exp["status"])}</p><table class="kpis"><thead><tr><th>variant</th><th>units</th>'
            '<th>conversions</th><th>conv. rate</th><th>difference to control</th><th>P(beat control)</th></tr>'
            f'</thead><tbody>{rows}</tbody></table></div>'
        )
    return f'<section id="experiments" class="wide"><h2>Experiments</h2>{"".join(blocks)}</section>'


def mix_section(d: dict[str, Any]) -> str:
    mix, cur = d["channel_mix"], d["currency"]
    if not mix:
        return f'<section id="mix"><h2>Channel mix</h2>{empty()}</section>'
    width, x, parts = 420, 0.0, []
    for i, m in enumerate(mix):
        w = width * (m["share"] or 0)
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="22" fill="{PALETTE[i % len(PALETTE)]}">'
                     f'<title>{esc(m["channel"])}: {esc(fmt(m["share"], "percent"))}</title></rect>')
        x += w
    rows = "".join(
        f'<tr data-key="{esc(m["channel"])}"><th scope="row"><span class="swatch" '
        f'style="background:{PALETTE[i % len(PALETTE)]}"></span>{esc(m["channel"])}</th>'
        f'{cell(m["sent"], "sent", "count")}{cell(m["share"], "share", "percent")}'
        f'{cell(m["revenue"], "revenue", "money", cur)}{cell(m["cost"], "cost", "money", cur)}'
        f'{cell(m["romi"], "romi", "romi")}</tr>'
        for i, m in enumerate(mix)
    )
    return (f'<section id="mix"><h2>Channel mix</h2><svg class="chart" width="{width}" height="22" '
            f'viewBox="0 0 {width} 22" role="img" '
            f'aria-label="Share of messages per channel">{"".join(parts)}</svg>'
            '<table class="kpis"><thead><tr><th>channel</th><th>sent</th><th>share</th><th>revenue</th>'
            f'<th>cost</th><th>ROMI</th></tr></thead><tbody>{rows}</tbody></table></section>')


def top_section(d: dict[str, Any]) -> str:
    top, cur = d["top_journeys"], d["currency"]
    if not top:
        return f'<section id="top"><h2>Top journeys</h2>{empty()}</section>'
    rows = "".join(
        f'<tr data-key="{esc(t["journey"])}"><td>{i}</td><th scope="row">{esc(t["journey"])}</th>'
        f'{cell(t["revenue"], "revenue", "money", cur)}{cell(t["conversions"], "conversions", "count")}'
        f'{cell(t["sent"], "sent", "count")}{cell(t["romi"], "romi", "romi")}</tr>'
        for i, t in enumerate(top, 1)
    )
    return ('<section id="top"><h2>Top journeys (by attributed revenue)</h2><table class="kpis"><thead><tr>'
            '<th>#</th><th>journey</th><th>revenue</th><th>conversions</th><th>sent</th><th>ROMI</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def kpi_section(d: dict[str, Any], group: str) -> str:
    title = f"KPIs {GROUP_TITLES.get(group, 'per ' + group)}"
    rows_data = d["kpis"].get(group)
    if not rows_data:
        why = d["not_measured"].get(group, NO_DATA)
        return f'<section id="kpis-{esc(group)}" class="wide"><h2>{esc(title)}</h2>{empty(why)}</section>'
    cur = d["currency"]
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in KPI_COLUMNS)
    rows = "".join(
        f'<tr data-key="{esc(r["name"])}"><th scope="row">{esc(r["name"])}</th>'
        + "".join(cell(r.get(f), f, k, cur) for f, _, k in KPI_COLUMNS)
        + "</tr>"
        for r in rows_data
    )
    return (f'<section id="kpis-{esc(group)}" class="wide"><h2>{esc(title)}</h2><table class="kpis">'
            f'<thead><tr><th>{esc(group)}</th>{head}</tr></thead><tbody>{rows}</tbody></table></section>')


# --------------------------------------------------------------------------- page
CSS = """
:root { --ink:#1d2430; --muted:#5d6778; --line:#dde2ea; --bg:#f5f7fa; --card:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink);
       background:var(--bg); }
header { display:flex; align-items:center; justify-content:space-between; gap:16px; padding:14px 24px;
         background:#1d2430; color:#fff; }
header h1 { margin:0; font-size:18px; font-weight:600; }
header .meta { color:#c6ccd8; font-size:12px; }
header a, header button { color:#fff; font:inherit; font-size:13px; margin-left:12px; }
header form.period { color:#c6ccd8; font-size:12px; }
header form.period input { font:inherit; margin:0 6px 0 4px; padding:1px 4px; }
header button { background:none; border:1px solid #6b7486; border-radius:4px; padding:3px 10px; cursor:pointer; }
main { display:grid; grid-template-columns:repeat(auto-fit, minmax(440px, 1fr)); gap:16px; padding:16px 24px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px;
          min-width:0; overflow-x:auto; }
section.wide { grid-column:1 / -1; }
h2 { margin:0 0 10px; font-size:15px; }
h3 { margin:8px 0 4px; font-size:14px; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(120px, 1fr)); gap:10px; }
.tile { border-left:3px solid #2f6fdf; padding:2px 10px; }
.tile .label { color:var(--muted); font-size:12px; }
.tile [data-field] { font-size:20px; font-weight:600; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; width:100%; margin-top:8px; }
th, td { padding:4px 8px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
thead th { color:var(--muted); font-weight:500; font-size:12px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tbody th { font-weight:500; max-width:320px; overflow:hidden; text-overflow:ellipsis; }
.chart { max-width:100%; height:auto; display:block; }
.axis { font-size:11px; fill:var(--muted); }
.value { font-size:12px; fill:var(--ink); }
.grid { stroke:#aab3c2; stroke-width:1; }
.grid.light { stroke:var(--line); }
.whisker { stroke:var(--ink); stroke-width:1.5; }
.zero { stroke:#8a93a3; stroke-dasharray:3 2; }
.lift { display:grid; grid-template-columns:minmax(100px, 200px) 1fr; align-items:baseline; gap:2px 12px;
        padding:8px 0; border-bottom:1px solid var(--line); }
.lift .liftbar, .lift .note { grid-column:1 / -1; }
.liftbar { width:100%; max-width:560px; height:auto; }
.liftname { font-weight:500; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.lifttext { font-weight:600; font-variant-numeric:tabular-nums; }
.note, .empty { color:var(--muted); font-size:12px; margin:4px 0; }
.empty { font-style:italic; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
footer { padding:0 24px 24px; color:var(--muted); font-size:12px; }
details summary { cursor:pointer; color:var(--muted); margin-top:8px; }
form.login { max-width:360px; margin:12vh auto; background:#fff; border:1px solid var(--line); border-radius:8px;
             padding:24px; }
form.login input { width:100%; padding:8px; margin:8px 0 12px; font:inherit; }
form.login button { padding:8px 16px; font:inherit; }
.error { color:#b3261e; }
"""


def _shell(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>'
        f"<body>{body}</body></html>"
    )


def render_page(d: dict[str, Any]) -> str:
    links = d["links"]
    period = d.get("period") or {}
    since, until = period.get("since") or "", period.get("until") or ""
    shown = f"{since or 'the start'} to {until or 'today'}" if since or until else "all time"
    header = (
        f'<header><div><h1>Omnicast · {esc(d["shop"] or "dashboard")}</h1>'
        f'<div class="meta">generated {esc(d["generated_at"])} · {esc(d["currency"])} · last-touch attribution'
        f' · KPIs for <span id="period">{esc(shown)}</span></div></div>'
        '<form class="period" method="get" action="dashboard">'
        f'<label>from <input type="date" name="since" value="{esc(since)}"></label>'
        f'<label>to <input type="date" name="until" value="{esc(until)}"></label>'
        '<button type="submit">apply</button><a href="dashboard">all time</a></form><nav>'
        f'<a href="{esc(links["json"])}">JSON</a><a href="{esc(links["csv"])}" download>CSV</a>'
        '<form class="sign-out" method="post" action="dashboard" style="display:inline">'
        '<input type="hidden" name="action" value="sign-out"><button type="submit">sign out</button></form>'
        "</nav></header>"
    )
    sections = [
        totals_section(d), funnel_section(d), lift_section(d), series_section(d), mix_section(d), top_section(d),
        experiments_section(d),
        *(kpi_section(d, g) for g in ("journey", "channel", "step")),
        *(kpi_section(d, g) for g in d["kpis"] if g not in ("journey", "channel", "step")),
    ]
    footer = (
        "<footer>CTR = humans who clicked / delivered (sent when deliveries are not reported); conversion rate = "
        "attributed orders / sent; ROMI = (revenue &minus; cost) / cost; CAC = cost / new customers acquired. Machine "
        "opens and link scanners are kept out of the rates. Every number here is also in "
        f'<a href="{esc(links["json"])}">the JSON</a> and <a href="{esc(links["csv"])}">the CSV</a>; API clients: '
        f"<code>{esc(links['kpis_csv_api'])}</code> with the admin key.</footer>"
    )
    return _shell(f"Omnicast dashboard · {d['shop']}", header + f'<main>{"".join(sections)}</main>' + footer)


def render_login(message: str | None = None) -> str:
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    form = (
        '<form class="login" method="post" action="dashboard"><h2>Omnicast dashboard</h2>'
        f'{error}<label for="key">Admin key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" required>'
        '<button type="submit">Sign in</button>'
        '<p class="note">The key is checked and exchanged for a session cookie (8 hours); it is never put in a URL.'
        "</p></form>"
    )
    return _shell("Omnicast dashboard: sign in", form)
