"""The object-level API world of real TensorFlow (see adamconf.api).

Every optimizer here is the class a page documents, imported from the package that
ships it in TF 2.21; checks call its own methods eagerly.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from adamconf.api import signature_defaults
from adamconf.backends.tensorflow_backend import _NEEDS, VARIANTS, _installed

__all__ = ["TensorFlowApi", "constructor_defaults"]


def _classes() -> dict[str, Callable[[], type]]:
    def tf1() -> type:
        import tensorflow as tf
        return tf.compat.v1.train.AdamOptimizer

    def legacy() -> type:
        import tf_keras
        return tf_keras.optimizers.legacy.Adam

    def new() -> type:
        import tf_keras
        return tf_keras.optimizers.Adam

    def dtensor() -> type:
        import tf_keras
        return tf_keras.dtensor.experimental.optimizers.Adam

    def keras3() -> type:
        import keras
        return keras.optimizers.Adam

    return {"tf1": tf1, "tf1-compat": tf1, "keras-v2": legacy, "keras-legacy": legacy, "tf-keras": new,
            "keras3": keras3, "keras-dtensor": dtensor}


class TensorFlowApi:
    """Variables are tf.Variable (Keras 3 accepts them on the TensorFlow backend)."""

    name = "tensorflow"

    def __init__(self) -> None:
        self.variants = tuple(v for v in VARIANTS if _installed(_NEEDS.get(v, "tensorflow")))
        self._cls = _classes()

    def optimizer_class(self, variant: str) -> type:
        return self._cls[variant]()

    def defaults(self, variant: str) -> dict[str, Any]:
        return constructor_defaults(self.optimizer_class(variant), variant not in ("tf1", "tf1-compat"))

    def variable(self, value: np.ndarray, name: str) -> Any:
        import tensorflow as tf
        return tf.Variable(np.asarray(value), name=name)

    def tensor(self, value: np.ndarray) -> Any:
        import tensorflow as tf
        return tf.constant(np.asarray(value))

    def read(self, x: Any) -> np.ndarray:
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x)

    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]:
        import tensorflow as tf
        return lambda: tf.add_n([tf.reduce_sum(coef * v * v) / 2 for v in variables])

    def tape_loss(self, variables: list[Any], coef: float) -> tuple[Any, Any]:
        import tensorflow as tf
        with tf.GradientTape() as tape:
            loss = self.loss(variables, coef)()
        return loss, tape

    def learning_rate(self, opt: Any) -> float:
        lr = getattr(opt, "learning_rate", None)
        if lr is None:
            lr = opt._get_hyper("learning_rate") if hasattr(opt, "_get_hyper") else opt._lr
        return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))

    def iterations(self, opt: Any) -> int:
        return int(np.asarray(opt.iterations.numpy() if hasattr(opt.iterations, "numpy") else opt.iterations))


def constructor_defaults(cls: type, from_config: bool = True) -> dict[str, Any]:
    """The constructor signature's defaults; where the signature says None and the class
    has get_config, what a default-built optimizer reports there (Keras 3's name=None
    is "adam")."""
    out = signature_defaults(cls)
    if from_config and hasattr(cls, "get_config"):
        with _first_of_its_name():
            cfg = cls().get_config()
        out.update({k: v for k, v in cfg.items() if k in out and out[k] is None})
    return out


@contextmanager
def _first_of_its_name() -> Iterator[None]:
    """Keras 3 names an optimizer built with name=None after its class and makes the name
    unique in the process (adam, adam_1, ...). The default is what the first one gets, so
    build it with Keras's name counters fresh, then put the process's counters back."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:   # no Keras 3 here: nothing is renamed
        yield
        return
    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)
