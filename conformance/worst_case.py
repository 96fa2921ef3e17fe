"""The worst input of a cell, passing cells included, so every verdict can be traced.

A check sees many examples; `WorstInput` keeps the one whose worst element had the
largest err/(u*S), with the backend's outcome on it, and (for trajectories) the worst
ratio at each step. `record` turns it into JSON-ready data: the replayable case
(`adamconf.cases` format, floats in hex), where the worst element is, the backend's and
the exact value there in hex and decimal, S, the ratio and the error in ulps of the dtype.
`adamconf replay RESULTS.json --cell ID` runs that case again.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np

from adamconf import cases
from adamconf.evaluate import Outcome
from adamconf.reference import adam as ref
from adamconf.reference.state import StepInput, np_dtype
from adamconf.reference.tracked import fmt
from adamconf.spec.model import Variant


def ulps(observed: float, exact: Any, dtype: str) -> float:
    """|observed - exact| in units in the last place of the dtype at the exact value
    (the spacing of the binade of |exact|, the subnormal spacing below the normal range)."""
    f = fmt(dtype)
    if not math.isfinite(observed) or not gmpy2.is_finite(gmpy2.mpfr(exact)):
        return 0.0 if (observed == float(exact) or (math.isnan(observed) and gmpy2.is_nan(exact))) else math.inf
    with gmpy2.context(precision=ref.DEFAULT_PRECISION):
        err = abs(gmpy2.mpfr(observed) - exact)
        if err == 0:
            return 0.0
        e = f.emin if exact == 0 else max(int(gmpy2.floor(gmpy2.log2(abs(exact)))), f.emin)
        return float(err / gmpy2.exp2(e - f.p + 1))


def _value(x: float, dtype: str) -> dict[str, str]:
    """A value in hex (exact) and as the shortest decimal that reads back in its dtype."""
    return {"hex": float(x).hex(), "decimal": str(np_dtype(dtype).type(x))}


def replay_command(out: Path | None, cell_id: str, backend_ref: str) -> str | None:
    """The command that replays a cell's worst input from the results.json in `out`
    (None when the run writes no results file)."""
    if out is None:
        return None
    return (f"adamconf replay {shlex.quote(str(Path(out) / 'results.json'))} --cell {shlex.quote(cell_id)} "
            f"--backend {shlex.quote(backend_ref)}")


def load_cell(results: Path, cell_id: str) -> tuple[StepInput, str, str]:
    """The worst input of one cell of a results file, as (input, clause, check)."""
    from adamconf.reports.load import ReportError, load_results
    from adamconf.reports.table import check_id
    try:
        res = load_results(results)
    except ReportError as e:
        raise cases.CaseError(str(e)) from None
    runs = {check_id(r): r for r in res["checks"]}
    if cell_id not in runs:
        raise cases.CaseError(f"{results} has no cell {cell_id!r}; cells are VARIANT-DTYPE-CHECK, e.g. {next(iter(runs), '-')}")
    wc = runs[cell_id].get("worst_case")
    if not wc:
        raise cases.CaseError(f"cell {cell_id} of {results} kept no input (API checks, refusals and unsupported "
                              "cells compare no numbers)")
    return cases.from_json(wc["case"])


def exact_order_of_results(results: Path) -> str | None:
    """The exact order a results file was judged under (None: the normal mode)."""
    from adamconf.reports.load import ReportError, load_results
    try:
        return load_results(results).get("exact_order")
    except ReportError:
        return None


class WorstInput:
    """Fed every judged outcome of one cell; keeps the worst and the worst per step."""

    def __init__(self, exact_order: str | None = None) -> None:
        self.exact_order = exact_order   # exact mode: the worst element is set against this order
        self.inp: StepInput | None = None
        self.out: Outcome | None = None
        self.by_step: dict[int, float] = {}

    def add(self, out: Outcome, inp: StepInput) -> None:
        if out.verdict is None:        # refusals and crashes carry no comparison
            return
        r = out.verdict.worst_ratio
        if self.out is None or r > self.out.verdict.worst_ratio:
            self.inp, self.out = inp, out
        t = inp.state.iterations + 1
        self.by_step[t] = max(self.by_step.get(t, 0.0), r)

    def steps(self) -> list[list[float]]:
        """[[step, worst ratio at that step], ...] in step order."""
        return [[t, self.by_step[t]] for t in sorted(self.by_step)]

    def record(self, variant: Variant, flush: tuple[str, ...], clause: str, check: str,
               replay: str | None = None) -> dict[str, Any] | None:
        """The kept input as data, or None when no example was compared."""
        if self.inp is None or self.out is None:
            return None
        v = self.out.verdict
        rec: dict[str, Any] = {"ratio": v.worst_ratio, "field": v.worst_field, "variable": None, "element": None,
                               "replay": replay, "case": cases.to_json(self.inp, clause, check, self.exact_order)}
        if v.worst_field is None or v.worst_at is None or self.out.observed is None:
            return rec
        rec.update(self._element(variant, flush, v.worst_field, v.worst_at))
        return rec

    def _element(self, variant: Variant, flush: tuple[str, ...], name: str, at: tuple[int, int]) -> dict[str, Any]:
        inp, obs = self.inp, self.out.observed
        if self.exact_order:
            return self._emulated_element(variant, name, at)
        exact = ref.step(variant, inp.dtype, inp.hyper, inp.state, inp.grads, flush=flush)
        i, j = at
        if name in ("beta1_power", "beta2_power"):
            t, o, dtype = getattr(exact.state, name), float(np.float32(getattr(obs, name))), "float32"
            x, s = t.x, float(t.s)
        else:
            t, dtype = exact.state.fields()[name][i], inp.dtype
            o = float(np.asarray(obs.arrays()[name][i]).astype(np.float64).ravel()[j])
            x = t.x.ravel()[j] if isinstance(t.x, np.ndarray) else t.x
            s = float(np.broadcast_to(t.s, t.shape).ravel()[j]) if t.shape else float(t.s)
        return {"variable": i, "element": j, "observed": _value(o, dtype),
                "exact": {"decimal": f"{gmpy2.mpfr(x):.20g}", "nearest": _value(float(x), dtype)},
                "scale": s, "ulps": ulps(o, x, dtype)}

    def _emulated_element(self, variant: Variant, name: str, at: tuple[int, int]) -> dict[str, Any]:
        """Exact mode: the order's value in place of the exact one; scale 0 and the
        distance in representable values of the dtype in place of ulps."""
        from adamconf import exact_mode
        emulated = exact_mode.emulated_step(self.exact_order, variant, self.inp)
        o, e, dtype = exact_mode.element(name, at, emulated, self.out.observed, self.inp.dtype)
        apart = exact_mode.steps_apart(np.array([o]), np.array([e]), dtype)[0]
        return {"variable": at[0], "element": at[1], "observed": _value(o, dtype),
                "exact": {"decimal": f"{e:.20g}", "nearest": _value(e, dtype)}, "scale": 0.0, "ulps": float(apart)}
