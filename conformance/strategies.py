"""Hypothesis strategies for Adam scenarios: hyperparameters, states and gradients.

Values are drawn per dtype across its whole range on purpose: zeros, subnormals,
gradients whose square underflows or overflows, mixed scales inside one tensor,
beta_2 within a few ulps of 1, epsilon zero, tiny and huge, step counts up to 10^7.

Every strategy is built once per argument set (`functools.cache`), not once per draw:
hypothesis validates a strategy object the first time it is drawn from, and strategies
rebuilt inside a composite on every draw were validated thousands of times per check
(a quarter of a ci run). The same structure draws the same examples either way.
"""
from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
from hypothesis import strategies as st

from adamconf.reference.state import AdamState, Hyper, Schedule, SparseGrad, StepInput, np_dtype
from adamconf.reference.tracked import fmt
from adamconf.spec.model import Variant


def _cast(x: float, dtype: str) -> float:
    """x rounded to dtype, kept finite (values past the max are pulled back in)."""
    f = fmt(dtype)
    x = max(-f.max, min(f.max, x))
    return float(np.asarray(x).astype(np_dtype(dtype)).astype(np.float64))


@cache
def magnitudes(dtype: str, lo: int | None = None, hi: int | None = None) -> st.SearchStrategy[float]:
    """Positive values with a log-uniform exponent over [lo, hi] (default: the whole
    normal range and a bit of the subnormal one)."""
    f = fmt(dtype)
    lo = f.emin - f.p + 2 if lo is None else lo
    hi = f.emax if hi is None else hi
    return st.builds(lambda mant, e: _cast(mant * 2.0 ** e, dtype),
                     st.floats(1.0, 2.0, exclude_max=True), st.integers(lo, hi))


@cache
def scalars(dtype: str, *, edge: bool = True) -> st.SearchStrategy[float]:
    """Signed values: mostly moderate, sometimes zero, tiny or huge."""
    f = fmt(dtype)
    moderate = st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), magnitudes(dtype, -12, 6))
    if not edge:
        return moderate
    wide = st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), magnitudes(dtype))
    sq = int(f.emax / 2)
    square_edge = st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]),
                            magnitudes(dtype, sq - 2, sq + 2) | magnitudes(dtype, (f.emin - f.p) // 2 - 2, (f.emin - f.p) // 2 + 2))
    return st.one_of(moderate, moderate, moderate, st.just(0.0), wide, square_edge)


@cache
def shapes() -> st.SearchStrategy[tuple[int, ...]]:
    return st.one_of(st.just(()), st.tuples(st.integers(0, 6)), st.tuples(st.integers(1, 4), st.integers(1, 3)))


@cache
def arrays(dtype: str, shape: tuple[int, ...], elements: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape)) if shape else 1
    return st.lists(elements, min_size=n, max_size=n).map(
        lambda xs: np.asarray(xs, dtype=np.float64).reshape(shape).astype(np_dtype(dtype)))


@cache
def beta_1s() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.9, 0.0, 0.5, 0.99, 0.999]), st.floats(0.0, 0.9999))


@cache
def beta_2s() -> st.SearchStrategy[float]:
    near_one = st.integers(1, 40).map(lambda k: 1.0 - k * 2.0 ** -26)
    return st.one_of(st.sampled_from([0.999, 0.9, 0.99, 0.9999, 0.999999]), st.floats(0.5, 0.99999), near_one)


@cache
def epsilons() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([1e-7, 1e-8, 0.0, 1e-30, 1e-3, 1.0, 1e8]),
                     st.floats(1e-12, 1e-2))


@cache
def learning_rates() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([0.001, 0.1, 1.0, 1e-5]), st.floats(1e-6, 10.0))


@cache
def iterations() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 12), st.integers(0, 10_000), st.integers(0, 10 ** 7))


