"""`adamconf selftest`: the gate proves its own power on the install it runs in.

The planted-bug corpus (`adamconf.corpus`) ships with the package. Every bug runs through
the ci profile in isolated workers, exactly as `adamconf check` would judge a backend,
and the number of ci cells that fail is counted per bug; the correct op orders run the
same plan and must pass every cell. A bug counts as caught when at least `target` cells
fail (a bug caught once only is caught by luck of the draw). Counting stops at the
target unless full counts are asked for; cells run in an order that puts the checks of
the bug's own area first, so a run spends its time on the bugs that are hard to catch.

The mutation score of a check is the share of the bugs it ran on that it caught (at
least one failing cell); of an area, the share of its bugs caught at the target. Both
count the cells that ran: with counting stopped at the target, a check late in a bug's
order may not have run at all (`--full` runs every cell).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from adamconf.checks import CHECKS, binds
from adamconf.reference.state import DTYPES
from adamconf.verdicts import BAD, FAIL, UNSUPPORTED

BUGS_MODULE = "adamconf.corpus.planted_bugs"
ORDERS_MODULE = "adamconf.corpus.op_orders"
# The checks that speak for each bug area run first, then the ones every variant has.
AREA_CHECKS: dict[str, list[str]] = {
    "sparse": ["sparse"], "clip": ["clipvalue", "clipnorm", "global_clipnorm", "clip-combined"],
    "decay": ["decay"], "schedule": ["schedule"], "amsgrad": ["amsgrad"], "weight_decay": ["weight_decay"],
    "ema": ["ema"], "state": ["none-grad", "dense", "trajectory"], "flush": ["special", "dense", "fresh"],
}
BASE_CHECKS = ["fresh", "dense", "trajectory", "example", "special"]


def check_order(area: str) -> list[str]:
    """Every numeric check, those that speak for `area` first."""
    return list(dict.fromkeys(AREA_CHECKS.get(area, []) + BASE_CHECKS + list(CHECKS)))


@dataclass
class Tally:
    """One corpus backend's run: the cells that failed, passed or could not be judged."""

    name: str
    kind: str                      # "bug" | "correct"
    area: str
    doc: str
    failed: list[str] = field(default_factory=list)    # cell ids
    passed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)    # "cell: message"
    cells: int = 0                 # judged cells (the bug's whole plan when run in full)
    complete: bool = False         # every cell of the plan ran
    seconds: float = 0.0
    load_error: str = ""

    @property
    def catches(self) -> int:
        return len(self.failed)

    @property
    def ok_correct(self) -> bool:
        """A correct order's verdict: judged somewhere, and no cell failed or errored."""
        return not self.load_error and not self.failed and not self.errors and self.cells > 0


def _plan(spec: Any, declared: Any, area: str) -> list[Any]:
    """The ci cells a corpus backend can be judged on, its area's checks first."""
    from adamconf.runner import Cell
    rank = {c: i for i, c in enumerate(check_order(area))}
    cells = []
    for vid in declared.variants:
        if vid not in spec.variants:
            continue
        variant, clauses = spec.variant(vid), spec.clauses_for(vid)
        for dtype in [d for d in DTYPES if d in declared.dtypes]:
            cells += [Cell(vid, dtype, c.name) for c in CHECKS.values()
                      if binds(c, clauses) and c.applies_to(variant, dtype) and c.features <= set(declared.features)]
    return sorted(cells, key=lambda c: rank[c.check])


