"""`adamconf report --all`: fresh runs of every bundled backend that is installed, and
the published pages built from them.

Each backend runs as its own `adamconf check --profile ci` process (so TensorFlow,
torch and JAX never share one interpreter) into DIR/NAME; a backend that judges
nothing here (its library is not installed, no device) leaves the previous results in
DIR/NAME untouched, and the index says they were not re-run. The pages are then built
from every DIR/*/results.json: DIR/index.html and DIR/index.md side by side, and
DIR/NAME/index.html plus one page per variant for each implementation.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from adamconf.loading import BUNDLED
from adamconf.reports import html, index
from adamconf.reports.load import load_results
from adamconf.reports.table import Impl, build
from adamconf.spec.model import CLAUSE_AREAS, Spec


@dataclass
class Outcome:
    name: str
    code: int            # the exit code of `adamconf check` (0 pass, 1 fail, 2 nothing judged / config)
    seconds: float
    why: str = ""        # the check's last stderr line when it judged nothing


def run_backend(name: str, out: Path, profile: str = "ci") -> Outcome:
    """One fresh `adamconf check` of a bundled backend into out/NAME. When it judges
    nothing, the previous results there are restored."""
    dest, keep = out / name, out / f".{name}.previous"
    if keep.exists():
        shutil.rmtree(keep)
    if dest.exists():
        dest.rename(keep)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "adamconf", "check", "--backend", name, "--profile", profile, "--quiet",
           "--out", str(dest)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if p.returncode in (0, 1):
        if keep.exists():
            shutil.rmtree(keep)
        return Outcome(name, p.returncode, took)
    if dest.exists():
        shutil.rmtree(dest)
    if keep.exists():
        keep.rename(dest)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return Outcome(name, p.returncode, took, lines[-1] if lines else f"exit code {p.returncode}")


def run_all(out: Path, names: Sequence[str], profile: str = "ci", jobs: int = 1,
            log: Callable[[str], None] = print) -> list[Outcome]:
    out.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> Outcome:
        log(f"adamconf check --backend {name} --profile {profile} --out {out / name} ...")
        o = run_backend(name, out, profile)
        what = {0: "passed", 1: "FAILED (results kept)"}.get(o.code, f"not re-run: {o.why}")
        log(f"  {name}: {what} ({o.seconds:.0f} s)")
        return o

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, names))


def _ordered(found: list[str]) -> list[str]:
    return [n for n in BUNDLED if n in found] + sorted(n for n in found if n not in BUNDLED)


@dataclass
class Pages:
    files: dict[Path, str]   # path -> HTML or Markdown
    rows: int                # the size of the index
    columns: int
    implementations: list[str]


def build_pages(out: Path, spec: Spec, notes: dict[str, str] | None = None) -> Pages:
    """The index and every implementation's pages, from out/*/results.json (ReportError
    on a file that is not valid results)."""
    notes = notes or {}
    found = sorted(p.parent.name for p in out.glob("*/results.json") if not p.parent.name.startswith("."))
    impls, files = [], {}
    for name in _ordered(found):
        res = load_results(out / name / "results.json")
        files.update({out / name / f: text for f, text in html.implementation_pages(res).items()})
        impls.append(Impl(name, res, href=f"{name}/", note=notes.get(name, "")))
    table = build(impls, CLAUSE_AREAS)
    titles = {v.id: v.api for v in spec.variants.values()}
    files[out / "index.html"] = index.render_html(table, titles)
    files[out / "index.md"] = index.index_markdown(table, titles)
    return Pages(files, len(table.rows), sum(len(i.columns) for i in impls), [i.name for i in impls])
