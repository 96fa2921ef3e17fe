"""The numpy backend's dense step compiled with numba: one pass over memory.

The numpy path (`numpy_backend._dense_chunks`) runs twelve ufunc passes over each
cache-sized chunk; this kernel does the same operations on one element at a time in
registers, so each element's g, m, v and var cross the memory bus once. It keeps the
numpy path's op order exactly, operation by operation, in the parameter dtype:

    var -= (var * wd) * lr                      (decoupled weight decay, when on)
    m   += (g - m) * (1 - b1)
    v   += (g * g - v) * (1 - b2)               (or (gsq - v): Keras 3's sparse squares)
    vhat = max(vhat, v)                         (AMSGrad; NaN wins, as np.maximum)
    var -= (m * alpha) / (sqrt(v or vhat) + eps)

Nothing is contracted or reassociated: numba compiles without fastmath, so LLVM gets
plain fmul/fadd/fsub/fdiv with no `contract` flag, and never fuses a multiply and an
add into an FMA (the tests check the generated code for FMA instructions and compare
the bits with the numpy path). float16 and bfloat16 stay on the numpy path.

The kernels are serial and release the GIL (`nogil`); `numpy_backend._parallel` splits
a large array across its own persistent thread pool. That is deliberate rather than
`parallel=True`: numba's threading layers that come with a pip install are either not
fork-safe (GNU OpenMP: a forked child that launches a parallel region is terminated)
or not thread-safe (workqueue: two threads launching at once abort the process), and
the backend may run in forked worker processes and under threaded callers; OpenMP's
spinning threads also stall on a loaded machine (a 2^18-element step took 16 ms under
it against 0.12 ms on the pool, measured on 2 shared cores). The benchmark
(benchmarks/bench_dense_step.py) measures the `parallel=True` build beside it.

The loops index from 0 over slices: with a start that could be negative every access
would carry numba's wraparound test and nothing would be vectorized. Two loops, in
place and out of place: with an output that is also an input LLVM's runtime overlap
check fails and it falls back to scalar code (about 8x slower in cache), so the
in-place loop reads and writes through the same array.

Installed by the `fast` extra (`pip install -e '.[fast]'`); `ADAMCONF_NUMPY_COMPILED=0`
turns it off. Compiled code is cached on disk (numba `cache=True`), so only the first
process on a machine pays the compile (about a second per dtype and loop).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

__all__ = ["AVAILABLE", "DTYPES", "MIN_ELEMENTS", "supports", "dense_inplace", "dense_out", "build", "version"]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
AVAILABLE = (os.environ.get("ADAMCONF_NUMPY_COMPILED", "1") != "0"
             and importlib.util.find_spec("numba") is not None)
# Below this many elements the ufunc path takes microseconds, less than importing numba
# (about a second) repays in any one process; the gate's small arrays stay there.
MIN_ELEMENTS = int(os.environ.get("ADAMCONF_NUMPY_COMPILED_MIN", 1 << 14))


def version() -> str | None:
    """numba's version, or None when it is not installed."""
    if importlib.util.find_spec("numba") is None:
        return None
    from importlib.metadata import version as dist_version
    return dist_version("numba")


def supports(dtype: np.dtype, n: int = MIN_ELEMENTS) -> bool:
    """Whether the compiled kernel serves n elements of this dtype in this process."""
    return AVAILABLE and n >= MIN_ELEMENTS and dtype in DTYPES


def _element(g, gsq, p, m, v, vh, omb1, omb2, alpha, eps, wd, lr, has_wd, has_gsq, ams):
    """One element of the step; returns (var, m, v, vhat). Every operand is of the
    parameter dtype, so numba's typing keeps every operation in it."""
    if has_wd:
        p = p - (p * wd) * lr
    mo = m + (g - m) * omb1
    if has_gsq:
        d = gsq - v
    else:
        d = g * g - v
    vo = v + d * omb2
    if ams:
        if not (vh >= vo or vh != vh):      # np.maximum: the first NaN, else the larger
            vh = vo
        den = np.sqrt(vh)
    else:
        den = np.sqrt(vo)
    return p - (mo * alpha) / (den + eps), mo, vo, vh


_prange: Any = range
_elem: Any = _element


