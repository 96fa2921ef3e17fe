"""Rendering a `DiffResult`: a readable table, a JSON record, a self-contained HTML page."""
from __future__ import annotations

import dataclasses
from html import escape
from typing import Any

from adamconf.diff import Cause, DiffResult, Side, StepGap, pct
from adamconf.reports.svg import line_chart


def _checkpoints(steps: int) -> list[int]:
    """Steps 1, 2, 5, 10, 20, 50, ... up to the last one."""
    out, base = [], 1
    while base <= steps:
        out += [s for s in (base, 2 * base, 5 * base) if s <= steps]
        base *= 10
    return sorted(set(out + [steps]))


def _hyper_text(h: Any) -> str:
    return " ".join(f"{f.name}={getattr(h, f.name)!r}" for f in dataclasses.fields(h)
                    if getattr(h, f.name) != f.default or f.name in ("learning_rate", "beta_1", "beta_2", "epsilon"))


def _where(r: DiffResult, g: StepGap) -> str:
    return f"step {g.step}, {r.elements[g.at]}: {g.ulps:.3g} ulps (relative {g.rel:.3g}, absolute {g.abs:.3g})"


def _side(side: Side, r: DiffResult) -> dict[str, Any]:
    return {"label": side.label, "variant": side.variant.id, "backend": side.backend_ref,
            "how": side.how(r.dtype), "flushes_denormals": list(side.flush)}


def _cause(c: Cause) -> dict[str, Any]:
    return {"cause": c.name, "kind": c.kind, "fields": {k: {"a": a, "b": b} for k, (a, b) in c.fields.items()},
            "exercised": c.exercised, "idle": c.idle, "active": c.active, "alone": c.alone,
            "share": c.share, "final_share": c.final_share, "hint": c.hint, "description": c.describe()}


def as_dict(r: DiffResult) -> dict[str, Any]:
    """The whole result as plain JSON-ready data."""
    first = r.first
    faith = lambda f: None if f is None else {"k": f.k, "worst_ratio": f.worst, "within": f.within,
                                              "first_out": f.first_out}
    return {
        "verdict": r.verdict(),
        "a": _side(r.a, r), "b": _side(r.b, r),
        "dtype": r.dtype, "steps": r.steps, "problem": {"name": r.problem.name, "description": r.problem.description},
        "defaults": r.defaults,
        "hyper": {"a": dataclasses.asdict(r.hyper_a), "b": dataclasses.asdict(r.hyper_b)},
        "first": None if first is None else {**dataclasses.asdict(first), "element": r.elements[first.at]},
        "largest": {**dataclasses.asdict(r.largest), "element": r.elements[r.largest.at]},
        "final": {**dataclasses.asdict(r.final), "element": r.elements[r.final.at]},
        "growth_exponent": r.growth,
        "per_step": [{**dataclasses.asdict(g), "explained_ulps": m} for g, m in zip(r.series, r.model_ulps)],
        "causes": [_cause(c) for c in r.causes],
        "residual": {"share": r.residual, "final_share": r.final_residual, "kind": r.residual_kind},
        "faithfulness": {"a": faith(r.faith_a), "b": faith(r.faith_b)},
        "interacting_pairs": r.pairs,
        "notes": r.notes,
    }


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _cause_rows(r: DiffResult) -> list[list[str]]:
    rows = []
    for c in sorted((c for c in r.causes if c.active), key=lambda c: -c.share):
        many = len(c.fields) > 1
        a = ", ".join(f"{k}={a}" if many else str(a) for k, (a, _) in c.fields.items())
        b = ", ".join(f"{k}={b}" if many else str(b) for k, (_, b) in c.fields.items())
        rows.append([c.name, a, b, pct(c.alone) if c.kind != "rest" else "-", pct(c.share), pct(c.final_share)])
    rows.append([f"residual ({r.residual_kind})", "", "", "", pct(r.residual), pct(r.final_residual)])
    return rows