@cache
def schedules_near(it: int) -> st.SearchStrategy[Schedule]:
    """Schedules whose value at step `it` differs from the value at `it + 1` by a
    visible factor: decay every step or two by 0.3-0.9, inverse-time with a rate near
    1 (early counts), a piecewise boundary at `it` itself."""
    exp = st.builds(lambda lr, steps, rate: Schedule("exponential", initial=lr, steps=steps, rate=rate,
                                                     staircase=steps == 1.0 or it % int(steps) == int(steps) - 1),
                    st.floats(1e-3, 1.0), st.sampled_from([1.0, 2.0]), st.floats(0.2, 0.6))
    pw = st.builds(lambda a, f: Schedule("piecewise", boundaries=(it, it + 5), values=(a, a * f, a * f * f)),
                   st.floats(1e-3, 1.0), st.floats(0.2, 0.5))
    if it > 2:   # inverse-time decay changes little between late counts
        return st.one_of(exp, pw)
    inv = st.builds(lambda lr, rate: Schedule("inverse_time", initial=lr, steps=1.0, rate=rate, staircase=False),
                    st.floats(1e-3, 1.0), st.floats(1.0, 4.0))
    return st.one_of(exp, inv, pw)


@cache
def schedules() -> st.SearchStrategy[Schedule]:
    exp = st.builds(lambda lr, steps, rate, stair: Schedule("exponential", initial=lr, steps=steps, rate=rate, staircase=stair),
                    learning_rates(), st.sampled_from([1.0, 10.0, 1000.0]), st.floats(0.5, 0.99), st.booleans())
    inv = st.builds(lambda lr, steps, rate, stair: Schedule("inverse_time", initial=lr, steps=steps, rate=rate, staircase=stair),
                    learning_rates(), st.sampled_from([1.0, 10.0, 1000.0]), st.floats(0.0, 2.0), st.booleans())
    pw = st.builds(lambda b, vals: Schedule("piecewise", boundaries=(b, b + 5), values=tuple(vals)),
                   st.integers(0, 20), st.lists(learning_rates(), min_size=3, max_size=3))
    return st.one_of(exp, inv, pw)


_DECAYS = st.one_of(st.sampled_from([0.01, 0.5]), st.floats(1e-6, 10.0))
_WEIGHT_DECAYS = st.one_of(st.sampled_from([0.004, 0.1]), st.floats(1e-6, 1.0))
_EMA_MOMENTA = st.one_of(st.just(0.99), st.floats(0.0, 0.999))
_EMA_FREQUENCIES = st.sampled_from([None, 1, 2, 3])
_EPS_ROOTS = st.sampled_from([1e-8, 1e-16, 1.0]) | st.floats(0.0, 1e-3)
_CLIPS = st.one_of(st.sampled_from([1.0, 0.5, 1e-3]), st.floats(1e-4, 100.0))
_SPARSE_SHAPES = st.tuples(st.integers(1, 6)) | st.tuples(st.integers(1, 4), st.integers(1, 3))
_NONEMPTY_SHAPES = st.one_of(st.just(()), st.tuples(st.integers(1, 6)), st.tuples(st.integers(1, 4), st.integers(1, 3)))


@cache
def _second_moments(dtype: str, edge: bool) -> st.SearchStrategy[float]:
    """Values of v (and vhat): zero or positive over the whole range, or moderate."""
    return st.one_of(st.just(0.0), magnitudes(dtype)) if edge else magnitudes(dtype, -24, 12)


@st.composite
def hypers(draw, variant: Variant, features: frozenset[str] = frozenset()) -> Hyper:
    h = Hyper(learning_rate=draw(learning_rates()), beta_1=draw(beta_1s()), beta_2=draw(beta_2s()),
              epsilon=draw(epsilons()), amsgrad="amsgrad" in features)
    kw: dict = {}
    if "schedule" in features:
        kw["learning_rate"] = draw(schedules())
    if "decay" in features:
        kw["decay"] = draw(_DECAYS)
    if "weight_decay" in features:
        kw["weight_decay"] = draw(_WEIGHT_DECAYS)
    if "ema" in features:
        kw.update(use_ema=True, ema_momentum=draw(_EMA_MOMENTA),
                  ema_overwrite_frequency=draw(_EMA_FREQUENCIES))
    if "eps_root" in features:
        kw["eps_root"] = draw(_EPS_ROOTS)
    if "maximize" in features:
        kw["maximize"] = True
    if "adaptive_epsilon" in features:
        kw["adaptive_epsilon"] = True
    clips = [k for k in ("clipvalue", "clipnorm", "global_clipnorm") if k in features]
    if len(clips) == 3:  # a combination: any two or all three (pairs decide precedence)
        clips = sorted(draw(st.sets(st.sampled_from(clips), min_size=2, max_size=3)))
    for k in clips:
        kw[k] = draw(_CLIPS)
    return h.replace(**kw)


