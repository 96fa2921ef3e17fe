"""The object-level API world of Keras 3 on JAX or PyTorch (see adamconf.api).

The class is `keras.optimizers.Adam` itself, over `keras.Variable`s, called eagerly in
the process whose KERAS_BACKEND the backend fixed; the API clauses of the `keras3` row
are judged on it exactly as on the TensorFlow backend.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from adamconf.backends.tensorflow_api import constructor_defaults

__all__ = ["Keras3Api"]


class Keras3Api:
    """Keras 3's Adam on the Keras backend `keras` was imported with."""

    variants = ("keras3",)

    def __init__(self, keras: Any, name: str) -> None:
        self.keras, self.name = keras, name

    def optimizer_class(self, variant: str) -> type:
        return self.keras.optimizers.Adam

    def defaults(self, variant: str) -> dict[str, Any]:
        return constructor_defaults(self.optimizer_class(variant))

    def variable(self, value: np.ndarray, name: str) -> Any:
        return self.keras.Variable(np.asarray(value), name=name)

    def tensor(self, value: np.ndarray) -> Any:
        return self.keras.ops.convert_to_tensor(np.asarray(value))

    def read(self, x: Any) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(getattr(x, "value", x)))

    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]:
        ops = self.keras.ops
        return lambda: sum(ops.sum(coef * v * v) / 2 for v in variables)

    def learning_rate(self, opt: Any) -> float:
        return float(self.read(opt.learning_rate))

    def iterations(self, opt: Any) -> int:
        return int(self.read(opt.iterations))