def run_one(spec: Any, ref: str, kind: str, area: str, doc: str, *, target: int | None,
            timeout: float, shrink: bool = False) -> Tally:
    """Run one corpus backend through the ci plan in its own worker. For a bug, stop once
    `target` cells failed (None: run every cell); a correct order runs every cell."""
    from adamconf.runner import Runner
    from adamconf.worker import Pool, WorkerError
    t0 = time.perf_counter()
    name = ref.rpartition(":")[2]
    tally = Tally(name, kind, area, doc)
    pool = Pool(dict(backend=ref, profile="ci", seed=None, timeout=timeout, max_examples=None, findings_files=[],
                     out=None, cases_dir=None, shrink=shrink), 1)
    try:
        declared = pool.start()
    except WorkerError as e:
        tally.load_error = str(e)
        return tally
    try:
        runner = Runner(spec, declared, ref, profile="ci", timeout=timeout, executor=pool)
        cells = _plan(spec, declared, area)
        for cell in cells:
            run = runner.run_cell(cell)
            if run.status == UNSUPPORTED:
                continue
            tally.cells += 1
            if run.status == FAIL:
                tally.failed.append(cell.id)
            elif run.status in BAD:
                tally.errors.append(f"{cell.id}: {run.message}")
            else:
                tally.passed.append(cell.id)
            if kind == "bug" and target is not None and tally.catches >= target:
                break
        else:
            tally.complete = True
    finally:
        pool.close()
    tally.seconds = time.perf_counter() - t0
    return tally


def corpus_refs(only: Iterable[str] | None = None) -> list[tuple[str, str, str, str]]:
    """(ref, kind, area, first docstring line) for every correct order and planted bug,
    or for the named ones (ValueError for a name the corpus does not have)."""
    from adamconf.corpus import BUG_CLASSES, CORRECT
    rows = [(f"{ORDERS_MODULE}:{type(b).__name__}", "correct", "", _first_line(type(b))) for b in CORRECT]
    rows += [(f"{BUGS_MODULE}:{c.__name__}", "bug", c.expected_clause_area, _first_line(c)) for c in BUG_CLASSES]
    if only:
        names = {r[0].rpartition(":")[2]: r for r in rows}
        bad = [n for n in only if n not in names]
        if bad:
            raise ValueError(f"unknown corpus backend(s) {', '.join(bad)}; known: {', '.join(names)}")
        rows = [names[n] for n in dict.fromkeys(only)]
    return rows


