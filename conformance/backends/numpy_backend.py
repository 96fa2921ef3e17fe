"""NumPy model of TensorFlow's Adam variants: one step, in the parameter dtype.

`NumpyBackend().step(variant, dtype, hyper, state, grads)` computes one Adam step the
way the named TensorFlow API does it in floating point: the same rounding of the
hyperparameters, the same expression order (the C++ kernel's
`m += (g - m) * (1 - b1)`, not the pages' `m = b1*m + (1 - b1)*g`), the same beta powers
(TF1's float32 accumulators, Keras's `pow` in the variable dtype), the same sparse
arithmetic (`m *= b1` then a scatter-add of the summed slices; Keras 3's own rule),
clipping policy, decoupled weight decay and EMA. Every array operation runs in the
parameter dtype T: nothing is upcast, so float16 and bfloat16 round after every
operation as TF's CPU kernels do. Against TensorFlow 2.21 / tf_keras 2.21 / Keras 3.15
on CPU the results are bit-for-bit equal (see RULES), norm clipping aside, where the
order of the sum of squares differs by an ulp or so.

The dense path is the one that has to be fast. `_dense_range` applies the whole
update to one cache-sized chunk of every array before moving to the next (a fused
pass: twelve in-place ufunc calls on data that stay in cache), and `_parallel` splits
big arrays across a persistent thread pool (numpy's loops release the GIL).
Elementwise operations do not depend on how the arrays are cut, so the chunked,
threaded result is bit-for-bit the unchunked one. With numba installed (the `fast`
extra), float32 and float64 arrays of MIN_ELEMENTS or more run a compiled kernel with
the same op order instead (`numpy_compiled`: one pass over memory, same bits).

`step` never modifies its inputs: it reads them once and writes new output arrays
(cheaper than copying the inputs first and updating the copies; large outputs come
from a recycling allocator, `_Recycler`). `step_inplace` and `apply_dense_inplace` run
the same kernels on the caller's arrays.

`RULES` holds every per-variant choice in one table, with where each comes from.
"""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from adamconf.backends import numpy_compiled
from adamconf.backends.step_inputs import asked_features, check_gradient_count
from adamconf.reference.emulate import power
from adamconf.reference.state import DTYPES, AdamState, Hyper, Schedule, SparseGrad, dtype_name, np_dtype

__all__ = ["NumpyBackend", "RULES", "VARIANTS", "VARIANT_FEATURES", "FEATURES", "Rules"]

VARIANTS = ("tf1", "tf1-compat", "keras-v2", "keras-legacy", "keras-dtensor", "tf-keras", "keras3")

_KERAS_NEW_FEATURES = frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm",
                                 "callable_hyper", "schedule", "ema"})
VARIANT_FEATURES: dict[str, frozenset[str]] = {
    "tf1": frozenset({"sparse"}),
    "tf1-compat": frozenset({"sparse", "callable_hyper"}),
    "keras-v2": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "decay", "callable_hyper", "schedule"}),
    "keras-legacy": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm", "decay",
                               "callable_hyper", "schedule"}),
    "keras-dtensor": _KERAS_NEW_FEATURES,
    "tf-keras": _KERAS_NEW_FEATURES | {"weight_decay", "adaptive_epsilon"},
    "keras3": _KERAS_NEW_FEATURES | {"weight_decay"},
}
FEATURES = frozenset().union(*VARIANT_FEATURES.values())


@dataclass(frozen=True)
class Rules:
    """How one variant forms its scalars and which code path it follows.

    holder fields: "float32" = the Python double is rounded to float32, then cast to
    the parameter dtype T (TF keeps it in a float32 tensor or variable); "param" = cast
    straight from the double to T.
    """

    lr_holder: str            # learning rate (every variant keeps it in float32)
    beta_holder: str          # beta_1, beta_2 where they multiply m and v (sparse path)
    power_base_holder: str    # the beta that beta**t (or TF1's accumulator) is formed from
    eps_holder: str
    aux_holder: str           # decay, weight_decay (the EMA momentum is always "param")
    one_minus: str            # "in-dtype": 1 - T(beta) in T; "double-then-cast": T(1.0 - beta)
    beta_powers: str          # "accumulated" (TF1 float32 variables) or "pow"
    clip_policy: str          # "none" | "sequential" | "first-of" | "exclusive"
    sparse: str               # "tf1" | "legacy" | "keras-new" | "keras3-tf" | "densify"
    weight_decay: bool
    ema_first_step_copy: bool  # momentum 0 when iterations == 0 (Keras 3)
    ema_one_minus: str        # as one_minus, for 1 - ema_momentum
    eps_default_when_falsy: bool  # OptimizerV2: `epsilon or 1e-7`
    clip_holder: str = "param"  # clip thresholds: TF converts the Python float with the tensor's dtype
    clip_sparse: str = "raw-slices"  # clip IndexedSlices by their raw values ("densify": sum first)


_TF1 = Rules("float32", "float32", "float32", "float32", "float32", "in-dtype", "accumulated",
             "none", "tf1", False, False, "in-dtype", False)
_LEGACY = Rules("float32", "float32", "float32", "param", "float32", "in-dtype", "pow",
                "sequential", "legacy", False, False, "in-dtype", True)
