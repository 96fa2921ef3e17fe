"""The compiled dense kernel (numpy_compiled) gives the numpy path's bits exactly.

Every variant's dense step, with AMSGrad, weight decay and Keras 3's sparse squares,
in float32 and float64, on odd sizes, strided and read-only inputs, special values
(NaN, inf, signed zeros, subnormals, the largest finite number), in place and out of
place, split across threads: the compiled and the ufunc path are compared bit for bit
(NaN payloads included). The generated machine code is checked for FMA instructions,
which would fuse a multiply and an add the TF kernel rounds separately.
"""
from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from adamconf.backends import numpy_backend as nb
from adamconf.backends import numpy_compiled as nc
from adamconf.reference.state import AdamState, Hyper, SparseGrad

FAST = "pip install -e '.[fast]'"
needs_numba = pytest.mark.skipif(not nc.AVAILABLE, reason=f"numba is not installed (or ADAMCONF_NUMPY_COMPILED=0): {FAST}")

DTYPES = ("float32", "float64")
SIZES = ((1,), (7,), (1037,), (33, 65), (3, 5, 129))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)


def _same_bits(a: AdamState, b: AdamState) -> None:
    for name, arrs in a.arrays().items():
        for i, (x, y) in enumerate(zip(arrs, b.arrays()[name])):
            d = np.nonzero(_bits(x).ravel() != _bits(y).ravel())[0]
            assert d.size == 0, f"{name}[{i}] differs at {d.size} elements, first {d[:3]}: " \
                                f"{x.ravel()[d[:3]]} vs {y.ravel()[d[:3]]}"
    assert (a.iterations, a.beta1_power, a.beta2_power) == (b.iterations, b.beta1_power, b.beta2_power)


def _specials(rng: np.random.Generator, shape: tuple[int, ...], T: np.dtype, scale: float = 1.0) -> np.ndarray:
    """Normal values with a sprinkling of every kind of special value."""
    x = (rng.standard_normal(shape) * scale).astype(T)
    fi = np.finfo(T)
    sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, fi.smallest_subnormal, -fi.smallest_subnormal,
                   fi.tiny, fi.max, -fi.max, 1e-30, 1e30], T)
    pick = rng.random(shape) < 0.2
    x[pick] = sp[rng.integers(0, sp.size, shape)[pick]]
    return x


def _path(monkeypatch: pytest.MonkeyPatch, compiled: bool) -> None:
    """Route dense_update's automatic choice to one path for every size."""
    monkeypatch.setattr(nc, "AVAILABLE", compiled)
    monkeypatch.setattr(nc, "MIN_ELEMENTS", 0)


def _both(monkeypatch, fn):
    out = []
    for compiled in (False, True):
        with monkeypatch.context() as mp:
            _path(mp, compiled)
            out.append(fn())
    return out


def _cases():
    for variant in nb.VARIANTS:
        feats = nb.VARIANT_FEATURES[variant]
        for dtype in DTYPES:
            hypers = [Hyper()]
            if "amsgrad" in feats:
                hypers.append(Hyper(amsgrad=True))
            if "weight_decay" in feats:
                hypers.append(Hyper(weight_decay=0.004, learning_rate=0.01))
                if "amsgrad" in feats:
                    hypers.append(Hyper(amsgrad=True, weight_decay=0.004))
            if "decay" in feats:
                hypers.append(Hyper(decay=0.01))
            for h in hypers:
                yield pytest.param(variant, dtype, h, id=f"{variant}-{dtype}-{'-'.join(sorted(h.features())) or 'plain'}")


def _state(dtype: str, shapes, amsgrad: bool, seed: int = 0, special: bool = False):
    T = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    draw = (lambda s, k: _specials(rng, s, T, k)) if special else (lambda s, k: (rng.standard_normal(s) * k).astype(T))
    ps = [draw(s, 1.0) for s in shapes]
    st = AdamState(ps, [draw(s, 0.1) for s in shapes], [np.abs(draw(s, 0.05)) for s in shapes], 4,
                   [np.abs(draw(s, 0.05)) for s in shapes] if amsgrad else None, 0.5, 0.25)
    return st, [draw(s, 1.0) for s in shapes]


