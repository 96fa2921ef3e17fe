"""Exact mode (`--exact-order NAME`): a backend judged bit for bit against one op order.

The emulator (`reference.emulate`) computes what the named order gives with every
operation correctly rounded to the target format; here a backend's state after the
same step must equal it in every element, ill-conditioned ones included. Equality is
of bits, signed zeros included (the op order decides the sign of a zero result, so a
different sign is a different order); any NaN matches any NaN (payloads are not
judged). The distance reported for a differing element is how many representable
values of the dtype lie between the two, counting -0 and +0 as neighbours, so the
error histogram reads in steps of the format; K is 0.

Checks that need what the emulator does not model (sparse gradients, norm clipping,
schedules, the algorithm-1 formula, flush-to-zero backends) are `unsupported` in this
mode, with the reason; checks that judge a refusal (a raised error) run as usual.
"""
from __future__ import annotations

import math

import numpy as np

from adamconf.evaluate import Invalid, Outcome, run_backend
from adamconf.reference import adam as ref
from adamconf.reference import emulate
from adamconf.reference.bound import FieldStats, Verdict
from adamconf.reference.state import AdamState, StepInput, dtype_name, np_dtype
from adamconf.spec.model import Variant

__all__ = ["ORDER_NAMES", "check_order", "compare_bits", "evaluate_exact", "steps_apart", "unsupported"]

ORDER_NAMES = tuple(emulate.ORDERS)
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def check_order(name: str | None) -> str | None:
    """The order's name, or ValueError naming the valid ones."""
    if name is None or name in emulate.ORDERS:
        return name
    raise ValueError(f"unknown exact order {name!r}; the exact orders are {', '.join(ORDER_NAMES)}")


def unsupported(variant: Variant, dtype: str, features: frozenset[str], flushes: tuple[str, ...] = ()) -> str | None:
    """Why exact mode cannot judge this cell, or None."""
    why = emulate.unemulated(variant, features, dtype, flushes)
    return None if why is None else f"exact mode: {why}"


def _ordinal(a: np.ndarray) -> np.ndarray:
    """Each value's place on the number line of its format, as an integer: consecutive
    representable values differ by 1, -0 is just below +0."""
    a = np.ascontiguousarray(a)
    bits = a.view(_UINT[a.dtype.itemsize]).astype(np.uint64)
    sign = np.uint64(1) << np.uint64(8 * a.dtype.itemsize - 1)
    mag = (bits & ~sign).astype(np.int64)
    return np.where(bits & sign, -mag - 1, mag)


def steps_apart(observed: np.ndarray, emulated: np.ndarray, dtype: str) -> np.ndarray:
    """Element-wise distance in representable values of the dtype: 0 where the bits are
    equal or both are NaN, inf where only one is NaN."""
    T = np_dtype(dtype)
    o = np.asarray(observed).astype(T, copy=False)
    e = np.asarray(emulated).astype(T, copy=False)
    o64, e64 = o.astype(np.float64), e.astype(np.float64)
    dist = np.abs(_ordinal(o).astype(np.float64) - _ordinal(e).astype(np.float64))
    on, en = np.isnan(o64), np.isnan(e64)
    return np.where(on & en, 0.0, np.where(on | en, math.inf, dist))


def _mismatch(name: str, i: int, e: np.ndarray, o: np.ndarray, dtype: str) -> str | None:
    if o.shape != np.shape(e):
        return f"{name}[{i}] has shape {o.shape}, expected {np.shape(e)}"
    if dtype_name(o.dtype) != dtype:
        return f"{name}[{i}] has dtype {dtype_name(o.dtype)}, expected {dtype}"
    return None


def _field(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], dtype: str, problems: list[str]) -> FieldStats:
    """Every element of one state field: its distance from the order's value."""
    st = FieldStats(name)
    for i, (e, o) in enumerate(pairs):
        o = np.asarray(o)
        bad = _mismatch(name, i, e, o, dtype)
        r = np.zeros(0) if bad else steps_apart(o, e, dtype).ravel()
        problems.extend([bad] if bad else [])
        st.n += r.size
        st.ratios.append(r)
        j = int(np.argmax(r)) if r.size else -1
        if j >= 0 and (r[j] > st.worst_ratio or st.worst_at is None):
            st.worst_ratio, st.worst_at = float(r[j]), (i, j)
    return st


