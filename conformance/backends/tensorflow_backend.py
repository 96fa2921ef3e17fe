"""TensorFlow backend: every TF Adam variant, run by the real TensorFlow.

`TensorFlowBackend().step(variant, dtype, hyper, state, grads)` loads the whole prior
state into a real optimizer (parameters, m, v, vhat, the step counter, TF1's beta
powers, EMA averages), runs exactly one real `apply_gradients`, and reads the whole
state back as numpy arrays of `dtype`. Nothing is re-implemented here: every number
comes out of TensorFlow's kernels and the optimizer classes' own Python code.

  tf1, tf1-compat   tf.compat.v1.train.AdamOptimizer in eager mode (slots created with
                    `_create_slots`, the beta-power accumulators assigned directly)
  keras-v2,         tf_keras.optimizers.legacy.Adam (the OptimizerV2 code;
  keras-legacy      keras-v2 differs only in rejecting global_clipnorm)
  tf-keras          tf_keras.optimizers.Adam, the new Keras 2 optimizer
  keras3            keras.optimizers.Adam on the TensorFlow backend
  keras-dtensor     tf_keras.dtensor.experimental.optimizers.Adam with a DTensor mesh
                    of logical CPU devices, replicated layouts

TensorFlow is imported lazily (importing this module does not import it), and the
DTensor mesh splits the CPU into logical devices the first time keras-dtensor is asked
for, which is only possible before TensorFlow's runtime has started: when it has
started already, `unsupported()` says so for keras-dtensor.

Optimizers and variables are cached per (variant, dtype, shapes, hyperparameters), so
repeated steps with the same configuration (a trajectory, a benchmark loop) skip the
construction; the state is still loaded in full from the input on every call.

What TensorFlow 2.21 does, seen through this backend, that a reader of the gate's
results should know (see tests/test_tensorflow_backend.py):
- CPU kernels run with flush-to-zero and denormals-are-zero (float32, float64 and
  bfloat16; float16 keeps its subnormals): a subnormal input counts as 0 and a
  subnormal result becomes 0, TF1's float32 beta-power accumulators included.
- tf.cast / keras.ops.cast of a Python float go through a float32 tensor, so in
  float64 the Keras beta-power base, weight decay and legacy decay are float32-rounded.
- OptimizerV2 rejects clipnorm together with global_clipnorm (ValueError).
- Keras 3 squares IndexedSlices values before summing repeated indices; every Keras
  clips the raw slices before summing them.
- tf_keras moves the EMA only of variables that got a gradient; under a DTensor mesh
  it never updates the EMA at all.
- On the DTensor mesh, sparse (IndexedSlices) steps are not deterministic when the
  CPU is busy (bfloat16 most of all): the same input sometimes gives other values.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adamconf.reference.state import DTYPES, AdamState, Hyper, Schedule, SparseGrad, np_dtype

__all__ = ["TensorFlowBackend", "VARIANTS", "VARIANT_FEATURES", "FEATURES", "TF_MISSING"]

TF_MISSING = "TensorFlow is not installed: pip install -e '.[tf]'"

VARIANTS = ("tf1", "tf1-compat", "keras-v2", "keras-legacy", "tf-keras", "keras3", "keras-dtensor")

_CLIPS = ("clipvalue", "clipnorm", "global_clipnorm")
_LEGACY = frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "decay", "callable_hyper", "schedule"})
VARIANT_FEATURES: dict[str, frozenset[str]] = {
    "tf1": frozenset({"sparse"}),
    "tf1-compat": frozenset({"sparse", "callable_hyper"}),
    "keras-v2": _LEGACY,
    "keras-legacy": _LEGACY | {"global_clipnorm"},
    "tf-keras": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm", "callable_hyper",
                           "schedule", "ema", "weight_decay", "adaptive_epsilon"}),
    "keras3": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm", "callable_hyper",
                         "schedule", "ema", "weight_decay"}),
    "keras-dtensor": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm", "schedule",
                                "ema", "mesh"}),
}
FEATURES = frozenset().union(*VARIANT_FEATURES.values()) | {"jit_compile"}

# Which Python package each variant needs besides tensorflow.
_NEEDS = {"keras-v2": "tf_keras", "keras-legacy": "tf_keras", "tf-keras": "tf_keras",
          "keras-dtensor": "tf_keras", "keras3": "keras"}

# (variant, dtype) cells TensorFlow 2.21 cannot run, with the reason (found by running).
_DTYPE_GAPS: dict[tuple[str, str], str] = {}

# Cache budget: optimizers (and their variables) kept for reuse.
_CACHE_ENTRIES = 64
_CACHE_BYTES = 256 << 20


# -- TensorFlow, imported on first use ------------------------------------------------------

_tf_lock = threading.RLock()
_modules: dict[str, Any] = {}


def _tf():
    """The tensorflow module, imported with its C++ logging quietened."""
    with _tf_lock:
        if "tf" not in _modules:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import tensorflow as tf
            tf.get_logger().setLevel("ERROR")
            _modules["tf"] = tf
        return _modules["tf"]


def _tf_keras():
    with _tf_lock:
        if "tf_keras" not in _modules:
            _tf()
            import tf_keras
            _modules["tf_keras"] = tf_keras
        return _modules["tf_keras"]


def _keras3():
    with _tf_lock:
        if "keras" not in _modules:
            os.environ["KERAS_BACKEND"] = "tensorflow"
            _tf()
            import keras
            backend = keras.backend.backend()
            if backend != "tensorflow":
                raise ImportError(f"keras is configured for the {backend} backend; set KERAS_BACKEND=tensorflow "
                                  "before keras is first imported")
            _modules["keras"] = keras
        return _modules["keras"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tf_dtype(dtype: str):
    tf = _tf()
    return {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32, "float64": tf.float64}[dtype]


def _is_callable(x: Any) -> bool:
    return callable(x) and not isinstance(x, Schedule)


def _val(x: Any) -> Any:
    """A hyperparameter as handed to the optimizer: a callable as is (the API decides
    whether it takes one), anything else as a Python float."""
    return x if _is_callable(x) else float(x)


def _nbytes(shapes: Sequence[tuple[int, ...]], T: np.dtype, copies: int) -> int:
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes) * T.itemsize * copies


# -- one cached optimizer and its variables ----------------------------------------------------

class _Entry:
    """One optimizer over one list of variables; load / apply / read a full state."""

    copies = 3  # arrays per parameter it holds (param, m, v, ...), for the cache budget

    def __init__(self, variant: str, dtype: str, hyper: Hyper, shapes: tuple[tuple[int, ...], ...],
                 backend: TensorFlowBackend) -> None:
        self.variant, self.dtype, self.hyper, self.shapes = variant, dtype, hyper, shapes
        self.T = np_dtype(dtype)
        self.tdt = _tf_dtype(dtype)
        self.backend = backend
        self.nbytes = _nbytes(shapes, self.T, self.copies + int(hyper.amsgrad) + int(hyper.use_ema))
        self.vars = [self._variable(np.zeros(s, self.T)) for s in shapes]

    # helpers -----------------------------------------------------------------------------
    def _variable(self, value: np.ndarray):
        return _tf().Variable(value, dtype=self.tdt, trainable=True)

    def _tensor(self, x: np.ndarray):
        return _tf().constant(np.asarray(x).astype(self.T, copy=False), dtype=self.tdt)

    def _assign(self, var, x: np.ndarray) -> None:
        var.assign(self._tensor(x))

    def _read(self, var) -> np.ndarray:
        """A fresh array the caller owns (never a view of TensorFlow's buffer)."""
        return np.array(np.reshape(var.numpy(), tuple(var.shape)), dtype=self.T, copy=True)

    def grad(self, g: Any, i: int):
        tf = _tf()
        if g is None:
            return None
        if isinstance(g, SparseGrad):
            return tf.IndexedSlices(self._tensor(g.values),
                                    tf.constant(np.asarray(g.indices).astype(np.int64).reshape(-1)),
                                    tf.constant(np.asarray(g.dense_shape, dtype=np.int64)))
        return self._tensor(g)

    def lr_arg(self, lr_module: Any = None) -> Any:
        lr = self.hyper.learning_rate
        if isinstance(lr, Schedule):
            return _schedule(lr_module, lr)
        if _is_callable(lr):
            return lr
        return float(lr)

    # the work --------------------------------------------------------------------------------
    def load(self, state: AdamState) -> None:
        raise NotImplementedError

    def apply(self, grads: list[Any]) -> None:
        raise NotImplementedError

    def read(self, state: AdamState) -> AdamState:
        raise NotImplementedError

    def _pairs(self, grads: list[Any]) -> list[tuple[Any, Any]]:
        return [(self.grad(g, i), v) for i, (g, v) in enumerate(zip(grads, self.vars))]


def _schedule(mod: Any, s: Schedule) -> Any:
    """Our Schedule as the Keras LearningRateSchedule with the same formula (see module
    doc of reference.state.Schedule: the semantics match term for term)."""
    if s.kind == "exponential":
        return mod.ExponentialDecay(float(s.initial), s.steps, float(s.rate), staircase=bool(s.staircase))
    if s.kind == "inverse_time":
        return mod.InverseTimeDecay(float(s.initial), s.steps, float(s.rate), staircase=bool(s.staircase))
    return mod.PiecewiseConstantDecay([int(b) for b in s.boundaries], [float(v) for v in s.values])


class _TF1(_Entry):
    """tf.compat.v1.train.AdamOptimizer, eager: slots m, v and the float32 non-slot
    variables beta1_power / beta2_power."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        tf = _tf()
        h = self.hyper
        self.opt = tf.compat.v1.train.AdamOptimizer(learning_rate=self.lr_arg(), beta1=_val(h.beta_1),
                                                    beta2=_val(h.beta_2), epsilon=_val(h.epsilon))
        self.opt._create_slots(self.vars)           # slots and beta accumulators, no step
        self.m = [self.opt.get_slot(v, "m") for v in self.vars]
        self.v = [self.opt.get_slot(v, "v") for v in self.vars]
        self.b1p, self.b2p = self.opt._get_beta_accumulators()

    def load(self, state: AdamState) -> None:
        for var, m, v, p, sm, sv in zip(self.vars, self.m, self.v, state.params, state.m, state.v):
            self._assign(var, p)
            self._assign(m, sm)
            self._assign(v, sv)
        call = lambda x: x() if _is_callable(x) else x  # noqa: E731
        b1 = state.beta1_power if state.beta1_power is not None else call(self.hyper.beta_1)
        b2 = state.beta2_power if state.beta2_power is not None else call(self.hyper.beta_2)
        self.b1p.assign(np.float32(b1))
        self.b2p.assign(np.float32(b2))

    def apply(self, grads: list[Any]) -> None:
        self.opt.apply_gradients(self._pairs(grads))

    def read(self, state: AdamState) -> AdamState:
        cp = lambda xs: None if xs is None else [np.array(x, copy=True) for x in xs]  # noqa: E731
        return AdamState([self._read(v) for v in self.vars], [self._read(m) for m in self.m],
                         [self._read(v) for v in self.v], state.iterations + 1, cp(state.vhat),
                         float(self.b1p.numpy()), float(self.b2p.numpy()), cp(state.ema))


class _Legacy(_Entry):
    """tf_keras.optimizers.legacy.Adam (OptimizerV2): slots m, v, vhat; `iter`."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        tfk = _tf_keras()
        h = self.hyper
        kwargs: dict[str, Any] = {}
        if h.decay:
            kwargs["decay"] = h.decay
        for k in _CLIPS:
            if getattr(h, k) is not None:
                kwargs[k] = getattr(h, k)
        self.opt = tfk.optimizers.legacy.Adam(
            learning_rate=self.lr_arg(tfk.optimizers.schedules), beta_1=_val(h.beta_1), beta_2=_val(h.beta_2),
            epsilon=None if h.epsilon is None else _val(h.epsilon),
            amsgrad=bool(h.amsgrad), **kwargs)
        self.opt._create_all_weights(self.vars)     # iter, hyperparameters, slots; no step
        slot = lambda name: [self.opt.get_slot(v, name) for v in self.vars]  # noqa: E731
        self.m, self.v = slot("m"), slot("v")
        self.vhat = slot("vhat") if h.amsgrad else None

    def load(self, state: AdamState) -> None:
        for i, var in enumerate(self.vars):
            self._assign(var, state.params[i])
            self._assign(self.m[i], state.m[i])
            self._assign(self.v[i], state.v[i])
            if self.vhat is not None:
                self._assign(self.vhat[i], state.vhat[i] if state.vhat is not None else np.zeros(self.shapes[i], self.T))
        self.opt.iterations.assign(int(state.iterations))

    def apply(self, grads: list[Any]) -> None:
        self.opt.apply_gradients(self._pairs(grads))

    def read(self, state: AdamState) -> AdamState:
        cp = lambda xs: None if xs is None else [np.array(x, copy=True) for x in xs]  # noqa: E731
        vhat = [self._read(x) for x in self.vhat] if self.vhat is not None else cp(state.vhat)
        return AdamState([self._read(v) for v in self.vars], [self._read(m) for m in self.m],
                         [self._read(v) for v in self.v], int(self.opt.iterations.numpy()), vhat,
                         None, None, cp(state.ema))


def _new_optimizer_kwargs(h: Any) -> dict[str, Any]:
    """Constructor keywords the new Keras optimizers (tf_keras and Keras 3) share."""
    kwargs: dict[str, Any] = dict(weight_decay=h.weight_decay, use_ema=bool(h.use_ema),
                                  ema_momentum=float(h.ema_momentum),
                                  ema_overwrite_frequency=h.ema_overwrite_frequency)
    for k in _CLIPS:
        kwargs[k] = getattr(h, k)
    return kwargs


class _NewKeras(_Entry):
    """tf_keras.optimizers.Adam (the new Keras 2 optimizer): _momentums, _velocities,
    _velocity_hats, _model_variables_moving_average, _iterations. With a mesh, the
    same class as tf_keras.dtensor.experimental.optimizers.Adam on DVariables."""

    mesh: Any = None

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        tfk = _tf_keras()
        h = self.hyper
        kwargs = _new_optimizer_kwargs(h)
        if h.adaptive_epsilon:
            kwargs["adaptive_epsilon"] = True
        if self.mesh is not None:
            cls = tfk.dtensor.experimental.optimizers.Adam
            kwargs["mesh"] = self.mesh
        else:
            cls = tfk.optimizers.Adam
        self.opt = cls(learning_rate=self.lr_arg(tfk.optimizers.schedules), beta_1=_val(h.beta_1),
                       beta_2=_val(h.beta_2), epsilon=_val(h.epsilon), amsgrad=bool(h.amsgrad),
                       jit_compile=False, **kwargs)
        if self.backend.jit_compile and self.mesh is None:
            self.opt.jit_compile = True     # the constructor only allows XLA with a GPU
        self.opt.build(self.vars)
        idx = [self.opt._index_dict[self.opt._var_key(v)] for v in self.vars]
        pick = lambda xs: [xs[j] for j in idx]  # noqa: E731
        self.m, self.v = pick(self.opt._momentums), pick(self.opt._velocities)
        self.vhat = pick(self.opt._velocity_hats) if h.amsgrad else None
        self.ema = pick(self.opt._model_variables_moving_average) if h.use_ema else None

    def load(self, state: AdamState) -> None:
        for i, var in enumerate(self.vars):
            self._assign(var, state.params[i])
            self._assign(self.m[i], state.m[i])
            self._assign(self.v[i], state.v[i])
            if self.vhat is not None:
                self._assign(self.vhat[i], state.vhat[i] if state.vhat is not None else np.zeros(self.shapes[i], self.T))
            if self.ema is not None:
                self._assign(self.ema[i], state.ema[i] if state.ema is not None else state.params[i])
        self._assign_iterations(int(state.iterations))

    def _assign_iterations(self, n: int) -> None:
        self.opt.iterations.assign(n)

    def apply(self, grads: list[Any]) -> None:
        self.opt.apply_gradients(self._pairs(grads))

    def read(self, state: AdamState) -> AdamState:
        cp = lambda xs: None if xs is None else [np.array(x, copy=True) for x in xs]  # noqa: E731
        vhat = [self._read(x) for x in self.vhat] if self.vhat is not None else cp(state.vhat)
        ema = [self._read(x) for x in self.ema] if self.ema is not None else cp(state.ema)
        return AdamState([self._read(v) for v in self.vars], [self._read(m) for m in self.m],
                         [self._read(v) for v in self.v], int(self.opt.iterations.numpy()), vhat,
                         None, None, ema)


class _DTensor(_NewKeras):
    """The new optimizer on a DTensor mesh: DVariables and gradients with replicated
    layouts on every logical CPU device of the mesh."""

    def __init__(self, variant, dtype, hyper, shapes, backend) -> None:
        self.mesh = backend._mesh
        super().__init__(variant, dtype, hyper, shapes, backend)

    def _layout(self, rank: int):
        return _tf().experimental.dtensor.Layout.replicated(self.mesh, rank=rank)

    def _variable(self, value: np.ndarray):
        tf = _tf()
        init = tf.experimental.dtensor.copy_to_mesh(tf.constant(value, dtype=self.tdt), self._layout(value.ndim))
        return tf.experimental.dtensor.DVariable(init, trainable=True)

    def _tensor(self, x: np.ndarray):
        tf = _tf()
        x = np.asarray(x).astype(self.T, copy=False)
        return tf.experimental.dtensor.copy_to_mesh(tf.constant(x, dtype=self.tdt), self._layout(x.ndim))

    def _assign_iterations(self, n: int) -> None:
        tf = _tf()
        self.opt.iterations.assign(tf.experimental.dtensor.copy_to_mesh(tf.constant(n, tf.int64), self._layout(0)))

    def grad(self, g: Any, i: int):
        tf = _tf()
        if isinstance(g, SparseGrad):
            idx = np.asarray(g.indices).astype(np.int64).reshape(-1)
            return tf.IndexedSlices(self._tensor(g.values),
                                    tf.experimental.dtensor.copy_to_mesh(tf.constant(idx), self._layout(1)),
                                    tf.experimental.dtensor.copy_to_mesh(
                                        tf.constant(np.asarray(g.dense_shape, dtype=np.int64)), self._layout(1)))
        return super().grad(g, i)


class _Keras3(_Entry):
    """keras.optimizers.Adam (Keras 3, TensorFlow backend) over keras.Variables."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        keras = _keras3()
        h = self.hyper
        kwargs = _new_optimizer_kwargs(h)
        self.opt = keras.optimizers.Adam(learning_rate=self.lr_arg(keras.optimizers.schedules),
                                         beta_1=_val(h.beta_1), beta_2=_val(h.beta_2), epsilon=_val(h.epsilon),
                                         amsgrad=bool(h.amsgrad), **kwargs)
        self.opt.build(self.vars)
        idx = [self.opt._get_variable_index(v) for v in self.vars]
        pick = lambda xs: [xs[j] for j in idx]  # noqa: E731
        self.m, self.v = pick(self.opt._momentums), pick(self.opt._velocities)
        self.vhat = pick(self.opt._velocity_hats) if h.amsgrad else None
        self.ema = pick(self.opt._model_variables_moving_average) if h.use_ema else None

    def _variable(self, value: np.ndarray):
        return _keras3().Variable(value, dtype=self.dtype, trainable=True)


    load = _NewKeras.load
    read = _NewKeras.read

    def _assign_iterations(self, n: int) -> None:
        self.opt._iterations.assign(n)

    def apply(self, grads: list[Any]) -> None:
        self.opt.apply_gradients(self._pairs(grads))


_ENTRY = {"tf1": _TF1, "tf1-compat": _TF1, "keras-v2": _Legacy, "keras-legacy": _Legacy,
          "tf-keras": _NewKeras, "keras3": _Keras3, "keras-dtensor": _DTensor}


# -- the backend ----------------------------------------------------------------------------------

class TensorFlowBackend:
    """Runs each Adam step through the real TensorFlow / Keras optimizer."""

    name = "tensorflow"
    variants = VARIANTS
    dtypes = DTYPES
    features = FEATURES
    # TF's CPU executors run with flush-to-zero and denormals-are-zero; float16 is
    # computed through float32, where its subnormals are normal numbers.
    flushes_denormals = ("bfloat16", "float32", "float64")
    # where TF parts from its pages, with the evidence (shown in every report)
    findings = str(Path(__file__).with_name("tensorflow_findings.toml"))

    def __init__(self, *, jit_compile: bool = False, dtensor_devices: int = 2,
                 cache_entries: int = _CACHE_ENTRIES, cache_bytes: int = _CACHE_BYTES) -> None:
        """jit_compile: run the tf-keras update under XLA (tf.function(jit_compile=True))
        on the CPU, which the optimizer's constructor only allows with a GPU.
        dtensor_devices: logical CPU devices of the keras-dtensor mesh."""
        if not _installed("tensorflow"):
            raise ImportError(TF_MISSING)
        self.jit_compile = bool(jit_compile)
        if not self.jit_compile:
            self.features = FEATURES - {"jit_compile"}
        self.dtensor_devices = int(dtensor_devices)
        self.cache_entries, self.cache_bytes = int(cache_entries), int(cache_bytes)
        self._cache: OrderedDict[Any, _Entry] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.RLock()
        self._mesh: Any = None
        self._mesh_error: str | None = None
        self._warm: dict[tuple[str, str], str | None] = {}

    def versions(self) -> dict[str, str]:
        """TensorFlow and the Keras packages the adapters use (stamped into results.json)."""
        from adamconf.stamp import package_version
        got = {name: package_version(name) for name in ("tensorflow-cpu", "tensorflow", "keras", "tf-keras")}
        return {name: v for name, v in got.items() if v != "not installed"}

    def api(self) -> Any:
        """The object-level API world (adamconf.api) of the same TensorFlow."""
        from adamconf.backends.tensorflow_api import TensorFlowApi
        if getattr(self, "_api", None) is None:
            self._api = TensorFlowApi()
        return self._api

    # protocol -------------------------------------------------------------------------------
    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        if variant not in VARIANT_FEATURES:
            return f"tensorflow does not implement variant {variant}"
        if dtype not in DTYPES:
            return f"tensorflow does not support {dtype}"
        have = VARIANT_FEATURES[variant] | ({"jit_compile"} if self.jit_compile and variant == "tf-keras" else set())
        lacking = sorted(set(features) - have)
        if lacking:
            return f"variant {variant} has no {', '.join(lacking)} in the TensorFlow backend"
        need = _NEEDS.get(variant)
        if need and not _installed(need):
            return f"variant {variant} needs the {need} package: pip install -e '.[tf]'"
        gap = _DTYPE_GAPS.get((variant, dtype))
        if gap:
            return gap
        if variant == "keras-dtensor":
            reason = self._dtensor_reason()
            if reason:
                return reason
        return self._warm_up(variant, dtype)

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence) -> AdamState:
        """One real apply_gradients from `state`; the inputs are left untouched."""
        grads = list(grads)
        n = len(state.params)
        if variant not in VARIANT_FEATURES:
            raise ValueError(f"unknown variant {variant!r}; the TensorFlow backend implements {', '.join(VARIANTS)}")
        if len(grads) != n:
            raise ValueError(f"{len(grads)} gradients for {n} parameters; give one gradient (or None) per parameter")
        asked = set(hyper.features())
        if any(isinstance(g, SparseGrad) for g in grads):
            asked.add("sparse")
        if any(_is_callable(x) for x in (hyper.learning_rate, hyper.beta_1, hyper.beta_2, hyper.epsilon)):
            asked.add("callable_hyper")
        reason = self.unsupported(variant, dtype, asked)
        if reason:
            raise ValueError(reason)
        T = np_dtype(dtype)
        for name, xs in state.arrays().items():
            for i, x in enumerate(xs):
                if np.asarray(x).dtype != T:
                    raise ValueError(f"state.{name}[{i}] has dtype {np.asarray(x).dtype}, expected {T}")
        shapes = tuple(tuple(np.shape(p)) for p in state.params)
        tf = _tf()
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = self._entry(variant, dtype, hyper, shapes)
            try:
                entry.load(state)
                entry.apply(grads)
                return entry.read(state)
            except ValueError:
                self._evict(entry)
                raise
            except (tf.errors.OpError, TypeError, RuntimeError, KeyError, AttributeError) as e:
                self._evict(entry)
                if all(g is None for g in grads):   # TF spoke, but not with a ValueError
                    raise ValueError(f"{type(e).__name__}: {e}") from e
                raise

    def _warm_up(self, variant: str, dtype: str) -> str | None:
        """Import what the variant needs and run one throwaway step, once per cell, so
        that the first timed step does not pay for importing TensorFlow (10 s or more
        on a loaded machine) and a dtype TensorFlow cannot run is reported here."""
        cell = (variant, dtype)
        with self._lock:
            if cell in self._warm:
                return self._warm[cell]
            try:
                _tf()
                if _NEEDS.get(variant) == "tf_keras":
                    _tf_keras()
                elif _NEEDS.get(variant) == "keras":
                    _keras3()
                T = np_dtype(dtype)
                st = AdamState.zeros_like([np.ones(2, T)], beta_powers=(0.9, 0.999) if variant.startswith("tf1") else None)
                self._warm[cell] = None
                self.step(variant, dtype, Hyper(learning_rate=0.001), st, [np.ones(2, T)])
            except Exception as e:  # noqa: BLE001 - the failure is the reason
                self._warm[cell] = f"TensorFlow cannot run {variant} in {dtype}: {type(e).__name__}: {e}"
            return self._warm[cell]

    # cache ------------------------------------------------------------------------------------
    def _entry(self, variant: str, dtype: str, hyper: Hyper, shapes: tuple) -> _Entry:
        try:
            key = (variant, dtype, shapes, hyper)
            hash(key)
        except TypeError:      # an unhashable callable hyperparameter: no caching
            return _ENTRY[variant](variant, dtype, hyper, shapes, self)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        entry = _ENTRY[variant](variant, dtype, hyper, shapes, self)   # constructor errors propagate
        entry.key = key
        self._cache[key] = entry
        self._cached_bytes += entry.nbytes
        while self._cache and (len(self._cache) > self.cache_entries or self._cached_bytes > self.cache_bytes):
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
            if old is entry:
                break
        return entry

    def _evict(self, entry: _Entry) -> None:
        key = getattr(entry, "key", None)
        if key is not None and self._cache.get(key) is entry:
            del self._cache[key]
            self._cached_bytes -= entry.nbytes

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    # DTensor -----------------------------------------------------------------------------------
    def _dtensor_reason(self) -> str | None:
        """Set up the mesh on first use; the reason keras-dtensor cannot run, or None."""
        with self._lock:
            if self._mesh is None and self._mesh_error is None:
                try:
                    self._mesh = self._make_mesh()
                except Exception as e:  # noqa: BLE001 - any failure becomes the reason
                    self._mesh_error = (f"keras-dtensor needs a DTensor mesh of {self.dtensor_devices} logical CPU "
                                        f"devices and could not get one: {type(e).__name__}: {e}")
            return self._mesh_error

    def _make_mesh(self):
        tf = _tf()
        _tf_keras()
        from tensorflow.experimental import dtensor
        n = self.dtensor_devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        have = tf.config.get_logical_device_configuration(cpu)
        if not have or len(have) < n:
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
            except RuntimeError as e:
                raise RuntimeError(
                    f"TensorFlow's runtime is already initialised with {max(1, len(have or []))} logical CPU "
                    f"device(s), so it cannot be split any more ({e}); run keras-dtensor first or in a fresh "
                    "process") from None
        devices = [f"CPU:{i}" for i in range(n)]
        return dtensor.create_mesh([("batch", n)], devices=devices)