def _first_line(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def run_all(spec: Any, rows: list[tuple[str, str, str, str]], *, target: int | None, jobs: int, timeout: float,
            log: Callable[[str], None] = lambda s: None) -> list[Tally]:
    """Every row on `jobs` threads, each driving one worker at a time; results in row order."""
    results: dict[int, Tally] = {}
    todo = list(enumerate(rows))
    lock = threading.Lock()

    def serve() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, (ref, kind, area, doc) = todo.pop(0)
            try:
                t = run_one(spec, ref, kind, area, doc, target=target, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - a harness failure fails the selftest, the others go on
                t = Tally(ref.rpartition(":")[2], kind, area, doc, load_error=f"harness error: {type(e).__name__}: {e}")
            with lock:
                results[i] = t
                log(_line(t, target, len(results), len(rows)))

    threads = [threading.Thread(target=serve, daemon=True) for _ in range(max(1, min(jobs, len(rows))))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [results[i] for i in range(len(rows))]


def _line(t: Tally, target: int | None, i: int, n: int) -> str:
    if t.load_error:
        what = f"could not be loaded: {t.load_error}"
    elif t.kind == "correct":
        what = f"{len(t.failed) + len(t.errors)} of {t.cells} cells failed" + ("" if t.ok_correct else " <- must be 0")
    else:
        what = f"caught in {t.catches} of {t.cells} cells run" + ("" if t.catches >= (target or 1) else " <- too few")
    return f"[{i}/{n}] {t.kind:7s} {t.name:32s} {what} ({t.seconds:.0f}s)"


@dataclass
class Score:
    caught: int = 0
    seen: int = 0
    fewest: int | None = None   # the fewest failing cells of a bug it caught (per check: its own cells)

    def text(self) -> str:
        return f"{self.caught}/{self.seen}" + (f" ({100 * self.caught / self.seen:.0f}%)" if self.seen else "")

    def note(self, cells: int) -> None:
        if cells:
            self.fewest = cells if self.fewest is None else min(self.fewest, cells)


def scores(tallies: list[Tally], target: int) -> tuple[dict[str, Score], dict[str, Score]]:
    """Per check: bugs it caught in at least one cell / bugs it ran on. Per area: bugs
    caught in at least `target` cells / bugs of the area."""
    by_check: dict[str, Score] = {}
    by_area: dict[str, Score] = {}
    for t in tallies:
        if t.kind != "bug":
            continue
        ran: dict[str, int] = {}
        for cid in t.passed + [e.split(":", 1)[0] for e in t.errors]:
            ran.setdefault(_check_of(cid), 0)
        for cid in t.failed:
            ran[_check_of(cid)] = ran.get(_check_of(cid), 0) + 1
        for chk, hits in ran.items():
            s = by_check.setdefault(chk, Score())
            s.seen += 1
            s.caught += hits > 0
            s.note(hits)
        a = by_area.setdefault(t.area, Score())
        a.seen += 1
        a.caught += t.catches >= target
        a.fewest = t.catches if a.fewest is None else min(a.fewest, t.catches)
    return dict(sorted(by_check.items())), dict(sorted(by_area.items()))


def _check_of(cell_id: str) -> str:
    """`keras-legacy-float32-clip-combined` -> `clip-combined` (the dtype splits it)."""
    for d in DTYPES:
        mark = f"-{d}-"
        if mark in cell_id:
            return cell_id.split(mark, 1)[1]
    return cell_id


def verdict(tallies: list[Tally], target: int) -> tuple[bool, list[str]]:
    """(passed, the reasons it did not): every bug caught in `target` cells, every
    correct order passing every cell."""
    why = []
    for t in tallies:
        if t.load_error:
            why.append(f"{t.name} could not be loaded: {t.load_error}")
        elif t.kind == "bug" and t.catches < target:
            why.append(f"planted bug {t.name} caught in {t.catches} ci cells, fewer than {target}: {t.doc}")
        elif t.kind == "correct" and not t.ok_correct:
            bad = t.failed + t.errors
            why.append(f"correct op order {t.name} failed {len(bad)} cells: {', '.join(bad[:5])}")
    return not why, why


def record(tallies: list[Tally], target: int, full: bool, seconds: float) -> dict[str, Any]:
    """The selftest as JSON-ready data."""
    import dataclasses

    from adamconf import stamp
    by_check, by_area = scores(tallies, target)
    ok, why = verdict(tallies, target)
    return {
        "format": "adamconf-selftest/1", "passed": ok, "problems": why, "target": target, "full_counts": full,
        "seconds": round(seconds, 1), "environment": stamp.environment(),
        "by_check": {k: dataclasses.asdict(v) for k, v in by_check.items()},
        "by_area": {k: dataclasses.asdict(v) for k, v in by_area.items()},
        "backends": [dataclasses.asdict(t) | {"catches": t.catches} for t in tallies],
    }


def markdown(rec: dict[str, Any]) -> str:
    """The selftest record as a Markdown page."""
    t = rec["target"]
    lines = [f"# adamconf selftest: {'PASS' if rec['passed'] else 'FAIL'}", "",
             f"Every planted bug must fail at least {t} ci cells; every correct op order must pass every cell. "
             f"{'Full counts.' if rec['full_counts'] else f'Counting stops at {t}.'} {rec['seconds']} s.", ""]
    lines += [f"- {p}" for p in rec["problems"]] + ([""] if rec["problems"] else [])
    lines += ["| check | bugs caught / bugs it ran on | fewest failing cells of a bug it caught |", "|---|---|---:|"]
    lines += [f"| {k} | {Score(**v).text()} | {v['fewest'] or '-'} |" for k, v in rec["by_check"].items()]
    lines += ["", f"| area | bugs caught in >= {t} cells / bugs | fewest failing cells of a bug |", "|---|---|---:|"]
    lines += [f"| {k} | {Score(**v).text()} | {v['fewest'] if v['fewest'] is not None else 0} |"
              for k, v in rec["by_area"].items()]
    lines += ["", "| backend | kind | area | failing cells | cells run | first failing cells |", "|---|---|---|---|---|---|"]
    for b in rec["backends"]:
        lines.append(f"| {b['name']} | {b['kind']} | {b['area'] or '-'} | {b['catches']} | {b['cells']} | "
                     f"{', '.join(b['failed'][:3]) or '-'} |")
    return "\n".join(lines) + "\n"