@needs_numba
@pytest.mark.parametrize("variant,dtype,hyper", list(_cases()))
def test_every_variant_dense_step_is_bit_identical(variant, dtype, hyper, monkeypatch):
    st, grads = _state(dtype, SIZES, hyper.amsgrad)
    a, b = _both(monkeypatch, lambda: nb.NumpyBackend().step(variant, dtype, hyper, st, grads))
    _same_bits(a, b)
    st2, grads2 = _state(dtype, SIZES, hyper.amsgrad, seed=1, special=True)
    a, b = _both(monkeypatch, lambda: nb.NumpyBackend().step(variant, dtype, hyper, st2, grads2))
    _same_bits(a, b)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_step_and_threads_are_bit_identical(dtype, monkeypatch):
    """step_inplace (the in-place loop) and a split across two threads (PARALLEL_MIN
    lowered so a 1037-element array is cut) give the same bits as the ufunc path."""
    monkeypatch.setattr(nb, "PARALLEL_MIN", 1)
    for variant, h in (("keras-legacy", Hyper(amsgrad=True)), ("keras3", Hyper(weight_decay=0.004)), ("tf1", Hyper())):
        def run(threads, variant=variant, h=h):
            st, grads = _state(dtype, SIZES, h.amsgrad, seed=2, special=True)
            return nb.NumpyBackend(threads=threads).step_inplace(variant, dtype, h, st, grads)
        for threads in (1, 2):
            a, b = _both(monkeypatch, lambda threads=threads: run(threads))
            _same_bits(a, b)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_keras3_sparse_squares_path_is_bit_identical(dtype, monkeypatch):
    """Keras 3 densifies a sparse gradient and feeds the summed squares (gsq) to v."""
    T = np.dtype(dtype)
    rng = np.random.default_rng(3)
    st, _ = _state(dtype, ((101, 3),), amsgrad=True, seed=3)
    g = SparseGrad(np.array([5, 0, 5, 100, 7, 5]), rng.standard_normal((6, 3)).astype(T), (101, 3))
    for h in (Hyper(), Hyper(amsgrad=True, weight_decay=0.01)):
        a, b = _both(monkeypatch, lambda h=h: nb.NumpyBackend().step("keras3", dtype, h, st, [g]))
        _same_bits(a, b)


@needs_numba
def test_non_contiguous_and_read_only_inputs(monkeypatch):
    """step takes strided and read-only arrays (it reads them into contiguous ones)."""
    rng = np.random.default_rng(4)
    base = [rng.standard_normal((2 * 37, 3 * 11)).astype(np.float32) for _ in range(5)]
    views = [b[::2, ::3] for b in base[:4]] + [base[4].ravel()[: 37 * 11].reshape(11, 37).T]   # strided; transposed
    views[1] = views[1] * np.float32(0.1)
    views[2] = np.abs(views[2])
    views[3] = np.abs(views[3])
    for v in views:
        v.flags.writeable = False
    p, m, v, vh, g = views
    st = AdamState([p], [m], [v], 2, [vh])
    a, b = _both(monkeypatch, lambda: nb.NumpyBackend().step("keras-legacy", "float32", Hyper(amsgrad=True), st, [g]))
    _same_bits(a, b)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_on_strided_views_and_every_flag(dtype):
    """dense_update itself on strided 1-d views (outputs strided too), every combination
    of weight decay, sparse squares and AMSGrad, in and out of place, odd lengths."""
    T = np.dtype(dtype)
    rng = np.random.default_rng(5)
    for n, wd, gsq, ams in itertools.product((1, 63, 1037), (False, True), (False, True), (False, True)):
        c = nb._Coef(*(np.asarray(x, T) for x in (0.1, 0.001, 0.00123, 1e-7)))
        if wd:
            c.wd, c.lr = np.asarray(0.004, T), np.asarray(0.01, T)
        ins = [_specials(rng, (3 * n,), T)[::3] for _ in range(6)]        # g, p, m, v, vh, gsq
        results = []
        for compiled, inplace in itertools.product((False, True), (False, True)):
            g, p, m, v, vh, sq = (x.copy() if inplace else x for x in ins)
            if inplace:
                p, m, v, vh = (np.repeat(x, 2)[::2] for x in (p, m, v, vh))   # strided and writable
                outs = (p, m, v, vh if ams else None)
            else:
                outs = tuple(np.full(2 * n, 7, T)[::2] for _ in range(4))
                outs = outs[:3] + (outs[3] if ams else None,)
            nb.dense_update(c, g, p, m, v, vh if ams else None, *outs, gsq=sq if gsq else None,
                            compiled=compiled, threads=1)
            results.append([_bits(o).copy() for o in outs if o is not None])
        for other in results[1:]:
            for x, y in zip(results[0], other):
                assert np.array_equal(x, y), (n, wd, gsq, ams)


