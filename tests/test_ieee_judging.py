"""Elements an overflow or an exact zero used to leave unjudged are judged: by the IEEE
outcome the exact values decide, or by the plain order's overflow as an alternative."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adamconf.evaluate import judge
from adamconf.reference import AdamState, Hyper, step
from adamconf.reference.bound import compare, element_ratios
from adamconf.reference.state import StepInput
from adamconf.reference.tracked import DECISIVE_K
from adamconf.spec import load_spec

SPEC = load_spec()
F16 = np.float16


def _state(p, m, v, iterations=3):
    return AdamState([np.array(p, F16)], [np.array(m, F16)], [np.array(v, F16)], iterations=iterations)


def test_decisive_margin_is_above_every_tolerance():
    """Saturation and decided picks must not excuse what a K would still judge."""
    assert 4 * max(t.k for t in SPEC.tolerances.values()) <= DECISIVE_K


def test_a_moment_past_the_range_is_inf_and_what_follows_is_judged():
    """float16, beta_2 = 0.75: 0.25 * 60000**2 is far past 65504, so every correct order
    stores v = inf; the variable then moves by m / inf = 0, exactly."""
    v = SPEC.variant("keras3")
    st = _state([1.5], [0.25], [1.0])
    h = Hyper(learning_rate=0.01, beta_1=0.9, beta_2=0.75, epsilon=1e-3)
    res = step(v, "float16", h, st, [np.array([60000.0], F16)])
    assert math.isinf(float(res.state.v[0].x.ravel()[0]))
    obs = res.state.rounded("float16")
    verdict = compare(res, obs, 8)
    assert verdict.ok and verdict.ill == 0 and verdict.ieee >= 1
    assert float(obs.params[0][0]) == 1.5
    bad = obs.copy()
    bad.v[0] = np.array([65504.0], F16)     # a finite v where the exact one overflows
    assert not compare(res, bad, 8).ok


def test_an_order_dependent_overflow_accepts_either_outcome():
    """g*g overflows float16 (300**2 > 65504) but (1 - beta_2) * g * g does not: v is inf
    in the kernel order and finite in the other; both are judged and both pass, a third
    value fails."""
    variant = SPEC.variant("keras-legacy")
    st = _state([2.0], [0.0], [4.0])
    h = Hyper(learning_rate=0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-3)
    g = [np.array([300.0], F16)]
    inp = StepInput("keras-legacy", "float16", h, st, tuple(g))
    exact = step(variant, "float16", h, st, g)
    assert compare(exact, exact.state.rounded("float16"), 8).ill > 0   # the first-order model alone gives up
    inf_order = step(variant, "float16", h, st, g, ieee=True)
    assert math.isinf(float(inf_order.state.v[0].x.ravel()[0]))
    for obs in (exact.state.rounded("float16"), inf_order.state.rounded("float16")):
        verdict = judge(variant, inp, exact, obs, 8, ())
        assert verdict.ok and verdict.ill == 0, verdict
    bad = exact.state.rounded("float16")
    bad.v[0] = np.array([60000.0], F16)
    assert not judge(variant, inp, exact, bad, 8, ()).ok


def test_zero_gradients_under_clipnorm_are_judged():
    """sqrt of an exact zero norm is exact; the clip then picks c, decided."""
    variant = SPEC.variant("keras3")
    st = AdamState([np.array([1.0, -2.0], np.float32)], [np.zeros(2, np.float32)], [np.zeros(2, np.float32)], iterations=5)
    h = Hyper(learning_rate=0.1, epsilon=1e-30, clipnorm=1.0)
    res = step(variant, "float32", h, st, [np.zeros(2, np.float32)])
    verdict = compare(res, res.state.rounded("float32"), 8)
    assert verdict.ok and verdict.ill == 0


@pytest.mark.parametrize("scale", [2.0 ** -1022, 2.0 ** -1000])
def test_ratio_does_not_underflow(scale):
    """float64 elements whose S is only the underflow allowance: u*S is below the
    smallest double, yet a one-subnormal difference has a finite ratio."""
    exact = np.array([0.0], dtype=object)
    obs = np.array([5e-324])
    r, ill, _ = element_ratios(exact, np.array([scale]), np.array([math.inf]), obs, "float64", 8)
    assert not ill[0] and math.isfinite(r[0]) and r[0] == pytest.approx(5e-324 / scale / 2.0 ** -53)


def test_global_norm_overflow_follows_the_row():
    """float32: 2.8e19**2 overflows the sum of squares while the norm is finite. The TF
    rows say tf.clip_by_global_norm then marks every gradient NaN; a backend that divides
    by the infinite norm (zero gradients) fails there."""
    variant = SPEC.variant("keras3")
    assert variant.global_norm_overflow == "nan"
    st = AdamState([np.array([1.0, 2.0], np.float32)], [np.zeros(2, np.float32)], [np.zeros(2, np.float32)], iterations=0)
    h = Hyper(learning_rate=0.001, global_clipnorm=1.0)
    g = [np.array([2.8e19, 0.5], np.float32)]
    inp = StepInput("keras3", "float32", h, st, tuple(g))
    exact = step(variant, "float32", h, st, g)
    nan_marked = step(variant, "float32", h, st, g, ieee=True).state.rounded("float32")
    assert np.isnan(nan_marked.m[0]).all()
    assert judge(variant, inp, exact, nan_marked, 16, ()).ok
    zeroed = nan_marked.copy()
    zeroed.m[0] = np.zeros(2, np.float32)
    zeroed.v[0] = np.zeros(2, np.float32)
    zeroed.params[0] = st.params[0].copy()
    assert not judge(variant, inp, exact, zeroed, 16, ()).ok


def _fresh16(p, g):
    st = AdamState([np.array(p, F16)], [np.zeros(len(p), F16)], [np.zeros(len(p), F16)], iterations=0)
    return st, [np.array(g, F16)]


def test_a_square_below_the_subnormals_rounds_to_zero_in_the_plain_order():
    """float16, g = 2.7e-5: g*g = 7.4e-10 lies far below half the smallest subnormal
    (3e-8), so every order that squares in float16 stores v = 0 and divides by epsilon
    alone, while one that squares in a wider type divides by about |g|. The first-order
    model cannot tell these apart (the divisor's error reaches the divisor); the plain
    order's outcome is now judged beside the exact one, and a value between them,
    outside both bounds, fails."""
    variant = SPEC.variant("keras-v2")
    st, g = _fresh16([-0.103], [2.718e-5])
    h = Hyper(learning_rate=0.05, beta_1=0.0, beta_2=0.625, epsilon=1e-7)
    inp = StepInput("keras-v2", "float16", h, st, tuple(g))
    exact = step(variant, "float16", h, st, g)
    assert compare(exact, exact.state.rounded("float16"), 8).ill > 0
    plain = step(variant, "float16", h, st, g, ieee=True)
    assert float(plain.state.v[0].x[0]) == 0.0 and plain.state.v[0].s[0] == 0.0
    p_plain = float(plain.state.params[0].x[0])
    assert abs(p_plain - float(exact.state.params[0].x[0])) > 0.5   # the two outcomes differ widely
    for res in (exact, plain):
        verdict = judge(variant, inp, exact, res.state.rounded("float16"), 8, ())
        assert verdict.ok and verdict.ill == 0, verdict
    bad = plain.state.rounded("float16")
    bad.params[0] = np.array([(p_plain + float(exact.state.params[0].x[0])) / 2], F16)
    assert not judge(variant, inp, exact, bad, 8, ()).ok


def test_a_subnormal_product_of_exact_operands_is_its_rounded_value():
    """In the plain order an operation on exact operands whose result lies on the
    subnormal grid is one IEEE rounding: the ieee step holds that value exactly."""
    variant = SPEC.variant("keras3")
    st, g = _fresh16([0.5], [3.0e-4])             # g*g = 9e-8: about 1.5 subnormal spacings
    h = Hyper(learning_rate=0.01, beta_1=0.5, beta_2=0.75, epsilon=1e-3)
    plain = step(variant, "float16", h, st, g, ieee=True)
    g16 = float(F16(3.0e-4))
    sq = float(F16(g16 * g16))                    # numpy rounds the float16 product once
    w = float(F16(1.0) - F16(0.75))
    assert float(plain.state.v[0].x[0]) == float(F16(sq * w)) and plain.state.v[0].s[0] == 0.0


def test_a_weight_that_rounds_to_zero_keeps_v_an_exact_zero():
    """float16 rounds beta_2 = 0.9999995 to 1, so 1 - beta_2 is exactly 0 and v stays an
    exact 0 in every order: no underflow allowance makes the divisor ill-conditioned."""
    variant = SPEC.variant("keras-v2")
    st, g = _fresh16([0.125, -1.0], [0.0019, -1.01])
    h = Hyper(learning_rate=8.5, beta_1=0.5, beta_2=0.9999995, epsilon=0.0037)
    res = step(variant, "float16", h, st, g)
    assert float(res.state.v[0].x[0]) == 0.0 and float(np.max(res.state.v[0].s)) == 0.0
    verdict = compare(res, res.state.rounded("float16"), 8)
    assert verdict.ok and verdict.ill == 0


def test_the_plain_order_scales_before_dividing():
    """m / epsilon alone would overflow float16 (0.9 / 1.2e-7), alpha * m / epsilon does
    not: the kernel's order (the product first) gives a finite variable in ieee mode."""
    variant = SPEC.variant("keras-v2")
    st = AdamState([np.array([-1.0], F16)], [np.array([-1.0], F16)], [np.array([0.0], F16)], iterations=1)
    h = Hyper(learning_rate=0.002, beta_1=0.8, beta_2=0.9991, epsilon=1e-7)
    g = [np.array([-0.0039], F16)]
    plain = step(variant, "float16", h, st, g, ieee=True)
    assert math.isfinite(float(plain.state.params[0].x[0])) and float(plain.state.v[0].x[0]) == 0.0


def test_between_the_largest_number_and_the_threshold_is_an_ordinary_rounding():
    """float16: g - m = 65504 + 0.0013 lies past the largest finite number but below the
    rounding threshold (65520), so it rounds to 65504 like any value: m is judged."""
    variant = SPEC.variant("tf1")
    st = _state([0.0931], [-0.0013], [0.35], iterations=7)
    h = Hyper(learning_rate=0.002, beta_1=0.5, beta_2=0.875, epsilon=1e-4)
    res = step(variant, "float16", h, st, [np.array([65504.0], F16)])
    assert compare(res, res.state.rounded("float16"), 8).fields["m"].ill == 0


def test_a_float64_scale_past_the_double_range_still_judges():
    """float64 g = the largest double: m's S (a long double) passes 2**1024; the element
    is judged with it, and a halved m fails."""
    variant = SPEC.variant("tf1")
    f64 = np.float64
    st = AdamState([np.array([0.0023], f64)], [np.array([-0.0374], f64)], [np.array([8191.5], f64)], iterations=20)
    h = Hyper(learning_rate=0.5, beta_1=0.625, beta_2=0.75, epsilon=1e-6)
    res = step(variant, "float64", h, st, [np.array([np.finfo(f64).max], f64)])
    assert float(np.max(res.state.m[0].s)) > np.finfo(f64).max
    obs = res.state.rounded("float64")
    verdict = compare(res, obs, 8)
    assert verdict.ok and verdict.fields["m"].ill == 0
    obs.m[0] = obs.m[0] * 0.5
    assert not compare(res, obs, 8).ok


def test_a_zero_divisor_in_the_plain_order_is_judged():
    """float16, epsilon 0, v = 0, g = 1e-4: g*g rounds to 0, so the plain order divides
    m by an exact 0 and the variable becomes inf; a backend that gives a finite value
    there fails, where the element used to be left unjudged."""
    variant = SPEC.variant("tf1")
    p = np.array([1.0, 0.5], F16)
    st = AdamState([p], [np.array([0.0, 0.25], F16)], [np.array([0.0, 1.0], F16)], 0)
    st.beta1_power, st.beta2_power = float(np.float32(0.875)), float(np.float32(0.995))
    h = Hyper(learning_rate=0.002, beta_1=0.875, beta_2=0.995, epsilon=0.0)
    g = [np.array([1e-4, 0.5], F16)]
    inp = StepInput("tf1", "float16", h, st, tuple(g))
    exact = step(variant, "float16", h, st, g)
    plain = step(variant, "float16", h, st, g, ieee=True).state.rounded("float16")
    assert np.isinf(plain.params[0][0].astype(np.float64))
    verdict = judge(variant, inp, exact, plain, 8, ())
    assert verdict.ok and verdict.ill == 0
    finite = plain.copy()
    finite.params[0] = np.array([0.0, plain.params[0][1]], F16)
    assert not judge(variant, inp, exact, finite, 8, ()).ok


def test_either_order_of_the_update_is_accepted_where_one_overflows():
    """float32, v = 0 and g = 0, so the denominator is epsilon alone: m / eps = 3.5e38
    overflows, alpha * m / eps = 3e35 does not. A backend that divides first gives inf,
    one that scales first (the kernels) a finite value: both pass, a third value fails."""
    variant = SPEC.variant("keras-legacy")
    f32 = np.float32
    st = AdamState([np.array([-1.0], f32)], [np.array([-4e31], f32)], [np.array([0.0], f32)], iterations=1)
    h = Hyper(learning_rate=0.002, beta_1=0.875, beta_2=0.995, epsilon=1e-7)
    g = [np.array([0.0], f32)]
    inp = StepInput("keras-legacy", "float32", h, st, tuple(g))
    exact = step(variant, "float32", h, st, g)
    scaled = step(variant, "float32", h, st, g, ieee=True).state.rounded("float32")
    divided = step(variant, "float32", h, st, g, ieee="quotient-first").state.rounded("float32")
    assert np.isfinite(scaled.params[0][0]) and np.isinf(divided.params[0][0])
    for obs in (scaled, divided):
        verdict = judge(variant, inp, exact, obs, 8, ())
        assert verdict.ok and verdict.ill == 0, verdict
    moved_less = scaled.copy()
    moved_less.params[0] = scaled.params[0] * f32(0.5)
    assert not judge(variant, inp, exact, moved_less, 8, ()).ok


def test_a_kernel_in_a_wider_type_does_not_overflow_the_format_inside():
    """torch float16: addcdiv scales m by -lr / (1 - beta_1) in float32 (opmath), so
    2 * 65504 / 0.1 does not overflow there; v is inf, and the variable does not move.
    The plain order's outcome must not be the NaN of inf / inf."""
    variant = SPEC.variant("torch")
    st = AdamState([np.array(-1.0, F16)], [np.array(0.0, F16)], [np.array(0.0, F16)], iterations=0)
    h = Hyper(learning_rate=2.0, beta_1=0.875, beta_2=0.995, epsilon=1e-7)
    plain = step(variant, "float16", h, st, [np.array(65504.0, F16)], ieee=True)
    assert float(plain.state.params[0].x) == -1.0


def test_an_order_whose_outcome_is_undecided_fails_nothing():
    """bfloat16 rounds beta_2 = 0.999 to 1, so alpha is exactly 0, and m / eps (4e8 /
    1e-30) lies near the top of the range. Scaling first gives 0 * m / eps = 0, and the
    variable stays. Dividing first gives 0 * inf = NaN if m / eps overflows, which the
    error bound cannot decide. A NaN is then left unjudged, not failed, and the kernel's
    value still passes."""
    import ml_dtypes

    bf = ml_dtypes.bfloat16
    variant = SPEC.variant("tf1")
    st = AdamState([np.array([-1.0], bf)], [np.array([0.0], bf)], [np.array([0.0], bf)], iterations=0)
    h = Hyper(learning_rate=0.002, beta_1=0.875, beta_2=0.999, epsilon=1e-30)
    g = [np.array([-2.0 ** 32], bf)]
    inp = StepInput("tf1", "bfloat16", h, st, tuple(g))
    exact = step(variant, "bfloat16", h, st, g)
    kernel = step(variant, "bfloat16", h, st, g, ieee=True).state.rounded("bfloat16")
    assert float(kernel.params[0][0]) == -1.0
    assert judge(variant, inp, exact, kernel, 8, ()).ok
    nan = kernel.copy()
    nan.params[0] = np.array([np.nan], bf)
    verdict = judge(variant, inp, exact, nan, 8, ())
    assert verdict.ok and verdict.fields["params"].ill == 1
