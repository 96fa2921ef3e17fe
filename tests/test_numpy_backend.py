"""Unit tests of the bundled numpy backend, against a plain float64 formula.

The formula below is written independently of both the backend and the reference
package: the TF kernel's update in float64, fed with the scalars each variant rounds
its hyperparameters to. Tolerances are K * u * (magnitude of the terms), u the unit
roundoff of the dtype, so a wrong expression (bias correction, epsilon placement,
hyperparameter rounding of 1 - beta_2) fails while rounding passes.

The last section compares with TensorFlow itself, bit for bit, when tensorflow (and
tf_keras, keras) are installed; it is skipped otherwise.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from adamconf.backends import numpy_backend as nb
from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.protocol import unsupported_reason, validate_backend
from adamconf.reference.state import AdamState, Hyper, Schedule, SparseGrad, np_dtype

VARIANTS = nb.VARIANTS
DTYPES = ("float16", "bfloat16", "float32", "float64")
U = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24, "float64": 2.0 ** -53}
GROUP_A = ("tf1", "tf1-compat", "keras-v2", "keras-legacy")      # float32 hypers, 1 - b in T
K = 16

backend = NumpyBackend()


# -- the independent float64 formula ---------------------------------------------------

def scalars(variant: str, dtype: str, hyper: Hyper, iterations: int,
            beta_powers: tuple[float, float] | None = None) -> dict[str, float]:
    """Hyperparameters rounded the variant's way, as float64 numbers. TF holds lr and the
    betas in float32 (tf1/OptimizerV2) and forms beta**t from float32(beta) everywhere
    (tf.cast of a Python float goes through float32); the new optimizers form 1 - beta in
    double and add epsilon straight from the double; TF1 rounds epsilon to float32."""
    T = np_dtype(dtype)
    f32 = lambda x: float(np.asarray(np.float32(x)).astype(T))     # noqa: E731
    direct = lambda x: float(np.asarray(x, dtype=np.float64).astype(T))  # noqa: E731
    lr_raw = hyper.learning_rate(iterations) if isinstance(hyper.learning_rate, Schedule) else hyper.learning_rate
    lr = f32(lr_raw)
    if variant in GROUP_A:
        b1, b2 = f32(hyper.beta_1), f32(hyper.beta_2)
        # TF1 holds epsilon in a float32 tensor; OptimizerV2 converts the double directly
        eps = f32(hyper.epsilon) if variant.startswith("tf1") else direct(hyper.epsilon)
        omb1, omb2 = 1.0 - b1, 1.0 - b2       # exact: Sterbenz, beta in [0.5, 1]
    else:
        b1, b2, eps = direct(hyper.beta_1), direct(hyper.beta_2), direct(hyper.epsilon)
        omb1, omb2 = direct(1.0 - hyper.beta_1), direct(1.0 - hyper.beta_2)
    if variant in ("tf1", "tf1-compat"):
        acc = beta_powers or (float(np.float32(hyper.beta_1)), float(np.float32(hyper.beta_2)))
        p1, p2 = (float(np.asarray(np.float32(a)).astype(T)) for a in acc)
    else:
        # beta ** t in the parameter dtype, as the variants form it (a rounding of its own:
        # 1 - b2**t magnifies it ~1/(1 - b2) times, so the test forms it the same way)
        t = np.asarray(iterations + 1, dtype=np.float64).astype(T)
        p1 = float(np.power(np.asarray(f32(hyper.beta_1)).astype(T), t))
        p2 = float(np.power(np.asarray(f32(hyper.beta_2)).astype(T), t))
    return dict(lr=lr, b1=b1, b2=b2, eps=eps, omb1=omb1, omb2=omb2, p1=p1, p2=p2)


def formula(p, m, v, g, s, *, vhat=None, wd=None):
    """One Adam step in float64: the TF kernel's expressions (ADAM-FACTS)."""
    p, m, v, g = (np.asarray(x, dtype=np.float64) for x in (p, m, v, g))
    if wd is not None:
        p = p - p * wd * s["lr"]
    m2 = m + (g - m) * s["omb1"]
    v2 = v + (g * g - v) * s["omb2"]
    den_v = v2 if vhat is None else np.maximum(np.asarray(vhat, dtype=np.float64), v2)
    alpha = s["lr"] * np.sqrt(1.0 - s["p2"]) / (1.0 - s["p1"])
    upd = alpha * m2 / (np.sqrt(den_v) + s["eps"])
    return p - upd, m2, v2, den_v, upd


def assert_close(got, want, dtype, scale, what=""):
    got = np.asarray(got).astype(np.float64)
    tol = K * U[dtype] * np.asarray(scale, dtype=np.float64) + 1e-300
    err = np.abs(got - want)
    bad = err > tol
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off; worst err {err.max():.3g} "
                           f"vs tol {tol.ravel()[np.argmax(err)]:.3g}")


