"""Markdown summary of a run (fits a CI step summary)."""
from __future__ import annotations

from typing import Any


def _ratio(x: Any) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"


def _findings(res: dict[str, Any]) -> list[str]:
    """Known deviations of the backend from its pages, with their evidence."""
    fs = res.get("findings") or []
    if not fs:
        return []
    out = ["", f"## Known deviations ({len(fs)})", "",
           "Declared by the backend's findings file; a failure they explain is reported as a known deviation.", ""]
    for f in fs:
        seen = ", ".join(f["observed_in"]) if f["observed_in"] else "not observed in this run"
        out += [f"### {f['id']}", "", f["summary"], "",
                f"- variants: {', '.join(f['variants'])}; checks: {', '.join(f['checks'])}"
                + (f"; clauses: {', '.join(f['clauses'])}" if f.get("clauses") else ""),
                f"- observed in: {seen}", f"- evidence: {f['evidence']}", ""]
    devs = [c for c in res["checks"] if c["status"] == "known deviation"]
    if devs:
        out += ["| variant | dtype | check | observed |", "|---|---|---|---|"]
        out += [f"| {c['variant']} | {c['dtype']} | {c['check']} | {c['message'].split('Observed: ', 1)[-1][:200]} |"
                for c in devs]
    return out


def _stamp(res: dict[str, Any]) -> list[str]:
    """What was tested: versions, spec hash, machine, profile and budget."""
    env = res.get("environment", {})
    pk = dict(env.get("packages", {}), **res.get("backend_versions", {}))
    return [f"adamconf {env.get('adamconf', '?')}, spec {env.get('spec_hash', '?')[:19]}, "
            f"profile `{res['profile']}`" + (f", seed {res['seed']}" if res.get("seed") is not None else "")
            + f", {res.get('examples', '?')} examples per check, {res['seconds']:.1f} s"
            + (" (interrupted)" if res.get("interrupted") else ""), "",
            f"Python {env.get('python', '?')} on {env.get('platform', '?')}, CPU {env.get('cpu', '?')}; "
            + ", ".join(f"{k} {v}" for k, v in pk.items())]


def render(res: dict[str, Any]) -> str:
    verdicts = res.get("verdicts") or ["pass", "fail", "error", "known deviation", "unsupported", "not applicable",
                                       "uncovered"]
    lines = [f"# adamconf conformance: backend `{res['backend']}`", "", *_stamp(res), "",
             "## Clauses by variant (clause x dtype cells; an API clause is one cell)", "",
             "| variant | " + " | ".join(verdicts) + " |", "|---|" + "---:|" * len(verdicts)]
    for vid, row in res["summary"].items():
        lines.append(f"| {vid} | " + " | ".join(str(row.get(v, 0)) for v in verdicts) + " |")
    if res.get("exact_order"):
        lines += ["", f"Exact mode: every numeric check demands bit-for-bit equality with the op order "
                  f"`{res['exact_order']}` emulated in the target format (K = 0; ratios and histograms count "
                  "representable values of the dtype between the backend and the order; every element is judged, "
                  "ill-conditioned ones included)."]
    if res.get("flushes_denormals"):
        lines += ["", f"The backend declares flush-to-zero arithmetic in {', '.join(res['flushes_denormals'])}: "
                  "there each operation may lose up to the smallest normal number."]
    lines += ["", "## Checks", "",
              "Elements judged: by K*u*S, or by their IEEE outcome (inf or NaN, or an overflow the exact values "
              "decide); the rest are ill-conditioned and not judged. Binding: the share of examples on which the "
              "feature under test changes the exact result by more than the bound.", "",
              "| variant | dtype | check | verdict | worst err/(u*S) | K | examples | judged | by IEEE outcome | ill-conditioned | binding |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res["checks"]:
        lines.append(f"| {c['variant']} | {c['dtype']} | {c['check']} | {c['status']} | {_ratio(c['worst_ratio'])} | "
                     f"{c['k']:g} | {c['examples']} | {judged_share(c)} | {c.get('ieee', '')} | {c['ill']} | {_binding(c)} |")
    fails = [c for c in res["checks"] if c["status"] in ("fail", "error")]
    if fails:
        lines += ["", "## Failures", ""]
        for c in fails:
            clauses = [x["clause"] for x in res["clauses"] if x["variant"] == c["variant"] and c["check"] in x["checks"]]
            lines += [f"### {c['variant']} / {c['dtype']} / {c['check']}", "",
                      f"clauses: {', '.join(clauses) or '-'}", "", f"{c['message']}", ""]
            if c.get("example"):
                lines += ["```", c["example"], "```", ""]
            if c.get("replay"):
                lines += [f"replay: `{c['replay']}`", ""]
    lines += _findings(res)
    unc = sorted({x["clause"] for x in res["clauses"] if "uncovered" in x["status"].values()})
    if unc:
        lines += ["", f"## Uncovered clauses ({len(unc)})", "", "No check tests these yet; they are not counted as passing.", ""]
        lines += [f"- {u}" for u in unc]
    return "\n".join(lines) + "\n"


def judged_share(check: dict) -> str:
    """The share of compared elements that were judged ("" before elements were counted)."""
    n = check.get("elements")
    if not n:
        return ""
    return f"{100.0 * (n - check['ill']) / n:.1f}% of {n}"


def _binding(c: dict) -> str:
    """The share of examples that bind the check's feature (adamconf.binding), or '-'."""
    b = c.get("binding")
    return "-" if b is None else f"{100 * b:.0f}% of {c.get('binding_examples', 0)}"
