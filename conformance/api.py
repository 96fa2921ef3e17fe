"""The object-level protocol: the documented optimizer API itself, plus a few helpers.

API clauses (constructor defaults, keyword handling, errors, iterations, slots,
weights, config) are promises about an optimizer *object*, so these checks call the
documented methods on a real instance: `apply_gradients`, `minimize`, `get_config`,
`from_config`, `get_weights`, `set_weights`, `variables`, `get_slot`,
`get_slot_names`, `iterations`, `clipnorm`... A backend offers this through an
optional `api` attribute (or zero-argument method) returning an `ApiWorld`, which
supplies what differs between frameworks: the class, variables, tensors, losses and
how to read numbers back.

    name: str
    variants: Collection[str]
    def optimizer_class(self, variant) -> type      the documented class (its constructor)
    def defaults(self, variant) -> dict[str, Any]   effective default of each argument, by the
                                                    variant's own argument names
    def variable(self, value, name) -> Any          a trainable variable holding `value`
    def tensor(self, value) -> Any                  a gradient tensor
    def read(self, x) -> np.ndarray                 a variable, tensor or slot as numpy
    def loss(self, variables, coef) -> Callable     a zero-argument loss sum(coef * x**2) / 2
    def learning_rate(self, opt) -> float           the rate the next step would use
    def iterations(self, opt) -> int                the step counter (TF1: the global step given)

A variant the world does not list is reported as unsupported for every API clause.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ApiWorld", "validate_world"]


@runtime_checkable
class ApiWorld(Protocol):
    name: str
    variants: Collection[str]

    def optimizer_class(self, variant: str) -> type: ...
    def defaults(self, variant: str) -> dict[str, Any]: ...
    def variable(self, value: np.ndarray, name: str) -> Any: ...
    def tensor(self, value: np.ndarray) -> Any: ...
    def read(self, x: Any) -> np.ndarray: ...
    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]: ...
    def learning_rate(self, opt: Any) -> float: ...
    def iterations(self, opt: Any) -> int: ...


_METHODS = ("optimizer_class", "defaults", "variable", "tensor", "read", "loss", "learning_rate", "iterations")


def validate_world(obj: Any, where: str) -> None:
    """Raise a TypeError naming every missing part of the API protocol."""
    missing = [a for a in ("name", "variants") if not hasattr(obj, a)]
    missing += [f"{m}()" for m in _METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"the API world of backend {where!r} lacks {', '.join(missing)}; "
                        "see conformance/api.py for the protocol")