def random_state(dtype, shapes=((4, 3), (5,)), seed=0, amsgrad=False, ema=False, iterations=3):
    T = np_dtype(dtype)
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(T) for s in shapes]
    st = AdamState.zeros_like(ps, amsgrad=amsgrad, ema=ema)
    st.iterations = iterations
    st.m = [(rng.standard_normal(s) * 0.1).astype(T) for s in shapes]
    st.v = [(rng.random(s) * 0.05).astype(T) for s in shapes]
    if amsgrad:
        st.vhat = [(rng.random(s) * 0.05).astype(T) for s in shapes]
    grads = [rng.standard_normal(s).astype(T) for s in shapes]
    return st, grads


def snapshot(state: AdamState, grads) -> list:
    out = [a.tobytes() for arrs in state.arrays().values() for a in arrs]
    for g in grads:
        if isinstance(g, SparseGrad):
            out.append(np.asarray(g.values).tobytes() + np.asarray(g.indices).tobytes())
        elif g is not None:
            out.append(np.asarray(g).tobytes())
    out.append((state.iterations, state.beta1_power, state.beta2_power))
    return out


# -- protocol --------------------------------------------------------------------------

def test_protocol_and_declarations():
    validate_backend(backend, "numpy")
    assert backend.name == "numpy"
    assert set(backend.variants) == set(VARIANTS)
    assert set(backend.dtypes) == set(DTYPES)
    assert backend.features == frozenset().union(*nb.VARIANT_FEATURES.values())
    assert unsupported_reason(backend, "keras3", "float32", {"amsgrad", "ema"}) is None
    assert "decay" in backend.unsupported("keras3", "float32", {"decay"})
    assert "amsgrad" in backend.unsupported("tf1", "float32", {"amsgrad"})
    assert "global_clipnorm" in backend.unsupported("keras-v2", "float32", {"global_clipnorm"})
    assert backend.unsupported("keras-legacy", "float32", {"global_clipnorm", "decay"}) is None
    assert "adaptive_epsilon" in backend.unsupported("keras3", "float32", {"adaptive_epsilon"})
    assert backend.unsupported("tf-keras", "bfloat16", {"adaptive_epsilon", "weight_decay"}) is None
    assert backend.unsupported("nope", "float32", set()) is not None


def test_requesting_a_feature_the_variant_lacks_raises():
    st, g = random_state("float32")
    with pytest.raises(ValueError, match="amsgrad"):
        backend.step("tf1", "float32", Hyper(amsgrad=True), st, g)


# -- dense step per variant ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_dense_step_matches_float64_formula(variant, dtype):
    hyper = Hyper(learning_rate=0.01, beta_2=0.99)   # beta_2 = 0.999 is 1.0 in bfloat16
    st, grads = random_state(dtype, seed=zlib.crc32(f"{variant}/{dtype}".encode()) % 1000)
    powers = None
    if variant.startswith("tf1"):
        powers = (float(np.float32(0.9) ** 4), float(np.float32(0.99) ** 4))
        st.beta1_power, st.beta2_power = powers
    out = backend.step(variant, dtype, hyper, st, grads)
    s = scalars(variant, dtype, hyper, st.iterations, powers)
    for i in range(len(grads)):
        p2, m2, v2, _, upd = formula(st.params[i], st.m[i], st.v[i], grads[i], s)
        g, m, v = (x.astype(np.float64) for x in (grads[i], st.m[i], st.v[i]))
        # scales: the result plus the increment each rounding can perturb
        assert_close(out.m[i], m2, dtype, np.abs(m2) + np.abs(g - m) * s["omb1"], f"{variant} m")
        assert_close(out.v[i], v2, dtype, np.abs(v2) + np.abs(g * g - v) * s["omb2"], f"{variant} v")
        assert_close(out.params[i], p2, dtype, np.abs(p2) + np.abs(upd), f"{variant} params")
    assert out.iterations == st.iterations + 1


@pytest.mark.parametrize("variant", ["keras-v2", "keras-legacy", "keras-dtensor", "tf-keras", "keras3"])
def test_amsgrad_uses_running_max_of_raw_v(variant):
    st, grads = random_state("float32", amsgrad=True, seed=3)
    st.vhat = [np.full_like(v, 0.04) for v in st.v]     # larger than most new v
    hyper = Hyper(amsgrad=True, learning_rate=0.01)
    out = backend.step(variant, "float32", hyper, st, grads)
    s = scalars(variant, "float32", hyper, st.iterations)
    for i in range(len(grads)):
        p2, m2, v2, vh, upd = formula(st.params[i], st.m[i], st.v[i], grads[i], s, vhat=st.vhat[i])
        assert_close(out.vhat[i], vh, "float32", np.abs(vh), "vhat")
        assert_close(out.params[i], p2, "float32", np.abs(st.params[i]) + np.abs(upd), "params")
        assert (out.vhat[i] >= out.v[i]).all()