_NEW = Rules("float32", "param", "float32", "param", "float32", "double-then-cast", "pow",
             "first-of", "keras-new", True, False, "double-then-cast", False)
RULES: dict[str, Rules] = {
    "tf1": _TF1,
    "tf1-compat": _TF1,
    "keras-v2": _LEGACY,
    "keras-legacy": _LEGACY,
    "keras-dtensor": _NEW,
    "tf-keras": _NEW,
    "keras3": Rules("float32", "param", "float32", "param", "float32", "double-then-cast", "pow",
                    "exclusive", "keras3-tf", True, True, "in-dtype", False),
}
# Where these rules come from. Each was read in the source and then checked by running
# TensorFlow 2.21.0, tf_keras 2.21.0 and Keras 3.15.1 on CPU against this backend
# (tf1 = tf.compat.v1.train.AdamOptimizer, keras-legacy = tf_keras.optimizers.legacy.Adam,
# tf-keras = tf_keras.optimizers.Adam, keras3 = keras.optimizers.Adam; keras-v2,
# tf1-compat and keras-dtensor share those code paths). Dense steps, sparse steps with
# duplicate indices, decay, amsgrad, clipvalue, weight decay and EMA came out bit-for-bit
# equal in float32 and float64 (EMA also float16); clipnorm/global_clipnorm differ by an
# ulp or so from the order of the sum of squares.
# - lr: a float32 variable (tf1: a float32 tensor), cast to the parameter dtype.
# - beta_1/beta_2: float32 everywhere except where the new optimizers multiply by
#   (1 - beta) formed in Python double. The power base of the new optimizers is
#   `tf.cast(self.beta_1, dtype)`, and tf.cast turns a Python float into a float32 tensor
#   first, so beta**t uses float32(beta) (power_base_holder "float32"; the brief said
#   "straight from the double"; the two differ for float64 parameters only).
# - beta**t: correctly rounded (`_power`), as the C library's pow almost always is; numpy's
#   own float32/float64 power loops run SVML on AVX-512 CPUs and are an ulp off in about
#   5% of float32 (beta, t) pairs. With that, this backend is the `tf-kernel` exact order
#   (adamconf.reference.emulate) bit for bit.
# - epsilon: TF1 a float32 tensor; OptimizerV2 `tf.convert_to_tensor(self.epsilon,
#   var_dtype)` and the new optimizers' `sqrt(v) + self.epsilon` the double itself.
# - decay (OptimizerV2 `_decayed_lr`) and weight_decay (tf_keras, Keras 3) go through
#   tf.cast as well: float32 first (aux_holder).
# - Clip thresholds and the EMA momentum meet a tensor in a binary op and convert with
#   its dtype (clip_holder "param"; EMA: (1 - mu) in double for tf_keras, in T for Keras 3).
# - Sparse gradients: clipping sees the raw slices, duplicates not yet summed
#   (clip_sparse "raw-slices"; the brief said densify first); then TF1/OptimizerV2 and
#   tf_keras sum duplicates and run their sparse code (m *= b1, scatter-add); Keras 3
#   densifies g for m but squares the slices before densifying for v, so a row hit twice
#   gets v += (g1^2 + g2^2 - v) * (1 - b2) rather than (g1 + g2)^2 (sparse "keras3-tf";
#   "densify" gives the dense-equivalent rule of the brief).


# Tuning of the dense path (float32, 2 cores): elements per chunk come from a byte
# budget per array, arrays below PARALLEL_MIN elements run on the calling thread.
CHUNK_BYTES = int(os.environ.get("ADAMCONF_NUMPY_CHUNK_BYTES", 512 * 1024))
PARALLEL_MIN = int(os.environ.get("ADAMCONF_NUMPY_PARALLEL_MIN", 1 << 18))
BLOCKS_PER_THREAD = 8


# -- threads ---------------------------------------------------------------------------

