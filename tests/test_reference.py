"""The oracle is right: rational agreement, precision stability, the worked example."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adamconf.reference import AdamState, Hyper, ReferenceError, SparseGrad, step, trajectory
from adamconf.reference.bound import compare
from adamconf.spec import load_spec

SPEC = load_spec()
dyadic = st.builds(lambda n, e: Fraction(n) * Fraction(2) ** e, st.integers(-2 ** 20, 2 ** 20), st.integers(-30, 10))


def _frac(x) -> Fraction:
    return Fraction(*x.as_integer_ratio())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(params=st.lists(dyadic, min_size=1, max_size=5), data=st.data(),
       lr=st.sampled_from([Fraction(1, 8), Fraction(1, 1024), Fraction(3, 2)]),
       eps=st.sampled_from([Fraction(0), Fraction(1, 64), Fraction(1, 2 ** 20)]))
def test_agrees_with_exact_rationals(params, data, lr, eps):
    """TF1 with beta_1 = 1/2, beta_2 = 15/16 and v = 0: every quantity is rational
    (sqrt(1 - 15/16) = 1/4, sqrt(v') = |g|/4), so Fraction arithmetic is the truth."""
    n = len(params)
    m0 = data.draw(st.lists(dyadic, min_size=n, max_size=n))
    g = data.draw(st.lists(dyadic.filter(lambda x: x != 0) if eps == 0 else dyadic, min_size=n, max_size=n))
    f64 = lambda xs: np.array([float(x) for x in xs])  # noqa: E731 - dyadics with <= 21 bits are exact
    state = AdamState([f64(params)], [f64(m0)], [np.zeros(n)], iterations=0, beta1_power=0.5, beta2_power=0.9375)
    hyper = Hyper(learning_rate=float(lr), beta_1=0.5, beta_2=0.9375, epsilon=float(eps))
    res = step(SPEC.variant("tf1"), "float64", hyper, state, [f64(g)])
    b1, b2 = Fraction(1, 2), Fraction(15, 16)
    alpha = lr * Fraction(1, 4) / (1 - b1)
    for i in range(n):
        m = b1 * m0[i] + (1 - b1) * g[i]
        v = (1 - b2) * g[i] ** 2
        assert _frac(res.state.v[0].x[i]) == v and _frac(res.state.m[0].x[i]) == m
        want = params[i] - alpha * m / (abs(g[i]) / 4 + eps)
        got = _frac(res.state.params[0].x[i])
        assert abs(got - want) <= Fraction(2) ** -105 * (abs(params[i]) + abs(want - params[i])), (got, want)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(vid=st.sampled_from(["tf1", "keras-legacy", "keras3", "tf-keras", "torch", "optax"]),
       xs=st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3),
       t=st.integers(0, 10 ** 6), b2=st.sampled_from([0.999, 0.9, 0.99999]), amsgrad=st.booleans())
def test_digits_stable_when_precision_doubles(vid, xs, t, b2, amsgrad):
    """Doubling 113 bits to 226 moves no result by more than 2^-80 of its size: the
    cancellation in 1 - beta_2 (condition up to 2^26 here) costs at most 26 of the 113
    bits, and 80 bits still settle any float64 comparison (53 bits) many times over."""
    v = SPEC.variant(vid)
    amsgrad = amsgrad and v.has("amsgrad")
    p = np.array(xs, dtype=np.float32)
    st_ = AdamState([p], [p * np.float32(0.01)], [np.abs(p) * np.float32(3)], t,
                    [np.abs(p) * np.float32(4)] if amsgrad else None)
    if v.beta_powers == "accumulated":
        st_.beta1_power, st_.beta2_power = float(np.float32(0.9) ** (t + 1)), float(np.float32(b2) ** (t + 1))
    h = Hyper(beta_2=b2, amsgrad=amsgrad)
    grads = [p[::-1].copy()]
    for mode in ("rounded", "decimal"):
        a = step(v, "float32", h, st_, grads, mode=mode, precision=113)
        b = step(v, "float32", h, st_, grads, mode=mode, precision=226)
        for name in a.state.fields():
            for xa, xb in zip(a.exact(name), b.exact(name)):
                for ea, eb in zip(np.ravel(xa), np.ravel(xb)):
                    assert abs(ea - eb) <= 2.0 ** -80 * max(abs(eb), 1e-300), (name, ea, eb)


def test_worked_example_gives_9_9_to_the_eps_effect():
    """keras-legacy page: lr 0.1, var 10.0, loss var^2/2 -> one step gives 9.9."""
    v = SPEC.variant("keras-legacy")
    p = np.array(10.0, dtype=np.float32)
    eps = v.default("epsilon")
    for mode in ("rounded", "decimal"):
        res = step(v, "float32", Hyper(learning_rate=0.1, epsilon=eps), AdamState.zeros_like([p]), [p.copy()], mode=mode)
        got = float(res.state.params[0].x)
        # the step is lr * g / (|g| + eps / sqrt(1 - b2)): short of 0.1 by this much
        effect = 0.1 * eps / (math.sqrt(1 - 0.999) * 10.0)
        assert 0 < got - 9.9 <= effect * 1.01 + 1e-6, got
        assert round(got, 6) == 9.9


@settings(max_examples=80, deadline=None, derandomize=True)
@given(g=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3), lr=st.floats(1e-4, 1.0),
       vid=st.sampled_from(["tf1", "keras-legacy", "keras3", "tf-keras"]))