def test_worked_example_keras_legacy():
    st = AdamState.zeros_like([np.array([10.0], np.float32)])
    out = backend.step("keras-legacy", "float32", Hyper(learning_rate=0.1), st, [np.array([10.0], np.float32)])
    assert out.params[0].dtype == np.float32
    assert abs(float(out.params[0][0]) - 9.9) < 1e-6
    assert out.iterations == 1


# -- chunking and threads ----------------------------------------------------------------

def naive_kernel_float32(p, m, v, g, hyper: Hyper, iterations: int):
    """keras-legacy float32 in one unchunked pass of plain numpy float32 expressions."""
    f = np.float32
    b1, b2, lr, eps = f(hyper.beta_1), f(hyper.beta_2), f(hyper.learning_rate), f(hyper.epsilon)
    t = f(iterations + 1)
    p1, p2 = np.power(b1, t), np.power(b2, t)
    alpha = lr * np.sqrt(f(1) - p2) / (f(1) - p1)
    m2 = m + (g - m) * (f(1) - b1)
    v2 = v + (g * g - v) * (f(1) - b2)
    return p - (m2 * alpha) / (np.sqrt(v2) + eps), m2, v2


def test_chunked_threaded_path_is_bit_identical_to_unchunked():
    n = 300_007                       # > PARALLEL_MIN, not a multiple of any chunk
    st, grads = random_state("float32", shapes=((n,),), seed=11, iterations=5)
    hyper = Hyper(learning_rate=0.003)
    threaded = NumpyBackend(threads=2).step("keras-legacy", "float32", hyper, st, grads)
    single = NumpyBackend(threads=1).step("keras-legacy", "float32", hyper, st, grads)
    p, m, v = naive_kernel_float32(st.params[0], st.m[0], st.v[0], grads[0], hyper, st.iterations)
    for got in (threaded, single):
        np.testing.assert_array_equal(got.params[0], p)
        np.testing.assert_array_equal(got.m[0], m)
        np.testing.assert_array_equal(got.v[0], v)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_dense_update_chunk_and_thread_invariance(dtype, monkeypatch):
    T = np_dtype(dtype)
    rng = np.random.default_rng(5)
    n = 70_001
    g, p, m = (rng.standard_normal(n).astype(T) for _ in range(3))
    v, vh = rng.random(n).astype(T), rng.random(n).astype(T)
    c = nb._Coef(*(np.asarray(x, dtype=T) for x in (0.1, 0.001, 0.01, 1e-7)),
                 wd=np.asarray(0.01, dtype=T), lr=np.asarray(0.001, dtype=T))
    results = []
    for threads, chunk in ((1, n), (2, 1000), (3, 4097)):
        outs = [np.empty(n, T) for _ in range(4)]
        monkeypatch.setattr(nb, "PARALLEL_MIN", 0)          # use the pool even for small n
        nb.dense_update(c, g, p, m, v, vh, *outs, threads=threads, chunk=chunk)
        results.append(outs)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_step_inplace_equals_step():
    st, grads = random_state("float32", amsgrad=True, seed=2)
    hyper = Hyper(amsgrad=True, learning_rate=0.01)
    want = backend.step("keras-legacy", "float32", hyper, st, grads)
    st2 = st.copy()
    ids = [id(a) for a in st2.params]
    got = backend.step_inplace("keras-legacy", "float32", hyper, st2, grads)
    assert got is st2 and [id(a) for a in got.params] == ids
    for name in ("params", "m", "v", "vhat"):
        for a, b in zip(getattr(want, name), getattr(got, name)):
            np.testing.assert_array_equal(a, b)
    assert got.iterations == st.iterations + 1

    p, m, v = (x.copy() for x in (st.params[0], st.m[0], st.v[0]))
    r = backend.apply_dense_inplace("keras-legacy", "float32", Hyper(learning_rate=0.01), p, m, v,
                                    grads[0], iterations=st.iterations)
    plain = backend.step("keras-legacy", "float32", Hyper(learning_rate=0.01),
                         AdamState([st.params[0]], [st.m[0]], [st.v[0]], st.iterations), [grads[0]])
    np.testing.assert_array_equal(p, plain.params[0])
    assert r.params[0] is p


