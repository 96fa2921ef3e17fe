"""The side-by-side table: rows variant x clause, columns implementation x dtype.

Built from result records only (one per implementation); the HTML index, the Markdown
index and the CI step summary all render this one model. A cell is a clause cell of
one implementation: its verdict, the worst err/(u*S) of the checks that judged it, the
error in ulps at that worst input, and the check run it links to.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

API = "api"
# Short cell labels for the verdicts that carry no ratio.
LABELS = {"pass": "pass", "fail": "fail", "error": "error", "known deviation": "known dev.",
          "unsupported": "unsup.", "not applicable": "n/a", "uncovered": "uncov."}


def number(x: Any) -> float:
    """A ratio as results.json writes it (non-finite values are strings)."""
    return float(x) if x is not None else math.nan


def fmt_ratio(x: Any) -> str:
    r = number(x)
    if math.isnan(r):
        return "-"
    return "0" if r == 0 else f"{r:.2g}"


def compared(run: dict[str, Any]) -> bool:
    """Whether a check run compared numbers (refusal checks and API checks do not)."""
    return bool(run.get("worst_case")) or sum(run.get("histogram") or []) > 0


def check_id(run: dict[str, Any]) -> str:
    """The id of a check run, as the runner and `adamconf replay --cell` name it."""
    return f"{run['variant']}-{run['dtype']}-{run['check']}"


@dataclass
class Impl:
    """One implementation's results and where its pages live, relative to the index."""

    name: str
    res: dict[str, Any]
    href: str = ""                    # folder of its pages, relative to the index ("numpy/")
    note: str = ""                    # e.g. "not re-run here: tensorflow is not installed"

    @property
    def columns(self) -> list[str]:
        return list(self.res["dtypes"])

    @property
    def versions(self) -> str:
        v = self.res.get("backend_versions") or {}
        return ", ".join(f"{k} {x}" for k, x in v.items())


@dataclass
class Cell:
    verdict: str
    ratio: float = math.nan           # NaN where nothing numeric was judged
    k: float = math.nan
    ulps: float = math.nan
    run: dict[str, Any] | None = None  # the check run behind the cell (the worst one)
    finding: str = ""                 # the summary of the finding behind a known deviation
    href: str = ""

    @property
    def text(self) -> str:
        """What the cell says: the ratio where one was measured, else the verdict."""
        if not math.isnan(self.ratio) and self.verdict in ("pass", "fail", "known deviation"):
            r = fmt_ratio(self.ratio)
            return r if self.verdict == "pass" else f"{LABELS[self.verdict]} {r}"
        return LABELS.get(self.verdict, self.verdict)

    @property
    def title(self) -> str:
        """The long form, for a tooltip."""
        if self.run is None:
            return self.verdict
        r = self.run
        out = [f"{self.verdict}: {r['variant']} {r['dtype']}, check {r['check']}"]
        if not math.isnan(self.ratio):
            out.append(f"worst err/(u*S) {fmt_ratio(self.ratio)} (K = {self.k:g}) over {r['examples']} examples")
        if not math.isnan(self.ulps):
            out.append(f"{fmt_ratio(self.ulps)} ulps at that input")
        if self.finding:
            out.append(f"finding: {self.finding}")
        elif r.get("message"):
            out.append(r["message"][:300])
        return "; ".join(out)

    @property
    def shade(self) -> str:
        """A CSS class: the verdict, and for a pass how close the worst error came to K."""
        base = self.verdict.replace(" ", "-")
        if self.verdict != "pass" or math.isnan(self.ratio) or math.isnan(self.k) or self.k <= 0:
            return base
        q = self.ratio / self.k
        return "pass-near" if q > 0.5 else ("pass-mid" if q > 0.125 else "pass")


@dataclass
class Row:
    variant: str
    clause: str
    kind: str
    page: str
    section: str
    text: str
    is_api: bool                      # judged once per implementation (an "api" cell), not per dtype
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)   # (impl, dtype or "api")

    @property
    def area(self) -> str:
        return self.clause.split(".")[1] if self.clause.count(".") >= 2 else ""


@dataclass
class Table:
    impls: list[Impl]
    rows: list[Row]

    def groups(self) -> list[tuple[str, str, list[Row]]]:
        """(variant, area, rows) in row order."""
        out: list[tuple[str, str, list[Row]]] = []
        for r in self.rows:
            if not out or out[-1][0] != r.variant or out[-1][1] != r.area:
                out.append((r.variant, r.area, []))
            out[-1][2].append(r)
        return out

    def columns(self) -> list[tuple[Impl, str]]:
        return [(i, d) for i in self.impls for d in i.columns]


def _findings(res: dict[str, Any]) -> dict[str, str]:
    return {f["id"]: f["summary"] for f in res.get("findings", [])}


def clause_cell(res: dict[str, Any], runs: dict[tuple[str, str, str], dict[str, Any]], clause: dict[str, Any],
                col: str, href: str = "") -> Cell | None:
    """The cell of one clause in one column (a dtype, or "api"), or None when the
    clause has no verdict there."""
    verdict = clause["status"].get(col)
    if verdict is None:
        return None
    mine = [runs[k] for k in ((clause["variant"], col, n) for n in clause["checks"]) if k in runs]
    if not mine:
        return Cell(verdict)
    # the run that decided the verdict; among those, the one with the largest ratio
    deciding = [r for r in mine if r["status"] == verdict] or mine
    run = max(deciding, key=lambda r: number(r["worst_ratio"]) if col != API else 0.0)
    ratios = [number(r["worst_ratio"]) for r in mine if compared(r)]
    wc = run.get("worst_case") or {}
    cell = Cell(verdict, max(ratios) if ratios and verdict in ("pass", "fail", "known deviation") else math.nan,
                float(run["k"]), number(wc.get("ulps")), run, href=f"{href}{run['variant']}.html#{check_id(run)}")
    if verdict == "known deviation" and run.get("finding"):
        cell.finding = _findings(res).get(run["finding"], "")
    return cell


def build(impls: Sequence[Impl], area_order: Sequence[str] = ()) -> Table:
    """Rows for every (variant, clause) any implementation ran, in spec order of the
    variants (as the first implementation lists them), then area, then clause id."""
    variants: list[str] = []
    for i in impls:
        variants += [v for v in i.res["variants"] if v not in variants]
    rank = {a: n for n, a in enumerate(area_order)}
    rows: dict[tuple[str, str], Row] = {}
    for impl in impls:
        runs = {(r["variant"], r["dtype"], r["check"]): r for r in impl.res["checks"]}
        for c in impl.res["clauses"]:
            row = rows.setdefault((c["variant"], c["clause"]), Row(c["variant"], c["clause"], c["kind"], c["page"],
                                                                   c["section"], c["text"], API in c["status"]))
            for col in list(impl.columns) + [API]:
                cell = clause_cell(impl.res, runs, c, col, impl.href)
                if cell is not None:
                    row.cells[(impl.name, col)] = cell
    ordered = sorted(rows.values(), key=lambda r: (variants.index(r.variant), rank.get(r.area, len(rank)), r.area,
                                                   r.clause))
    return Table(list(impls), ordered)
