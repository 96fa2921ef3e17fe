"""Comparing a backend's state with the exact one: |observed - exact| <= K * u * S.

The ratio err / (u*S) is what reports show; a verdict passes when every ratio is at
most K. It is formed as (err / S) / u in exact arithmetic, so it cannot underflow
where u*S is below the smallest double (float64 elements whose S is only the underflow
allowance).

Elements are judged in one of three ways, and each verdict counts them:
  bound  |observed - exact| <= K*u*S (the first-order model holds);
  ieee   the exact outcome is inf or NaN, or the IEEE outcomes of the op orders decide
         it (`reference.adam.step(ieee=...)`: intermediates that overflow to inf, or
         round below the normal range to a decided value): the backend matches the
         exact result within the bound, or one of those outcomes;
  ill    left unjudged: a divisor or square-root argument within K*u*S of zero, or an
         overflow or underflow whose outcome some order leaves undecided.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import gmpy2
import numpy as np

from adamconf.reference.adam import StepResult
from adamconf.reference.state import AdamState, dtype_name, np_dtype
from adamconf.reference.tracked import _ONE, Tracked, fmt


@dataclass
class FieldStats:
    name: str
    n: int = 0
    worst_ratio: float = 0.0
    worst_at: tuple[int, int] | None = None   # (variable index, flat element index)
    ill: int = 0
    ieee: int = 0                             # judged by an IEEE outcome (see module doc)
    ratios: list[np.ndarray] = field(default_factory=list, repr=False)


@dataclass
class Verdict:
    ok: bool
    k: float
    worst_ratio: float
    worst_field: str | None
    worst_at: tuple[int, int] | None
    problems: list[str]
    fields: dict[str, FieldStats]

    @property
    def ill(self) -> int:
        return sum(f.ill for f in self.fields.values())

    @property
    def ieee(self) -> int:
        return sum(f.ieee for f in self.fields.values())

    @property
    def elements(self) -> int:
        return sum(f.n for f in self.fields.values())

    def ratios(self) -> np.ndarray:
        parts = [r for f in self.fields.values() for r in f.ratios]
        return np.concatenate(parts) if parts else np.zeros(0)


def element_ratios(exact: np.ndarray, scale: np.ndarray, margin: np.ndarray,
                   observed: np.ndarray, dtype: str, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-element err/(u*S) (0 where both agree exactly, inf where S cannot excuse the
    difference), the ill-conditioned mask, and the mask of elements whose exact result
    is an IEEE special value (judged by matching it)."""
    u = fmt(dtype).u
    obs = np.asarray(observed).astype(np.float64)
    ex64 = np.asarray(exact.astype(np.float64) if isinstance(exact, np.ndarray) else float(exact))
    rounded = ex64.astype(np_dtype(dtype)).astype(np.float64) if ex64.size else ex64
    # Where the exact result is itself inf or NaN (IEEE special inputs) the backend must
    # give the same and nothing is excused; elsewhere NaN margins or scales come from
    # intermediates past the float64 range and count as ill-conditioned. A finite exact
    # result past the dtype's range must round to inf unless the element is ill.
    true_special = ~np.isfinite(ex64)
    wide = np.asarray(scale)   # float64 data's S is a long double: it can pass the double range
    with np.errstate(over="ignore"):
        scale = wide.astype(np.float64)
    ill = (~(np.asarray(margin) > 2.0 * k * u) | ~np.isfinite(wide)) & ~true_special
    both_nan = np.isnan(ex64) & np.isnan(obs)
    special = ~np.isfinite(rounded) | ~np.isfinite(obs)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.zeros(obs.shape)
        fin = ~special
        if fin.any():
            diff = (_ONE * obs[fin].astype(object)) - np.asarray(exact)[fin]
            s = scale[fin].astype(object)
            past = ~np.isfinite(scale[fin]) & np.isfinite(wide[fin])
            if past.any():   # read from its decimal repr: 20 digits are plenty for a ratio
                s[past] = [gmpy2.mpfr(str(w)) for w in wide[fin][past]]
            nz = diff != 0
            r = np.where(nz, math.inf, 0.0)
            ok = nz & (s > 0)
            if ok.any():   # (|diff| / S) / u, exactly: u*S may lie below the smallest double
                r[ok] = (abs(diff[ok]) / s[ok] / u).astype(np.float64)
            ratio[fin] = r
    # With infinite or NaN inputs, which of inf or NaN comes out depends on the op order
    # (inf - inf in a lerp form): any non-finite result matches a non-finite exact one.
    same_special = special & ((rounded == obs) | both_nan | (true_special & ~np.isfinite(obs)))
    ratio = np.where(special, np.where(same_special, 0.0, math.inf), ratio)
    return ratio, ill, true_special