def _default_threads() -> int:
    env = os.environ.get("ADAMCONF_NUMPY_THREADS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """The persistent worker pool (re-created after a fork or a size change)."""
    global _pool, _pool_pid, _pool_size
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size != workers:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adamconf-numpy")
            _pool_pid, _pool_size = os.getpid(), workers
        return _pool


def _scratch(dtype: np.dtype, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two per-thread scratch buffers of at least n elements, reused between calls."""
    key = dtype
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    cur = bufs.get(key)
    if cur is None or cur[0].shape[0] < n:
        cur = (np.empty(n, dtype), np.empty(n, dtype))
        bufs[key] = cur
    return cur


def _chunk_elems(dtype: np.dtype) -> int:
    return max(1024, CHUNK_BYTES // dtype.itemsize)


def _parallel(n: int, chunk: int, fn: Callable[[int, int], None], threads: int) -> None:
    """Run fn(lo, hi) over [0, n): inline when small, else in blocks (about
    BLOCKS_PER_THREAD per thread) that the calling thread and threads - 1 pool workers
    take in turn. Dynamic, not one fixed share per thread: on a shared machine a thread
    the OS pauses leaves its remaining blocks to the others instead of holding up the step."""
    if threads <= 1 or n < PARALLEL_MIN:
        fn(0, n)
        return
    per = max(-(-n // (threads * BLOCKS_PER_THREAD)), PARALLEL_MIN // 4)
    per = -(-per // 64) * 64                # blocks start on 256-byte boundaries
    nblocks = -(-n // per)
    if nblocks == 1:
        fn(0, n)
        return
    ticket = itertools.count()              # next() on it is atomic under the GIL

    def worker() -> None:
        while (i := next(ticket)) < nblocks:
            fn(i * per, min(n, (i + 1) * per))

    pool = _get_pool(threads - 1)
    futs = [pool.submit(worker) for _ in range(min(threads, nblocks) - 1)]
    try:
        worker()
    finally:
        errors = []
        for f in futs:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)
    if errors:
        raise errors[0]


# -- output buffers ------------------------------------------------------------------

class _Lease(np.ndarray):
    """A byte view of a pooled buffer. Every output array handed out from the buffer
    (and every view of those) keeps its lease alive; when the last of them dies the
    lease's finalizer puts the buffer back on the free list."""

    def __del__(self) -> None:
        rel = self.__dict__.get("_release")
        if rel is not None:
            rel()


class _Recycler:
    """Output arrays for `step`, recycled once nothing refers to them any more.

    `step` must return fresh arrays, and fresh multi-megabyte arrays cost page faults
    and kernel zeroing on first touch (about a third of a step's time at 2^24 float32
    elements). This caching allocator avoids that: each large output is built over a
    pool-owned byte buffer through a `_Lease`, and the buffer returns to the free list
    only when the lease dies, i.e. when every array the caller got from it is gone. A
    buffer can therefore never back two live arrays, and never an input of the call.
    Free buffers beyond KEEP_FREE_BYTES are released to the system. Set
    ADAMCONF_NUMPY_RECYCLE=0 to allocate plainly.
    """

    MIN_BYTES = 1 << 20
    KEEP_FREE_BYTES = 1 << 30

    def __init__(self) -> None:
        self._free: dict[int, list[np.ndarray]] = {}
        self._free_bytes = 0
        self.enabled = os.environ.get("ADAMCONF_NUMPY_RECYCLE", "1") != "0"

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        nbytes = n * dtype.itemsize
        if not self.enabled or nbytes < self.MIN_BYTES:
            return np.empty(shape, dtype)
        # list.pop / list.append are atomic under the GIL, and the finalizer may run in
        # any thread at any time, so no lock is taken here (a lock could deadlock).
        try:
            raw = self._free.get(nbytes, []).pop()
            self._free_bytes -= nbytes
        except IndexError:
            raw = np.empty(nbytes, np.uint8)
        lease = raw.view(_Lease)
        lease.__dict__["_release"] = lambda raw=raw: self._give_back(raw)
        return np.frombuffer(memoryview(lease), dtype=dtype, count=n).reshape(shape)

    def _give_back(self, raw: np.ndarray) -> None:
        if self._free_bytes + raw.nbytes <= self.KEEP_FREE_BYTES:
            self._free.setdefault(raw.nbytes, []).append(raw)
            self._free_bytes += raw.nbytes

    def clear(self) -> None:
        self._free = {}
        self._free_bytes = 0


_recycler = _Recycler()


# -- the fused dense kernel -------------------------------------------------------------

@dataclass
class _Coef:
    """Per-step scalars as 0-d arrays of T (the fastest scalar operand for a ufunc)."""

    omb1: np.ndarray
    omb2: np.ndarray
    alpha: np.ndarray
    eps: np.ndarray
    wd: np.ndarray | None = None      # decoupled weight decay: p -= (p * wd) * lr
    lr: np.ndarray | None = None


_sub, _mul, _add, _div, _sqrt, _max = (np.subtract, np.multiply, np.add, np.divide, np.sqrt,
                                       np.maximum)


def _dense_range(lo: int, hi: int, chunk: int, c: _Coef, g: np.ndarray,
                 p_in: np.ndarray, m_in: np.ndarray, v_in: np.ndarray, vh_in: np.ndarray | None,
                 p_out: np.ndarray, m_out: np.ndarray, v_out: np.ndarray,
                 vh_out: np.ndarray | None, gsq: np.ndarray | None = None) -> None:
    """The TF kernel's update on flat elements [lo, hi), one cache-sized chunk at a time.

    Outputs may be the inputs themselves (in place) or fresh arrays; every operation
    is elementwise, so either gives the same bits. `gsq`, when given, replaces g*g
    (Keras 3 squares sparse slices before it densifies them).
    """
    with np.errstate(all="ignore"):           # IEEE results (inf, nan) are the point; no warnings
        _dense_chunks(lo, hi, chunk, c, g, p_in, m_in, v_in, vh_in, p_out, m_out, v_out, vh_out, gsq)


def _dense_chunks(lo, hi, chunk, c, g, p_in, m_in, v_in, vh_in, p_out, m_out, v_out, vh_out, gsq):
    t1, t2 = _scratch(g.dtype, min(chunk, max(hi - lo, 1)))
    omb1, omb2, alpha, eps, wd, lr = c.omb1, c.omb2, c.alpha, c.eps, c.wd, c.lr
    ams = vh_out is not None
    for s in range(lo, hi, chunk):
        e = min(s + chunk, hi)
        k = e - s
        a = t1[:k]
        b = t2[:k]
        gg = g[s:e]
        mi = m_in[s:e]
        mo = m_out[s:e]
        vi = v_in[s:e]
        vo = v_out[s:e]
        pi = p_in[s:e]
        po = p_out[s:e]
        if wd is not None:                      # var -= var * wd * lr (before the update)
            _mul(pi, wd, b)
            _mul(b, lr, b)
            _sub(pi, b, po)
            pi = po
        _sub(gg, mi, a)                         # m += (g - m) * (1 - b1)
        _mul(a, omb1, a)
        _add(mi, a, mo)
        if gsq is None:                         # v += (g*g - v) * (1 - b2)
            _mul(gg, gg, a)
            _sub(a, vi, a)
        else:
            _sub(gsq[s:e], vi, a)
        _mul(a, omb2, a)
        _add(vi, a, vo)
        if ams:                                 # vhat = max(vhat, v); denominator uses vhat
            vho = vh_out[s:e]
            _max(vh_in[s:e], vo, out=vho)
            _sqrt(vho, a)
        else:
            _sqrt(vo, a)
        _add(a, eps, a)                         # var -= (m * alpha) / (sqrt(v) + eps)
        _mul(mo, alpha, b)
        _div(b, a, b)
        _sub(pi, b, po)


def dense_update(c: _Coef, g: np.ndarray, p_in: np.ndarray, m_in: np.ndarray, v_in: np.ndarray,
                 vh_in: np.ndarray | None, p_out: np.ndarray, m_out: np.ndarray, v_out: np.ndarray,
                 vh_out: np.ndarray | None, *, threads: int | None = None,
                 chunk: int | None = None, gsq: np.ndarray | None = None,
                 compiled: bool | None = None) -> None:
    """Fused dense update over flat arrays of one dtype (outputs may alias inputs).

    `compiled`: None runs the numba kernel (numpy_compiled) where it serves the dtype
    and size, else the chunked ufunc path; False forces the ufunc path, True the kernel
    at every size of float32 and float64 (without numba it raises). Both give the same
    bits. `threads=1, chunk=n` gives the plain unchunked ufunc
    computation."""
    n = g.shape[0]
    if n == 0:
        return
    ch = chunk or _chunk_elems(g.dtype)
    th = _default_threads() if threads is None else threads
    if numpy_compiled.supports(g.dtype, n) if compiled is None else (compiled and g.dtype in numpy_compiled.DTYPES):
        if all(_same(o, i) for o, i in ((p_out, p_in), (m_out, m_in), (v_out, v_in), (vh_out, vh_in))):
            run = lambda lo, hi: numpy_compiled.dense_inplace(lo, hi, c, g, p_in, m_in, v_in, vh_in, gsq)  # noqa: E731
        else:
            run = lambda lo, hi: numpy_compiled.dense_out(lo, hi, c, g, p_in, m_in, v_in, vh_in,  # noqa: E731
                                                          p_out, m_out, v_out, vh_out, gsq)
    else:
        def run(lo: int, hi: int) -> None:
            _dense_range(lo, hi, ch, c, g, p_in, m_in, v_in, vh_in, p_out, m_out, v_out, vh_out, gsq)

    _parallel(n, ch, run, th)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two arrays (or two Nones) are the same memory, element for element."""
    if a is None or b is None:
        return a is b
    return a is b or (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                      and a.strides == b.strides and a.shape == b.shape)


# -- scalars ------------------------------------------------------------------------

def _cast(x: float, holder: str, T: np.dtype):
    """A Python number as the variant holds it, then as a numpy scalar of T."""
    if holder == "float32":
        return np.asarray(np.float32(x)).astype(T)[()]
    return np.asarray(float(x), dtype=np.float64).astype(T)[()]


def _value(x, iterations: int) -> float:
    """A hyperparameter's value at this step: a Schedule at the count before the
    increment (float64), a zero-argument callable called, a number as is."""
    if isinstance(x, Schedule):
        return float(x(iterations))
    if callable(x):
        return float(x())
    return float(x)


def _power(base, t, T: np.dtype):
    """base ** t correctly rounded (emulate.power): np.power's float32 and float64 loops
    use SVML on AVX-512 CPUs and round an ulp off in about 5% of (beta, t) pairs, where
    TF's kernels call the C library's pow (correctly rounded but for rare near-halfway
    cases)."""
    return np.asarray(power(float(base), float(t), dtype_name(T))).astype(T)[()]


@dataclass
class _StepScalars:
    T: np.dtype
    coef: _Coef
    b1: object          # T scalars for the sparse paths
    b2: object
    omb1: object
    omb2: object
    lr: object
    alpha: object
    alpha_legacy_sparse: object
    next_powers: tuple[float | None, float | None]


def _scalars(variant: str, T: np.dtype, hyper: Hyper, state: AdamState) -> _StepScalars:
    r = RULES[variant]
    it = int(state.iterations)
    lr_raw = _value(hyper.learning_rate, it)
    beta_1 = _value(hyper.beta_1, it)
    beta_2 = _value(hyper.beta_2, it)
    eps_raw = _value(hyper.epsilon, it) if hyper.epsilon is not None else 0.0
    if r.eps_default_when_falsy and not eps_raw:
        eps_raw = 1e-7

    one = np.asarray(1).astype(T)[()]
    lr = _cast(lr_raw, r.lr_holder, T)
    if "decay" in VARIANT_FEATURES[variant] and hyper.decay and hyper.decay > 0:
        decay = _cast(hyper.decay, r.aux_holder, T)
        lr = lr / (one + decay * _cast(it, "param", T))
    b1 = _cast(beta_1, r.beta_holder, T)
    b2 = _cast(beta_2, r.beta_holder, T)
    if r.one_minus == "in-dtype":
        omb1, omb2 = one - b1, one - b2
    else:
        omb1, omb2 = _cast(1.0 - beta_1, "param", T), _cast(1.0 - beta_2, "param", T)
    eps = _cast(eps_raw, r.eps_holder, T)

    next_powers: tuple[float | None, float | None] = (None, None)
    if r.beta_powers == "accumulated":
        f1, f2 = np.float32(beta_1), np.float32(beta_2)
        acc1 = f1 if state.beta1_power is None else np.float32(state.beta1_power)
        acc2 = f2 if state.beta2_power is None else np.float32(state.beta2_power)
        p1 = np.asarray(acc1).astype(T)[()]
        p2 = np.asarray(acc2).astype(T)[()]
        next_powers = (float(np.float32(acc1 * f1)), float(np.float32(acc2 * f2)))
    else:
        t = _cast(it + 1, "param", T)
        p1 = _power(_cast(beta_1, r.power_base_holder, T), t, T)
        p2 = _power(_cast(beta_2, r.power_base_holder, T), t, T)
    sq = np.sqrt(one - p2)
    alpha = lr * sq / (one - p1)
    alpha_legacy_sparse = lr * (sq / (one - p1))
    if hyper.adaptive_epsilon and "adaptive_epsilon" in VARIANT_FEATURES[variant]:
        eps = eps * sq

    wd = None
    if r.weight_decay and hyper.weight_decay is not None:
        wd = np.asarray(_cast(hyper.weight_decay, r.aux_holder, T), dtype=T)
    z = lambda x: np.asarray(x, dtype=T)  # noqa: E731
    coef = _Coef(z(omb1), z(omb2), z(alpha), z(eps), wd, z(lr) if wd is not None else None)
    return _StepScalars(T, coef, b1, b2, omb1, omb2, lr, alpha, alpha_legacy_sparse, next_powers)


# -- gradients: densify, clip --------------------------------------------------------

def _slices(g: SparseGrad, T: np.dtype, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The raw (indices, values in T) of a sparse gradient, checked against the shape."""
    if tuple(g.dense_shape) != tuple(shape):
        raise ValueError(f"sparse gradient with dense_shape {tuple(g.dense_shape)} for a parameter of shape {shape}")
    idx = np.asarray(g.indices).astype(np.int64, copy=False).reshape(-1)
    vals = np.asarray(g.values).astype(T, copy=False)
    if not shape:
        raise ValueError("a sparse gradient needs a parameter with at least one dimension")
    if vals.shape != (idx.shape[0],) + tuple(shape[1:]):
        raise ValueError(f"sparse gradient values of shape {vals.shape} do not match "
                         f"{idx.shape[0]} indices into a parameter of shape {shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
        raise ValueError(f"sparse gradient index out of range [0, {shape[0]})")
    return idx, vals


def _dedup(idx: np.ndarray, vals: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Unique row indices and the summed slices (duplicates added in order, in T): what
    TF's _deduplicate_indexed_slices (unsorted_segment_sum) does."""
    uniq, inv = np.unique(idx, return_inverse=True)
    if uniq.shape[0] == idx.shape[0]:
        return idx, vals
    summed = np.zeros((uniq.shape[0],) + tuple(shape[1:]), dtype=vals.dtype)
    np.add.at(summed, inv.reshape(-1), vals)
    return uniq, summed


def _densify(idx: np.ndarray, vals: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """tf.convert_to_tensor(IndexedSlices): a zero tensor with the slices scatter-added."""
    out = np.zeros(shape, dtype=vals.dtype)
    np.add.at(out, idx, vals)
    return out


def _sum_squares(g: np.ndarray, T: np.dtype):
    """sum(g*g): squares in T; float16/bfloat16 sums accumulate in float32 (as numpy's
    float16 reduction and TF's half reductions do), the total rounded to T."""
    sq = np.multiply(g, g)
    if T.itemsize < 4:
        return np.asarray(np.sum(sq, dtype=np.float32)).astype(T)[()]
    return np.sum(sq, dtype=T)


def _clip_by_value(g: np.ndarray, c: float, T: np.dtype, holder: str) -> np.ndarray:
    hi = _cast(c, holder, T)
    lo = _cast(-c, holder, T)
    return np.minimum(np.maximum(g, lo), hi)


def _clip_by_norm(g: np.ndarray, c: float, T: np.dtype, holder: str) -> np.ndarray:
    """tf.clip_by_norm / keras clip_by_norm: (g * c) / max(norm, c), in T."""
    cT = _cast(c, holder, T)
    l2sum = _sum_squares(g, T)
    l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
    return np.multiply(g, cT) / np.maximum(l2norm, cT)


def _clip_by_global_norm(gs: list[np.ndarray | None], c: float, T: np.dtype, holder: str,
                         keras3: bool) -> list[np.ndarray | None]:
    """tf.clip_by_global_norm (and Keras 3's copy): g * (c * min(1/norm, 1/c))."""
    total = None
    for g in gs:
        if g is not None:
            s = _sum_squares(g, T)
            total = s if total is None else total + s
    if total is None:
        return gs
    norm = np.sqrt(total)
    one = np.asarray(1).astype(T)[()]
    cT = _cast(c, holder, T)
    inv_c = _cast(1.0 / c, holder, T) if keras3 else one / cT
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = cT * np.minimum(one / norm, inv_c)
        scale = scale + (norm - norm)          # NaN when the norm is not finite
    return [None if g is None else np.multiply(g, scale) for g in gs]


def _positive(x) -> bool:
    return bool(x) and x > 0


def _clip(variant: str, hyper: Hyper, gs: list[np.ndarray | None], T: np.dtype) -> list[np.ndarray | None]:
    policy = RULES[variant].clip_policy
    h = RULES[variant].clip_holder
    cv, cn, gn = hyper.clipvalue, hyper.clipnorm, hyper.global_clipnorm
    if policy == "none":
        return gs
    if policy == "sequential":               # OptimizerV2: value, then norm, then global norm
        if cv is not None:
            gs = [None if g is None else _clip_by_value(g, cv, T, h) for g in gs]
        if cn is not None:
            gs = [None if g is None else _clip_by_norm(g, cn, T, h) for g in gs]
        if gn is not None:
            gs = _clip_by_global_norm(gs, gn, T, h, keras3=False)
        return gs
    # first-of (tf_keras) and exclusive (Keras 3): at most one applies, and only when > 0
    if _positive(cn):
        return [None if g is None else _clip_by_norm(g, cn, T, h) for g in gs]
    if _positive(gn):
        return _clip_by_global_norm(gs, gn, T, h, keras3=policy == "exclusive")
    if _positive(cv):
        return [None if g is None else _clip_by_value(g, cv, T, h) for g in gs]
    return gs


def _clip_conflict(variant: str, hyper: Hyper) -> None:
    """The constructor errors the real optimizers raise for clipping arguments."""
    policy = RULES[variant].clip_policy
    on = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(hyper, k) is not None]
    if policy == "exclusive" and len(on) > 1:
        raise ValueError(f"Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set "
                         f"(variant {variant}); got {', '.join(on)}")
    if policy == "first-of" and hyper.clipnorm is not None and hyper.global_clipnorm is not None:
        raise ValueError(f"At most one of `clipnorm` and `global_clipnorm` can be set (variant "
                         f"{variant}); got clipnorm={hyper.clipnorm}, global_clipnorm={hyper.global_clipnorm}")


# -- sparse paths ------------------------------------------------------------------------

def _sparse_update(variant: str, sc: _StepScalars, amsgrad: bool, uniq: np.ndarray, vals: np.ndarray,
                   p_in, m_in, v_in, vh_in, p_out, m_out, v_out, vh_out) -> None:
    """The IndexedSlices code of TF1 / OptimizerV2 / tf_keras: decay all of m and v,
    scatter-add the (deduplicated) slices, update every row of the variable."""
    kind = RULES[variant].sparse
    c = sc.coef
    if c.wd is not None:
        np.subtract(p_in, np.multiply(np.multiply(p_in, c.wd), c.lr), out=p_out)
        p_in = p_out
    if kind == "keras-new":                   # m.assign_add(-m * (1 - b1)); m.scatter_add(...)
        np.add(m_in, np.multiply(np.negative(m_in), sc.omb1), out=m_out)
        m_out[uniq] += np.multiply(vals, sc.omb1)
        np.add(v_in, np.multiply(np.negative(v_in), sc.omb2), out=v_out)
        v_out[uniq] += np.multiply(np.multiply(vals, vals), sc.omb2)
    else:                                     # m = m * b1; scatter_add(m, idx, g * (1 - b1))
        np.multiply(m_in, sc.b1, out=m_out)
        m_out[uniq] += np.multiply(vals, sc.omb1)
        np.multiply(v_in, sc.b2, out=v_out)
        v_out[uniq] += np.multiply(np.multiply(vals, vals), sc.omb2)
    den_v = v_out
    if amsgrad:
        np.maximum(vh_in, v_out, out=vh_out)
        den_v = vh_out
    den = np.add(np.sqrt(den_v), c.eps)
    if kind == "keras-new":                   # var -= (m * alpha) / (sqrt(v) + eps)
        upd = np.multiply(m_out, sc.alpha)
    elif kind == "legacy":                    # var -= lr * m / (...), lr = lr_t * (sqrt/(1-b1p))
        upd = np.multiply(sc.alpha_legacy_sparse, m_out)
    else:                                     # TF1: lr = lr_t * sqrt(1-b2p) / (1-b1p)
        upd = np.multiply(sc.alpha, m_out)
    np.divide(upd, den, out=upd)
    np.subtract(p_in, upd, out=p_out)


# -- the backend ------------------------------------------------------------------------

class NumpyBackend:
    """The bundled NumPy backend: every documented TF Adam variant, every dtype."""

    name = "numpy"
    variants = VARIANTS
    dtypes = DTYPES
    features = FEATURES

    def __init__(self, threads: int | None = None, compiled: bool | None = None) -> None:
        """threads: for large dense arrays (default: the usable cores); compiled: as
        `dense_update`'s (None: the numba kernel where it serves; False: never)."""
        self.threads = threads
        self.compiled = compiled

    def versions(self) -> dict[str, str]:
        """The libraries this backend computes with (stamped into results.json)."""
        import ml_dtypes
        out = {"numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__}
        if numpy_compiled.AVAILABLE:
            out["numba"] = numpy_compiled.version()
        return out

    def api(self) -> Any:
        """The object-level API world: a Keras-like Adam built on this backend."""
        from adamconf.backends.numpy_api import NumpyApi
        return NumpyApi()

    # protocol -----------------------------------------------------------------------
    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        if variant not in VARIANT_FEATURES:
            return f"numpy does not implement variant {variant}"
        if dtype not in DTYPES:
            return f"numpy does not support {dtype}"
        lacking = sorted(set(features) - VARIANT_FEATURES[variant])
        if lacking:
            return f"variant {variant} has no {', '.join(lacking)}"
        return None

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
             grads: Sequence) -> AdamState:
        """One step into fresh arrays; the inputs are left untouched."""
        with np.errstate(all="ignore"):
            return self._step(variant, dtype, hyper, state, grads, inplace=False)

    # in place ---------------------------------------------------------------------------
    def step_inplace(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
                     grads: Sequence) -> AdamState:
        """The same step written into the state's own arrays (they must be C-contiguous,
        writable and of `dtype`); returns `state` with its counters advanced."""
        with np.errstate(all="ignore"):
            return self._step(variant, dtype, hyper, state, grads, inplace=True)

    def apply_dense_inplace(self, variant: str, dtype: str, hyper: Hyper, param: np.ndarray,
                            m: np.ndarray, v: np.ndarray, grad: np.ndarray, *, iterations: int = 0,
                            vhat: np.ndarray | None = None, beta1_power: float | None = None,
                            beta2_power: float | None = None) -> AdamState:
        """One dense step of one variable, updating param, m, v (and vhat) in place with
        no copies: the fused kernel alone. Returns the advanced state (same arrays)."""
        st = AdamState([param], [m], [v], iterations, None if vhat is None else [vhat],
                       beta1_power, beta2_power)
        with np.errstate(all="ignore"):
            return self._step(variant, dtype, hyper, st, [grad], inplace=True)

    # the work ---------------------------------------------------------------------------
    def _step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence,
              inplace: bool) -> AdamState:
        if variant not in VARIANT_FEATURES:
            raise ValueError(f"unknown variant {variant!r}; the numpy backend implements {', '.join(VARIANTS)}")
        T = np_dtype(dtype)
        grads = list(grads)
        n = len(state.params)
        check_gradient_count(state, grads)
        _clip_conflict(variant, hyper)
        reason = self.unsupported(variant, dtype, asked_features(hyper, grads))
        if reason:
            raise ValueError(reason)
        r = RULES[variant]
        amsgrad = bool(hyper.amsgrad)
        use_ema = bool(hyper.use_ema)

        params = [self._check(p, T, "params", i, inplace) for i, p in enumerate(state.params)]
        ms = [self._check(x, T, "m", i, inplace) for i, x in enumerate(state.m)]
        vs = [self._check(x, T, "v", i, inplace) for i, x in enumerate(state.v)]
        if len(ms) != n or len(vs) != n:
            raise ValueError("state.m and state.v need one array per parameter")
        vhs = None
        if state.vhat is not None:
            vhs = [self._check(x, T, "vhat", i, inplace) for i, x in enumerate(state.vhat)]
        elif amsgrad:
            if inplace:
                raise ValueError("amsgrad is on but the state has no vhat")
            vhs = [np.zeros_like(p) for p in params]
        emas = None
        if state.ema is not None:
            emas = [self._check(x, T, "ema", i, inplace) for i, x in enumerate(state.ema)]
        elif use_ema:
            if inplace:
                raise ValueError("use_ema is on but the state has no ema averages")
            emas = [p.copy() for p in params]       # Keras starts the average at the variable
        for name, xs in (("m", ms), ("v", vs), ("vhat", vhs), ("ema", emas)):
            if xs is not None:
                for i, (x, p) in enumerate(zip(xs, params)):
                    if x.shape != p.shape:
                        raise ValueError(f"state.{name}[{i}] has shape {x.shape}, the parameter {p.shape}")

        sc = _scalars(variant, T, hyper, state)

        # gradients: dense arrays in T, sparse ones as raw (indices, values in T) slices
        items: list = []
        for i, (g, p) in enumerate(zip(grads, params)):
            if g is None:
                items.append(None)
            elif isinstance(g, SparseGrad):
                items.append(_slices(g, T, p.shape))
            else:
                ga = np.asarray(g)
                if ga.shape != p.shape:
                    raise ValueError(f"gradient {i} has shape {ga.shape}, the parameter {p.shape}")
                items.append(np.ascontiguousarray(ga, dtype=T))
        clipping = r.clip_policy != "none" and any(
            getattr(hyper, k) is not None for k in ("clipnorm", "clipvalue", "global_clipnorm"))
        if clipping:
            if r.clip_sparse == "densify":
                items = [_densify(*x, p.shape) if isinstance(x, tuple) else x
                         for x, p in zip(items, params)]
            # TF clips IndexedSlices by their raw values (duplicates not yet summed)
            tensors = [x[1] if isinstance(x, tuple) else x for x in items]
            tensors = _clip(variant, hyper, tensors, T)
            items = [(x[0], t) if isinstance(x, tuple) else t for x, t in zip(items, tensors)]
        dense: list[np.ndarray | None] = []
        gsqs: dict[int, np.ndarray] = {}
        sparse: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, (x, p) in enumerate(zip(items, params)):
            if not isinstance(x, tuple):
                dense.append(x)
                continue
            idx, vals = x
            if r.sparse == "densify":
                dense.append(_densify(idx, vals, p.shape))
            elif r.sparse == "keras3-tf":
                # Keras 3 on TF: (g - m) densifies g (duplicates summed), but ops.square
                # squares the slices first, so v sees the sum of the squared duplicates
                dense.append(_densify(idx, vals, p.shape))
                gsqs[i] = _densify(idx, np.multiply(vals, vals), p.shape)
            else:
                sparse[i] = _dedup(idx, vals, p.shape)
                dense.append(None)

        threads = _default_threads() if self.threads is None else self.threads
        out_p, out_m, out_v = [], [], []
        out_vh = None if vhs is None else []
        out_ema = None if emas is None else []
        stepped: list[bool] = []
        for i, p in enumerate(params):
            m, v = ms[i], vs[i]
            vh = None if vhs is None else vhs[i]
            if dense[i] is None and i not in sparse:            # no gradient: untouched
                keep = (lambda x: x) if inplace else (lambda x: x.copy())
                out_p.append(keep(p))
                out_m.append(keep(m))
                out_v.append(keep(v))
                if out_vh is not None:
                    out_vh.append(keep(vh))
                stepped.append(False)
                continue
            if inplace:
                po, mo, vo, vho = p, m, v, vh
            else:
                po, mo, vo = (_recycler.empty(p.shape, T) for _ in range(3))
                vho = None if vh is None else _recycler.empty(p.shape, T)
            if i in sparse:
                uniq, vals = sparse[i]
                _sparse_update(variant, sc, amsgrad, uniq, vals, p, m, v, vh,
                               po, mo, vo, vho if amsgrad else None)
            else:
                flat = lambda x: None if x is None else np.ascontiguousarray(x).reshape(-1)  # noqa: E731
                dense_update(sc.coef, flat(dense[i]), flat(p), flat(m), flat(v),
                             flat(vh) if amsgrad else None,
                             po.reshape(-1), mo.reshape(-1), vo.reshape(-1),
                             vho.reshape(-1) if amsgrad else None, threads=threads,
                             gsq=flat(gsqs.get(i)), compiled=self.compiled)
            if vh is not None and not amsgrad and not inplace:   # vhat carried along unchanged
                np.copyto(vho, vh)
            out_p.append(po)
            out_m.append(mo)
            out_v.append(vo)
            if out_vh is not None:
                out_vh.append(vho)
            stepped.append(True)

        if emas is not None:
            if use_ema:
                self._ema(variant, T, hyper, state.iterations, emas, out_p, out_ema, stepped, inplace)
            else:
                out_ema.extend(e if inplace else e.copy() for e in emas)

        b1p, b2p = sc.next_powers
        if inplace:
            state.iterations = state.iterations + 1
            state.beta1_power, state.beta2_power = b1p, b2p
            return state
        return AdamState(out_p, out_m, out_v, state.iterations + 1, out_vh, b1p, b2p, out_ema)

    @staticmethod
    def _ema(variant: str, T: np.dtype, hyper: Hyper, iterations: int, emas, params, out,
             stepped: list[bool], inplace: bool) -> None:
        """avg = mu * avg + (1 - mu) * var after the update; overwrite when due."""
        r = RULES[variant]
        one = np.asarray(1).astype(T)[()]
        if r.ema_first_step_copy and iterations == 0:
            mu = np.asarray(0).astype(T)[()]          # Keras 3: momentum * (iterations != 0)
        else:
            mu = _cast(hyper.ema_momentum, "param", T)
        omm = one - mu if r.ema_one_minus == "in-dtype" else _cast(1.0 - hyper.ema_momentum, "param", T)
        freq = hyper.ema_overwrite_frequency
        overwrite = bool(freq) and (iterations + 1) % freq == 0
        for i, (avg, p) in enumerate(zip(emas, params)):
            if not stepped[i]:
                out.append(avg if inplace else avg.copy())
                continue
            new = np.add(np.multiply(avg, mu), np.multiply(p, omm))
            if inplace:
                np.copyto(avg, new)
                new = avg
            out.append(new)
            if overwrite:
                np.copyto(p, new)

    @staticmethod
    def _check(x, T: np.dtype, name: str, i: int, inplace: bool) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype != T:
            raise ValueError(f"state.{name}[{i}] has dtype {x.dtype}, expected {T}")
        if inplace and (not x.flags.c_contiguous or not x.flags.writeable):
            raise ValueError(f"state.{name}[{i}] must be C-contiguous and writable for an in-place step")
        return x