def _scale_range(dtype: str) -> tuple[int, int]:
    """Exponents e for a coherent scale 2^e: g*g and v stay normal and finite in dtype."""
    f = fmt(dtype)
    return max(f.emin // 2 + 4, -10), min(f.emax // 2 - 4, 6)


@cache
def _near(dtype: str, spread: int) -> st.SearchStrategy[tuple[float, int]]:
    """(sign * mantissa, offset) pairs: one element of a coherent tensor is
    sign * mantissa * 2^(e + offset), offset within +-spread of the tensor's scale e."""
    return st.tuples(st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), st.floats(1.0, 2.0, exclude_max=True)),
                     st.integers(-spread, spread))


def _coherent_array(draw, dtype: str, shape: tuple[int, ...], e: int, spread: int = 2, power: int = 1) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    xs = draw(st.lists(_near(dtype, spread), min_size=n, max_size=n))
    vals = [(abs(m) ** power if power == 2 else m) * 2.0 ** (power * (e + o)) for m, o in xs]
    return np.asarray([_cast(x, dtype) for x in vals], dtype=np.float64).reshape(shape).astype(np_dtype(dtype))


@cache
def _coherent_betas(early: bool) -> tuple[st.SearchStrategy[float], st.SearchStrategy[float]]:
    """Betas that let one step's gradient show in m (and v) in every dtype. Early in a
    run 1 - beta_2^t cancels (its condition number is about 1/(t(1 - beta_2))), which
    hides the step size inside the bound: there beta_2 stays at most 0.9."""
    if early:   # the bias corrections of the first steps stay well conditioned
        return st.one_of(st.just(0.0), st.floats(0.0, 0.5)), st.floats(0.3, 0.8)
    return (st.one_of(st.sampled_from([0.9, 0.5, 0.0]), st.floats(0.0, 0.95)),
            st.one_of(st.sampled_from([0.999, 0.9, 0.99]), st.floats(0.5, 0.999)))


def _typical_step(variant: Variant, hyper: Hyper, state: AdamState, grads: list) -> list[np.ndarray | None]:
    """A float64 estimate of each element's parameter step (None where it is not finite)."""
    lr = hyper.learning_rate
    lr = float(lr(state.iterations)) if isinstance(lr, Schedule) else float(lr)
    if hyper.decay:
        lr /= 1.0 + hyper.decay * state.iterations
    t = state.iterations + 1
    b1, b2 = hyper.beta_1, hyper.beta_2
    with np.errstate(all="ignore"):
        alpha = lr * math.sqrt(max(1.0 - b2 ** t, 0.0)) / max(1.0 - b1 ** t, 1e-300)
        out = []
        for i, g in enumerate(grads):
            if g is None or isinstance(g, SparseGrad):
                out.append(None)
                continue
            g64 = np.asarray(g, dtype=np.float64)
            m = b1 * np.asarray(state.m[i], dtype=np.float64) + (1 - b1) * g64
            v = b2 * np.asarray(state.v[i], dtype=np.float64) + (1 - b2) * g64 * g64
            step = np.abs(alpha * m / (np.sqrt(v) + hyper.epsilon))
            out.append(np.where(np.isfinite(step) & (step > 0), step, np.nan))
    return out


def _params_near_step(draw, dtype: str, params: list[np.ndarray], steps: list) -> list[np.ndarray]:
    """Parameters within a few binades of their own step, so that the step (and every
    hyperparameter that scales it) shows against K*u*|p| in every dtype."""
    out = []
    for p, stp in zip(params, steps):
        if stp is None:
            out.append(p)
            continue
        n = int(np.size(p))
        js = draw(st.lists(_near(dtype, 2), min_size=n, max_size=n))
        f = np.array([m * 2.0 ** o for m, o in js], dtype=np.float64).reshape(np.shape(p))
        q = np.where(np.isnan(stp), np.asarray(p, dtype=np.float64), stp * f)
        out.append(np.asarray([_cast(x, dtype) for x in q.ravel()], dtype=np.float64).reshape(np.shape(p)).astype(np_dtype(dtype)))
    return out


