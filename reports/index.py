"""The combined index: every implementation side by side, as HTML and as Markdown, and
the short Markdown summary of one run for a CI step summary.

Rows are variant x clause, grouped by variant (its API page) and area; columns are
implementation x dtype; API clauses are one cell per implementation. Each cell is the
verdict and the worst err/(u*S), colour-coded, linked to the check's section on the
implementation's detail page, where the worst input and its replay command are.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

from adamconf.reports.html import findings_html, legend, page
from adamconf.reports.table import API, LABELS, Cell, Impl, Row, Table, build, check_id, compared, fmt_ratio, number
from adamconf.verdicts import BAD, JUDGED, combine

_CSS = """
table.matrix{font-size:12px}table.matrix td{text-align:right;font-variant-numeric:tabular-nums;min-width:4.2em;padding:1px 5px}
table.matrix td a{color:inherit;text-decoration:none;display:block}
table.matrix thead th{position:sticky;top:0;z-index:1;text-align:center;background:#e9eef5;font-size:11px}
table.matrix thead th.col{width:6.2em;min-width:6.2em;max-width:6.2em}
table.matrix th.clause{font-weight:normal;white-space:nowrap;background:#fff}
table.matrix tr.variant th{background:#1a4f8a;color:#fff;font-size:13px;text-align:left;padding:4px 6px}
table.matrix tr.area th{background:#eef1f4;text-align:left;font-style:italic;font-weight:normal}
table.matrix .first{border-left:3px solid #666}table.matrix td.none{background:#fff;color:#ccc;text-align:center}
table.matrix td.api{text-align:center}
"""


def _cell_html(cell: Cell | None, first: bool, span: int = 1, api: bool = False) -> str:
    classes = [cell.shade if cell else "none"] + (["first"] if first else []) + (["api"] if api else [])
    attrs = f" class='{' '.join(classes)}'" + (f" colspan='{span}'" if span > 1 else "")
    if cell is None:
        return f"<td{attrs}>&mdash;</td>"
    text = escape(("API: " if api and span > 1 else "") + cell.text)
    inner = f"<a href='{escape(cell.href)}'>{text}</a>" if cell.href else text
    return f"<td{attrs} title='{escape(cell.title)}'>{inner}</td>"


def _row_html(t: Table, row: Row) -> str:
    out = [f"<tr><th class='clause' title='{escape(row.text)}'>{escape(row.clause)}</th>"]
    for impl in t.impls:
        cols = impl.columns
        if row.is_api:
            out.append(_cell_html(row.cells.get((impl.name, API)), True, len(cols), api=True))
        else:
            out += [_cell_html(row.cells.get((impl.name, d)), i == 0) for i, d in enumerate(cols)]
    out.append("</tr>")
    return "".join(out)


def _impls_html(t: Table) -> str:
    rows = []
    for i in t.impls:
        r = i.res
        judged = sum(1 for row in t.rows for (n, _), c in row.cells.items() if n == i.name and c.verdict in JUDGED)
        bad = sum(1 for row in t.rows for (n, _), c in row.cells.items() if n == i.name and c.verdict in BAD)
        rows.append(f"<tr><td><a href='{escape(i.href)}index.html'>{escape(i.name)}</a></td><td>{escape(i.versions)}</td>"
                    f"<td>{escape(r['profile'])}, {r['examples']} examples per check</td><td>{r['seconds']:.0f} s</td>"
                    f"<td>{judged} judged, {bad} failed or errors</td><td>{escape(i.note)}</td></tr>")
    return ("<table><tr><th>implementation</th><th>versions</th><th>profile</th><th>run time</th><th>clause cells</th>"
            "<th>note</th></tr>" + "".join(rows) + "</table>")


def render_html(t: Table, titles: Mapping[str, str] | None = None) -> str:
    """The whole index page."""
    titles = titles or {}
    ncol = 1 + sum(len(i.columns) for i in t.impls)
    head = ["<th>clause</th>"] + [f"<th class='col{' first' if k == 0 else ''}'>{escape(i.name)}<br>{escape(d)}</th>"
                                  for i in t.impls for k, d in enumerate(i.columns)]
    body = []
    last_variant = None
    for variant, area, rows in t.groups():
        if variant != last_variant:
            title = f"{variant} ({titles[variant]})" if titles.get(variant) else variant
            body.append(f"<tr class='variant' id='v-{escape(variant)}'><th colspan='{ncol}'>{escape(title)}</th></tr>")
            last_variant = variant
        body.append(f"<tr class='area'><th colspan='{ncol}'>{escape(area)}</th></tr>")
        body += [_row_html(t, r) for r in rows]
    jump = " &middot; ".join(f"<a href='#v-{escape(v)}'>{escape(v)}</a>" for v in dict.fromkeys(r.variant for r in t.rows))
    findings = "".join(f"<h2>{escape(i.name)}</h2>{findings_html(i.res)}" for i in t.impls if i.res.get("findings"))
    parts = [
        "<h1>adamconf: Adam implementations side by side</h1>",
        "<p>Each implementation is checked against the spec's clauses and the exact reference. A cell is one clause "
        "of one variant in one dtype: the verdict, and where numbers were compared the worst err/(u*S) over every "
        "example (a pass needs every element within K). API clauses are one cell per implementation. Hover a cell "
        "for the details, click it for the histogram, the worst input in hex and decimal and the command that "
        "replays it.</p>",
        _impls_html(t), legend(), f"<p>variants: {jump}</p>",
        f"<table class='matrix'><thead><tr>{''.join(head)}</tr></thead><tbody>", *body, "</tbody></table>",
        f"<p class='muted'>{len(t.rows)} rows x {ncol - 1} columns. Regenerate with <code>adamconf report --all</code>.</p>",
    ]
    if findings:
        parts.append(f"<h1>Known deviations</h1>{findings}")
    return page("adamconf: Adam implementations side by side", "\n".join(parts), _CSS)


# -- Markdown ------------------------------------------------------------------------


def _md_cell(cell: Cell | None, link: bool) -> str:
    if cell is None:
        return ""
    text = cell.text
    if cell.verdict in BAD:
        text = f"**{text}**"
    return f"[{text}]({cell.href})" if link and cell.href else text


def render_markdown(t: Table, titles: Mapping[str, str] | None = None, link: bool = True) -> str:
    """The same table in Markdown: one table per variant, area as a column."""
    titles = titles or {}
    out = []
    for variant in dict.fromkeys(r.variant for r in t.rows):
        rows = [r for r in t.rows if r.variant == variant]
        has_api = any(r.is_api for r in rows)
        cols = [(i, d) for i in t.impls for d in i.columns + ([API] if has_api else [])]
        title = f"{variant} ({titles[variant]})" if titles.get(variant) else variant
        out += ["", f"### {title}", "",
                "| area | clause | " + " | ".join(f"{i.name} {d}" for i, d in cols) + " |",
                "|---|---|" + "---:|" * len(cols)]
        for r in rows:
            cells = [_md_cell(r.cells.get((i.name, d)), link) if (d == API) == r.is_api else "" for i, d in cols]
            out.append(f"| {r.area} | {r.clause} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def index_markdown(t: Table, titles: Mapping[str, str] | None = None) -> str:
    head = ["# adamconf: Adam implementations side by side", "",
            "A cell is one clause of one variant in one dtype: for a pass the worst err/(u*S) over every example "
            "(K is the bound), otherwise the verdict. Links go to the detail pages (HTML).", "",
            "| implementation | versions | profile | run time | note |", "|---|---|---|---:|---|"]
    head += [f"| {i.name} | {i.versions} | {i.res['profile']}, {i.res['examples']} examples per check | "
             f"{i.res['seconds']:.0f} s | {i.note} |" for i in t.impls]
    return "\n".join(head) + "\n" + render_markdown(t, titles) + "\n"


# -- the CI step summary -------------------------------------------------------------


def _matrix(res: dict[str, Any]) -> list[str]:
    """Variant x dtype: the combined verdict of the clause cells, and the worst ratio."""
    cols = list(res["dtypes"]) + [API]
    out = ["| variant | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for vid in res["variants"]:
        cells = []
        for d in cols:
            got = [c["status"][d] for c in res["clauses"] if c["variant"] == vid and d in c["status"]]
            if not got:
                cells.append("")
                continue
            v = combine(got)
            ratios = [number(r["worst_ratio"]) for r in res["checks"]
                      if r["variant"] == vid and r["dtype"] == d and compared(r)]
            worst = max(ratios) if ratios else math.nan
            text = LABELS[v] + ("" if math.isnan(worst) or v not in JUDGED else f" {fmt_ratio(worst)}")
            cells.append(f"**{text}**" if v in BAD else text)
        out.append(f"| {vid} | " + " | ".join(cells) + " |")
    return out


def step_summary(res: dict[str, Any], area_order: tuple[str, ...] = ()) -> str:
    """A CI step summary of one run: the verdict, a variant x dtype matrix, failures
    with their replay commands, and every clause in a collapsed block."""
    table = build([Impl(res["backend"], res)], area_order)
    bad = [r for r in res["checks"] if r["status"] in BAD]
    counts: dict[str, int] = {}
    for row in res["summary"].values():
        for v, n in row.items():
            counts[v] = counts.get(v, 0) + n
    verdict = "FAILED" if bad else "passed"
    out = [f"## adamconf check: `{res['backend']}` {verdict}", "",
           ", ".join(f"{n} {v}" for v, n in counts.items() if n) + " (clause cells). "
           f"Profile `{res['profile']}`, {res['examples']} examples per check, {res['seconds']:.0f} s; "
           + ", ".join(f"{k} {v}" for k, v in (res.get("backend_versions") or {}).items()), "",
           ("Each cell: the combined verdict of the variant's clauses in that dtype and the worst number of "
            f"representable values between the backend and the exact order `{res['exact_order']}` (exact mode: a pass "
            "needs every element bit for bit equal)." if res.get("exact_order") else
            "Each cell: the combined verdict of the variant's clauses in that dtype and the worst err/(u*S) "
            "of its checks (a pass needs every element within K)."), "", *_matrix(res)]
    if bad:
        out += ["", "### Failures", ""]
        for r in bad:
            out.append(f"- **{r['status']}** `{check_id(r)}`: {r['message'][:400]}")
            if r.get("replay"):
                out.append(f"  replay: `{r['replay']}`")
    out += ["", f"<details><summary>Every clause ({len(table.rows)} rows)</summary>", "",
            render_markdown(table, link=False), "", "</details>", ""]
    return "\n".join(out)

