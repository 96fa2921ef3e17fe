"""Running one case through a backend and the reference, and judging the outcome.

Every way a backend can misbehave becomes a failed outcome with a message, never an
exception out of the harness: raising, hanging past the per-case timeout, returning
something that is not a state, the wrong shape or dtype, NaN where the exact result
is finite, or mutating its inputs.
"""
from __future__ import annotations

import copy
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adamconf.protocol import Backend
from adamconf.reference import adam as ref
from adamconf.reference.bound import Verdict, compare
from adamconf.reference.state import AdamState, SparseGrad, StepInput
from adamconf.spec.model import Variant


class Invalid(Exception):
    """The scenario is outside what the variant accepts; hypothesis discards it."""


@dataclass
class Outcome:
    ok: bool
    message: str = ""
    verdict: Verdict | None = None
    ratios: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ill: int = 0
    hung: bool = False
    elements: int = 0      # elements compared; `ieee` of them judged by an IEEE outcome, `ill` not judged
    ieee: int = 0
    observed: AdamState | None = None
    exact: ref.StepResult | None = None   # the reference's result, kept on a pass (adamconf.binding reuses it)

    @property
    def worst(self) -> float:
        return self.verdict.worst_ratio if self.verdict is not None else (0.0 if self.ok else float("inf"))


class Hung(Exception):
    pass