def compare(result: StepResult, observed: AdamState, k: float,
            fields: tuple[str, ...] | None = None,
            alternative: StepResult | Sequence[StepResult] | None = None) -> Verdict:
    """Judge a backend's state after one step against the exact result; `alternative`,
    the IEEE outcome of the plain order (or of each order given, see module doc),
    judges the elements an overflow or underflow left ill-conditioned."""
    alts = [] if alternative is None else [alternative] if isinstance(alternative, StepResult) else list(alternative)
    with np.errstate(all="ignore"):
        return _compare(result, observed, k, fields, alts)


def _element(t: Tracked, o: np.ndarray, dtype: str, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = t.x if isinstance(t.x, np.ndarray) else np.full(t.shape, t.x, dtype=object)
    return element_ratios(x, np.broadcast_to(t.s, t.shape), np.broadcast_to(t.margin, t.shape), o, dtype, k)


def _by_alternatives(r: np.ndarray, ill: np.ndarray, ieee: np.ndarray, alts: list[Tracked],
                     o: np.ndarray, dtype: str, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Judge the elements the exact step left ill by the IEEE outcomes of the orders in
    `alts`, where every one of them decides the element (an order whose own outcome is
    ill-conditioned could give anything, so nothing could fail there): the backend
    passes within the bound of the exact result or of any of those outcomes. The rest
    stay unjudged."""
    best = np.where(np.isnan(r), math.inf, r)
    judged = ill.copy()
    for alt in alts:
        r2, ill2, _ = _element(alt, o, dtype, k)
        best = np.fmin(best, np.where(ill2, math.inf, r2))
        judged &= ~ill2
    return np.where(judged, best, r), ill & ~judged, ieee | judged


def _compare(result: StepResult, observed: AdamState, k: float, fields: tuple[str, ...] | None,
             alternatives: list[StepResult]) -> Verdict:
    dtype = result.dtype
    problems: list[str] = []
    stats: dict[str, FieldStats] = {}
    ex_fields = result.state.fields()
    obs_fields = observed.arrays()
    if observed.iterations != result.state.iterations:
        problems.append(f"iterations is {observed.iterations}, expected {result.state.iterations}")
    for name in fields or tuple(ex_fields):
        if name not in ex_fields:
            continue
        if name not in obs_fields:
            problems.append(f"the backend returned no {name}")
            continue
        ex_list, obs_list = ex_fields[name], obs_fields[name]
        if len(obs_list) != len(ex_list):
            problems.append(f"{name}: {len(obs_list)} arrays returned for {len(ex_list)} variables")
            continue
        st = FieldStats(name)
        alt_lists = [a.state.fields().get(name) for a in alternatives]
        for i, (t, o) in enumerate(zip(ex_list, obs_list)):
            o = np.asarray(o)
            if o.shape != t.shape:
                problems.append(f"{name}[{i}] has shape {o.shape}, expected {t.shape}")
                continue
            if dtype_name(o.dtype) != dtype:
                problems.append(f"{name}[{i}] has dtype {dtype_name(o.dtype)}, expected {dtype}")
                continue
            r, ill, ieee = _element(t, o, dtype, k)
            if ill.any() and any(a is not None for a in alt_lists):
                r, ill, ieee = _by_alternatives(r, ill, ieee, [a[i] for a in alt_lists if a is not None], o, dtype, k)
            r = np.where(ill, 0.0, r).ravel()
            st.n += r.size
            st.ill += int(np.count_nonzero(ill))
            st.ieee += int(np.count_nonzero(ieee))
            st.ratios.append(r[~ill.ravel()])
            if r.size:
                j = int(np.argmax(r))
                if r[j] > st.worst_ratio or st.worst_at is None:
                    st.worst_ratio, st.worst_at = float(r[j]), (i, j)
        stats[name] = st
    for pname in ("beta1_power", "beta2_power"):
        t = getattr(result.state, pname)
        if t is None:
            continue
        o = getattr(observed, pname)
        if o is None:
            problems.append(f"the backend returned no {pname}")
            continue
        r, _, _ = element_ratios(np.array([t.x], dtype=object), np.array([t.s]), np.array([math.inf]),
                              np.array([np.float32(o)]), "float32", k)
        st = FieldStats(pname, n=1, worst_ratio=float(r[0]), worst_at=(0, 0), ratios=[r])
        stats[pname] = st
    worst_name, worst = None, 0.0
    for name, st in stats.items():
        if st.worst_ratio > worst or worst_name is None:
            worst_name, worst = name, st.worst_ratio
    ok = not problems and worst <= k
    return Verdict(ok, k, worst, worst_name, stats[worst_name].worst_at if worst_name else None, problems, stats)
