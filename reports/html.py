"""Self-contained HTML pages of one implementation's results: no scripts, no network.

`implementation_pages` turns one results record into an overview page (what was
tested, verdict counts, known deviations) and one page per variant with a section per
check run: its verdict, the histogram of err/(u*S) with K marked, the share of elements
judged versus ill-conditioned, the error per step of a trajectory, and the worst input
in hex and decimal with the command that replays it.
"""
from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from adamconf.reports.svg import histogram, line_chart, share_bar
from adamconf.reports.table import API, LABELS, check_id, compared, fmt_ratio, number

CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;font-size:14px}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.6em}h3{font-size:1.05em;margin:0 0 .4em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f4f4f4;font-weight:600}code,pre{background:#f4f4f4;font-size:12px}pre{padding:6px;overflow-x:auto}
a{color:#1a4f8a}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{background:#b9e4b9}.pass-mid{background:#d9efb4}.pass-near{background:#f3ec9c}
.fail{background:#f29b9b;font-weight:600}.error{background:#f7c27a;font-weight:600}
.known-deviation{background:#d8c6ee}.unsupported{background:#e3e3e3;color:#555}
.not-applicable{background:#fafafa;color:#aaa}.uncovered{background:#fff;color:#888;font-style:italic}
.badge{padding:1px 6px;border-radius:3px;font-size:.9em}
section.check{border:1px solid #ddd;border-radius:4px;padding:.6em .8em;margin:1em 0}
section.check:target{outline:3px solid #1a4f8a}
.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.worst{background:#fff3c4;font-weight:600}.muted{color:#666}.legend span{display:inline-block;padding:1px 6px;margin-right:4px;border:1px solid #ccc}
"""

VERDICT_NOTES = (
    ("pass", "pass: worst err/(u*S) at most K/8"), ("pass-mid", "pass: up to K/2"), ("pass-near", "pass: above K/2"),
    ("fail", "fail"), ("error", "error: could not judge"), ("known-deviation", "known deviation (a finding)"),
    ("unsupported", "unsupported by the backend"), ("not-applicable", "not applicable"),
    ("uncovered", "uncovered: no check yet"),
)


def page(title: str, body: str, css: str = "") -> str:
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}{css}</style></head><body>\n{body}\n</body></html>\n")


def legend() -> str:
    return ("<p class='legend'>" + "".join(f"<span class='{c}'>{escape(t)}</span>" for c, t in VERDICT_NOTES)
            + "</p>")


def html_table(rows: list[list[str]], header: list[str], cls: str = "") -> str:
    """A table of already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><tr>{head}</tr>{body}</table>"


def stamp(res: dict[str, Any]) -> str:
    """What was tested, in one paragraph."""
    env = res.get("environment", {})
    pk = dict(env.get("packages", {}), **res.get("backend_versions", {}))
    seed = f", seed {res['seed']}" if res.get("seed") is not None else ""
    if res.get("exact_order"):
        seed += (f", exact mode: bit for bit against the op order <code>{escape(res['exact_order'])}</code> "
                 "(ratios count representable values of the dtype)")
    return (f"<p class='muted'>adamconf {escape(env.get('adamconf', '?'))}, spec {escape(env.get('spec_hash', '?')[:19])}, "
            f"profile <code>{escape(res['profile'])}</code>{seed}, {res['examples']} examples per check, "
            f"{res['seconds']:.0f} s{' (interrupted)' if res.get('interrupted') else ''}. "
            f"Python {escape(env.get('python', '?'))} on {escape(env.get('platform', '?'))}, CPU {escape(env.get('cpu', '?'))}; "
            + escape(", ".join(f"{k} {v}" for k, v in pk.items())) + ".</p>")


def findings_html(res: dict[str, Any]) -> str:
    fs = res.get("findings") or []
    if not fs:
        return ""
    out = [f"<h2 id='findings'>Known deviations ({len(fs)})</h2>",
           "<p>Declared in the backend's findings file; a failure one explains is reported as a known deviation.</p>"]
    for f in fs:
        seen = ", ".join(f["observed_in"]) or "not observed in this run"
        out.append(f"<h3 id='finding-{escape(f['id'])}'>{escape(f['id'])}</h3><p>{escape(f['summary'])}</p>"
                   f"<p class='muted'>variants {escape(', '.join(f['variants']))}; checks {escape(', '.join(f['checks']))}; "
                   f"observed in {escape(seen)}</p><p class='muted'>evidence: {escape(f['evidence'])}</p>")
    return "\n".join(out)


# -- values --------------------------------------------------------------------------


def decimal(hex_value: str, dtype: str) -> str:
    """The shortest decimal that reads back as this value in its dtype."""
    x = float.fromhex(hex_value)
    if dtype == "bfloat16":
        import ml_dtypes
        return str(ml_dtypes.bfloat16(x))
    return str(np.dtype(dtype).type(x)) if dtype in ("float16", "float32") else repr(x)


def _array_cells(a: dict[str, Any], mark: int | None) -> tuple[str, str]:
    hexes, decs = [], []
    for j, h in enumerate(a["hex"]):
        wrap = (lambda s: f"<span class='worst'>{s}</span>") if j == mark else (lambda s: s)
        hexes.append(wrap(escape(h)))
        decs.append(wrap(escape(decimal(h, a["dtype"]))))
    return f"<code>{', '.join(hexes) or '(empty)'}</code>", ", ".join(decs) or "(empty)"


def _shape(a: dict[str, Any]) -> str:
    return "x".join(map(str, a["shape"])) or "scalar"


def _hyper_rows(h: dict[str, Any]) -> list[list[str]]:
    rows = []
    for k, v in h.items():
        if isinstance(v, dict) and "hex" in v:
            rows.append([escape(k), f"<code>{escape(v['hex'])}</code>", escape(repr(float.fromhex(v["hex"])))])
        elif v not in (None, False):
            rows.append([escape(k), "", escape(str(v))])
    return rows


def worst_input(run: dict[str, Any]) -> str:
    """The kept worst input: where its worst element is, the case in hex and decimal,
    and the replay command."""
    wc = run.get("worst_case")
    if not wc:
        return "<p class='muted'>No input kept: this check compares no numbers.</p>"
    case, out = wc["case"], []
    if wc.get("observed"):
        fld = f"{wc['field']}[{wc['variable']}] element {wc['element']}"
        ex = wc["exact"]
        out.append(html_table([[escape(fld), f"<code>{escape(wc['observed']['hex'])}</code> = {escape(wc['observed']['decimal'])}",
                                escape(ex["decimal"]), f"{number(wc['scale']):.4g}", fmt_ratio(wc["ratio"]),
                                fmt_ratio(wc.get("ulps"))]],
                              ["worst element", "backend (hex = decimal)", "exact", "S", "err/(u*S)", "ulps"]))
    st = case["state"]
    meta = f"variant {escape(case['variant'])}, {escape(case['dtype'])}, iterations {st['iterations']}"
    if st.get("beta1_power") is not None:
        meta += (f", beta1_power <code>{escape(st['beta1_power'])}</code>, "
                 f"beta2_power <code>{escape(st['beta2_power'])}</code>")
    out.append(f"<p>{meta}</p>")
    out.append(html_table(_hyper_rows(case["hyper"]), ["hyperparameter", "hex", "decimal"]))
    rows = []
    mark_var, mark_el, mark_field = wc.get("variable"), wc.get("element"), wc.get("field")
    for i, g in enumerate(case["grads"]):
        for name in ("params", "m", "v", "vhat", "ema"):
            arrs = st.get(name)
            if arrs:
                h, d = _array_cells(arrs[i], mark_el if (i == mark_var and name == mark_field) else None)
                rows.append([f"{i}", name, _shape(arrs[i]), h, d])
        if g is None:
            rows.append([f"{i}", "grad", "", "None", ""])
        elif g.get("sparse"):
            h, d = _array_cells(g["values"], None)
            rows.append([f"{i}", f"grad (sparse, indices {escape(str(g['indices']))})", _shape(g["values"]), h, d])
        else:
            h, d = _array_cells(g, None)
            rows.append([f"{i}", "grad", _shape(g), h, d])
    out.append(html_table(rows, ["var", "input", "shape", "hex", "decimal"]))
    if wc.get("replay"):
        out.append(f"<p>replay: <code>{escape(wc['replay'])}</code></p>")
    return "\n".join(out)


# -- one check run -------------------------------------------------------------------


def _clauses_of(res: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in res["clauses"] if c["variant"] == run["variant"] and run["check"] in c["checks"]]


def check_section(res: dict[str, Any], run: dict[str, Any]) -> str:
    st = run["status"]
    cls = st.replace(" ", "-")
    clauses = _clauses_of(res, run)
    out = [f"<section class='check' id='{escape(check_id(run))}'>",
           f"<h3>{escape(run['check'])} &middot; {escape(run['dtype'])} <span class='badge {cls}'>{escape(st)}</span></h3>"]
    if clauses:
        out.append("<p>clauses: " + ", ".join(f"<span title='{escape(c['text'])}'>{escape(c['clause'])}</span>"
                                                for c in clauses) + "</p>")
    if run["dtype"] == API:
        if run.get("clause_status"):
            out.append(html_table([[escape(c), f"<span class='badge {v.replace(' ', '-')}'>{escape(v)}</span>"]
                                   for c, v in run["clause_status"].items()], ["clause", "verdict"]))
        if run.get("message"):
            out.append(f"<p>{escape(run['message'])}</p>")
        out.append("</section>")
        return "\n".join(out)
    judged = sum(run.get("histogram") or [])
    wc = run.get("worst_case") or {}
    if run["examples"]:
        out.append(f"<p>worst err/(u*S) <b>{fmt_ratio(run['worst_ratio'])}</b> (K = {run['k']:g})"
                   + (f", {fmt_ratio(wc['ulps'])} ulps at that element" if "ulps" in wc else "")
                   + f"; {run['examples']} examples, {judged} elements judged ({run.get('ieee', 0)} by their IEEE outcome), "
                   f"{run['ill']} ill-conditioned; "
                   + (f"{100 * run['binding']:.0f}% of examples bind the feature; " if run.get("binding") is not None else "")
                   + f"{run['seconds']:.2f} s</p>")
    if run.get("message"):
        out.append(f"<p>{escape(run['message'])}</p>")
    if run.get("example"):
        out.append(f"<p>minimal failing example:</p><pre>{escape(run['example'])}</pre>")
    if run.get("replay"):
        out.append(f"<p>replay the failure: <code>{escape(run['replay'])}</code></p>")
    if run["examples"] and (run.get("histogram") or run.get("by_step")):
        out.append("<div class='plots'>" + plots(res, run) + "</div>")
    if run["examples"]:
        out.append("<details><summary>worst input</summary>" + worst_input(run) + "</details>"
                   if st == "pass" else "<h4>worst input</h4>" + worst_input(run))
    out.append("</section>")
    return "\n".join(out)


def plots(res: dict[str, Any], run: dict[str, Any]) -> str:
    edges = [float(b) for b in res["bins"]]
    parts = []
    if run.get("histogram"):
        parts.append(histogram(run["histogram"], edges, float(run["k"]),
                               title=f"err/(u*S), {run['variant']} {run['dtype']} {run['check']}"))
        judged, ieee = sum(run["histogram"]), run.get("ieee", 0)
        parts.append(share_bar([("judged by K*u*S", judged - ieee), ("ill-conditioned", run["ill"]),
                                ("judged by IEEE outcome", ieee)],
                               title="elements judged (by the bound, by their IEEE outcome) versus ill-conditioned"))
    if run.get("by_step"):
        xs = [s for s, _ in run["by_step"]]
        ys = [number(r) for _, r in run["by_step"]]
        k = float(run["k"])
        parts.append(line_chart([("worst err/(u*S)", xs, ys), (f"K = {k:g}", xs, [k] * len(xs))],
                                title="worst err/(u*S) at each step of the trajectories", x_label="step",
                                y_label="err/(u*S)", log_y=any(y > 0 for y in ys), width=460, height=220))
    return "\n".join(parts)


# -- pages ---------------------------------------------------------------------------


def _overview_matrix(res: dict[str, Any], variant: str) -> str:
    """Checks x dtypes of one variant, each cell its verdict and worst ratio, linked."""
    runs = [r for r in res["checks"] if r["variant"] == variant]
    cols = [d for d in list(res["dtypes"]) + [API] if any(r["dtype"] == d for r in runs)]
    names = list(dict.fromkeys(r["check"] for r in runs))
    by = {(r["check"], r["dtype"]): r for r in runs}
    rows = []
    for n in names:
        row = [escape(n)]
        for d in cols:
            r = by.get((n, d))
            if r is None:
                row.append("")
                continue
            text = fmt_ratio(r["worst_ratio"]) if r["status"] == "pass" and compared(r) else LABELS[r["status"]]
            row.append(f"<a class='badge {r['status'].replace(' ', '-')}' href='#{escape(check_id(r))}'>{escape(text)}</a>")
        rows.append(row)
    return html_table(rows, ["check"] + [escape(d) for d in cols])


def variant_page(res: dict[str, Any], variant: str) -> str:
    runs = [r for r in res["checks"] if r["variant"] == variant]
    body = [f"<p><a href='../index.html'>all implementations</a> &middot; <a href='index.html'>{escape(res['backend'])}</a></p>",
            f"<h1>{escape(res['backend'])}: {escape(variant)}</h1>", stamp(res), legend(),
            "<h2>Checks</h2><p>Each cell: the verdict, and for a pass the worst err/(u*S); click for the details.</p>",
            _overview_matrix(res, variant)]
    for d in list(res["dtypes"]) + [API]:
        mine = [r for r in runs if r["dtype"] == d]
        if mine:
            body.append(f"<h2>{escape(d)}</h2>")
            body += [check_section(res, r) for r in mine]
    return page(f"adamconf {res['backend']} {variant}", "\n".join(body))


def overview_page(res: dict[str, Any]) -> str:
    rows = []
    verdicts = res.get("verdicts") or list(LABELS)
    for vid, counts in res["summary"].items():
        rows.append([f"<a href='{escape(vid)}.html'>{escape(vid)}</a>"]
                    + [f"<span class='badge {v.replace(' ', '-')}'>{counts.get(v, 0)}</span>" if counts.get(v, 0) else "0"
                       for v in verdicts])
    flush = ""
    if res.get("flushes_denormals"):
        flush = (f"<p>The backend declares flush-to-zero arithmetic in {escape(', '.join(res['flushes_denormals']))}: "
                 "there each operation may lose up to the smallest normal number.</p>")
    body = ["<p><a href='../index.html'>all implementations</a></p>",
            f"<h1>adamconf conformance: {escape(res['backend'])}</h1>", stamp(res), flush,
            "<h2>Clause cells by variant</h2><p>Clause x dtype cells; an API clause is one cell.</p>",
            html_table(rows, ["variant"] + [escape(v) for v in verdicts]), findings_html(res)]
    return page(f"adamconf {res['backend']}", "\n".join(body))


def implementation_pages(res: dict[str, Any]) -> dict[str, str]:
    """File name -> HTML: index.html (the overview) and VARIANT.html for each variant."""
    out = {"index.html": overview_page(res)}
    for vid in res["variants"]:
        out[f"{vid}.html"] = variant_page(res, vid)
    return out
