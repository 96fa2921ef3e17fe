"""Binding: does an example let the feature under test decide the verdict?

A check judges a feature (clipping, a schedule, AMSGrad, ...) only on the examples
where the feature changes the result by more than the bound. For each check this module
names the *alternatives*: the same input with the feature switched off, or read the way
its likeliest mistake reads it (a schedule or legacy decay at the count after the
increment; the other clip policy). An example **binds** when every alternative's exact
result, rounded to the dtype, would fail the bound K*u*S of the true exact result: a
backend that computed the alternative without a single rounding error would still be
caught on that example. The binding rate of a check is the share of its judged examples
that bind.

Checks with no single feature under test have no binding rate (`NOT_MEANINGFUL` says
why), except `dense` and `fresh`, whose alternative is the parameter left where it was:
there the rate is the share of examples whose step is visible on the parameter at all.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from adamconf.reference import adam as ref
from adamconf.reference.bound import compare
from adamconf.reference.state import Schedule, SparseGrad, StepInput
from adamconf.spec.model import Variant

Alternatives = Callable[[Variant, StepInput], list[tuple[Variant, StepInput]]]

NOT_MEANINGFUL: dict[str, str] = {
    "trajectory": "several steps from the backend's own states; each step is a dense step, whose rate `dense` reports",
    "special": "the outcomes are IEEE special values (inf, NaN, signed zeros), judged exactly, not against a bound",
    "example": "one fixed documented example",
    "migrate-example": "one fixed documented example",
    "bfloat16-frozen": "a fixed outcome (nothing moves) of default betas in bfloat16",
    "no-gradients": "an error check: the backend must raise",
    "clip-exclusive": "an error check: the backend must raise",
    "clipnorm-with-global": "an error check: the backend must raise",
}


def _hyper(**kw: object) -> Alternatives:
    return lambda v, inp: [(v, dataclasses.replace(inp, hyper=inp.hyper.replace(**kw)))]


def _no_amsgrad(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    st = inp.state.copy()
    st.vhat = None
    return [(v, StepInput(inp.variant, inp.dtype, inp.hyper.replace(amsgrad=False), st, inp.grads))]


def _last_slice_wins(g: object) -> object:
    """A sparse gradient with each repeated index kept once, its last slice."""
    if not isinstance(g, SparseGrad):
        return g
    idx = np.asarray(g.indices, dtype=np.int64)
    last = {int(i): j for j, i in enumerate(idx)}
    keep = np.array(sorted(last.values()), dtype=np.int64)
    return SparseGrad(idx[keep], np.asarray(g.values)[keep], tuple(g.dense_shape))


def _sparse(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    return [(v, dataclasses.replace(inp, grads=tuple(_last_slice_wins(g) for g in inp.grads)))]


def _none_as_zero(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    grads = tuple(np.zeros(np.shape(p), dtype=np.asarray(p).dtype) if g is None else g
                  for g, p in zip(inp.grads, inp.state.params))
    return [(v, dataclasses.replace(inp, grads=grads))]


def _other_policy(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    other = {"sequential": "first-of", "first-of": "sequential"}.get(v.clip_policy)
    return [(dataclasses.replace(v, clip_policy=other), inp)] if other else []


def _decay(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    """No decay, and decay at the count after the increment (folded into a constant rate)."""
    h, t = inp.hyper, inp.state.iterations
    late = float(h.learning_rate) / (1.0 + float(np.float32(h.decay)) * (t + 1))
    return [(v, dataclasses.replace(inp, hyper=h.replace(decay=0.0))),
            (v, dataclasses.replace(inp, hyper=h.replace(decay=0.0, learning_rate=late)))]


def _schedule(v: Variant, inp: StepInput) -> list[tuple[Variant, StepInput]]:
    """The schedule read at the count after the increment."""
    s = inp.hyper.learning_rate
    if not isinstance(s, Schedule):
        return []
    return [(v, dataclasses.replace(inp, hyper=inp.hyper.replace(learning_rate=float(s(inp.state.iterations + 1)))))]


ALTERNATIVES: dict[str, Alternatives] = {
    "dense": _hyper(learning_rate=0.0),
    "fresh": _hyper(learning_rate=0.0),
    "amsgrad": _no_amsgrad,
    "sparse": _sparse,
    "none-grad": _none_as_zero,
    "clipvalue": _hyper(clipvalue=None),
    "clipnorm": _hyper(clipnorm=None),
    "global_clipnorm": _hyper(global_clipnorm=None),
    "clip-combined": _other_policy,
    "decay": _decay,
    "schedule": _schedule,
    "weight_decay": _hyper(weight_decay=None),
    "maximize": _hyper(maximize=False),
    "ema": _hyper(ema_momentum=0.0),
    "adaptive_epsilon": _hyper(adaptive_epsilon=False),
    "eps_root": _hyper(eps_root=0.0),
}


def binds(check: str, variant: Variant, inp: StepInput, k: float, flush: tuple[str, ...] = (),
          on: ref.StepResult | None = None) -> bool | None:
    """Whether this example binds the check's feature; None when the check has no
    alternatives or the true step cannot be evaluated. `on`: the exact result of `inp`
    when the caller has it already."""
    with np.errstate(all="ignore"):
        return _binds(check, variant, inp, k, flush, on)


def _binds(check: str, variant: Variant, inp: StepInput, k: float, flush: tuple[str, ...],
           on: ref.StepResult | None) -> bool | None:
    alt = ALTERNATIVES.get(check)
    if alt is None:
        return None
    if on is None:
        try:
            on = ref.step(variant, inp.dtype, inp.hyper, inp.state, inp.grads, flush=flush)
        except ref.ReferenceError:
            return None
    alternatives = alt(variant, inp)
    if not alternatives:
        return False
    for v2, other in alternatives:
        try:
            off = ref.step(v2, other.dtype, other.hyper, other.state, other.grads, flush=flush)
        except ref.ReferenceError:
            return False
        mine = off.state.rounded(inp.dtype)
        fields = tuple(n for n in on.state.fields() if n in mine.arrays())
        if compare(on, mine, k, fields).ok:
            return False
    return True
