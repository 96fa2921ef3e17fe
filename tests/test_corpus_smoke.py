"""Smoke tests of the calibration corpus (conformance/corpus), independent of the gate.

1. Every corpus backend follows the protocol, runs every variant x dtype x feature
   cell it declares, returns arrays of the right shapes and dtypes, and leaves its
   inputs alone.
2. The four correct op orders agree with each other (and with TextbookAdam) within
   64 ulps on random float32 (and float64) data.
3. Every planted bug differs from TextbookAdam by more than 1e3 ulps on one targeted
   input (e.g. sparse slices with duplicates for the duplicates bugs).

"ulps" are measured against the magnitudes a correct step works with: for the
variable max(|param|, |update|), for m max(|m_old|, |g|), for v max(|v_old|, g*g), for the EMA
max(|avg|, |param|), for TF1's beta powers their own float32 value.
"""
from __future__ import annotations

import inspect
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adamconf.corpus import AREAS, BUGS, CORRECT, TextbookAdam  # noqa: E402
from adamconf.corpus.textbook import TF1_VARIANTS, VARIANT_FEATURES  # noqa: E402
from adamconf.protocol import Backend, unsupported_reason, validate_backend  # noqa: E402
from adamconf.reference.state import AdamState, Hyper, Schedule, SparseGrad, np_dtype  # noqa: E402
from adamconf.spec.model import FEATURES  # noqa: E402

TEXTBOOK = TextbookAdam()
EVERY = [TEXTBOOK, *CORRECT, *BUGS]
SHAPES = ((4, 3), (6,), ())  # a matrix (sparse rows), a vector, a scalar


# --------------------------------------------------------------------------- inputs
def make_input(variant="keras-legacy", dtype="float32", *, seed=0, iterations=3,
               hyper=None, sparse=False, none=False, shapes=SHAPES, g_scale=1.0,
               state_scale=1.0, zero_v=False, none_first=False, accumulated=False):
    """(variant, dtype, hyper, state, grads) with a random, plausible mid-run state.

    sparse: the first gradient is a SparseGrad whose indices repeat (rows 0 and 2
    twice); none: the last gradient is None; none_first: the first one is; zero_v:
    v = 0; accumulated: TF1's beta powers as the float32 product a run accumulates
    (else float32 pow).
    """
    rng = np.random.default_rng(seed)
    T = np_dtype(dtype)
    hyper = hyper or Hyper(learning_rate=0.01)
    params = [(state_scale * rng.normal(size=s)).astype(T) for s in shapes]
    m = [(0.1 * state_scale * rng.normal(size=s)).astype(T) for s in shapes]
    v = [((0.1 * state_scale * rng.normal(size=s)) ** 2 + 1e-6).astype(T) * (not zero_v) for s in shapes]
    state = AdamState(params=params, m=m, v=v, iterations=iterations)
    if hyper.amsgrad:
        state.vhat = [np.maximum(x, (x.astype(np.float64) * 1.25).astype(T)) for x in v]
    if hyper.use_ema:
        state.ema = [(p + 0.5 * rng.normal(size=p.shape)).astype(T) for p in params]
    if variant in TF1_VARIANTS:
        t = iterations + 1
        state.beta1_power = float(np.float32(np.float32(hyper.beta_1) ** t))
        state.beta2_power = float(np.float32(np.float32(hyper.beta_2) ** t))
        if accumulated:
            state.beta1_power, state.beta2_power = (
                float(np.multiply.accumulate(np.full(t, np.float32(b), dtype=np.float32))[-1])
                for b in (hyper.beta_1, hyper.beta_2))
    grads = [(g_scale * rng.normal(size=s)).astype(T) for s in shapes]
    if sparse:
        rows = shapes[0][0]
        idx = np.array([0, 2, 0, rows - 1, 2], dtype=np.int64)
        vals = (g_scale * rng.normal(size=(len(idx),) + tuple(shapes[0][1:]))).astype(T)
        grads[0] = SparseGrad(indices=idx, values=vals, dense_shape=tuple(shapes[0]))
    if none:
        grads[-1] = None
    if none_first:
        grads[0] = None
    return variant, dtype, hyper, state, grads


