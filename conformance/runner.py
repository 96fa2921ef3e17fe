"""Runs the checks over (variant, dtype) cells and turns them into result records.

Each applicable check runs once per cell under a hypothesis profile; its verdict is
then attributed to every clause it covers. A failure keeps hypothesis's minimal
example, saved as a case file with the one command that replays it.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import seed as hyp_seed
from hypothesis.errors import Flaky, Unsatisfiable

from adamconf import cases
from adamconf import findings as findings_mod
from adamconf.api_checks import API_CHECKS, api_check_for, run_api_checks
from adamconf.checks import CHECKS, Check, check_for
from adamconf.evaluate import Invalid, Outcome, evaluate, expect_raises
from adamconf.protocol import Backend, unsupported_reason
from adamconf.reference.state import StepInput
from adamconf.spec.model import Spec, Variant

PROFILES: dict[str, dict[str, Any]] = {
    # The CI gate: derandomized, a fixed example budget, the same verdict every run.
    "ci": dict(max_examples=12, derandomize=True),
    "dev": dict(max_examples=60, derandomize=False),
    "thorough": dict(max_examples=600, derandomize=False),
}
BINS = (0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)


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
    status: str                    # pass | fail | unsupported | error
    k: float = 0.0
    examples: int = 0
    worst_ratio: float = 0.0
    ill: int = 0
    histogram: list[int] = field(default_factory=list)
    message: str = ""
    case: str | None = None
    replay: str | None = None
    example: str | None = None
    seconds: float = 0.0
    finding: str | None = None     # the id of the known deviation this verdict matched
    clause_status: dict[str, str] = field(default_factory=dict)   # API checks: a verdict per clause id


@dataclass
class ClauseResult:
    clause: str
    variant: str
    kind: str
    page: str
    section: str
    text: str
    check: str | None
    status: dict[str, str]         # dtype (or "api") -> pass | fail | deviation | unsupported | uncovered | error


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
    versions: dict[str, str]
    findings: list[dict[str, Any]] = field(default_factory=list)
    flushes_denormals: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status in ("fail", "error") for c in self.checks)


class Acc:
    def __init__(self) -> None:
        self.n, self.worst, self.ill = 0, 0.0, 0
        self.hist = np.zeros(len(BINS) - 1, dtype=np.int64)

    def add(self, out: Outcome) -> None:
        self.n += 1
        self.ill += out.ill
        if out.verdict is not None:
            self.worst = max(self.worst, out.verdict.worst_ratio)
        if out.ratios.size:
            r = np.minimum(out.ratios, 1e300)
            self.hist += np.histogram(r, bins=np.array(BINS[:-1] + (1e301,)))[0]


def versions() -> dict[str, str]:
    import gmpy2
    import hypothesis
    import mpmath
    return {"python": platform.python_version(), "numpy": np.__version__, "mpmath": mpmath.__version__,
            "gmpy2": gmpy2.version(), "hypothesis": hypothesis.__version__}


class Runner:
    def __init__(self, spec: Spec, backend: Backend, backend_ref: str, *, profile: str = "ci",
                 seed: int | None = None, timeout: float = 10.0, out: Path | None = None,
                 max_examples: int | None = None, log: Callable[[str], None] | None = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
        self.spec, self.backend, self.backend_ref = spec, backend, backend_ref
        self.profile, self.seed, self.timeout, self.out = profile, seed, timeout, out
        self.max_examples = max_examples
        self.log = log or (lambda s: None)
        self.findings = findings_mod.for_backend(backend)
        findings_mod.validate(self.findings, spec.variants, list(CHECKS) + list(API_CHECKS), spec.clauses)

    def _settings(self) -> settings:
        kw = dict(PROFILES[self.profile])
        if self.max_examples:
            kw["max_examples"] = self.max_examples
        # No explain phase: it re-runs the failing case hundreds of times to annotate it,
        # which the replay command makes unnecessary and which can take minutes.
        phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
        return settings(database=None, deadline=None, verbosity=Verbosity.quiet, report_multiple_bugs=False,
                        suppress_health_check=list(HealthCheck), print_blob=False, phases=phases, **kw)

    def run(self, variants: Iterable[str], dtypes: Iterable[str], only: Iterable[str] | None = None,
            fail_fast: bool = False) -> RunResult:
        t0 = time.perf_counter()
        variants, dtypes = list(variants), list(dtypes)
        only_set = set(only) if only else None
        runs: list[CheckRun] = []
        for vid in variants:
            variant = self.spec.variant(vid)
            for dtype in dtypes:
                for chk in CHECKS.values():
                    if only_set and chk.name not in only_set:
                        continue
                    if not chk.applies_to(variant, dtype):
                        continue
                    run = self.apply_findings(self.run_check(chk, variant, dtype))
                    self.log(f"{run.status:11s} {vid:13s} {dtype:8s} {chk.name:16s} worst {run.worst_ratio:8.3g} u*S"
                             f"  ({run.examples} examples, {run.seconds:.1f}s)")
                    runs.append(run)
                    if fail_fast and run.status in ("fail", "error"):
                        break
                if fail_fast and runs and runs[-1].status in ("fail", "error"):
                    break
            if fail_fast and runs and runs[-1].status in ("fail", "error"):
                break
        world = self.api
        if world is not None and not (fail_fast and runs and runs[-1].status in ("fail", "error")):
            for vid in variants:
                for arun in run_api_checks(world, self.spec, vid, only_set, self.timeout):
                    arun = self.apply_findings(arun)
                    self.log(f"{arun.status:11s} {vid:13s} {'api':8s} {arun.check:16s} {arun.message[:90]}")
                    runs.append(arun)
        clauses = self.attribute(variants, dtypes, runs)
        return RunResult(getattr(self.backend, "name", self.backend_ref), self.profile, self.seed, variants, dtypes,
                         runs, clauses, time.perf_counter() - t0, versions(), self.finding_records(runs),
                         sorted(getattr(self.backend, "flushes_denormals", ())))

    @property
    def api(self) -> Any:
        """The backend's object-level API world, if it offers one (see adamconf.api)."""
        world = getattr(self.backend, "api", None)
        return world() if callable(world) else world

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
        if run.status == "fail":
            run.status, run.finding = "deviation", f.id
            run.message = f"known deviation {f.id}: {f.summary} Observed: {run.message}"
        elif run.status == "pass" and f.strict:
            run.status, run.finding = "fail", f.id
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
                if st == "fail":
                    run.clause_status[cid], run.finding = "deviation", f.id
                elif st == "pass" and f.strict:
                    run.clause_status[cid] = "fail"
                    notes.append(f"{cid}: {self._stale(f)}")
        values = set(run.clause_status.values())
        run.status = next((s for s in ("error", "fail", "deviation") if s in values), run.status)
        if notes:
            run.message = "; ".join([run.message] + notes if run.message else notes)
        if run.status == "deviation":
            ids = sorted({f.id for f in found})
            run.message = f"known deviations {', '.join(ids)}. Observed: {run.message}"
        return run

    def finding_records(self, runs: list[CheckRun]) -> list[dict[str, Any]]:
        out = []
        for f in self.findings:
            hit = [f"{r.variant}/{r.dtype}/{r.check}" for r in runs
                   if (r.finding == f.id and r.status == "deviation")
                   or any(c in r.clause_status and r.clause_status[c] == "deviation" for c in f.clauses)]
            out.append({"id": f.id, "variants": list(f.variants), "checks": list(f.checks), "dtypes": list(f.dtypes),
                        "clauses": list(f.clauses), "summary": f.summary, "evidence": f.evidence,
                        "strict": f.strict, "observed_in": hit})
        return out

    def run_check(self, chk: Check, variant: Variant, dtype: str) -> CheckRun:
        t0 = time.perf_counter()
        k = self.spec.tolerances[chk.family].k if chk.family in self.spec.tolerances else 8.0
        reason = unsupported_reason(self.backend, variant.id, dtype, chk.features)
        if reason:
            return CheckRun(chk.name, variant.id, dtype, "unsupported", k, message=reason)
        acc = Acc()
        hung: list[CaseFailed] = []

        def one(inp: StepInput) -> Outcome:
            if hung:
                raise hung[0]
            if chk.kind == "raises":
                out = expect_raises(self.backend, inp, ValueError, self.timeout)
            else:
                try:
                    out = evaluate(self.backend, variant, inp, k, self.timeout)
                except Invalid:
                    reject()
            acc.add(out)
            if not out.ok:
                err = CaseFailed(out, inp)
                if out.hung:
                    hung.append(err)
                raise err
            return out

        def body(drawn: Any) -> None:
            if chk.kind == "trajectory":
                start, grads_seq = drawn
                state = start.state
                for grads in grads_seq:
                    out = one(StepInput(start.variant, start.dtype, start.hyper, state, tuple(grads)))
                    state = out.observed
            else:
                one(drawn)

        test = self._settings()(given(chk.strategy(variant, dtype))(body))
        if self.seed is not None:
            test = hyp_seed(self.seed)(test)
        run = CheckRun(chk.name, variant.id, dtype, "pass", k)
        try:
            test()
        except CaseFailed as e:
            run.status, run.message = "fail", e.outcome.message
            self._record_failure(run, chk, e.inp)
        except Unsatisfiable:
            run.status, run.message = "error", "no valid scenario could be generated for this cell"
        except Flaky as e:
            run.status, run.message = "fail", f"the backend is not deterministic: the same input failed once and passed later ({type(e).__name__})"
        except Exception as e:  # noqa: BLE001 - a harness-side error is reported, the run goes on
            run.status, run.message = "error", f"{type(e).__name__}: {e}"
        run.examples, run.worst_ratio, run.ill = acc.n, acc.worst, acc.ill
        run.histogram = acc.hist.tolist()
        run.seconds = time.perf_counter() - t0
        return run

    def _record_failure(self, run: CheckRun, chk: Check, inp: StepInput) -> None:
        run.example = cases.describe(inp)
        if self.out is None:
            return
        path = self.out / "cases" / f"{run.variant}__{run.dtype}__{chk.name}.json"
        clause = next((c.id for c in self.spec.clauses_for(run.variant) if check_for(c) is chk), "")
        cases.save(path, inp, clause, chk.name)
        run.case = str(path)
        run.replay = f"adamconf replay {path} --backend {self.backend_ref}"

    def attribute(self, variants: list[str], dtypes: list[str], runs: list[CheckRun]) -> list[ClauseResult]:
        """Each clause takes the verdict of the check that covers it: per dtype for the
        numeric checks, one "api" cell for the object-level checks."""
        by = {(r.variant, r.dtype, r.check): r for r in runs}
        out = []
        for vid in variants:
            for c in self.spec.clauses_for(vid):
                chk = check_for(c)
                status = {}
                if chk is not None:
                    for d in dtypes:
                        r = by.get((vid, d, chk.name))
                        status[d] = r.status if r else "uncovered"
                    name = chk.name
                else:
                    achk = api_check_for(c)
                    name = achk.name if achk else None
                    r = by.get((vid, "api", name)) if achk else None
                    status["api"] = _clause_status(r, c.id) if r else "uncovered"
                out.append(ClauseResult(c.id, vid, c.kind, c.page, c.section, c.text, name, status))
        return out


SCHEMA = "adamconf-results/1"


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
        "variants": run.variants, "dtypes": run.dtypes, "seconds": round(run.seconds, 3),
        "versions": run.versions, "bins": [str(b) for b in BINS],
        "checks": [dataclasses.asdict(c) for c in run.checks],
        "clauses": [dataclasses.asdict(c) for c in run.clauses],
        "findings": run.findings, "flushes_denormals": run.flushes_denormals,
        "summary": summary(run),
    }
    return clean(d)


def _clause_status(run: CheckRun, clause: str) -> str:
    """An API check judges each clause on its own (see adamconf.api_checks)."""
    return run.clause_status.get(clause, run.status)


def summary(run: RunResult) -> dict[str, Any]:
    """Clause-cell counts per variant: pass, fail, deviation, unsupported, uncovered, error."""
    out: dict[str, Any] = {}
    for c in run.clauses:
        row = out.setdefault(c.variant, {"pass": 0, "fail": 0, "deviation": 0, "unsupported": 0, "uncovered": 0,
                                         "error": 0})
        for st in c.status.values():
            row[st] = row.get(st, 0) + 1
    return out