# -- sparse ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "keras3"])
def test_sparse_with_duplicates_equals_dense_with_summed_rows(variant):
    T = np.float32
    st, _ = random_state("float32", shapes=((6, 2),), seed=4)
    vals = np.array([[0.5, -1.0], [0.25, 2.0], [1.5, 0.5]], T)
    sparse = SparseGrad(np.array([1, 1, 4]), vals, (6, 2))
    dense = np.zeros((6, 2), T)
    dense[1] = vals[0] + vals[1]
    dense[4] = vals[2]
    hyper = Hyper(learning_rate=0.01)
    a = backend.step(variant, "float32", hyper, st, [sparse])
    b = backend.step(variant, "float32", hyper, st, [dense])
    s = scalars(variant, "float32", hyper, st.iterations)
    _, _, _, _, upd = formula(st.params[0], st.m[0], st.v[0], dense, s)
    for name, scale in (("m", np.abs(st.m[0]) + np.abs(dense)), ("v", st.v[0] + dense * dense),
                        ("params", np.abs(st.params[0]) + np.abs(upd))):
        assert_close(getattr(a, name)[0], getattr(b, name)[0].astype(float), "float32", scale, name)
    # summing duplicates before the update: same bits as giving the sum as one slice
    c = backend.step(variant, "float32", hyper, st,
                     [SparseGrad(np.array([1, 4]), np.stack([vals[0] + vals[1], vals[2]]), (6, 2))])
    np.testing.assert_array_equal(a.params[0], c.params[0])
    np.testing.assert_array_equal(a.m[0], c.m[0])


def test_keras3_sparse_squares_slices_before_summing():
    """Keras 3 on TF (ran 3.15.1): m sees the summed duplicates, v the sum of their
    squares; rows without duplicates are exactly the dense step."""
    st, _ = random_state("float32", shapes=((6, 2),), seed=4)
    vals = np.array([[0.5, -1.0], [0.25, 2.0], [1.5, 0.5]], np.float32)
    a = backend.step("keras3", "float32", Hyper(), st, [SparseGrad(np.array([1, 1, 4]), vals, (6, 2))])
    dense = np.zeros((6, 2), np.float32)
    dense[1], dense[4] = vals[0] + vals[1], vals[2]
    b = backend.step("keras3", "float32", Hyper(), st, [dense])
    np.testing.assert_array_equal(a.m[0], b.m[0])
    rows = [0, 2, 3, 4, 5]
    np.testing.assert_array_equal(a.v[0][rows], b.v[0][rows])
    np.testing.assert_array_equal(a.params[0][rows], b.params[0][rows])
    omb2 = np.float32(1.0 - 0.999)
    sq = vals[0] * vals[0] + vals[1] * vals[1]
    np.testing.assert_array_equal(a.v[0][1], st.v[0][1] + (sq - st.v[0][1]) * omb2)


def test_brief_semantics_switch(monkeypatch):
    """RULES can select the dense-equivalent rules instead of Keras 3's: densify (summing
    duplicates) before clipping and before squaring, i.e. exactly the dense step."""
    import dataclasses
    monkeypatch.setitem(nb.RULES, "keras3", dataclasses.replace(nb.RULES["keras3"], sparse="densify",
                                                                 clip_sparse="densify"))
    st, _ = random_state("float32", shapes=((6, 2),), seed=4)
    vals = np.array([[0.5, -1.0], [0.25, 2.0], [1.5, 0.5]], np.float32)
    dense = np.zeros((6, 2), np.float32)
    dense[1], dense[4] = vals[0] + vals[1], vals[2]
    for hyper in (Hyper(), Hyper(clipvalue=0.6)):
        a = backend.step("keras3", "float32", hyper, st, [SparseGrad(np.array([1, 1, 4]), vals, (6, 2))])
        b = backend.step("keras3", "float32", hyper, st, [dense])
        for name in ("params", "m", "v"):
            np.testing.assert_array_equal(getattr(a, name)[0], getattr(b, name)[0])


