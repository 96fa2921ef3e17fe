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

The foreign rows' APIs are not Keras-shaped, so their worlds add what their checks
(adamconf.api_foreign) call: torch's world a `step(opt, pairs)` through `.grad` and
`step()`, its code path (`path`) and `device`; optax's a `step(tx, state, params,
grads)`, `amsgrad_class()` and `dtype(name)`. The shared pieces of every check live
here: `Verdicts` (one verdict per clause), `ApiCheck`, and the comparison helpers.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from adamconf.spec.model import Clause, Spec, Variant

__all__ = ["ApiCheck", "ApiWorld", "Verdicts", "exc_name", "raises", "same", "signature_defaults", "validate_world"]


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


class Verdicts:
    """Per-clause verdicts of one check run; the first verdict for a clause stands.
    `k(family)` is the spec's K for judging numbers against the reference."""

    def __init__(self, spec: Spec, variant: Variant, covers: tuple[str, ...], clauses: Iterable[Clause]) -> None:
        self.spec, self.variant = spec, variant
        self.ids = {c.id.split(".", 1)[1]: c.id for c in clauses if c.id.split(".", 1)[1] in covers}
        self.status: dict[str, str] = {}
        self.messages: dict[str, str] = {}

    def wants(self, suffix: str) -> bool:
        return suffix in self.ids and self.ids[suffix] not in self.status

    def judge(self, suffix: str, ok: bool, message: str = "") -> None:
        if self.wants(suffix):
            cid = self.ids[suffix]
            self.status[cid] = "pass" if ok else "fail"
            if message:
                self.messages[cid] = message

    def k(self, family: str) -> float:
        return self.spec.tolerances[family].k

    def skip(self, suffix: str, reason: str) -> None:
        if self.wants(suffix):
            self.status[self.ids[suffix]] = "unsupported"
            self.messages[self.ids[suffix]] = reason


@dataclass(frozen=True)
class ApiCheck:
    name: str
    doc: str
    covers: tuple[str, ...]
    fn: Callable[[Any, Verdicts], None]

    def applies_to(self, clauses: Iterable[Clause]) -> bool:
        return any(c.id.split(".", 1)[1] in self.covers for c in clauses)


def same(a: Any, b: Any) -> bool:
    """Equal as documented: floats that agree once held in float32 (Keras keeps its
    hyperparameters in float32 variables), everything else exactly."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return np.float32(a) == np.float32(b)
    return a == b


def raises(fn: Callable[[], Any]) -> BaseException | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception is the observation
        return e
    return None


def exc_name(e: BaseException | None) -> str:
    return "nothing" if e is None else f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Each named parameter of a constructor with its default (inspect.Parameter.empty
    where the caller must pass it): the raw material of ApiWorld.defaults."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
