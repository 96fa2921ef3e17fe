"""The backend protocol: state in, state out.

A backend is any object with these attributes and one method:

    name: str
    variants: Collection[str]   spec variant ids it implements
    dtypes: Collection[str]     among "float16", "bfloat16", "float32", "float64"
    features: Collection[str]   spec features it implements (see spec.model.FEATURES)
    def step(self, variant, dtype, hyper, state, grads) -> AdamState

`step` receives the full prior state (params, m, v, vhat, iterations, TF1 beta
powers, EMA averages) as numpy arrays of `dtype`, one gradient per parameter (a
dense array, a SparseGrad with possibly repeated indices, or None), and returns the
full state after exactly one optimizer step. It must not modify its inputs.

Optionally `flushes_denormals: Collection[str]` names the dtypes in which the backend
computes with flush-to-zero and denormals-are-zero (as TensorFlow's CPU kernels do):
there the bound allows every operation to lose up to the smallest normal number, so
results that differ only below the normal range pass; the report lists the declaration.

Optionally `unsupported(variant, dtype, features) -> str | None` gives a finer
answer than the three collections; a returned string is the reason a cell is
reported as unsupported. Because the harness always hands over the whole state,
hypothesis can start a step from any reachable state, and trajectory checks can
re-sync the reference to the backend's own state each step.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

from adamconf.reference.state import AdamState, Grad, Hyper, Schedule, SparseGrad  # re-exported for backend authors

__all__ = ["Backend", "AdamState", "Grad", "Hyper", "Schedule", "SparseGrad", "unsupported_reason", "validate_backend"]


@runtime_checkable
class Backend(Protocol):
    name: str
    variants: Collection[str]
    dtypes: Collection[str]
    features: Collection[str]

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
             grads: Sequence[Grad]) -> AdamState: ...


def validate_backend(obj: Any, where: str) -> None:
    """Raise a TypeError naming every missing part of the protocol, and every declaration
    that is not a collection of names the spec knows (a typo must not pass as 'nothing
    to check')."""
    missing = [a for a in ("name", "variants", "dtypes", "features") if not hasattr(obj, a)]
    if not callable(getattr(obj, "step", None)):
        missing.append("step()")
    if missing:
        raise TypeError(
            f"backend {where!r} does not follow the adamconf backend protocol: missing "
            f"{', '.join(missing)}. See README section 'Writing a backend'.")
    from adamconf.reference.state import DTYPES
    from adamconf.spec import load_spec
    from adamconf.spec.model import FEATURES
    if not isinstance(obj.name, str) or not obj.name:
        raise TypeError(f"backend {where!r}: name must be a non-empty string, got {obj.name!r}")
    known = {"variants": tuple(load_spec().variants), "dtypes": DTYPES, "features": FEATURES,
             "flushes_denormals": DTYPES}
    for field, pool in known.items():
        got = getattr(obj, field, ())
        if isinstance(got, (str, bytes)) or not isinstance(got, (list, tuple, set, frozenset)):
            raise TypeError(f"backend {where!r}: {field} must be a list, tuple or set of names, got {got!r}")
        bad = [x for x in got if x not in pool]
        if bad:
            raise TypeError(f"backend {where!r}: {field} names {', '.join(map(repr, bad))}, which the spec does not "
                            f"know; known: {', '.join(pool)}")


def unsupported_reason(backend: Backend, variant: str, dtype: str, features: Collection[str]) -> str | None:
    """Why the backend cannot run this cell, or None when it can."""
    if variant not in backend.variants:
        return f"{backend.name} does not implement variant {variant}"
    if dtype not in backend.dtypes:
        return f"{backend.name} does not support {dtype}"
    lacking = sorted(set(features) - set(backend.features))
    if lacking:
        return f"{backend.name} does not implement {', '.join(lacking)}"
    finer = getattr(backend, "unsupported", None)
    if callable(finer):
        return finer(variant, dtype, frozenset(features))
    return None
