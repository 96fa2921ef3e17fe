"""Plans the cells of a run, runs each one, and turns them into result records.

A run is a plan: one cell per (variant, dtype, check) where the check binds to one of
the variant's clauses and to the dtype, plus one cell per (variant, API check). The CLI
and the pytest plugin run the same plan through `Runner.run_cell`, so both give the same
verdicts. A check's verdict is attributed to every clause it covers; a failure keeps
hypothesis's minimal example, saved as a case file with the one command that replays it.
"""
from __future__ import annotations

import copy
import math
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, reject, target
from hypothesis import seed as hyp_seed
from hypothesis.errors import Flaky, Unsatisfiable

from adamconf import binding, cases, exact_mode, profiles, stamp
from adamconf import findings as findings_mod
from adamconf import worst_case as worst_mod
from adamconf.api_checks import API_CHECKS, api_check_for, run_api_check
from adamconf.checks import CHECKS, Check, binds, checks_for
from adamconf.evaluate import Hung, Invalid, Outcome, evaluate, expect_raises, guarded, nondeterminism
from adamconf.protocol import Backend, unsupported_reason
from adamconf.reference.state import StepInput, at_step
from adamconf.reports.load import SCHEMA
from adamconf.spec.model import Spec, Variant
from adamconf.verdicts import (
    BAD,
    ERROR,
    FAIL,
    JUDGED,
    KNOWN,
    NOT_APPLICABLE,
    PASS,
    UNCOVERED,
    UNSUPPORTED,
    VERDICTS,
    combine,
)