@st.composite
def scenarios(draw, variant: Variant, dtype: str, features: frozenset[str] = frozenset(),
              n_vars: tuple[int, int] = (1, 3), sparse: bool = False, allow_none: bool = False,
              fresh: bool = False, edge: bool = True, coherent: int = 0, tiny: int = 0) -> StepInput:
    """One step of `variant` in `dtype` from an arbitrary reachable state.

    `coherent` (0 to 4): in that many of every 4 examples the gradients, m and v share
    one scale (comparable norms across tensors, moderate betas and iteration counts) and
    each parameter lies within a few binades of its own step, so that the feature under
    test changes the result by more than the bound; the other examples roam the whole
    range as before. `tiny` of every 4 examples are coherent at subnormal magnitudes
    (v underflows to 0, m is 0 or subnormal), where flush-to-zero shows."""
    if coherent or tiny:
        pick = draw(st.integers(0, 3))
        if pick < tiny + coherent:
            return draw(_coherent_scenarios(variant, dtype, features, n_vars, sparse, allow_none, fresh, pick < tiny))
    hyper = draw(hypers(variant, features))
    k = draw(st.integers(*n_vars))
    shp = [draw(_SPARSE_SHAPES) if sparse else draw(shapes())
           for _ in range(k)]
    vals = scalars(dtype, edge=edge)
    params = [draw(arrays(dtype, s, vals)) for s in shp]
    it = 0 if fresh else draw(iterations())
    if fresh or it == 0:
        state = AdamState.zeros_like(params, amsgrad=hyper.amsgrad, ema=hyper.use_ema)
    else:
        m = [draw(arrays(dtype, s, vals)) for s in shp]
        v = [draw(arrays(dtype, s, _second_moments(dtype, edge))) for s in shp]
        vhat = None
        if hyper.amsgrad:
            vhat = [np.maximum(vv, draw(arrays(dtype, s, _second_moments(dtype, True)))) for vv, s in zip(v, shp)]
        ema = [draw(arrays(dtype, s, vals)) for s in shp] if hyper.use_ema else None
        state = AdamState(params, m, v, it, vhat, None, None, ema)
    if variant.beta_powers == "accumulated":
        b1, b2 = float(np.float32(hyper.beta_1)), float(np.float32(hyper.beta_2))
        p1, p2 = _accumulated(b1, state.iterations + 1), _accumulated(b2, state.iterations + 1)
        state.beta1_power, state.beta2_power = p1, p2
    grads = []
    for _, s in zip(params, shp):
        if allow_none and k > 1 and draw(st.booleans()) and any(g is not None for g in grads):
            grads.append(None)
            continue
        if sparse and s:
            nidx = draw(st.integers(1, 2 * s[0] + 1))
            idx = np.array(draw(st.lists(st.integers(0, s[0] - 1), min_size=nidx, max_size=nidx)), dtype=np.int64)
            values = draw(arrays(dtype, (nidx,) + tuple(s[1:]), vals))
            grads.append(SparseGrad(idx, values, tuple(s)))
        else:
            grads.append(draw(arrays(dtype, s, vals)))
    if all(g is None for g in grads):
        grads[0] = np.zeros(shp[0], dtype=np_dtype(dtype))
    hyper = _clip_near_gradients(draw, hyper, grads)
    return StepInput(variant.id, dtype, hyper, state, tuple(grads))