def keras3_clip_error(variant, hyper):
    """Keras 3 refuses more than one clipping option (checked in test_argument_errors)."""
    n = sum(getattr(hyper, k) is not None for k in ("clipnorm", "clipvalue", "global_clipnorm"))
    return variant == "keras3" and n > 1


def used_features(hyper, grads):
    f = set(hyper.features())
    if any(isinstance(g, SparseGrad) for g in grads):
        f.add("sparse")
    return frozenset(f)


# Feature scenarios for the "runs every declared cell" test: name -> (hyper kw, input kw)
SCENARIOS = {
    "dense": ({}, {}),
    "sparse-duplicates": ({}, {"sparse": True}),
    "none-grad": ({}, {"none": True}),
    "fresh-state": ({}, {"iterations": 0}),
    "amsgrad": ({"amsgrad": True}, {}),
    "clipvalue": ({"clipvalue": 0.5}, {}),
    "clipnorm": ({"clipnorm": 1.0}, {}),
    "global_clipnorm": ({"global_clipnorm": 1.0}, {}),
    "all-clips": ({"clipvalue": 0.5, "clipnorm": 1.0, "global_clipnorm": 1.5}, {}),
    "decay": ({"decay": 0.5}, {}),
    "schedule": ({"learning_rate": Schedule("exponential", initial=0.01, steps=2.0, rate=0.5)}, {}),
    "piecewise": ({"learning_rate": Schedule("piecewise", boundaries=(2, 5), values=(0.1, 0.01, 0.001))}, {}),
    "weight_decay": ({"weight_decay": 0.05}, {}),
    "ema": ({"use_ema": True, "ema_overwrite_frequency": 2}, {"none": True}),
    "everything": ({"amsgrad": True, "clipnorm": 1.0, "weight_decay": 0.05, "use_ema": True,
                    "learning_rate": Schedule("inverse_time", initial=0.01, steps=1.0, rate=0.1)},
                   {"sparse": True, "none": True}),
}


def snapshot(state, grads):
    """Deep copies of everything a backend receives, to check it was not mutated."""
    def arr(x):
        return np.array(x, copy=True)
    s = {k: [arr(x) for x in xs] for k, xs in state.arrays().items()}
    s["_scalars"] = (state.iterations, state.beta1_power, state.beta2_power)
    g = [None if x is None else (arr(x.indices), arr(x.values)) if isinstance(x, SparseGrad) else arr(x)
         for x in grads]
    return s, g


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_unchanged(before, state, grads):
    s, g = before
    now, gnow = snapshot(state, grads)
    assert now["_scalars"] == s["_scalars"], "the backend changed the input state's scalars"
    for k in s:
        if k == "_scalars":
            continue
        assert all(same_bits(a, b) for a, b in zip(s[k], now[k])), f"the backend mutated input {k}"
    for a, b in zip(g, gnow):
        if a is None:
            assert b is None
        elif isinstance(a, tuple):
            assert same_bits(a[0], b[0]) and same_bits(a[1], b[1]), "the backend mutated a sparse gradient"
        else:
            assert same_bits(a, b), "the backend mutated a gradient"


# --------------------------------------------------------------------------- distance
def _f64(x):
    return np.asarray(x).astype(np.float64)


def _ulp(scale, T):
    """The spacing of T at |scale| (element-wise, float64)."""
    fi = np.finfo(T) if np_dtype("bfloat16") != T else None
    big = float(fi.max) if fi is not None else 3.3e38
    s = np.minimum(np.abs(scale), big).astype(T)
    return np.abs(np.spacing(s).astype(np.float64)) if fi is not None else _bf16_spacing(s)


def _bf16_spacing(s):
    f = s.astype(np.float32)
    return np.abs(np.nextafter(f, np.float32(np.inf)).astype(np_dtype("bfloat16")).astype(np.float64)
                  - f.astype(np.float64)) + 2.0 ** -133


