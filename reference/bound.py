"""Comparing a backend's state with the exact one: |observed - exact| <= K * u * S.

The ratio err / (u*S) is what reports show; a verdict passes when every ratio is at
most K. Elements where the first-order model does not hold (a divisor or square-root
argument within K*u*S of zero, or an intermediate past the format's largest finite
number) are counted as ill-conditioned and left to the special-value clauses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from adamconf.reference.adam import StepResult
from adamconf.reference.state import AdamState, dtype_name, np_dtype
from adamconf.reference.tracked import _ONE, fmt


@dataclass
class FieldStats:
    name: str
    n: int = 0
    worst_ratio: float = 0.0
    worst_at: tuple[int, int] | None = None   # (variable index, flat element index)
    ill: int = 0
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

    def ratios(self) -> np.ndarray:
        parts = [r for f in self.fields.values() for r in f.ratios]
        return np.concatenate(parts) if parts else np.zeros(0)


def element_ratios(exact: np.ndarray, scale: np.ndarray, margin: np.ndarray,
                   observed: np.ndarray, dtype: str, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-element err/(u*S) (0 where both agree exactly, inf where S cannot excuse the
    difference) and the ill-conditioned mask."""
    u = fmt(dtype).u
    obs = np.asarray(observed).astype(np.float64)
    ex64 = np.asarray(exact.astype(np.float64) if isinstance(exact, np.ndarray) else float(exact))
    rounded = ex64.astype(np_dtype(dtype)).astype(np.float64) if ex64.size else ex64
    # Where the exact result is itself inf or NaN (IEEE special inputs) the backend must
    # give the same and nothing is excused; elsewhere NaN margins or scales come from
    # intermediates past the float64 range and count as ill-conditioned. A finite exact
    # result past the dtype's range must round to inf unless the element is ill.
    true_special = ~np.isfinite(ex64)
    ill = (~(np.asarray(margin) > 2.0 * k * u) | ~np.isfinite(np.asarray(scale, dtype=np.float64))) & ~true_special
    both_nan = np.isnan(ex64) & np.isnan(obs)
    special = ~np.isfinite(rounded) | ~np.isfinite(obs)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.zeros(obs.shape)
        fin = ~special
        if fin.any():
            diff = (_ONE * obs[fin].astype(object)) - np.asarray(exact)[fin]
            err[fin] = np.abs(diff.astype(np.float64))
        bound = u * np.asarray(scale, dtype=np.float64)
        ratio = np.where(err == 0, 0.0, np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), math.inf))
    # With infinite or NaN inputs, which of inf or NaN comes out depends on the op order
    # (inf - inf in a lerp form): any non-finite result matches a non-finite exact one.
    same_special = special & ((rounded == obs) | both_nan | (true_special & ~np.isfinite(obs)))
    ratio = np.where(special, np.where(same_special, 0.0, math.inf), ratio)
    return ratio, ill


def compare(result: StepResult, observed: AdamState, k: float,
            fields: tuple[str, ...] | None = None) -> Verdict:
    """Judge a backend's state after one step against the exact result."""
    with np.errstate(all="ignore"):
        return _compare(result, observed, k, fields)


def _compare(result: StepResult, observed: AdamState, k: float, fields: tuple[str, ...] | None) -> Verdict:
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
        for i, (t, o) in enumerate(zip(ex_list, obs_list)):
            o = np.asarray(o)
            if o.shape != t.shape:
                problems.append(f"{name}[{i}] has shape {o.shape}, expected {t.shape}")
                continue
            if dtype_name(o.dtype) != dtype:
                problems.append(f"{name}[{i}] has dtype {dtype_name(o.dtype)}, expected {dtype}")
                continue
            x = t.x if isinstance(t.x, np.ndarray) else np.full(t.shape, t.x, dtype=object)
            r, ill = element_ratios(x, np.broadcast_to(t.s, t.shape), np.broadcast_to(t.margin, t.shape), o, dtype, k)
            r = np.where(ill, 0.0, r).ravel()
            st.n += r.size
            st.ill += int(np.count_nonzero(ill))
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
        r, _ = element_ratios(np.array([t.x], dtype=object), np.array([t.s]), np.array([math.inf]),
                              np.array([np.float32(o)]), "float32", k)
        st = FieldStats(pname, n=1, worst_ratio=float(r[0]), worst_at=(0, 0), ratios=[r])
        stats[pname] = st
    worst_name, worst = None, 0.0
    for name, st in stats.items():
        if st.worst_ratio > worst or worst_name is None:
            worst_name, worst = name, st.worst_ratio
    ok = not problems and worst <= k
    return Verdict(ok, k, worst, worst_name, stats[worst_name].worst_at if worst_name else None, problems, stats)