_FMA = re.compile(r"\bv?f(n)?m(add|sub)\d*[ps][sd]\b", re.I)


@needs_numba
def test_the_fma_check_sees_a_contraction():
    """The pattern below finds the FMA LLVM emits when contraction is allowed."""
    import numba
    cpuinfo = Path("/proc/cpuinfo")
    if not re.search(r"\bfma\b", cpuinfo.read_text() if cpuinfo.exists() else ""):
        pytest.skip("this CPU has no FMA instructions")
    f = numba.njit(fastmath=True)(lambda a, b, c: a * b + c)
    f(np.float32(1), np.float32(2), np.float32(3))
    assert any(_FMA.search(asm) for asm in f.inspect_asm().values())


@needs_numba
def test_no_fused_multiply_add_in_the_machine_code():
    """numba compiles without fastmath, so LLVM must not contract a*b + c into an FMA
    (the TF kernel rounds the product first); the compiled kernels hold none."""
    T = np.float32
    ones = lambda: np.ones(64, T)  # noqa: E731
    inplace, out = nc.build(cache=False)          # cached code cannot be disassembled
    one, z = T(1), T(0)
    inplace(0, 64, ones(), ones(), ones(), ones(), ones(), ones(), one, one, one, one, one, one, True, True, True)
    out(0, 64, ones(), ones(), ones(), ones(), ones(), ones(), ones(), ones(), ones(), ones(), one, one, one, one,
        z, z, False, False, False)
    fma = _FMA
    seen = 0
    for kernel in (inplace, out):
        for sig, asm in kernel.inspect_asm().items():
            seen += 1
            hits = fma.findall(asm)
            assert not hits, f"{kernel.__name__}{sig}: FMA instructions in the compiled kernel"
            assert re.search(r"\bv?(add|mul|div|sqrt)[ps]s\b", asm), "the check must see the arithmetic it looks at"
    assert seen >= 2


def test_without_numba_the_numpy_path_serves_and_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)          # import numba now fails
    with pytest.raises(ImportError, match=re.escape(FAST)):
        nc.build()
    monkeypatch.setattr(nc, "AVAILABLE", False)
    assert not nc.supports(np.dtype(np.float32), 1 << 24)
    st, grads = _state("float32", ((1 << 15,),), amsgrad=False)
    out = nb.NumpyBackend().step("keras3", "float32", Hyper(), st, grads)
    assert out.params[0].shape == (1 << 15,)


def test_compiled_kernel_serves_only_float32_and_float64_large_enough(monkeypatch):
    monkeypatch.setattr(nc, "AVAILABLE", True)
    assert nc.supports(np.dtype(np.float32), nc.MIN_ELEMENTS)
    assert nc.supports(np.dtype(np.float64), nc.MIN_ELEMENTS)
    assert not nc.supports(np.dtype(np.float32), nc.MIN_ELEMENTS - 1)
    assert not nc.supports(np.dtype(np.float16), 1 << 24)