def _field_ulps(a, b, scale, T):
    a, b = _f64(a), _f64(b)
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    d = np.where(both_nan | same_inf, 0.0, d)
    d = np.where(np.isnan(d), np.inf, d)
    r = d / _ulp(scale, T)
    return float(r.max()) if r.size else 0.0


def ulps_apart(inp, a: AdamState, b: AdamState) -> dict[str, float]:
    """The largest distance of b from a per state field, in ulps of the step's scale
    (inf where the two disagree in structure or in the iteration count)."""
    variant, dtype, hyper, state, grads = inp
    T = np_dtype(dtype)
    out: dict[str, float] = {}
    if a.iterations != b.iterations:
        out["iterations"] = np.inf
    gmag = []
    for g, p in zip(grads, state.params):
        if g is None:
            gmag.append(np.zeros(np.shape(p)))
        elif isinstance(g, SparseGrad):
            z = np.zeros(g.dense_shape)
            np.add.at(z, np.asarray(g.indices, dtype=np.int64), np.abs(_f64(g.values)))
            gmag.append(z)
        else:
            gmag.append(np.abs(_f64(g)))
    for name in ("params", "m", "v", "vhat", "ema"):
        xa, xb = getattr(a, name), getattr(b, name)
        if xa is None and xb is None:
            continue
        if (xa is None) != (xb is None) or len(xa) != len(xb):
            out[name] = np.inf
            continue
        worst = 0.0
        for i, (ea, eb) in enumerate(zip(xa, xb)):
            if np.shape(ea) != np.shape(eb):
                worst = np.inf
                continue
            ea64 = _f64(ea)
            if name == "params":  # max(|param|, |update|)
                p0 = _f64(state.params[i])
                scale = np.maximum.reduce([np.abs(p0), np.abs(ea64), np.abs(ea64 - p0)])
            elif name == "m":
                scale = np.maximum.reduce([np.abs(_f64(state.m[i])), np.abs(ea64), gmag[i]])
            elif name == "v":
                scale = np.maximum.reduce([np.abs(_f64(state.v[i])), np.abs(ea64), gmag[i] ** 2])
            elif name == "vhat":
                scale = np.maximum.reduce([np.abs(_f64(state.vhat[i])), np.abs(ea64), gmag[i] ** 2])
            else:  # ema
                scale = np.maximum.reduce([np.abs(_f64(state.ema[i])), np.abs(ea64),
                                           np.abs(_f64(a.params[i])), np.abs(_f64(state.params[i]))])
            worst = max(worst, _field_ulps(ea, eb, scale, T))
        out[name] = worst
    for name in ("beta1_power", "beta2_power"):
        pa, pb = getattr(a, name), getattr(b, name)
        if pa is None and pb is None:
            continue
        if (pa is None) != (pb is None):
            out[name] = np.inf
            continue
        out[name] = _field_ulps(pa, pb, pa, np.dtype(np.float32))
    return out


def worst(d: dict[str, float]) -> float:
    return max(d.values(), default=0.0)


# --------------------------------------------------------------------------- 1. protocol
@pytest.mark.parametrize("backend", EVERY, ids=lambda b: b.name)
def test_follows_the_protocol(backend):
    validate_backend(backend, backend.name)
    assert isinstance(backend, Backend)
    assert backend.name == type(backend).__name__
    assert set(backend.features) <= set(FEATURES)
    assert set(backend.variants) <= set(VARIANT_FEATURES)
    for variant in backend.variants:
        for feature in backend.features:
            reason = unsupported_reason(backend, variant, backend.dtypes[0], {feature})
            assert (reason is None) == (feature in VARIANT_FEATURES[variant]), (variant, feature, reason)