def test_sparse_clipping_sees_raw_slices():
    """TF clips IndexedSlices before summing duplicates (ran on TF 2.21)."""
    st = AdamState.zeros_like([np.zeros((3,), np.float32)])
    g = SparseGrad(np.array([0, 0]), np.array([0.5, 0.25], np.float32), (3,))
    out = backend.step("keras-legacy", "float32", Hyper(clipvalue=0.3), st, [g])
    omb1 = np.float32(1) - np.float32(0.9)
    assert out.m[0][0] == (np.float32(0.3) + np.float32(0.25)) * omb1     # not min(0.75, 0.3)
    out = backend.step("tf-keras", "float32", Hyper(clipnorm=0.5), st, [g])
    n = np.sqrt(np.float32(0.5) ** 2 + np.float32(0.25) ** 2)             # norm of the raw slices
    want = (np.float32(0.5) * np.float32(0.5) / n + np.float32(0.25) * np.float32(0.5) / n)
    assert float(out.m[0][0]) == pytest.approx(float(want) * 0.1, rel=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sparse_untouched_rows_still_move(variant):
    st, _ = random_state("float32", shapes=((5, 3),), seed=8)
    g = SparseGrad(np.array([0]), np.ones((1, 3), np.float32), (5, 3))
    out = backend.step(variant, "float32", Hyper(learning_rate=0.01), st, [g])
    assert not np.array_equal(out.params[0][1:], st.params[0][1:])   # rows 1..4 had no gradient
    assert not np.array_equal(out.m[0][1:], st.m[0][1:])
    assert (np.abs(out.m[0][1:]) < np.abs(st.m[0][1:])).all()        # decayed towards zero


def test_sparse_order_is_the_source_order():
    """TF1 / OptimizerV2: m * b1 then scatter-add of g * (1 - b1) (not the dense kernel)."""
    st, _ = random_state("float32", shapes=((3, 2),), seed=9)
    vals = np.array([[0.3, -0.7]], np.float32)
    out = backend.step("tf1", "float32", Hyper(), st, [SparseGrad(np.array([2]), vals, (3, 2))])
    b1 = np.float32(0.9)
    m = st.m[0] * b1
    m[2] += vals[0] * (np.float32(1) - b1)
    np.testing.assert_array_equal(out.m[0], m)


# -- None gradients, errors, no mutation ---------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_none_gradient_leaves_that_variable_untouched(variant):
    ema = variant in ("keras-dtensor", "tf-keras", "keras3")
    st, grads = random_state("float32", ema=ema, seed=6)
    hyper = Hyper(use_ema=ema)
    out = backend.step(variant, "float32", hyper, st, [None, grads[1]])
    for name in ("params", "m", "v") + (("ema",) if ema else ()):
        np.testing.assert_array_equal(getattr(out, name)[0], getattr(st, name)[0])
        assert getattr(out, name)[0] is not getattr(st, name)[0]       # a copy, not an alias
        assert not np.array_equal(getattr(out, name)[1], getattr(st, name)[1])
    assert out.iterations == st.iterations + 1


def test_all_none_raises():
    st, _ = random_state("float32")
    for variant in VARIANTS:
        with pytest.raises(ValueError, match="No gradients provided for any variable"):
            backend.step(variant, "float32", Hyper(), st, [None, None])


def test_keras3_two_clip_options_raise():
    st, grads = random_state("float32")
    with pytest.raises(ValueError, match="clipnorm"):
        backend.step("keras3", "float32", Hyper(clipnorm=1.0, clipvalue=0.5), st, grads)
    with pytest.raises(ValueError):
        backend.step("keras3", "float32", Hyper(global_clipnorm=1.0, clipvalue=0.5), st, grads)


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_are_not_mutated(variant):
    feats = nb.VARIANT_FEATURES[variant]
    hyper = Hyper(amsgrad="amsgrad" in feats, use_ema="ema" in feats,
                  clipvalue=0.5 if "clipvalue" in feats else None,
                  weight_decay=0.01 if "weight_decay" in feats else None)
    st, grads = random_state("float32", amsgrad=hyper.amsgrad, ema=hyper.use_ema, shapes=((4, 3), (5,), (2,)))
    grads[1] = SparseGrad(np.array([0, 0, 3]), np.ones(3, np.float32), (5,))
    grads[2] = None
    before = snapshot(st, grads)
    out = backend.step(variant, "float32", hyper, st, grads)
    assert snapshot(st, grads) == before
    for name, arrs in out.arrays().items():
        for a, b in zip(arrs, st.arrays()[name]):
            assert not np.shares_memory(a, b), name


# -- beta powers ------------------------------------------------------------------------

def test_tf1_beta_power_accumulators_advance_by_multiplication():
    st, grads = random_state("float32", iterations=0)
    one = backend.step("tf1", "float32", Hyper(), st, grads)
    b1, b2 = np.float32(0.9), np.float32(0.999)
    assert one.beta1_power == float(b1 * b1) and one.beta2_power == float(b2 * b2)
    two = backend.step("tf1", "float32", Hyper(), one, grads)
    assert two.beta1_power == float(np.float32(b1 * b1) * b1)
    assert abs(two.beta1_power - 0.7289999127) < 1e-9          # ADAM-FACTS, ran on TF1
    assert two.beta1_power != float(np.float32(0.9 ** 3))     # repeated product, not pow
    # the accumulator given in the state is the one used, not b**t
    st.beta1_power, st.beta2_power = 0.5, 0.5
    odd = backend.step("tf1", "float32", Hyper(), st, grads)
    assert odd.beta1_power == float(np.float32(0.5) * b1)
    assert not np.array_equal(odd.params[0], one.params[0])


def test_keras_variants_return_no_beta_powers():
    st, grads = random_state("float32")
    for variant in VARIANTS[2:]:
        out = backend.step(variant, "float32", Hyper(), st, grads)
        assert out.beta1_power is None and out.beta2_power is None


def test_hyperparameter_rounding_differs_between_families():
    """ADAM-FACTS: 1 - b2 in float32 (TF1/legacy) vs double-then-cast (Keras 3) moves the
    float32 update by ~7e-6 relative."""
    st = AdamState.zeros_like([np.array([1.0], np.float32)])
    g = [np.array([1.0], np.float32)]                 # v = 0 + (1 - 0) * (1 - b2), exactly
    f32 = np.float32
    for variant in VARIANTS:
        out = backend.step(variant, "float32", Hyper(), st, g)
        if variant in GROUP_A:
            assert out.v[0][0] == f32(1) - f32(0.999)      # 1 - b2 in float32: 0.00099998713
            assert out.m[0][0] == f32(1) - f32(0.9)
        else:
            assert out.v[0][0] == f32(1.0 - 0.999)         # double, then cast: 0.0010000000
            assert out.m[0][0] == f32(1.0 - 0.9)
    # the float64 cells keep the distinction: float32-held betas vs the doubles
    st64 = AdamState.zeros_like([np.array([1.0])])
    a = backend.step("keras-legacy", "float64", Hyper(), st64, [np.array([1.0])])
    b = backend.step("keras3", "float64", Hyper(), st64, [np.array([1.0])])
    assert a.v[0][0] == 1.0 - float(f32(0.999)) and b.v[0][0] == 1.0 - 0.999


# -- clipping, decay, schedules, weight decay, EMA ------------------------------------------

def test_clipping_policies():
    st, _ = random_state("float32", shapes=((4,),), iterations=0)
    g = [np.array([3.0, -4.0, 0.0, 0.0], np.float32)]                 # norm 5
    hyper = Hyper(learning_rate=0.1, clipnorm=1.0, clipvalue=1.0)
    # sequential (legacy): value first -> [1, -1, 0, 0], then norm sqrt(2) > 1 -> scaled
    legacy = backend.step("keras-legacy", "float32", hyper, st, g)
    want = np.array([1, -1, 0, 0]) / np.sqrt(2)
    ref = backend.step("keras-legacy", "float32", Hyper(learning_rate=0.1), st, [want.astype(np.float32)])
    np.testing.assert_allclose(legacy.m[0], ref.m[0], rtol=1e-6)
    # first-of (tf_keras): only clipnorm -> [0.6, -0.8, 0, 0]
    tfk = backend.step("tf-keras", "float32", hyper, st, g)
    ref = backend.step("tf-keras", "float32", Hyper(learning_rate=0.1), st, [np.array([0.6, -0.8, 0, 0], np.float32)])
    np.testing.assert_allclose(tfk.m[0], ref.m[0], rtol=1e-6)
    # global clipnorm over all gradients
    two = [np.array([3.0, 0, 0, 0], np.float32), np.array([4.0], np.float32)]
    st2 = AdamState.zeros_like([np.zeros(4, np.float32), np.zeros(1, np.float32)])
    out = backend.step("keras3", "float32", Hyper(global_clipnorm=1.0), st2, two)
    np.testing.assert_allclose([out.m[0][0], out.m[1][0]], np.array([0.6, 0.8]) * 0.1, rtol=1e-6)
    with pytest.raises(ValueError):                                     # tf_keras constructor rule
        backend.step("tf-keras", "float32", Hyper(clipnorm=1.0, global_clipnorm=1.0), st, g)


def test_decay_and_schedule_use_the_count_before_the_increment():
    st, grads = random_state("float64", iterations=4)
    sched = Schedule("inverse_time", initial=0.01, steps=1.0, rate=0.5)
    out = backend.step("keras-legacy", "float64", Hyper(learning_rate=sched), st, grads)
    want = backend.step("keras-legacy", "float64", Hyper(learning_rate=0.01 / (1 + 0.5 * 4)), st, grads)
    np.testing.assert_array_equal(out.params[0], want.params[0])
    dec = backend.step("keras-legacy", "float64", Hyper(learning_rate=0.01, decay=0.01), st, grads)
    s = scalars("keras-legacy", "float64", Hyper(), 4)
    # _decayed_lr: tf.cast(decay, float64) goes through float32 (ran on TF 2.21)
    s["lr"] = float(np.float32(0.01)) / (1 + float(np.float32(0.01)) * 4)
    p2, *_ , upd = formula(st.params[0], st.m[0], st.v[0], grads[0], s)
    assert_close(dec.params[0], p2, "float64", np.abs(st.params[0]) + np.abs(upd), "decay")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["tf-keras", "keras3"])