@st.composite
def _coherent_scenarios(draw, variant: Variant, dtype: str, features: frozenset[str], n_vars: tuple[int, int],
                        sparse: bool, allow_none: bool, fresh: bool, tiny: bool = False) -> StepInput:
    lo, hi = _scale_range(dtype)
    f = fmt(dtype)
    e = draw(st.integers(f.emin - f.p + 4, f.emin - 3) if tiny else st.integers(lo, hi))
    # a schedule, legacy decay or the adaptive epsilon change the step between counts by a
    # visible share only early on; a None gradient shows only on a state that has moved
    if "decay" in features:   # early counts: decay and its count move the rate by a third or more
        it = draw(st.sampled_from([0, 1, 1, 2]))   # at 0 decay has no effect yet, but its count does
    elif {"adaptive_epsilon", "eps_root"} & features:
        it = 0 if fresh else draw(st.integers(0, 1))
    elif "schedule" in features:
        it = 0 if fresh else draw(st.integers(0, 12))
    elif allow_none or "amsgrad" in features:   # zero moments (and vhat) hide both
        it = draw(st.one_of(st.integers(1, 12), st.integers(1, 1000)))
    elif variant.beta_powers == "accumulated":   # long runs, where TF1's product drifts from pow
        it = 0 if fresh else draw(st.one_of(st.integers(0, 12), st.integers(0, 1000), st.integers(1000, 10 ** 6)))
    else:
        it = 0 if fresh else draw(st.one_of(st.integers(0, 12), st.integers(0, 1000)))
    b1s, b2s = _coherent_betas(it <= 12)
    hyper = draw(hypers(variant, features)).replace(beta_1=draw(b1s), beta_2=draw(b2s))
    if "decay" in features:
        hyper = hyper.replace(decay=draw(st.floats(1.0, 8.0)), learning_rate=draw(st.floats(1e-3, 1.0)))
    if {"adaptive_epsilon", "eps_root"} & features:
        # epsilon (or eps_root) at the scale of sqrt(v), where its form decides the step
        eps = draw(st.integers(2, 4).map(lambda j: 2.0 ** (e + j)))
        if "eps_root" in features:
            hyper = hyper.replace(eps_root=2.0 ** (2 * e + draw(st.integers(0, 3))))
    elif tiny:   # an epsilon below the normal range (but far from 0) divides a v that underflowed
        eps = draw(st.one_of(st.sampled_from([1e-7, 1e-8]), st.integers(f.emin - f.p + 6, f.emin - 1).map(lambda j: 2.0 ** j)))
    else:
        eps = draw(st.one_of(st.sampled_from([1e-7, 1e-8]), st.integers(-6, 0).map(lambda j: 2.0 ** (e + j))))
    hyper = hyper.replace(epsilon=eps)
    if "schedule" in features:
        hyper = hyper.replace(learning_rate=draw(schedules_near(it)))
    k = draw(st.integers(*n_vars))
    shp = [draw(_SPARSE_SHAPES) if sparse else draw(_NONEMPTY_SHAPES) for _ in range(k)]
    params = [_coherent_array(draw, dtype, s_, e) for s_ in shp]
    if it == 0:
        state = AdamState.zeros_like(params, amsgrad=hyper.amsgrad, ema=hyper.use_ema)
    else:
        zero_m = tiny and draw(st.booleans())
        m = [np.zeros(s_, np_dtype(dtype)) if zero_m else _coherent_array(draw, dtype, s_, e) for s_ in shp]
        v = [_coherent_array(draw, dtype, s_, e, power=2) for s_ in shp]
        vhat = None
        if hyper.amsgrad:   # a running maximum well above this step's v in most elements
            vhat = [np.maximum(vv, _coherent_array(draw, dtype, s_, e + 2, power=2)) for vv, s_ in zip(v, shp)]
        ema = [_coherent_array(draw, dtype, s_, e) for s_ in shp] if hyper.use_ema else None
        state = AdamState(params, m, v, it, vhat, None, None, ema)
    if variant.beta_powers == "accumulated":
        b1, b2 = float(np.float32(hyper.beta_1)), float(np.float32(hyper.beta_2))
        state.beta1_power, state.beta2_power = _accumulated(b1, it + 1), _accumulated(b2, it + 1)
    grads: list = []
    for s_ in shp:
        if sparse:
            # more slices than rows: some index repeats in every example
            nidx = draw(st.integers(s_[0] + 1, 2 * s_[0] + 1))
            idx = np.array(draw(st.lists(st.integers(0, s_[0] - 1), min_size=nidx, max_size=nidx)), dtype=np.int64)
            grads.append(SparseGrad(idx, _coherent_array(draw, dtype, (nidx,) + tuple(s_[1:]), e), tuple(s_)))
        else:
            grads.append(_coherent_array(draw, dtype, s_, e))
    if allow_none and k > 1:   # one variable without a gradient, anywhere in the list
        grads[draw(st.integers(0, k - 1))] = None
    hyper = _clip_near_gradients(draw, hyper, grads, binding=True)
    if "weight_decay" in features:   # decay by a visible share of p in one step
        hyper = hyper.replace(weight_decay=draw(st.floats(0.05, 1.0)), learning_rate=draw(st.floats(0.1, 1.0)))
    state.params = _params_near_step(draw, dtype, state.params, _typical_step(variant, hyper, state, grads))
    if state.ema is not None and it > 0:
        state.ema = [_coherent_array(draw, dtype, np.shape(p), 0) * np.asarray(p) for p in state.params]
    return StepInput(variant.id, dtype, hyper, state, tuple(grads))