@pytest.mark.parametrize("backend", EVERY, ids=lambda b: b.name)
def test_runs_every_declared_cell(backend):
    ran = 0
    for variant, dtype, (sname, (hkw, ikw)) in itertools.product(
            backend.variants, backend.dtypes, SCENARIOS.items()):
        hyper = Hyper(**{"learning_rate": 0.01, **hkw})
        inp = make_input(variant, dtype, hyper=hyper, seed=ran, **ikw)
        _, _, _, state, grads = inp
        if keras3_clip_error(variant, hyper) or \
                unsupported_reason(backend, variant, dtype, used_features(hyper, grads)) is not None:
            continue
        before = snapshot(state, grads)
        out = backend.step(*inp)
        ran += 1
        where = f"{backend.name} {variant} {dtype} {sname}"
        assert isinstance(out, AdamState), where
        assert_unchanged(before, state, grads)
        assert out.iterations == state.iterations + (backend.name != "StepCountNotIncremented"), where
        T = np_dtype(dtype)
        for name, xs in out.arrays().items():
            ins = state.arrays()[name]
            assert len(xs) == len(ins), where
            for x, x0 in zip(xs, ins):
                assert isinstance(x, np.ndarray), f"{where}: {name} is {type(x).__name__}"
                assert x.dtype == T, f"{where}: {name} has dtype {x.dtype}, want {T}"
                assert x.shape == np.shape(x0), f"{where}: {name} has shape {x.shape}"
                assert x is not x0, f"{where}: {name} returned the input array itself"
        assert (out.vhat is None) == (not hyper.amsgrad), where
        assert (out.ema is None) == (not hyper.use_ema), where
        if variant in TF1_VARIANTS:
            assert isinstance(out.beta1_power, float) and isinstance(out.beta2_power, float), where
        else:
            assert out.beta1_power is None and out.beta2_power is None, where
        if grads[-1] is None and not hyper.use_ema and backend.name != "NoneGradAsZero":
            for name in ("params", "m", "v"):
                assert same_bits(out.arrays()[name][-1], state.arrays()[name][-1]), \
                    f"{where}: a variable with a None gradient changed its {name}"
    assert ran > 0


@pytest.mark.parametrize("backend", EVERY, ids=lambda b: b.name)
def test_argument_errors(backend):
    for variant in backend.variants:
        inp = make_input(variant, backend.dtypes[-1])
        v, d, h, s, g = inp
        with pytest.raises(ValueError):
            backend.step(v, d, h, s, [None] * len(g))
    if "keras3" in backend.variants:
        v, d, h, s, g = make_input("keras3", backend.dtypes[-1])
        with pytest.raises(ValueError):
            backend.step(v, d, Hyper(clipnorm=1.0, clipvalue=0.5), s, g)
    if "tf1" in backend.variants:
        v, d, h, s, g = make_input("tf1", backend.dtypes[-1])
        with pytest.raises(NotImplementedError):
            backend.step(v, d, Hyper(amsgrad=True), s, g)


# --------------------------------------------------------------------------- 2. correct orders
AGREE_ULPS = 64


