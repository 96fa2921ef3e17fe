"""What every foreign-library backend checks before it hands a step to its library."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adamconf.reference.state import AdamState, Hyper


def check_step(backend: Any, variant: str, hyper: Hyper, state: AdamState, grads: Sequence) -> list:
    """The gradients as a list, after refusing (ValueError) a variant the backend does not
    implement, a gradient count that does not match, or a feature it lacks."""
    grads = list(grads)
    if variant not in backend.variants:
        raise ValueError(f"unknown variant {variant!r}; {backend.name} implements {', '.join(backend.variants)}")
    if len(grads) != len(state.params):
        raise ValueError(f"{len(grads)} gradients for {len(state.params)} parameters")
    lacking = sorted(hyper.features() - set(backend.features))
    if lacking:
        raise ValueError(f"{backend.name} does not implement {', '.join(lacking)}")
    return grads