BINS = (0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
API = "api"
API_WORLD_SECONDS = 30.0   # building an API world may import a framework: at least this long
# Each check steers hypothesis towards its largest err/(u*S): the worst case a
# conformance table reports is searched for, not only sampled.
TARGET_LABEL = "err/(u*S)"


@dataclass(frozen=True)
class Cell:
    """One planned check: a numeric check on (variant, dtype), or an API check (dtype "api")."""

    variant: str
    dtype: str
    check: str

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.dtype}-{self.check}"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so a run stops as it does on Ctrl-C."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM: what was judged so far, and the exit status."""

    def __init__(self, result: RunResult, status: int) -> None:
        super().__init__(f"interrupted after {len(result.checks)} checks")
        self.result, self.status = result, status


class CaseFailed(Exception):
    def __init__(self, outcome: Outcome, inp: StepInput) -> None:
        super().__init__(outcome.message)
        self.outcome, self.inp = outcome, inp


@dataclass
class CheckRun:
    """One check on one (variant, dtype) cell."""

    check: str
    variant: str
    dtype: str
    status: str                    # a verdict (adamconf.verdicts)
    k: float = 0.0
    examples: int = 0
    worst_ratio: float = 0.0
    ill: int = 0                   # elements left unjudged (ill-conditioned)
    elements: int = 0              # elements compared, over every example
    ieee: int = 0                  # of those, judged by an IEEE outcome rather than K*u*S
    histogram: list[int] = field(default_factory=list)
    message: str = ""
    case: str | None = None
    replay: str | None = None
    example: str | None = None
    seconds: float = 0.0
    finding: str | None = None     # the id of the known deviation this verdict matched
    clause_status: dict[str, str] = field(default_factory=dict)   # API checks: a verdict per clause id
    statistics: str | None = None  # hypothesis's statistics when asked for (pytest route); not in results.json
    worst_case: dict[str, Any] | None = None   # the input with the largest ratio (adamconf.worst_case)
    by_step: list[list[float]] | None = None   # trajectories: [step, worst ratio at that step]
    binding: float | None = None   # share of judged examples that bind the check's feature (adamconf.binding)
    binding_examples: int = 0      # how many examples that share is over


@dataclass
class ClauseResult:
    clause: str
    variant: str
    kind: str
    page: str
    section: str
    text: str
    checks: list[str]              # the checks that cover it
    status: dict[str, str]         # dtype (or "api") -> a verdict (adamconf.verdicts)


@dataclass
class RunResult:
    backend: str
    profile: str
    seed: int | None
    variants: list[str]
    dtypes: list[str]
    checks: list[CheckRun]
    clauses: list[ClauseResult]
    seconds: float
    examples: int                  # the example budget per check
    environment: dict[str, Any]    # adamconf, spec hash, python, platform, CPU, harness packages
    backend_versions: dict[str, str]
    findings: list[dict[str, Any]] = field(default_factory=list)
    flushes_denormals: list[str] = field(default_factory=list)
    interrupted: bool = False
    exact_order: str | None = None  # exact mode: the op order every numeric check demands bit for bit

    @property
    def judged(self) -> int:
        """How many clause cells were judged (pass, fail, error or known deviation)."""
        return sum(1 for c in self.clauses for s in c.status.values() if s in JUDGED)

    @property
    def failed(self) -> bool:
        return any(c.status in BAD for c in self.checks)


class Acc:
    def __init__(self) -> None:
        self.n, self.worst, self.ill, self.elements, self.ieee = 0, 0.0, 0, 0, 0
        self.hist = np.zeros(len(BINS) - 1, dtype=np.int64)

    def add(self, out: Outcome) -> None:
        self.n += 1
        self.ill += out.ill
        self.elements += out.elements
        self.ieee += out.ieee
        if out.verdict is not None:
            self.worst = max(self.worst, out.verdict.worst_ratio)
        if out.ratios.size:
            r = np.minimum(out.ratios, 1e300)
            self.hist += np.histogram(r, bins=np.array(BINS[:-1] + (1e301,)))[0]


class Runner:
    def __init__(self, spec: Spec, backend: Backend, backend_ref: str, *, profile: str = "ci",
                 seed: int | None = None, timeout: float = 10.0, out: Path | None = None,
                 max_examples: int | None = None, log: Callable[[str], None] | None = None,
                 findings_files: Sequence[str | Path] = (), cases_dir: Path | None = None,
                 executor: Any = None, statistics: bool = False, exact_order: str | None = None,
                 shrink: bool = True) -> None:
        self.exact_order = exact_mode.check_order(exact_order)   # None: judged within K*u*S
        self.profile = profiles.profile_name(profile).removeprefix(profiles.PREFIX)
        self.spec, self.backend, self.backend_ref = spec, backend, backend_ref
        self.max_examples = max_examples
        self.shrink = shrink           # False: a failing cell keeps its first failing example (same verdict, faster)
        # a derandomized profile draws the same examples whatever the seed
        self.seed = None if self.settings.derandomize else seed
        self.timeout, self.out = timeout, out
        self.cases_dir = cases_dir     # where failing cases are written first (default out/cases)
        self.executor = executor       # an adamconf.worker.Pool, or None to run in this process
        self.statistics = statistics   # keep hypothesis's statistics on each CheckRun
        self.hung: str | None = None   # in-process only: why this backend is not called again
        self.log = log or (lambda s: None)
        self.findings = findings_mod.for_backend(backend) + [f for p in findings_files for f in findings_mod.load(p)]
        findings_mod.validate(self.findings, spec.variants, list(CHECKS) + list(API_CHECKS), spec.clauses)
        self._world: Any = None
        self._world_error: str | None = None
        self._world_built = False

    @property
    def settings(self) -> Any:
        base = profiles.settings_for(self.profile, self.max_examples)
        return base if self.shrink else profiles.without_shrinking(base)

    # -- the plan ---------------------------------------------------------------------

    def plan(self, variants: Iterable[str], dtypes: Iterable[str], only: Iterable[str] | None = None) -> list[Cell]:
        """Every cell of a run, in the order the CLI runs them: numeric, then API."""
        only_set = set(only) if only else None
        cells = []
        variants, dtypes = list(variants), list(dtypes)
        for vid in variants:
            variant, clauses = self.spec.variant(vid), self.spec.clauses_for(vid)
            for dtype in dtypes:
                cells += [Cell(vid, dtype, c.name) for c in CHECKS.values()
                          if (not only_set or c.name in only_set) and binds(c, clauses) and c.applies_to(variant, dtype)]
        for vid in variants:
            clauses = self.spec.clauses_for(vid)
            cells += [Cell(vid, API, c.name) for c in API_CHECKS.values()
                      if (not only_set or c.name in only_set) and c.applies_to(clauses)]
        return cells

    def clauses_of(self, cell: Cell) -> list[str]:
        """The clause ids a cell judges."""
        covers = (API_CHECKS[cell.check] if cell.dtype == API else CHECKS[cell.check]).covers
        return [c.id for c in self.spec.clauses_for(cell.variant) if c.id.partition(".")[2] in covers]

    def run_cell(self, cell: Cell) -> CheckRun:
        """One planned cell, judged, with the findings applied: in the backend's worker
        when the runner has one (adamconf.worker), else in this process."""
        if self.executor is not None:
            return self._known_broken(("cell", cell)) or self.executor.map([("cell", cell)], self._crashed)[0]
        try:
            if cell.dtype == API:
                run = self._run_api(cell)
            else:
                run = self.run_check(CHECKS[cell.check], self.spec.variant(cell.variant), cell.dtype)
        except (KeyboardInterrupt, Terminated):
            raise
        except BaseException as e:  # noqa: BLE001 - in-process, SystemExit and the like are verdicts too
            return self._crashed(("cell", cell), crash_message(e))
        return self.apply_findings(run)

    def _crashed(self, request: tuple, text: str) -> CheckRun:
        """The verdict of a cell whose worker hung or died: a failure of the backend. When
        that happened in api(), the later API cells take the same verdict without asking
        again (each would only hang or crash once more)."""
        cell = request[1]
        if cell.dtype == API and "api()" in text:
            self._world_error = text
        run = CheckRun(cell.check, cell.variant, cell.dtype, FAIL, message=text)
        if cell.dtype == API:
            run.clause_status = dict.fromkeys(self.clauses_of(cell), FAIL)
        elif self.exact_order and CHECKS[cell.check].kind != "raises":
            run.k = 0.0
        else:
            run.k = self.spec.tolerances[CHECKS[cell.check].family].k
        return self.apply_findings(run)

    def run(self, variants: Iterable[str], dtypes: Iterable[str], only: Iterable[str] | None = None,
            fail_fast: bool = False) -> RunResult:
        """Every planned cell; on Ctrl-C or SIGTERM the cells judged so far, marked interrupted
        (raised as Interrupted carrying that result)."""
        t0 = time.perf_counter()
        variants, dtypes = list(variants), list(dtypes)
        cells = self.plan(variants, dtypes, only)
        done: dict[int, CheckRun] = {}

        def note(i: int, run: CheckRun) -> None:
            done[i] = run
            self.log(progress_line(len(done), len(cells), run, time.perf_counter() - t0,
                                   "apart" if self.exact_order else "u*S"))
        try:
            if self.executor is not None and not fail_fast:
                self.executor.map([("cell", c) for c in cells], self._crashed, note, self._known_broken)
            else:
                for i, cell in enumerate(cells):
                    note(i, self.run_cell(cell))
                    if fail_fast and done[i].status in BAD:
                        break
        except (KeyboardInterrupt, Terminated) as e:
            runs = [done[i] for i in sorted(done)]
            raise Interrupted(self.result(variants, dtypes, runs, time.perf_counter() - t0, interrupted=True),
                              130 if isinstance(e, KeyboardInterrupt) else 143) from None
        return self.result(variants, dtypes, [done[i] for i in sorted(done)], time.perf_counter() - t0)

    def result(self, variants: list[str], dtypes: list[str], runs: list[CheckRun], seconds: float,
               interrupted: bool = False) -> RunResult:
        """The run's record: verdicts per check and per clause, stamped with what was tested."""
        return RunResult(getattr(self.backend, "name", self.backend_ref), self.profile, self.seed, variants, dtypes,
                         runs, self.attribute(variants, dtypes, runs), seconds,
                         profiles.budget(self.profile, self.max_examples), stamp.environment(),
                         stamp.backend_versions(self.backend), self.finding_records(runs),
                         sorted(getattr(self.backend, "flushes_denormals", ())), interrupted, self.exact_order)

    # -- API cells ----------------------------------------------------------------------

    def world(self) -> Any:
        """The backend's object-level API world (adamconf.api), built once; None if it has none."""
        if not self._world_built:
            self._world_built = True
            hook = getattr(self.backend, "api", None)
            try:
                self._world = guarded(hook, max(self.timeout, API_WORLD_SECONDS), "api()") if callable(hook) else hook
            except Hung as e:
                self._world_error = f"HUNG: the backend's api() did not return: {e}"
            except Exception as e:  # noqa: BLE001 - a broken hook is a verdict, not a crash
                self._world_error = f"the backend's api() raised {type(e).__name__}: {e}"
        return self._world

    def _known_broken(self, request: tuple) -> CheckRun | None:
        """An API cell after api() hung or crashed a worker: the same verdict, without a call."""
        cell = request[1]
        if cell.dtype != API or self._world_error is None:
            return None
        ids = self.clauses_of(cell)
        return self.apply_findings(CheckRun(cell.check, cell.variant, API, FAIL, message=self._world_error,
                                            clause_status=dict.fromkeys(ids, FAIL)))

    def _run_api(self, cell: Cell) -> CheckRun:
        t0 = time.perf_counter()
        world = self.world()
        if world is None:
            ids = self.clauses_of(cell)
            status = ERROR if self._world_error else UNSUPPORTED
            msg = self._world_error or f"{getattr(self.backend, 'name', self.backend_ref)} offers no API world (api)"
            return CheckRun(cell.check, cell.variant, API, status, message=msg, clause_status={c: status for c in ids})
        run = run_api_check(world, self.spec, cell.variant, API_CHECKS[cell.check], self.timeout)
        run.seconds = time.perf_counter() - t0
        return run

    def apply_findings(self, run: CheckRun) -> CheckRun:
        """A failure a finding explains becomes a deviation; a strict finding that no
        longer reproduces fails the check, so the findings file stays true. API checks
        judge clauses one by one, so there a finding names the clauses it explains."""
        found = [f for f in self.findings if f.matches(run.variant, run.dtype, run.check)]
        if not found:
            return run
        if run.clause_status:
            return self._apply_to_clauses(run, found)
        f = found[0]
        if run.status == FAIL:
            run.status, run.finding = KNOWN, f.id
            run.message = f"known deviation {f.id}: {f.summary} Observed: {run.message}"
        elif run.status == PASS and f.strict:
            run.status, run.finding = FAIL, f.id
            run.message = self._stale(f)
        return run

    def _stale(self, f: Any) -> str:
        return (f"finding {f.id} says this fails here, but it passed: remove the finding or narrow it "
                f"({getattr(self.backend, 'findings', '')})")

    def _apply_to_clauses(self, run: CheckRun, found: list[Any]) -> CheckRun:
        notes = []
        for f in found:
            for cid in (f.clauses or tuple(run.clause_status)):
                st = run.clause_status.get(cid)
                if st == FAIL:
                    run.clause_status[cid], run.finding = KNOWN, f.id
                elif st == PASS and f.strict:
                    run.clause_status[cid] = FAIL
                    notes.append(f"{cid}: {self._stale(f)}")
        run.status = combine(run.clause_status.values())
        if notes:
            run.message = "; ".join([run.message] + notes if run.message else notes)
        if run.status == KNOWN:
            ids = sorted({f.id for f in found})
            run.message = f"known deviations {', '.join(ids)}. Observed: {run.message}"
        return run

    def finding_records(self, runs: list[CheckRun]) -> list[dict[str, Any]]:
        out = []
        for f in self.findings:
            hit = [f"{r.variant}/{r.dtype}/{r.check}" for r in runs
                   if (r.finding == f.id and r.status == KNOWN)
                   or any(r.clause_status.get(c) == KNOWN for c in f.clauses)]
            out.append({"id": f.id, "variants": list(f.variants), "checks": list(f.checks), "dtypes": list(f.dtypes),
                        "clauses": list(f.clauses), "summary": f.summary, "evidence": f.evidence,
                        "strict": f.strict, "observed_in": hit})
        return out

    def run_check(self, chk: Check, variant: Variant, dtype: str) -> CheckRun:
        t0 = time.perf_counter()
        k = self.spec.tolerances[chk.family].k
        try:
            reason = unsupported_reason(self.backend, variant.id, dtype, chk.features)
        except Exception as e:  # noqa: BLE001 - a broken hook is a verdict, not a crash
            return CheckRun(chk.name, variant.id, dtype, ERROR, k,
                            message=f"the backend's unsupported() raised {type(e).__name__}: {e}")
        if reason:
            return CheckRun(chk.name, variant.id, dtype, UNSUPPORTED, k, message=str(reason))
        exact = self.exact_order if chk.kind != "raises" else None   # a refusal is judged the same in both modes
        flush = tuple(getattr(self.backend, "flushes_denormals", ()))
        if exact:
            k = 0.0
            reason = exact_mode.unsupported(variant, dtype, chk.features, flush)
            if reason:
                return CheckRun(chk.name, variant.id, dtype, UNSUPPORTED, k, message=reason)
        if self.hung:
            return CheckRun(chk.name, variant.id, dtype, ERROR, k, message=self.hung)
        acc = Acc()
        worst = worst_mod.WorstInput(exact)
        hung: list[CaseFailed] = []
        largest: list[StepInput] = []   # the passing input with the most elements: for the determinism check
        bound: list[bool] = []          # per example before any failure: does it bind the feature?
        failing: list[bool] = []        # set at the first failure (shrinking replays are not counted)

        def one(inp: StepInput) -> Outcome:
            if hung:
                raise hung[0]
            if chk.kind == "raises":
                out = expect_raises(self.backend, inp, ValueError, self.timeout)
            else:
                try:
                    out = (exact_mode.evaluate_exact(self.backend, variant, inp, exact, self.timeout) if exact
                           else evaluate(self.backend, variant, inp, k, self.timeout))
                except Invalid:
                    reject()
            acc.add(out)
            worst.add(out, inp)
            if chk.kind == "step" and out.ok and not failing:
                b = binding.binds(chk.name, variant, inp, k, flush, out.exact)
                if b is not None:
                    bound.append(b)
            if not out.ok:
                failing.append(True)
                err = CaseFailed(out, inp)
                if out.hung:
                    hung.append(err)
                raise err
            if chk.kind != "raises" and (not largest or _size(inp) > _size(largest[0])):
                largest[:] = [inp]
            return out

        def body(drawn: Any) -> None:
            if chk.kind == "trajectory":
                start, grads_seq = drawn
                state = start.state
                worst_step = 0.0
                for i, grads in enumerate(grads_seq):
                    hyper = copy.deepcopy(start.hyper)
                    at_step(hyper, i)   # callable hyperparameters take this step's value
                    out = one(StepInput(start.variant, start.dtype, hyper, state, tuple(grads)))
                    state = out.observed
                    worst_step = max(worst_step, out.worst)
                target(worst_step, label=TARGET_LABEL)
            else:
                target(one(drawn).worst, label=TARGET_LABEL)

        test = self.settings(given(chk.strategy(variant, dtype))(body))
        if self.seed is not None:
            test = hyp_seed(self.seed)(test)
        run = CheckRun(chk.name, variant.id, dtype, PASS, k)
        try:
            with profiles.fixed_constants(), self._statistics(run):
                test()
        except CaseFailed as e:
            run.status, run.message = FAIL, e.outcome.message
            self._record_failure(run, chk, e.inp)
        except Unsatisfiable:
            run.status, run.message = ERROR, "no valid scenario could be generated for this cell"
        except Flaky as e:
            run.status, run.message = FAIL, ("the backend is not deterministic: the same input failed once and "
                                             f"passed later ({type(e).__name__})")
        except Exception as e:  # noqa: BLE001 - a harness-side error is reported, the run goes on
            run.status, run.message = ERROR, f"{type(e).__name__}: {e}"
        run.examples, run.worst_ratio, run.ill, run.elements, run.ieee = acc.n, acc.worst, acc.ill, acc.elements, acc.ieee
        if run.status == PASS and acc.n == 0:
            run.status, run.message = ERROR, "no example reached the backend: nothing was judged"
        if run.status == PASS and largest:
            why = nondeterminism(self.backend, largest[0], self.timeout)
            if why:
                run.status, run.message = FAIL, why
                self._record_failure(run, chk, largest[0])
        if hung:
            # a thread stuck in the backend cannot be stopped: call this backend no more
            self.hung = (f"not run: the backend hung earlier in this process ({hung[0].outcome.message}); "
                         "isolated workers (the default, without --in-process) are killed and replaced instead")
        run.histogram = acc.hist.tolist()
        run.binding_examples = len(bound)
        run.binding = sum(bound) / len(bound) if bound else None
        cell = Cell(variant.id, dtype, chk.name)
        run.worst_case = worst.record(variant, flush,
                                      next(iter(self.clauses_of(cell)), ""), chk.name,
                                      worst_mod.replay_command(self.out, cell.id, self.backend_ref))
        run.by_step = worst.steps() if chk.kind == "trajectory" else None
        run.seconds = time.perf_counter() - t0
        return run

    @contextmanager
    def _statistics(self, run: CheckRun) -> Iterator[None]:
        """Keep hypothesis's statistics of this check on the record, when asked for."""
        if not self.statistics:
            yield
            return
        from hypothesis.statistics import collector, describe_statistics

        def note(stats: dict) -> None:
            stats["nodeid"] = f"{run.variant}-{run.dtype}-{run.check}"
            run.statistics = describe_statistics(stats)
        with collector.with_value(note):
            yield

    def _record_failure(self, run: CheckRun, chk: Check, inp: StepInput) -> None:
        run.example = cases.describe(inp)
        if self.out is None:
            return
        name = f"{run.variant}__{run.dtype}__{chk.name}.json"
        clause = next(iter(self.clauses_of(Cell(run.variant, run.dtype, chk.name))), "")
        cases.save((self.cases_dir or self.out / "cases") / name, inp, clause, chk.name,
                   self.exact_order if chk.kind != "raises" else None)
        path = self.out / "cases" / name     # where it lies once the run has written its results
        run.case = str(path)
        run.replay = f"adamconf replay {shlex.quote(str(path))} --backend {shlex.quote(self.backend_ref)}"

    def attribute(self, variants: list[str], dtypes: list[str], runs: list[CheckRun]) -> list[ClauseResult]:
        """Each clause takes the verdicts of the checks that cover it: per dtype for the
        numeric checks (`not applicable` where none binds the dtype), one "api" cell for
        the object-level checks."""
        by = {(r.variant, r.dtype, r.check): r for r in runs}
        out = []
        for vid in variants:
            variant = self.spec.variant(vid)
            for c in self.spec.clauses_for(vid):
                chks = checks_for(c)
                status = {}
                if chks:
                    for d in dtypes:
                        bound = [k for k in chks if k.applies_to(variant, d)]
                        got = [by[(vid, d, k.name)].status for k in bound if (vid, d, k.name) in by]
                        status[d] = combine(got) if got else (UNCOVERED if bound else NOT_APPLICABLE)
                    names = [k.name for k in chks]
                else:
                    achk = api_check_for(c)
                    names = [achk.name] if achk else []
                    r = by.get((vid, API, achk.name)) if achk else None
                    status[API] = r.clause_status.get(c.id, r.status) if r else UNCOVERED
                out.append(ClauseResult(c.id, vid, c.kind, c.page, c.section, c.text, names, status))
        return out