def test_weight_decay_is_decoupled(variant, dtype):
    st, grads = random_state(dtype, seed=12)
    hyper = Hyper(learning_rate=0.01, weight_decay=0.1)
    out = backend.step(variant, dtype, hyper, st, grads)
    s = scalars(variant, dtype, hyper, st.iterations)
    wd = float(np.float32(0.1))        # tf.cast(weight_decay, dtype): through float32
    p2, *_, upd = formula(st.params[0], st.m[0], st.v[0], grads[0], s, wd=wd)
    assert_close(out.params[0], p2, dtype, np.abs(st.params[0]) + np.abs(upd), "wd")


def test_adaptive_epsilon():
    st = AdamState.zeros_like([np.array([1.0], np.float32)])
    g = [np.array([0.0], np.float32)]
    st.m = [np.array([1e-3], np.float32)]
    a = backend.step("tf-keras", "float32", Hyper(epsilon=1e-2, adaptive_epsilon=True), st, g)
    b = backend.step("tf-keras", "float32", Hyper(epsilon=1e-2 * np.sqrt(1 - 0.999)), st, g)
    assert float(a.params[0][0]) == pytest.approx(float(b.params[0][0]), rel=1e-6)


def test_ema_update_and_overwrite():
    st, grads = random_state("float32", ema=True, iterations=2, seed=13)
    st.ema = [e + np.float32(0.5) for e in st.ema]
    hyper = Hyper(use_ema=True, ema_momentum=0.9)
    out = backend.step("tf-keras", "float32", hyper, st, grads)
    want = 0.9 * st.ema[0].astype(float) + 0.1 * out.params[0].astype(float)
    assert_close(out.ema[0], want, "float32", np.abs(want) + 1, "ema")
    # overwrite when (iterations + 1) % freq == 0
    ow = backend.step("keras3", "float32", hyper.replace(ema_overwrite_frequency=3), st, grads)
    np.testing.assert_array_equal(ow.params[0], ow.ema[0])
    # Keras 3 starts the average at the variable: momentum 0 on the first step
    st.iterations = 0
    first = backend.step("keras3", "float32", hyper, st, grads)
    np.testing.assert_array_equal(first.ema[0], first.params[0])


