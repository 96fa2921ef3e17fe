"""The object-level API world of optax.adam (see adamconf.api).

optax has no optimizer object: `optax.adam(...)` returns a gradient transformation
whose `init` builds the state and whose `update` maps gradients to updates. The class
of the `optax` row is that function; `amsgrad_class` is optax.amsgrad, whose state
the row also describes. Variables and tensors are jax arrays on the CPU.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from adamconf.api import signature_defaults

__all__ = ["OptaxApi"]


class OptaxApi:
    """optax.adam, called eagerly."""

    variants = ("optax",)

    def __init__(self, name: str) -> None:
        self.name = name

    def optimizer_class(self, variant: str) -> Callable[..., Any]:
        import optax
        return optax.adam

    def amsgrad_class(self) -> Callable[..., Any]:
        import optax
        return optax.amsgrad

    def defaults(self, variant: str) -> dict[str, Any]:
        return signature_defaults(self.optimizer_class(variant))

    def variable(self, value: np.ndarray, name: str) -> Any:
        import jax.numpy as jnp
        return jnp.asarray(np.asarray(value))

    def tensor(self, value: np.ndarray) -> Any:
        return self.variable(value, "")

    def dtype(self, name: str) -> Any:
        """The jax dtype of that name (for mu_dtype)."""
        import jax.numpy as jnp
        return jnp.dtype(name)

    def read(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]:
        return lambda: sum((coef * v * v).sum() / 2 for v in variables)

    def learning_rate(self, opt: Any) -> float:
        raise TypeError("an optax transformation keeps its learning rate in a closure; it has no attribute to read")

    def iterations(self, opt: Any) -> int:
        raise TypeError("an optax transformation holds no state; its count lives in the state init returns")

    def step(self, tx: Any, state: Any, params: list[Any], grads: list[np.ndarray]) -> tuple[list[Any], Any]:
        """One update and apply_updates: the new parameters and the new state."""
        import optax
        updates, state = tx.update([self.tensor(g) for g in grads], state, params)
        return optax.apply_updates(params, updates), state