def call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """Run fn in a daemon thread; raise Hung if it has not returned after timeout seconds.

    A hung call cannot be killed from Python; its thread is abandoned and the caller
    stops sending it work (see Runner)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            # special-value cases overflow and divide by zero on purpose; the gate judges
            # the IEEE outcome, so numpy's floating-point warnings are noise here
            with np.errstate(all="ignore"):
                box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    th = threading.Thread(target=target, daemon=True, name="adamconf-backend-call")
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise Hung(f"the backend did not return within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


Guard = Callable[[Callable[[], Any], float, str], Any]
_guard: list[Guard] = []


def set_guard(guard: Guard | None) -> None:
    """Route every backend call through `guard(fn, timeout)` instead of a thread with a
    timeout: an isolated worker (adamconf.worker) reports each call to the harness, which
    kills the whole process when a call overruns."""
    _guard[:] = [guard] if guard else []


def guarded(fn: Callable[[], Any], timeout: float, what: str = "step") -> Any:
    """Call into the backend under the active guard (a worker's, or a thread's timeout);
    `what` names the call in a HUNG verdict."""
    if not _guard:
        return call_with_timeout(fn, timeout)
    with np.errstate(all="ignore"):   # as in call_with_timeout: special values overflow on purpose
        return _guard[0](fn, timeout, what)


def fresh(inp: StepInput) -> StepInput:
    """A deep copy, so every call gets its own arrays and a mutation shows as a mutation."""
    return copy.deepcopy(inp)


def _snapshot(inp: StepInput) -> list[bytes]:
    out = []
    for arrs in inp.state.arrays().values():
        out.extend(np.asarray(a).tobytes() for a in arrs)
    for g in inp.grads:
        if isinstance(g, SparseGrad):
            out.append(np.asarray(g.values).tobytes() + np.asarray(g.indices).tobytes())
        elif g is not None:
            out.append(np.asarray(g).tobytes())
    out.append(repr((inp.state.iterations, inp.state.beta1_power, inp.state.beta2_power)).encode())
    return out


def run_backend(backend: Backend, inp: StepInput, timeout: float) -> tuple[AdamState | None, str]:
    """The backend's new state, or None and a message saying what went wrong. The backend
    sees a fresh copy of the input; if it changes that copy, that is reported."""
    inp = fresh(inp)
    before = _snapshot(inp)
    try:
        out = guarded(lambda: backend.step(inp.variant, inp.dtype, inp.hyper, inp.state, list(inp.grads)), timeout)
    except Hung as e:
        return None, f"HUNG: {e}"
    except Exception as e:  # noqa: BLE001 - any backend exception is a finding
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return None, f"the backend raised {tb}"
    if _snapshot(inp) != before:
        return None, "the backend modified its inputs (state or gradients); it must return a new state instead"
    if not isinstance(out, AdamState):
        return None, f"the backend returned {type(out).__name__}, expected an AdamState"
    return out, ""


def judge(variant: Variant, inp: StepInput, exact: ref.StepResult, observed: AdamState, k: float,
          flush: tuple[str, ...], fields: tuple[str, ...] | None = None) -> Verdict:
    """`observed` against the exact step; where an overflow or underflow left elements
    ill-conditioned, the plain order's IEEE outcome (reference.adam.step(ieee=True))
    judges them too, and where that fails or leaves some, the outcome of the order that
    divides m by the denominator before scaling it (ieee="quotient-first")."""
    verdict = compare(exact, observed, k, fields)
    if not verdict.ill or verdict.problems:
        return verdict
    alts = [ref.step(variant, inp.dtype, inp.hyper, inp.state, inp.grads, flush=flush, ieee=True)]
    verdict = compare(exact, observed, k, fields, alts)
    if verdict.ill or not verdict.ok:
        alts.append(ref.step(variant, inp.dtype, inp.hyper, inp.state, inp.grads, flush=flush, ieee="quotient-first"))
        verdict = compare(exact, observed, k, fields, alts)
    return verdict


def evaluate(backend: Backend, variant: Variant, inp: StepInput, k: float, timeout: float,
             fields: tuple[str, ...] | None = None) -> Outcome:
    """One step through backend and reference, judged against K*u*S."""
    flush = tuple(getattr(backend, "flushes_denormals", ()))
    try:
        exact = ref.step(variant, inp.dtype, inp.hyper, inp.state, inp.grads, flush=flush)
    except ref.ReferenceError as e:
        raise Invalid(str(e)) from None
    obs, msg = run_backend(backend, inp, timeout)
    if obs is None:
        return Outcome(False, msg, hung=msg.startswith("HUNG"))
    verdict = judge(variant, inp, exact, obs, k, flush, fields)
    if verdict.problems:
        return Outcome(False, "; ".join(verdict.problems), verdict, observed=obs)
    counts = {"ill": verdict.ill, "elements": verdict.elements, "ieee": verdict.ieee}
    if not verdict.ok:
        return Outcome(False, _describe_excess(verdict, exact, obs), verdict, verdict.ratios(), observed=obs, **counts)
    return Outcome(True, "", verdict, verdict.ratios(), observed=obs, exact=exact, **counts)


def nondeterminism(backend: Backend, inp: StepInput, timeout: float) -> str | None:
    """Call the backend twice on the same input, outside hypothesis (which reseeds
    Python's and numpy's global random state for every example): where the two results
    differ, say where."""
    a, msg_a = run_backend(backend, inp, timeout)
    b, msg_b = run_backend(backend, inp, timeout)
    if a is None or b is None:
        return None if msg_a == msg_b else f"two calls on the same input ended differently: {msg_a or 'a state'} / {msg_b or 'a state'}"
    fa, fb = a.arrays(), b.arrays()
    for name in fa:
        for i, (x, y) in enumerate(zip(fa[name], fb.get(name) or [])):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.tobytes() != y.tobytes():
                j = int(np.argmax(x.ravel() != y.ravel())) if x.shape == y.shape else 0
                return (f"the backend is not deterministic: two calls on the same input gave {name}[{i}] element {j} = "
                        f"{x.ravel()[j]!r} and {y.ravel()[j]!r}")
    if (a.iterations, a.beta1_power, a.beta2_power) != (b.iterations, b.beta1_power, b.beta2_power):
        return "the backend is not deterministic: two calls on the same input gave different iterations or beta powers"
    return None


def expect_raises(backend: Backend, inp: StepInput, exc: type[BaseException], timeout: float) -> Outcome:
    """The backend must refuse this input with `exc`."""
    try:
        inp = fresh(inp)
        guarded(lambda: backend.step(inp.variant, inp.dtype, inp.hyper, inp.state, list(inp.grads)), timeout)
    except Hung as e:
        return Outcome(False, f"HUNG: {e}", hung=True)
    except exc:
        return Outcome(True)
    except Exception as e:  # noqa: BLE001
        return Outcome(False, f"expected {exc.__name__}, the backend raised {type(e).__name__}: {e}")
    return Outcome(False, f"expected {exc.__name__}, the backend returned a state")


def _describe_excess(verdict: Verdict, exact: ref.StepResult, obs: AdamState) -> str:
    name = verdict.worst_field or "?"
    i, j = verdict.worst_at or (0, 0)
    if name in ("beta1_power", "beta2_power"):
        return (f"{name} = {getattr(obs, name)!r}, exact {float(getattr(exact.state, name).x)!r}: "
                f"error {verdict.worst_ratio:.3g} u*S, bound K = {verdict.k:g}")
    ex = exact.state.fields()[name][i]
    xv = ex.x.ravel()[j] if isinstance(ex.x, np.ndarray) else ex.x
    s = np.broadcast_to(ex.s, ex.shape).ravel()[j] if ex.shape else float(ex.s)
    ov = np.asarray(obs.arrays()[name][i]).astype(np.float64).ravel()[j]
    return (f"{name}[{i}] element {j}: backend {ov!r}, exact {float(xv)!r} (S = {float(s):.4g}): "
            f"error {verdict.worst_ratio:.3g} u*S exceeds K = {verdict.k:g}")