def random_cases(dtype, n_seeds):
    """Random mid-run steps across variants and features."""
    scen = ["dense", "sparse-duplicates", "none-grad", "fresh-state", "amsgrad", "all-clips",
            "clipnorm", "decay", "schedule", "weight_decay", "ema", "everything"]
    for seed in range(n_seeds):
        rng = np.random.default_rng(1000 + seed)
        for variant in ("tf1", "keras-legacy", "keras3"):
            sname = scen[seed % len(scen)]
            hkw, ikw = SCENARIOS[sname]
            hyper = Hyper(**{"learning_rate": float(10 ** rng.uniform(-4, -1)),
                             "beta_1": float(rng.choice([0.9, 0.8, 0.95, 0.5])),
                             "beta_2": float(rng.choice([0.999, 0.99, 0.9999])),
                             "epsilon": float(rng.choice([1e-7, 1e-8, 1e-3])), **hkw})
            ikw = {**ikw, "iterations": ikw.get("iterations", int(rng.integers(0, 60)))}
            inp = make_input(variant, dtype, hyper=hyper, seed=seed, shapes=((16, 3), (40,), ()),
                             g_scale=float(10 ** rng.uniform(-3, 1)),
                             state_scale=float(10 ** rng.uniform(-2, 1)), **ikw)
            if not keras3_clip_error(variant, hyper) and \
                    TEXTBOOK.unsupported(variant, dtype, used_features(hyper, inp[4])) is None:
                yield f"{variant}-{sname}-{seed}", inp


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_correct_orders_agree(dtype):
    """One step from random mid-run states (as the gate checks them). Over long
    trajectories the orders drift further apart, since each step feeds on its own
    rounded state; the gate re-syncs to the backend's state each step for that reason."""
    backends = [TEXTBOOK, *CORRECT]
    seen: dict[tuple[str, str], float] = {}
    for cid, inp in random_cases(dtype, 36):
        outs = [b.step(*inp) for b in backends]
        for (ba, oa), (bb, ob) in itertools.combinations(zip(backends, outs), 2):
            d = ulps_apart(inp, oa, ob)
            key = (ba.name, bb.name)
            seen[key] = max(seen.get(key, 0.0), worst(d))
            assert worst(d) <= AGREE_ULPS, f"{ba.name} vs {bb.name} on {cid}: {d}"
    # the four are really different orders: every pair parts somewhere
    for (a, b), w in seen.items():
        if {a, b} != {"TextbookAdam", "PageOrder"}:
            assert w > 0.0, f"{a} and {b} never differed: the data is too tame or the orders are equal"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fma_rounds_once_in_the_format(dtype):
    """FmaOrder's emulated fma: with c = -0 it is the correctly rounded product, with
    b = 1 the correctly rounded sum (numpy's own ops), subnormals included."""
    from adamconf.corpus.op_orders import fma
    from adamconf.corpus.textbook import StepContext

    T = np_dtype(dtype)
    ctx = StepContext(variant="keras3", dtype=dtype, T=T, hyper=Hyper(), iterations=0)
    rng = np.random.default_rng(5)
    sub, normal = {"float16": (-24, -14), "bfloat16": (-133, -126), "float32": (-149, -126),
                   "float64": (-1074, -1022)}[dtype]
    n = 2000
    e = rng.integers(sub // 2 - 2, 4, size=n)
    target = rng.integers(sub - 2, normal + 12, size=n)  # products around the subnormals
    a = (rng.uniform(1, 2, n) * 2.0 ** e * rng.choice([-1, 1], n)).astype(T)
    b = (rng.uniform(1, 2, n) * 2.0 ** (target - e)).astype(T)
    prod = a * b
    # c = -0 so that the sign of a zero product survives (IEEE: -0 + +0 = +0)
    assert same_bits(fma(ctx, a, b, np.full_like(a, -0.0)), prod)
    assert np.any((prod != 0) & (np.abs(prod.astype(np.float64)) < 2.0 ** normal)), "no subnormal products"
    k = 8 if dtype == "float16" else 20  # sums that need rounding, no overflow
    c = (rng.normal(size=n) * 2.0 ** rng.integers(-k, k, n)).astype(T)
    d = (rng.normal(size=n) * 2.0 ** rng.integers(-k, k, n)).astype(T)
    assert same_bits(fma(ctx, c, np.ones_like(c), d), c + d)


# --------------------------------------------------------------------------- 3. planted bugs
BUG_ULPS = 1e3
_EXPO = Schedule("exponential", initial=0.01, steps=1.0, rate=0.5)

# Targeted input per bug: (variant, dtype, hyper keywords, make_input keywords)
TARGETS = {
    "EpsInsideSqrt": ("keras-legacy", "float32", {"epsilon": 1e-3}, {}),
    "Algorithm1Epsilon": ("keras3", "float32", {"epsilon": 0.1}, {}),
    "DefaultEpsilon": ("tf1", "float32", {"epsilon": 0.1}, {}),
    "NoBiasCorrection": ("keras-legacy", "float32", {}, {}),
    "BiasCorrectionOnlyM": ("keras3", "float32", {}, {}),
    "AlphaSqrtOfRatio": ("tf1", "float32", {}, {}),
    "BetaPowersSwapped": ("keras-legacy", "float32", {}, {}),
    "StepIsIterations": ("keras-legacy", "float32", {}, {}),
    "StepIsIterationsPlusTwo": ("keras3", "float32", {}, {}),
    "TF1PowersNotAdvanced": ("tf1", "float32", {}, {}),
    "TF1PowersAdvancedEarly": ("tf1", "float32", {}, {}),
    "AbsGradSecondMoment": ("keras-legacy", "float32", {}, {}),
    "UpdateUsesOldM": ("keras3", "float32", {}, {}),
    "UpdateUsesOldV": ("tf1", "float32", {}, {}),
    "KernelFormSignSlip": ("keras-legacy", "float32", {}, {}),
    "LazySparseRows": ("tf1", "float32", {}, {"sparse": True}),
    "SparseLastWriteWins": ("keras-legacy", "float32", {}, {"sparse": True}),
    "SparseDuplicatesAveraged": ("keras3", "float32", {}, {"sparse": True}),
    "SparseSumOfSquares": ("tf1", "float32", {}, {"sparse": True}),
    "NoneGradAsZero": ("keras-legacy", "float32", {}, {"none": True}),
    "ClipnormGlobal": ("keras-legacy", "float32", {"clipnorm": 1.0}, {}),
    "ClipnormWithoutSqrt": ("keras3", "float32", {"clipnorm": 1.0}, {}),
    "GlobalClipnormPerTensor": ("keras3", "float32", {"global_clipnorm": 1.0}, {}),
    "ClipvalueIgnoredWithClipnorm": ("keras-legacy", "float32", {"clipvalue": 0.2, "clipnorm": 100.0}, {}),
    "DecayAfterIncrement": ("keras-legacy", "float32", {"decay": 0.5}, {}),
    "DecayIgnored": ("keras-legacy", "float32", {"decay": 0.5}, {}),
    "ScheduleAfterIncrement": ("keras3", "float32", {"learning_rate": _EXPO}, {}),
    "ScheduleFrozen": ("keras-legacy", "float32", {"learning_rate": _EXPO}, {}),
    "AmsgradMaxBiasCorrected": ("keras-legacy", "float32", {"amsgrad": True}, {}),
    "AmsgradMaxOldV": ("keras3", "float32", {"amsgrad": True}, {}),
    "Float16Moments": ("keras-legacy", "float32", {}, {}),
    "Float32SlotsForFloat64": ("keras3", "float64", {}, {}),
    "Bfloat16Hyper": ("tf1", "float32", {}, {}),
    "WeightDecayLrTwice": ("keras3", "float32", {"learning_rate": 0.1, "weight_decay": 0.1}, {}),
    "WeightDecayAsL2": ("keras3", "float32", {"weight_decay": 0.1}, {}),
    "EmaMomentumSwapped": ("keras3", "float32", {"use_ema": True}, {}),
    "EmaOverwriteOffByOne": ("keras3", "float32", {"use_ema": True, "ema_overwrite_frequency": 2}, {}),
    "GlobalClipnormSumOfNorms": ("keras3", "float32", {"global_clipnorm": 1.0}, {}),
    "ClipnormAlwaysScales": ("keras-legacy", "float32", {"clipnorm": 100.0}, {}),
    "GlobalClipnormAlwaysScales": ("keras-legacy", "float32", {"global_clipnorm": 100.0}, {}),
    "ClipvalueOnlyUpper": ("keras3", "float32", {"clipvalue": 0.1}, {}),
    "ClipvalueAfterClipnorm": ("keras-legacy", "float32", {"clipvalue": 0.2, "clipnorm": 0.5}, {}),
    "FlushUndeclared": ("keras-legacy", "float32", {}, {"g_scale": 1e-40, "state_scale": 1e-40}),
    "Float16SlotsForBfloat16": ("keras3", "bfloat16", {}, {"g_scale": 1e3}),
    "LegacyZeroEpsilonKept": ("keras-legacy", "float32", {"epsilon": 0.0}, {"zero_v": True, "g_scale": 0.0}),
    "EpsilonOutsideDivide": ("keras3", "float32", {"epsilon": 0.1}, {}),
    "TF1PowersFromCount": ("tf1", "float32", {"beta_1": 0.9999}, {"iterations": 1_000_000, "accumulated": True}),
    "TF1PowersInVariableDtype": ("tf1", "bfloat16", {}, {}),
    "FirstMomentWithBeta2": ("keras3", "float32", {}, {}),
    "SecondMomentWithOneMinusBeta1": ("tf1", "float32", {}, {}),
    "StepCountNotIncremented": ("keras-legacy", "float32", {}, {}),
    "NoneGradShiftsGradients": ("keras-legacy", "float32", {}, {"none_first": True, "shapes": ((5,), (5,), (5,))}),
    "AlphaInFloat32": ("keras3", "bfloat16", {}, {}),
    "AmsgradMinimum": ("keras3", "float32", {"amsgrad": True}, {}),
    "AmsgradStoresV": ("keras-legacy", "float32", {"amsgrad": True}, {}),
    "AmsgradVhatNeverUpdated": ("keras3", "float32", {"amsgrad": True}, {"g_scale": 10.0}),
    "SparseMomentsLazy": ("keras-legacy", "float32", {}, {"sparse": True}),
    "WeightDecayAfterUpdate": ("keras3", "float32", {"learning_rate": 0.1, "weight_decay": 0.1}, {}),
    "WeightDecayWithoutLr": ("keras3", "float32", {"weight_decay": 0.1}, {}),
    "EmaOfOldWeights": ("keras3", "float32", {"use_ema": True}, {}),
    "EmaFirstStepAverages": ("keras3", "float32", {"use_ema": True}, {"iterations": 0}),
    "EmaOverwriteEveryStep": ("keras3", "float32", {"use_ema": True, "ema_overwrite_frequency": 5}, {}),
}


def test_enough_bugs_with_areas():
    assert len(BUGS) >= 60
    assert len({b.name for b in BUGS}) == len(BUGS)
    assert {b.name for b in BUGS} == set(TARGETS), "every bug needs a targeted input here"
    for b in BUGS:
        assert b.expected_clause_area in AREAS, b.name
        assert (type(b).__doc__ or "").strip(), f"{b.name} has no docstring"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_bug_overrides_one_method(bug):
    """One mistake each: one hook of TextbookAdam, or two where the mistake moves a term
    from one to the other, or one of its switches."""
    cls = type(bug)
    own = [k for k, v in vars(cls).items() if inspect.isfunction(v) and not k.startswith("__")]
    switches = [k for k, v in vars(cls).items() if isinstance(v, bool) and hasattr(TextbookAdam, k)]
    assert 1 <= len(own) <= 2 or (not own and len(switches) == 1), f"{cls.__name__} overrides {own + switches}"
    for name in own:
        assert hasattr(TextbookAdam, name), f"{cls.__name__}.{name} overrides nothing"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_bug_differs_from_textbook(bug):
    variant, dtype, hkw, ikw = TARGETS[bug.name]
    hyper = Hyper(**{"learning_rate": 0.01, **hkw})
    inp = make_input(variant, dtype, hyper=hyper, seed=7, **ikw)
    assert unsupported_reason(bug, variant, dtype, used_features(hyper, inp[4])) is None
    ref = TEXTBOOK.step(*inp)
    got = bug.step(*inp)
    d = ulps_apart(inp, ref, got)
    assert worst(d) > BUG_ULPS, f"{bug.name} is within {worst(d):.3g} ulps of TextbookAdam: {d}"


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.name)
def test_bug_is_silent_where_it_does_not_apply(bug):
    """Bugs with a trigger (sparse slices, a None gradient, a feature switched on) do
    not fire on a plain dense step: each is one narrow mistake."""
    variant, dtype, hkw, ikw = TARGETS[bug.name]
    inp = make_input(variant, dtype, hyper=Hyper(learning_rate=0.01), seed=11)
    d = ulps_apart(inp, TEXTBOOK.step(*inp), bug.step(*inp))
    # a magnitude trigger (the ends of a dtype's range) may still round differently inside it
    structural = {k for k in ikw if k not in ("g_scale", "state_scale")}
    if structural or any(k in hkw for k in ("amsgrad", "clipnorm", "clipvalue", "global_clipnorm", "decay",
                                      "weight_decay", "use_ema")) or "learning_rate" in hkw and \
            isinstance(hkw["learning_rate"], Schedule):
        assert worst(d) == 0.0, f"{bug.name} fires without its trigger: {d}"