def test_first_step_is_minus_lr_sign_g(g, lr, vid):
    v = SPEC.variant(vid)
    eps = v.default("epsilon")
    p = np.array(1.0)
    res = step(v, "float64", Hyper(learning_rate=lr, epsilon=eps), AdamState.zeros_like([p]), [np.array(g)], mode="decimal")
    upd = 1.0 - float(res.state.params[0].x)
    effect = lr * eps / (math.sqrt(1 - 0.999) * abs(g))
    assert abs(upd - lr * math.copysign(1, g)) <= effect * 1.01 + 1e-15 * lr


def test_sparse_duplicates_sum_and_every_row_moves():
    v = SPEC.variant("keras-legacy")
    p = np.ones((3, 2))
    st_ = AdamState([p], [np.full((3, 2), 0.5)], [np.full((3, 2), 0.25)], iterations=4)
    sparse = SparseGrad(np.array([0, 0]), np.array([[0.5, 1.0], [0.25, -1.0]]), (3, 2))
    dense = np.zeros((3, 2))
    dense[0] = [0.75, 0.0]
    a = step(v, "float64", Hyper(), st_, [sparse])
    b = step(v, "float64", Hyper(), st_, [dense])
    for name in ("params", "m", "v"):
        assert all(np.ravel(a.exact(name)[0] == b.exact(name)[0]))
    assert all(float(x) != 1.0 for x in a.exact("params")[0][1:].ravel())  # untouched rows move


def test_tf1_accumulators_multiply_in_float32():
    v = SPEC.variant("tf1")
    p = [np.array([1.0], dtype=np.float32)]
    st_ = AdamState.zeros_like(p, beta_powers=(float(np.float32(0.9)), float(np.float32(0.999))))
    res = trajectory(v, "float32", Hyper(epsilon=1e-8), st_, [[np.array([0.1], dtype=np.float32)]] * 2)
    p1 = res[-1].state.beta1_power
    exact = float(np.float32(0.9)) ** 3
    assert float(p1.x) == pytest.approx(exact, rel=1e-12)
    assert float(np.float32(float(p1.x))) == pytest.approx(0.7289999127, rel=1e-9)


def test_bfloat16_default_beta2_freezes_keras3_exactly():
    import ml_dtypes
    v = SPEC.variant("keras3")
    p = np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)
    res = step(v, "bfloat16", Hyper(), AdamState.zeros_like([p]), [p.copy()])
    assert [float(x) for x in res.exact("params")[0]] == [1.0, 2.0]
    assert float(np.max(res.scale("params")[0])) < 10


def test_rejects_what_the_api_rejects():
    k3 = SPEC.variant("keras3")
    p = [np.zeros(2)]
    with pytest.raises(ReferenceError, match="at most one"):
        step(k3, "float64", Hyper(clipnorm=1.0, clipvalue=1.0), AdamState.zeros_like(p), [np.ones(2)])
    with pytest.raises(ReferenceError, match="no gradient"):
        step(k3, "float64", Hyper(), AdamState.zeros_like(p), [None])
    with pytest.raises(ReferenceError, match="shape"):
        step(k3, "float64", Hyper(), AdamState.zeros_like(p), [np.ones(3)])
    with pytest.raises(ReferenceError, match="sparse"):
        step(SPEC.variant("torch"), "float64", Hyper(), AdamState.zeros_like(p), [SparseGrad(np.array([0]), np.ones(1), (2,))])


def test_bound_judges_a_known_error():
    """A result off by exactly 1 ulp of |param| passes; off by 1000 ulps fails."""
    v = SPEC.variant("keras3")
    p = np.array([1.0], dtype=np.float32)
    st_ = AdamState([p], [np.array([0.1], np.float32)], [np.array([0.01], np.float32)], iterations=3)
    res = step(v, "float32", Hyper(), st_, [np.array([0.2], np.float32)])
    obs = res.state.rounded("float32")
    assert compare(res, obs, 8).ok
    bad = obs.copy()
    bad.params[0] = bad.params[0] + np.float32(1000 * 2.0 ** -23)
    verdict = compare(res, bad, 8)
    assert not verdict.ok and verdict.worst_field == "params" and verdict.worst_ratio > 100