# With several clip options the order (or precedence) shows only when the options do not
# all cut to the same size: clipvalue cuts deepest, clipnorm barely or not at all, and
# global_clipnorm in between, so applying them in turn differs from applying the first.
_COMBINED_FRACTIONS = {"clipvalue": [0.2, 0.3, 0.4], "clipnorm": [0.9, 1.5], "global_clipnorm": [0.5, 0.6, 0.7]}


def _clip_near_gradients(draw, hyper: Hyper, grads: list, binding: bool = False) -> Hyper:
    """Clip thresholds drawn as fractions of the gradients' own scale, so that clipping
    binds (or just fails to) in most examples instead of almost never; with `binding`,
    every threshold is below the scale it clips."""
    dense = [np.abs(g.values if isinstance(g, SparseGrad) else g).astype(np.float64) for g in grads if g is not None]
    finite = [d[np.isfinite(d)] for d in dense]
    with np.errstate(over="ignore", invalid="ignore"):
        top = max((float(d.max()) for d in finite if d.size), default=0.0)
        norm = max((float(np.sqrt(np.sum(d * d))) for d in finite if d.size), default=0.0)
        total = float(np.sqrt(sum(float(np.sum(d * d)) for d in finite if d.size)))
    kw = {}
    several = sum(getattr(hyper, k) is not None for k in _COMBINED_FRACTIONS) > 1
    for k, scale in (("clipvalue", top), ("clipnorm", norm), ("global_clipnorm", total)):
        if getattr(hyper, k) is not None and scale > 0 and np.isfinite(scale) and (binding or draw(st.integers(0, 3)) > 0):
            fractions = _COMBINED_FRACTIONS[k] if binding and several else [0.25, 0.5, 0.7] if binding else [0.25, 0.5, 0.9, 1.5]
            kw[k] = scale * draw(st.sampled_from(fractions))
    return hyper.replace(**kw) if kw else hyper


@lru_cache(maxsize=4096)
def _accumulated(b32: float, t: int) -> float:
    """TF1's accumulator after t-1 float32 multiplications (what a real run holds): the
    product drifts from pow(beta, t) by tens of ulps over 10^4 steps and, once it is
    subnormal, can stick at a value pow never takes. Computed in float32 step by step
    (numpy's accumulate rounds after every multiplication), in chunks; past 2^21 steps
    pow stands in (the cost of a draw stays bounded)."""
    if t > 1 << 21:
        return float(np.float32(b32) ** np.float32(min(t, 10 ** 6)))
    p = np.float32(b32)
    left = t - 1
    while left > 0:
        n = min(left, 1 << 20)
        p = np.multiply.accumulate(np.concatenate([[p], np.full(n, np.float32(b32), dtype=np.float32)]))[-1]
        left -= n
    return float(p)


@cache
def special_values(dtype: str) -> st.SearchStrategy[float]:
    f = fmt(dtype)
    return st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, f.max, -f.max,
                            2.0 ** (f.emin - f.p + 1), -(2.0 ** (f.emin - f.p + 1)), 1.0])