def render_text(r: DiffResult) -> str:
    out = [r.verdict(), "",
           f"A  {r.a.how(r.dtype)}", f"B  {r.b.how(r.dtype)}",
           f"problem {r.problem.name}: {r.problem.description}; {r.steps} steps; {r.dtype}; defaults: {r.defaults}",
           f"hyperparameters A: {_hyper_text(r.hyper_a)}"]
    out.append("                B: " + ("(the same)" if r.hyper_b == r.hyper_a else _hyper_text(r.hyper_b)))
    first = r.first
    out += ["", "where they part"]
    if first is None:
        out.append("  nowhere: the parameters are equal at every step")
    else:
        out += [f"  first    {_where(r, first)}", f"  largest  {_where(r, r.largest)}",
                f"  final    {_where(r, r.final)}"]
        if r.growth is not None:
            out.append(f"  growth   gap ~ step^{r.growth:.2f} over the second half of the run")
        out += ["", f"gap per step (largest over elements; ulps of {r.dtype}; explained = the gap the causes below make)"]
        rows = [[str(g.step), f"{g.ulps:.4g}", f"{r.model_ulps[g.step - 1]:.4g}", f"{g.rel:.3g}", f"{g.abs:.3g}",
                 r.elements[g.at]] for g in (r.series[s - 1] for s in _checkpoints(r.steps))]
        out += ["  " + x for x in _table(rows, ["step", "ulps", "explained", "relative", "absolute", "where"])]
        out += ["", "causes (A aligned on each, exactly; shares of |B - A| over all steps, and at the final step)"]
        out += ["  " + x for x in _table(_cause_rows(r), ["cause", "A", "B", "alone", "share", "final step"])]
    idle = [c for c in r.causes if not c.exercised]
    inert = [c for c in r.causes if c.exercised and not c.active]
    if idle:
        out += ["", "not exercised by this run: " + "; ".join(f"{c.name} ({c.idle})" for c in idle)]
    if inert:
        out += ["", "no effect in this run (rounded to the same numbers in " + r.dtype + "): "
                + "; ".join(c.name for c in inert)]
    for p in r.pairs:
        out.append(f"interact: {p['causes'][0]} and {p['causes'][1]} together remove {pct(p['together'])} "
                   f"of the gap, alone {pct(p['alone'][0])} and {pct(p['alone'][1])}")
    out += [f"note: {n}" for n in r.notes]
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "th{background:#f4f4f4}.verdict{font-size:1.15em;font-weight:bold}code{background:#f4f4f4}")


def _html_table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(r: DiffResult) -> str:
    """A self-contained page: verdict, sides, the gap per step as an inline SVG, causes."""
    steps = [g.step for g in r.series]
    chart = line_chart([("measured gap B - A", steps, [g.ulps for g in r.series]),
                        ("explained by the causes", steps, r.model_ulps)],
                       title=f"gap per step, largest over elements (ulps of {r.dtype})",
                       x_label="step", y_label="ulps", log_y=True)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>adamconf diff {escape(r.a.label)} "
              f"{escape(r.b.label)}</title><style>{_CSS}</style></head><body>"),
             f"<h1>adamconf diff</h1><p class='verdict'>{escape(r.verdict())}</p>",
             _html_table([["A", r.a.label, r.a.how(r.dtype)], ["B", r.b.label, r.b.how(r.dtype)]],
                         ["side", "given as", "computed as"]),
             (f"<p>problem <b>{escape(r.problem.name)}</b>: {escape(r.problem.description)}; {r.steps} steps; "
              f"{escape(r.dtype)}; defaults: {escape(r.defaults)}</p>"), chart]
    if r.first is not None:
        parts.append("<h2>where they part</h2>" + _html_table(
            [["first", _where(r, r.first)], ["largest", _where(r, r.largest)], ["final", _where(r, r.final)]],
            ["", "step, element, gap"]))
        parts.append("<h2>causes</h2><p>Side A aligned on each cause (and every subset of the active ones), "
                     "computed exactly; shares of |B - A| over all steps and at the final step.</p>")
        parts.append(_html_table(_cause_rows(r), ["cause", "A", "B", "alone", "share", "final step"]))
    parts += [f"<p>note: {escape(n)}</p>" for n in r.notes]
    parts.append("</body></html>")
    return "\n".join(parts)
