"""Checks on one step's inputs that every bundled backend makes the same way."""
from __future__ import annotations

from collections.abc import Sequence

from adamconf.reference.state import AdamState, Hyper, Schedule, SparseGrad

__all__ = ["ALL_NONE", "asked_features", "check_gradient_count"]

# The message the real optimizers raise when no variable has a gradient.
ALL_NONE = "No gradients provided for any variable"


def check_gradient_count(state: AdamState, grads: Sequence) -> None:
    """One gradient (or None) per parameter, and at least one that is not None."""
    n = len(state.params)
    if len(grads) != n:
        raise ValueError(f"{len(grads)} gradients for {n} parameters; give one gradient (or None) per parameter")
    if all(g is None for g in grads):
        raise ValueError(ALL_NONE)


def asked_features(hyper: Hyper, grads: Sequence) -> set[str]:
    """The spec features this step uses: the hyperparameters', plus sparse gradients and
    callables (other than schedules) given for a hyperparameter."""
    asked = set(hyper.features())
    if any(isinstance(g, SparseGrad) for g in grads):
        asked.add("sparse")
    if any(callable(x) and not isinstance(x, Schedule)
           for x in (hyper.learning_rate, hyper.beta_1, hyper.beta_2, hyper.epsilon)):
        asked.add("callable_hyper")
    return asked