def crash_message(e: BaseException) -> str:
    """The verdict text for a BaseException out of the backend (SystemExit included)."""
    if isinstance(e, SystemExit):
        return f"crashed: exit {e.code if e.code is not None else 0} (the backend raised SystemExit: sys.exit)"
    return f"crashed: the backend raised {type(e).__name__}, a BaseException: {e}"


def _size(inp: StepInput) -> int:
    return sum(int(np.size(p)) for p in inp.state.params)


def progress_line(i: int, n: int, run: CheckRun, elapsed: float, unit: str = "u*S") -> str:
    """`[i/N] verdict cell worst ratio, elapsed and an estimate of what remains`; in exact
    mode the ratio counts representable values apart (`unit` "apart")."""
    left = elapsed / i * (n - i)
    what = (f"worst {run.worst_ratio:8.3g} {unit} ({run.examples} examples, {run.seconds:.1f}s)" if run.dtype != API
            else run.message[:70])
    return (f"[{i:{len(str(n))}d}/{n}] {run.status:15s} {run.variant:13s} {run.dtype:8s} {run.check:16s} {what}"
            f"  {_clock(elapsed)} elapsed, ~{_clock(left)} left")


def _clock(s: float) -> str:
    m, s = divmod(int(s + 0.5), 60)
    return f"{m}:{s:02d}"


def as_dict(run: RunResult) -> dict[str, Any]:
    """The result record as JSON-ready data (the input of everything under reports/)."""
    import dataclasses

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    d = {
        "schema": SCHEMA, "backend": run.backend, "profile": run.profile, "seed": run.seed,
        "examples": run.examples, "variants": run.variants, "dtypes": run.dtypes, "seconds": round(run.seconds, 3),
        "environment": run.environment, "backend_versions": run.backend_versions,
        "interrupted": run.interrupted, "verdicts": list(VERDICTS), "bins": [str(b) for b in BINS],
        "checks": [{k: v for k, v in dataclasses.asdict(c).items() if k != "statistics"} for c in run.checks],
        "clauses": [dataclasses.asdict(c) for c in run.clauses],
        "findings": run.findings, "flushes_denormals": run.flushes_denormals, "exact_order": run.exact_order,
        "summary": summary(run),
    }
    return clean(d)


def summary(run: RunResult) -> dict[str, dict[str, int]]:
    """Clause-cell counts per variant, one count per verdict."""
    out: dict[str, dict[str, int]] = {}
    for c in run.clauses:
        row = out.setdefault(c.variant, dict.fromkeys(VERDICTS, 0))
        for st in c.status.values():
            row[st] += 1
    return out