def _inplace(lo, hi, g, gsq, p, m, v, vh, omb1, omb2, alpha, eps, wd, lr, has_wd, has_gsq, ams):
    """Elements [lo, hi) of p, m, v (and vh) updated in place."""
    # one slice a statement: under parallel=True, arrays unpacked from a tuple of four or
    # more are copies and the writes are lost (numba issue 5872, open in 0.68)
    g_ = g[lo:hi]
    q_ = gsq[lo:hi]
    p_ = p[lo:hi]
    m_ = m[lo:hi]
    v_ = v[lo:hi]
    h_ = vh[lo:hi]
    for i in _prange(hi - lo):              # from 0: i >= 0 is then provable (see the module doc)
        x = q_[i] if has_gsq else g_[i]
        h = h_[i] if ams else v_[i]
        po, mo, vo, ho = _elem(g_[i], x, p_[i], m_[i], v_[i], h, omb1, omb2, alpha, eps, wd, lr,
                               has_wd, has_gsq, ams)
        p_[i] = po
        m_[i] = mo
        v_[i] = vo
        if ams:
            h_[i] = ho


def _out(lo, hi, g, gsq, p, m, v, vh, p_o, m_o, v_o, vh_o, omb1, omb2, alpha, eps, wd, lr,
         has_wd, has_gsq, ams):
    """Elements [lo, hi) read from p, m, v (and vh), written to the *_o arrays."""
    g_ = g[lo:hi]
    q_ = gsq[lo:hi]
    p_ = p[lo:hi]
    m_ = m[lo:hi]
    v_ = v[lo:hi]
    h_ = vh[lo:hi]
    po_ = p_o[lo:hi]
    mo_ = m_o[lo:hi]
    vo_ = v_o[lo:hi]
    ho_ = vh_o[lo:hi]
    for i in _prange(hi - lo):
        x = q_[i] if has_gsq else g_[i]
        h = h_[i] if ams else v_[i]
        po, mo, vo, ho = _elem(g_[i], x, p_[i], m_[i], v_[i], h, omb1, omb2, alpha, eps, wd, lr,
                               has_wd, has_gsq, ams)
        po_[i] = po
        mo_[i] = mo
        vo_[i] = vo
        if ams:
            ho_[i] = ho


_OPS = dict(fastmath=False, error_model="numpy")   # IEEE: no contraction, x/0 is inf, not an exception


def build(parallel: bool = False, cache: bool = True) -> tuple[Any, Any]:
    """The (in-place, out-of-place) kernels; `parallel=True` builds the prange variant
    the benchmark compares against (not used by the backend, see the module doc).
    `cache=False` compiles afresh (numba can show the machine code only then)."""
    try:
        import numba
    except ImportError:
        raise ImportError("numba is not installed: pip install -e '.[fast]'") from None
    global _prange, _elem
    if _elem is _element:                    # the loops call these two by their global names
        _prange = numba.prange               # range in a serial kernel
        _elem = numba.njit(inline="always", **_OPS)(_element)
    try:
        jit = numba.njit(nogil=True, parallel=parallel, cache=cache and not parallel, **_OPS)
        return jit(_inplace), jit(_out)
    except RuntimeError:                     # no writable cache location: compile per process
        jit = numba.njit(nogil=True, parallel=parallel, cache=False, **_OPS)
        return jit(_inplace), jit(_out)


_kernels: tuple[Any, Any] | None = None


def _get() -> tuple[Any, Any]:
    global _kernels
    if _kernels is None:
        _kernels = build(parallel=False)
    return _kernels


def _scalars(c: Any, T: type) -> tuple:
    z = T(0)
    return (T(c.omb1[()]), T(c.omb2[()]), T(c.alpha[()]), T(c.eps[()]),
            z if c.wd is None else T(c.wd[()]), z if c.lr is None else T(c.lr[()]))


# An absent operand (gsq, vhat) is passed as an array of the right length that the flags
# keep the loop from touching (g, v), so every slice in the kernel is in bounds.

def dense_inplace(lo: int, hi: int, c: Any, g: np.ndarray, p: np.ndarray, m: np.ndarray, v: np.ndarray,
                  vh: np.ndarray | None, gsq: np.ndarray | None = None) -> None:
    """The step on flat elements [lo, hi), in place (c: numpy_backend._Coef)."""
    _get()[0](lo, hi, g, g if gsq is None else gsq, p, m, v, v if vh is None else vh,
              *_scalars(c, g.dtype.type), c.wd is not None, gsq is not None, vh is not None)


def dense_out(lo: int, hi: int, c: Any, g: np.ndarray, p: np.ndarray, m: np.ndarray, v: np.ndarray,
              vh: np.ndarray | None, p_o: np.ndarray, m_o: np.ndarray, v_o: np.ndarray,
              vh_o: np.ndarray | None, gsq: np.ndarray | None = None) -> None:
    """The step on flat elements [lo, hi), from the inputs into the outputs."""
    ams = vh is not None
    _get()[1](lo, hi, g, g if gsq is None else gsq, p, m, v, vh if ams else v, p_o, m_o, v_o,
              vh_o if ams else v_o, *_scalars(c, g.dtype.type), c.wd is not None, gsq is not None, ams)
