"""Keras 3's Adam on its JAX and PyTorch backends, against the `keras3` row.

  keras3-jax    KERAS_BACKEND=jax   (XLA on the CPU; float64 runs with jax.enable_x64)
  keras3-torch  KERAS_BACKEND=torch (PyTorch on the CPU)

Keras reads KERAS_BACKEND once, when it is first imported, so one process can hold
only one of these (or the TensorFlow backend's keras3). The backend sets the variable
before it imports keras and refuses, naming the backend keras already has, when keras
was imported with another one: run each in its own process.

Each step builds `keras.optimizers.Adam` over keras.Variables (cached per
configuration), assigns the whole prior state (variables, momentums, velocities,
velocity_hats, EMA averages, iterations), runs one `apply_gradients` and reads the
state back. Sparse gradients (IndexedSlices) exist only on the TensorFlow backend.
The API clauses of the row are judged on the same Keras (`api()`, keras3_api.py).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from adamconf.backends.foreign import check_step
from adamconf.backends.tensorflow_backend import _new_optimizer_kwargs, _schedule
from adamconf.reference.state import DTYPES, AdamState, Hyper, Schedule, SparseGrad, np_dtype

__all__ = ["Keras3JaxBackend", "Keras3TorchBackend", "keras_module"]

FEATURES = frozenset({"amsgrad", "clipnorm", "clipvalue", "global_clipnorm", "schedule", "ema", "weight_decay"})
_CACHE = 32
_lock = threading.RLock()


def keras_module(backend: str) -> Any:
    """keras, imported for `backend`; ImportError when this process already holds keras
    for another backend (KERAS_BACKEND is read once per process)."""
    with _lock:
        if "keras" not in sys.modules:
            os.environ["KERAS_BACKEND"] = backend
        import keras
        have = keras.backend.backend()
        if have != backend:
            raise ImportError(f"keras is already imported with the {have} backend in this process; keras3-{backend} "
                              f"needs KERAS_BACKEND={backend} before keras is first imported: run it in its own process")
        return keras


class _Entry:
    """One Keras Adam over one list of variables; load, apply, read a full state."""

    def __init__(self, keras: Any, dtype: str, hyper: Hyper, shapes: tuple) -> None:
        self.keras, self.dtype, self.T = keras, dtype, np_dtype(dtype)
        self.vars = [keras.Variable(np.zeros(s, self.T), dtype=dtype, trainable=True) for s in shapes]
        lr = hyper.learning_rate
        lr = _schedule(keras.optimizers.schedules, lr) if isinstance(lr, Schedule) else float(lr)
        self.opt = keras.optimizers.Adam(learning_rate=lr, beta_1=float(hyper.beta_1), beta_2=float(hyper.beta_2),
                                         epsilon=float(hyper.epsilon), amsgrad=bool(hyper.amsgrad),
                                         **_new_optimizer_kwargs(hyper))
        self.opt.build(self.vars)
        idx = [self.opt._get_variable_index(v) for v in self.vars]
        pick = lambda xs: [xs[j] for j in idx]  # noqa: E731
        self.m, self.v = pick(self.opt._momentums), pick(self.opt._velocities)
        self.vhat = pick(self.opt._velocity_hats) if hyper.amsgrad else None
        self.ema = pick(self.opt._model_variables_moving_average) if hyper.use_ema else None

    def _read(self, var: Any) -> np.ndarray:
        return np.array(self.keras.ops.convert_to_numpy(var.value), copy=True).astype(self.T)

    def step(self, state: AdamState, grads: list) -> AdamState:
        ops = self.keras.ops
        for i, var in enumerate(self.vars):
            var.assign(state.params[i])
            self.m[i].assign(state.m[i])
            self.v[i].assign(state.v[i])
            if self.vhat is not None:
                self.vhat[i].assign(state.vhat[i])
            if self.ema is not None:
                self.ema[i].assign(state.ema[i] if state.ema is not None else state.params[i])
        self.opt._iterations.assign(int(state.iterations))
        pairs = [(None if g is None else ops.convert_to_tensor(np.asarray(g, dtype=self.T), dtype=self.dtype), v)
                 for g, v in zip(grads, self.vars)]
        self.opt.apply_gradients(pairs)
        rd = lambda xs: None if xs is None else [self._read(x) for x in xs]  # noqa: E731
        return AdamState(rd(self.vars), rd(self.m), rd(self.v), int(ops.convert_to_numpy(self.opt.iterations)),
                         rd(self.vhat) if self.vhat is not None else (None if state.vhat is None else state.copy().vhat),
                         None, None, rd(self.ema) if self.ema is not None else (None if state.ema is None else state.copy().ema))


class _Keras3Backend:
    """keras.optimizers.Adam on one Keras backend (set by subclasses)."""

    keras_backend = ""
    variants = ("keras3",)
    dtypes = DTYPES
    features = FEATURES

    def __init__(self) -> None:
        if importlib.util.find_spec("keras") is None or importlib.util.find_spec(self.keras_backend) is None:
            extras = "jax" if self.keras_backend == "jax" else "torch,jax"
            raise ImportError(f"keras3-{self.keras_backend} needs keras and {self.keras_backend}: "
                              f"pip install -e '.[{extras}]'")
        self._keras = keras_module(self.keras_backend)
        self._cache: OrderedDict[Any, _Entry] = OrderedDict()

    def versions(self) -> dict[str, str]:
        mod = importlib.import_module(self.keras_backend)
        return {"keras": self._keras.__version__, self.keras_backend: mod.__version__}

    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        return None

    def api(self) -> Any:
        """The object-level API world (adamconf.api): the same Keras, its own Adam class."""
        from adamconf.backends.keras3_api import Keras3Api
        return Keras3Api(self._keras, self.name)

    def _context(self, dtype: str) -> Any:
        return nullcontext()

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence) -> AdamState:
        """One real apply_gradients from `state`; the inputs are left untouched."""
        grads = check_step(self, variant, hyper, state, grads)
        if any(isinstance(g, SparseGrad) for g in grads):
            raise ValueError(f"{self.name}: IndexedSlices gradients exist only on Keras's TensorFlow backend")
        shapes = tuple(tuple(np.shape(p)) for p in state.params)
        with _lock, self._context(dtype), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            key = (dtype, hyper, shapes)
            entry = self._cache.get(key)
            if entry is None:
                entry = _Entry(self._keras, dtype, hyper, shapes)
                self._cache[key] = entry
                while len(self._cache) > _CACHE:
                    self._cache.popitem(last=False)
            try:
                return entry.step(state, grads)
            except Exception:
                self._cache.pop(key, None)
                raise


class Keras3JaxBackend(_Keras3Backend):
    """Keras 3 on JAX (CPU)."""

    name = "keras3-jax"
    keras_backend = "jax"
    findings = str(Path(__file__).with_name("keras3_jax_findings.toml"))
    # XLA's CPU runtime flushes subnormals except in float16 (see optax_backend)
    flushes_denormals = ("bfloat16", "float32", "float64")

    def _context(self, dtype: str) -> Any:
        import jax
        return jax.enable_x64(dtype == "float64")


class Keras3TorchBackend(_Keras3Backend):
    """Keras 3 on PyTorch (CPU)."""

    name = "keras3-torch"
    keras_backend = "torch"
    findings = str(Path(__file__).with_name("keras3_torch_findings.toml"))