# -- every dtype -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_dtype_runs_and_keeps_its_dtype(variant, dtype):
    T = np_dtype(dtype)
    feats = nb.VARIANT_FEATURES[variant]
    hyper = Hyper(amsgrad="amsgrad" in feats, use_ema="ema" in feats)
    st, grads = random_state(dtype, amsgrad=hyper.amsgrad, ema=hyper.use_ema, shapes=((3, 2), (4,), ()))
    grads[1] = SparseGrad(np.array([3, 0, 3]), np.ones(3, T), (4,))
    out = backend.step(variant, dtype, hyper, st, grads)
    for name, arrs in out.arrays().items():
        for a, b in zip(arrs, st.arrays()[name]):
            assert a.dtype == T, (name, a.dtype)
            assert a.shape == b.shape
    assert np.isfinite(np.asarray(out.params[0], dtype=np.float64)).all()


def test_bfloat16_default_beta2_never_moves():
    """ADAM-FACTS [ran]: b2 = 0.999 is 1.0 in bfloat16, so alpha = 0 and Keras 3 params stay."""
    T = np_dtype("bfloat16")
    st = AdamState.zeros_like([np.array([1.0, 2.0], T)])
    for _ in range(3):
        st = backend.step("keras3", "bfloat16", Hyper(), st, [np.array([0.5, -0.5], T)])
    np.testing.assert_array_equal(st.params[0].astype(float), [1.0, 2.0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_epsilon_holder_when_it_dominates(variant):
    """With v = 0 the update is alpha * m / eps, so the epsilon's rounding shows in float64:
    float32-held for TF1, the double itself for OptimizerV2 and the new optimizers."""
    st = AdamState([np.array([0.0])], [np.array([1.0])], [np.array([0.0])], 0)
    hyper = Hyper(epsilon=1e-7)
    out = backend.step(variant, "float64", hyper, st, [np.array([0.0])])
    s = scalars(variant, "float64", hyper, 0)
    p2, *_, upd = formula(st.params[0], st.m[0], st.v[0], np.array([0.0]), s)
    assert_close(out.params[0], p2, "float64", np.abs(p2), variant)
    assert (s["eps"] == 1e-7) != variant.startswith("tf1")


# -- against TensorFlow itself, when it is installed ----------------------------------------

def _tf_steps(variant, dtype, hyper, p0, grads):
    """Run the real optimizer for len(grads) steps from a fresh state; (param, m, v) after each."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    kw = dict(learning_rate=hyper.learning_rate, beta_1=hyper.beta_1, beta_2=hyper.beta_2,
              epsilon=hyper.epsilon)
    for k in ("clipvalue", "weight_decay", "decay"):
        if getattr(hyper, k):
            kw[k] = getattr(hyper, k)
    if variant == "tf1":
        opt = tf.compat.v1.train.AdamOptimizer(hyper.learning_rate, hyper.beta_1, hyper.beta_2, hyper.epsilon)
        var = tf.Variable(p0)
        slots = lambda: (opt.get_slot(var, "m"), opt.get_slot(var, "v"))  # noqa: E731
    elif variant == "keras-legacy":
        tf_keras = pytest.importorskip("tf_keras")
        opt = tf_keras.optimizers.legacy.Adam(**kw)
        var = tf.Variable(p0)
        slots = lambda: (opt.get_slot(var, "m"), opt.get_slot(var, "v"))  # noqa: E731
    elif variant == "tf-keras":
        tf_keras = pytest.importorskip("tf_keras")
        opt = tf_keras.optimizers.Adam(**kw)
        var = tf.Variable(p0)
        slots = lambda: (opt._momentums[0], opt._velocities[0])  # noqa: E731
    else:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        keras = pytest.importorskip("keras")
        if keras.backend.backend() != "tensorflow":
            pytest.skip("Keras 3 is not on its TensorFlow backend")
        opt = keras.optimizers.Adam(**kw)
        var = keras.Variable(p0, dtype=dtype)
        slots = lambda: (opt._momentums[0], opt._velocities[0])  # noqa: E731
    out = []
    for g in grads:
        if isinstance(g, SparseGrad):
            g = tf.IndexedSlices(tf.constant(g.values), tf.constant(g.indices), tf.constant(g.dense_shape))
        else:
            g = tf.constant(g)
        opt.apply_gradients([(g, var)])
        m, v = slots()
        out.append(tuple(np.asarray(x) for x in (var, m, v)))
    return out


TF_CASES = [
    (variant, dtype, label, hyper, sparse)
    for dtype in ("float32", "float64")
    for variant, label, hyper, sparse in [
        ("tf1", "dense", Hyper(epsilon=1e-8), False),
        ("tf1", "sparse", Hyper(epsilon=1e-8), True),
        ("keras-legacy", "dense", Hyper(), False),
        ("keras-legacy", "sparse", Hyper(), True),
        ("keras-legacy", "decay+clipvalue", Hyper(decay=0.01, clipvalue=0.3), True),
        ("tf-keras", "dense", Hyper(), False),
        ("tf-keras", "sparse+wd", Hyper(weight_decay=0.01), True),
        ("keras3", "dense+wd", Hyper(weight_decay=0.01), False),
        ("keras3", "sparse", Hyper(), True),
    ]
]


@pytest.mark.parametrize("variant,dtype,label,hyper,sparse", TF_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in TF_CASES])
def test_bit_for_bit_with_tensorflow(variant, dtype, label, hyper, sparse):
    T = np.dtype(dtype)
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((6, 3)).astype(T)
    if sparse:
        grads = [SparseGrad(np.array([1, 1, 4]), rng.standard_normal((3, 3)).astype(T), (6, 3)) for _ in range(3)]
    else:
        grads = [rng.standard_normal((6, 3)).astype(T) for _ in range(3)]
    want = _tf_steps(variant, dtype, hyper, p0, grads)
    st = AdamState.zeros_like([p0])
    for k, g in enumerate(grads):
        st = backend.step(variant, dtype, hyper, st, [g])
        for name, got, exp in zip(("params", "m", "v"), (st.params[0], st.m[0], st.v[0]), want[k]):
            np.testing.assert_array_equal(got, exp, err_msg=f"step {k + 1} {name}")


def test_callable_hyperparameters():
    st, grads = random_state("float32")
    a = backend.step("tf1-compat", "float32", Hyper(learning_rate=lambda: 0.01, beta_1=lambda: 0.8), st, grads)
    b = backend.step("tf1-compat", "float32", Hyper(learning_rate=0.01, beta_1=0.8), st, grads)
    np.testing.assert_array_equal(a.params[0], b.params[0])
    with pytest.raises(ValueError, match="callable_hyper"):
        backend.step("tf1", "float32", Hyper(learning_rate=lambda: 0.01), st, grads)