def compare_bits(emulated: AdamState, observed: AdamState, dtype: str,
                 fields: tuple[str, ...] | None = None) -> Verdict:
    """Judge every element of the backend's state against the emulated one (K = 0)."""
    em, ob = emulated.arrays(), observed.arrays()
    problems = ([] if observed.iterations == emulated.iterations
                else [f"iterations is {observed.iterations}, expected {emulated.iterations}"])
    stats: dict[str, FieldStats] = {}
    for name in [f for f in fields or tuple(em) if f in em]:
        got = ob.get(name)
        if got is None or len(got) != len(em[name]):
            problems.append(f"the backend returned no {name}" if got is None
                            else f"{name}: {len(got)} arrays returned for {len(em[name])} variables")
        else:
            stats[name] = _field(name, list(zip(em[name], got)), dtype, problems)
    for pname in ("beta1_power", "beta2_power"):
        e, o = getattr(emulated, pname), getattr(observed, pname)
        if e is not None and o is None:
            problems.append(f"the backend returned no {pname}")
        elif e is not None:
            stats[pname] = _field(pname, [(np.array([np.float32(e)]), np.array([np.float32(o)]))], "float32", problems)
    worst_name = max(stats, key=lambda k: stats[k].worst_ratio, default=None)
    worst = stats[worst_name].worst_ratio if worst_name else 0.0
    ok = not problems and worst == 0
    return Verdict(ok, 0.0, worst, worst_name, stats[worst_name].worst_at if worst_name else None, problems, stats)


def emulated_step(order: str, variant: Variant, inp: StepInput) -> AdamState:
    """The order's result for this input; Invalid where the documented API would refuse
    the input (as in the normal mode, so both modes draw the same examples)."""
    try:
        ref.validate(variant, inp.hyper, inp.state, list(inp.grads))
    except ref.ReferenceError as e:
        raise Invalid(str(e)) from None
    return emulate.step(order, variant, inp.dtype, inp.hyper, inp.state, inp.grads)


def evaluate_exact(backend: object, variant: Variant, inp: StepInput, order: str, timeout: float,
                   fields: tuple[str, ...] | None = None) -> Outcome:
    """One step through the backend and the emulated order, judged bit for bit."""
    emulated = emulated_step(order, variant, inp)
    obs, msg = run_backend(backend, inp, timeout)  # type: ignore[arg-type]
    if obs is None:
        return Outcome(False, msg, hung=msg.startswith("HUNG"))
    verdict = compare_bits(emulated, obs, inp.dtype, fields)
    if verdict.problems:
        return Outcome(False, "; ".join(verdict.problems), verdict, observed=obs)
    if not verdict.ok:
        return Outcome(False, describe(order, verdict, emulated, obs, inp.dtype), verdict, verdict.ratios(),
                       observed=obs)
    return Outcome(True, "", verdict, verdict.ratios(), observed=obs)


def element(name: str, at: tuple[int, int], emulated: AdamState, observed: AdamState,
            dtype: str) -> tuple[float, float, str]:
    """(backend's value, the order's value, their dtype) at one element."""
    i, j = at
    if name in ("beta1_power", "beta2_power"):
        return float(np.float32(getattr(observed, name))), float(np.float32(getattr(emulated, name))), "float32"
    o = float(np.asarray(observed.arrays()[name][i]).astype(np.float64).ravel()[j])
    e = float(np.asarray(emulated.arrays()[name][i]).astype(np.float64).ravel()[j])
    return o, e, dtype


def describe(order: str, verdict: Verdict, emulated: AdamState, observed: AdamState, dtype: str) -> str:
    name = verdict.worst_field or "?"
    o, e, dt = element(name, verdict.worst_at or (0, 0), emulated, observed, dtype)
    where = name if name.endswith("_power") else f"{name}[{(verdict.worst_at or (0, 0))[0]}] element {(verdict.worst_at or (0, 0))[1]}"
    return (f"exact order {order}: {where}: backend {o.hex()} ({o!r}), the order gives {e.hex()} ({e!r}): "
            f"{verdict.worst_ratio:.3g} representable {dt} values apart")
