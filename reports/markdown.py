"""Markdown summary of a run (fits a CI step summary)."""
from __future__ import annotations

from typing import Any


def _ratio(x: Any) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"


def render(res: dict[str, Any]) -> str:
    lines = [f"# adamconf conformance: backend `{res['backend']}`", "",
             f"profile `{res['profile']}`" + (f", seed {res['seed']}" if res.get("seed") is not None else "")
             + f", {res['seconds']:.1f} s; " + ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items()), "",
             "## Clauses by variant (clause x dtype cells)", "",
             "| variant | pass | fail | error | unsupported | uncovered |", "|---|---:|---:|---:|---:|---:|"]
    for vid, row in res["summary"].items():
        lines.append(f"| {vid} | {row.get('pass', 0)} | {row.get('fail', 0)} | {row.get('error', 0)} | "
                     f"{row.get('unsupported', 0)} | {row.get('uncovered', 0)} |")
    lines += ["", "## Checks", "", "| variant | dtype | check | verdict | worst err/(u*S) | K | examples | ill-conditioned |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for c in res["checks"]:
        lines.append(f"| {c['variant']} | {c['dtype']} | {c['check']} | {c['status']} | {_ratio(c['worst_ratio'])} | "
                     f"{c['k']:g} | {c['examples']} | {c['ill']} |")
    fails = [c for c in res["checks"] if c["status"] in ("fail", "error")]
    if fails:
        lines += ["", "## Failures", ""]
        for c in fails:
            clauses = [x["clause"] for x in res["clauses"] if x["variant"] == c["variant"] and x["check"] == c["check"]]
            lines += [f"### {c['variant']} / {c['dtype']} / {c['check']}", "",
                      f"clauses: {', '.join(clauses) or '-'}", "", f"{c['message']}", ""]
            if c.get("example"):
                lines += ["```", c["example"], "```", ""]
            if c.get("replay"):
                lines += [f"replay: `{c['replay']}`", ""]
    unc = sorted({x["clause"] for x in res["clauses"] if "uncovered" in x["status"].values()})
    if unc:
        lines += ["", f"## Uncovered clauses ({len(unc)})", "", "No check tests these yet; they are not counted as passing.", ""]
        lines += [f"- {u}" for u in unc]
    return "\n".join(lines) + "\n"
