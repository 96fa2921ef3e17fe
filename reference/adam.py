"""The exact Adam step for every formula the spec names.

`step()` takes the very inputs a backend sees (its prior state, gradients,
hyperparameters) and returns the exact next state with, element-wise, the error
scale S of `reference.tracked`. Two hyperparameter modes:

  rounded  the hyperparameters are first rounded the way the variant rounds them
           (spec fields hyper_dtype, lr_dtype, one_minus_beta), and those rounded
           values are the exact inputs: this is what the backend computes with.
  decimal  the hyperparameters are the decimals the user wrote; S then includes the
           sensitivity of the result to rounding each of them (1 - beta_2 has
           condition number ~1000 at beta_2 = 0.999).

Derived scalars (beta powers, step size, bias corrections, schedule values) are
computed exactly from those inputs and carry the roundings a backend spends on them.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np

from adamconf.reference.state import AdamState, Grad, Hyper, Schedule, SparseGrad, np_dtype, present_fields, resolved
from adamconf.reference.tracked import (
    DECISIVE_K,
    Arith,
    Format,
    Tracked,
    const,
    daz_scale,
    decimal_of,
    divisor,
    exact,
    fmt,
    from_array,
    margin_of,
    mp,
    to_float64,
)
from adamconf.spec.model import Variant

DEFAULT_PRECISION = 113
MODES = ("rounded", "decimal")


class ReferenceError(ValueError):
    """Inputs the documented API would reject, or that the reference cannot evaluate."""


@dataclass
class ExactState:
    """A state whose arrays are exact (Tracked) values; the reference's working form."""

    params: list[Tracked]
    m: list[Tracked]
    v: list[Tracked]
    iterations: int
    vhat: list[Tracked] | None = None
    ema: list[Tracked] | None = None
    beta1_power: Tracked | None = None
    beta2_power: Tracked | None = None

    @classmethod
    def from_state(cls, st: AdamState, daz: Format | None = None, daz32: bool = False) -> ExactState:
        """With `daz`, subnormal inputs of that format may be read as 0 (flush mode);
        with `daz32`, the float32 beta powers likewise."""
        conv = lambda xs: None if xs is None else [from_array(x, daz) for x in xs]  # noqa: E731
        f32 = fmt("float32") if daz32 else None
        bp = lambda p: None if p is None else const(float(p), float(daz_scale(float(p), f32)))  # noqa: E731
        return cls(conv(st.params), conv(st.m), conv(st.v), st.iterations, conv(st.vhat),
                   conv(st.ema), bp(st.beta1_power), bp(st.beta2_power))

    def fields(self) -> dict[str, list[Tracked]]:
        return present_fields(self)

    def rounded(self, dtype: str) -> AdamState:
        """The exact state rounded to the dtype (via float64), as a plain AdamState."""
        dt = np_dtype(dtype)
        r = lambda xs: None if xs is None else [to_float64(t).astype(dt) for t in xs]  # noqa: E731
        p = lambda t: None if t is None else float(np.float32(float(t.x)))  # noqa: E731
        return AdamState(r(self.params), r(self.m), r(self.v), self.iterations, r(self.vhat),
                         p(self.beta1_power), p(self.beta2_power), r(self.ema))


@dataclass
class StepResult:
    """The exact state after one step and the error scale of each element."""

    state: ExactState
    dtype: str
    alpha: Tracked | None = None
    notes: list[str] = field(default_factory=list)

    def exact(self, name: str) -> list[np.ndarray]:
        return [t.x for t in self.state.fields()[name]]

    def scale(self, name: str) -> list[np.ndarray]:
        return [np.broadcast_to(t.s, t.shape) for t in self.state.fields()[name]]

    def margin(self, name: str) -> list[np.ndarray]:
        return [np.broadcast_to(t.margin, t.shape) for t in self.state.fields()[name]]

    def approx(self, name: str) -> list[np.ndarray]:
        return [to_float64(t) for t in self.state.fields()[name]]


# -- rounding of hyperparameters ---------------------------------------------------

def _round_to(x: float, dtype: str) -> float:
    return float(np.asarray(x, dtype=np.float64).astype(np_dtype(dtype)))


def _u_ratio(holder: str, dtype: str) -> float:
    return fmt(holder).u / fmt(dtype).u


class _Scalars:
    """Turns user hyperparameters into the tracked scalars a backend computes with."""

    def __init__(self, variant: Variant, dtype: str, mode: str, flush: bool = False) -> None:
        if mode not in MODES:
            raise ReferenceError(f"unknown hyperparameter mode {mode!r}; use one of {', '.join(MODES)}")
        self.variant, self.dtype, self.mode = variant, dtype, mode
        self.daz = fmt(dtype) if flush else None
        self.compute = compute_dtype(variant, dtype)

    def _holder(self, kind: str) -> str:
        """Where a hyperparameter is held before it meets the parameters: lr and eps per
        the spec, betas in hyper_dtype, and plain Python floats (clip thresholds,
        decay, weight_decay, EMA momentum) converted straight to the parameter dtype."""
        v = self.variant
        h = {"lr": v.lr_dtype, "eps": v.eps_dtype or v.hyper_dtype, "beta": v.hyper_dtype,
             "power": v.power_dtype or v.hyper_dtype, "aux": v.aux_dtype}.get(kind, "param")
        return self.compute if h == "param" else h

    def primary(self, x: float, kind: str = "beta") -> Tracked:
        """A hyperparameter as held by the variant, then cast to the dtype it meets the
        tensors in (spec field compute_dtype)."""
        holder = self._holder(kind)
        if self.mode == "rounded":
            r = _round_to(_round_to(x, holder), self.compute)
            return const(r, float(daz_scale(r, self.daz)))
        cast = abs(x) * _u_ratio(self.compute, self.dtype) if holder != self.compute else 0.0
        return const(decimal_of(x), abs(x) * _u_ratio(holder, self.dtype) + cast)

    def one_minus(self, beta: float, A: Arith) -> Tracked:
        """1 - beta, formed the variant's way (spec field one_minus_beta)."""
        if self.variant.one_minus_beta == "in-dtype":
            return A.sub(const(1), self.primary(beta))
        return self.one_minus_value(beta)

    def one_minus_value(self, x: float) -> Tracked:
        """1 - x formed in Python double and then cast to the parameter dtype."""
        c = 1.0 - float(x)
        if self.mode == "rounded":
            return const(_round_to(c, self.compute))
        return const(1 - decimal_of(x), abs(c) * _u_ratio(self.compute, self.dtype))

    def power_base(self, beta: float) -> Tracked:
        """The beta that beta**t is formed from. Where the power is formed wider than the
        dtype (torch: Python doubles; optax: "opmath") only the bias correction is cast,
        so beta is not rounded to the dtype first."""
        holder = self.variant.power_dtype or self.variant.hyper_dtype
        if holder == "opmath":
            holder = "float32" if self.dtype in ("float16", "bfloat16") else self.dtype
        elif holder != "float64":
            return self.primary(beta, "power")
        if self.mode == "rounded":
            return const(_round_to(beta, holder))
        return const(decimal_of(beta), abs(beta) * _u_ratio(holder, self.dtype))


def compute_dtype(variant: Variant, dtype: str) -> str:
    """The dtype scalars meet the tensors in: float32 for half tensors under "opmath"."""
    if variant.compute_dtype == "opmath" and dtype in ("float16", "bfloat16"):
        return "float32"
    return dtype


# -- the step ---------------------------------------------------------------------

def step(variant: Variant, dtype: str, hyper: Hyper, state: AdamState | ExactState,
         grads: Sequence[Grad], *, mode: str = "rounded", flush: Collection[str] = (),
         precision: int = DEFAULT_PRECISION, ieee: bool | str = False) -> StepResult:
    """One exact Adam step of `variant` from `state` with `grads` (see module doc).
    `flush`: the dtypes whose operations flush subnormal inputs and results to zero
    (TF1's float32 beta powers follow "float32" whatever the parameter dtype).
    `ieee`: the outcome of the plain op order, whose intermediates (g * g, a sum of
    squares, b - a in a moment update) overflow to inf where the exact value decides
    it; where the exact step leaves an element ill-conditioned by such an overflow, a
    correct backend gives one of the two. ieee="quotient-first": the same for an order
    that forms m / den before scaling it (the kernels scale first)."""
    with gmpy2.context(precision=precision), np.errstate(all="ignore"):
        ex = state if isinstance(state, ExactState) else _exact_state(state, dtype, flush)
        return _step(variant, dtype, hyper, ex, list(grads), mode, flush, ieee)


def trajectory(variant: Variant, dtype: str, hyper: Hyper, state: AdamState,
               grads_seq: Sequence[Sequence[Grad]], *, mode: str = "rounded", flush: Collection[str] = (),
               precision: int = DEFAULT_PRECISION) -> list[StepResult]:
    """Exact multi-step run: each step starts from the previous exact state."""
    out: list[StepResult] = []
    with gmpy2.context(precision=precision), np.errstate(all="ignore"):
        ex = _exact_state(state, dtype, flush)
        for grads in grads_seq:
            res = _step(variant, dtype, hyper, ex, list(grads), mode, flush)
            out.append(res)
            ex = res.state
    return out


def _exact_state(state: AdamState, dtype: str, flush: Collection[str]) -> ExactState:
    return ExactState.from_state(state, fmt(dtype) if dtype in flush else None, "float32" in flush)


def validate(variant: Variant, hyper: Hyper, state: AdamState | ExactState, grads: list[Grad]) -> None:
    """ReferenceError for inputs the documented API would reject (what `step` refuses)."""
    _validate(variant, hyper, state, grads)


def _validate(variant: Variant, hyper: Hyper, state: AdamState | ExactState, grads: list[Grad]) -> None:
    n = len(state.params)
    if len(grads) != n:
        raise ReferenceError(f"{len(grads)} gradients for {n} parameters; pass one gradient (or None) per parameter")
    if all(g is None for g in grads):
        raise ReferenceError("no gradient for any variable: at least one gradient must be given")
    lacking = sorted(hyper.features() - set(variant.features))
    if lacking:
        raise ReferenceError(f"variant {variant.id} has no {', '.join(lacking)}; drop it from the hyperparameters")
    if variant.sparse == "unsupported" and any(isinstance(g, SparseGrad) for g in grads):
        raise ReferenceError(f"variant {variant.id} takes no sparse gradients; densify them first")
    if hyper.amsgrad and state.vhat is None:
        raise ReferenceError("amsgrad is on but the state has no vhat; give vhat (zeros for a fresh run)")
    if hyper.use_ema and state.ema is None:
        raise ReferenceError("use_ema is on but the state has no ema averages; give ema (a copy of params)")
    if variant.clip_policy == "exclusive":
        on = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(hyper, k) is not None]
        if len(on) > 1:
            raise ReferenceError(f"variant {variant.id} accepts at most one of clipnorm, clipvalue, global_clipnorm; got {', '.join(on)}")
    if variant.clip_policy in ("first-of", "sequential") and hyper.clipnorm is not None and hyper.global_clipnorm is not None:
        # OptimizerV2 and the new tf_keras optimizer both refuse this pair in the constructor
        raise ReferenceError(f"variant {variant.id} accepts at most one of clipnorm and global_clipnorm")
    for k in ("clipnorm", "clipvalue", "global_clipnorm"):
        val = getattr(hyper, k)
        if val is not None and not val > 0:
            raise ReferenceError(f"{k} must be positive, got {val}")
    for p, g in zip(state.params, grads):
        if isinstance(g, SparseGrad):
            if tuple(g.dense_shape) != tuple(p.shape):
                raise ReferenceError(f"sparse gradient of shape {tuple(g.dense_shape)} for a parameter of shape {p.shape}")
            idx = np.asarray(g.indices)
            if idx.size and (idx.min() < 0 or idx.max() >= p.shape[0]):
                raise ReferenceError("sparse gradient index out of range of the parameter's first dimension")
        elif g is not None and np.shape(g) != p.shape:
            raise ReferenceError(f"gradient of shape {np.shape(g)} for a parameter of shape {p.shape}")


def _learning_rate(sc: _Scalars, A: Arith, hyper: Hyper, iterations: int) -> Tracked:
    """The learning rate of this step: a schedule at the count before the increment,
    then legacy `decay` as lr / (1 + decay * iterations)."""
    lr = hyper.learning_rate
    if isinstance(lr, Schedule):
        # A backend evaluates the schedule in float and holds it in lr_dtype; its exact
        # value is unknown to us in either mode, so count those roundings in S.
        # Schedules run on float32 tensors in TF and Keras (initial_learning_rate becomes
        # one) and in jax by default; the result is held in lr_dtype, then cast.
        val, roundings = _schedule_exact(lr, iterations)
        held = _u_ratio(sc._holder("lr"), sc.dtype)
        ratio = max(held, _u_ratio("float32", sc.dtype))
        # under flush-to-zero a value below the normal range may be read as 0
        # each float32 rounding of a value below float32's normal range may lose up to
        # half its smallest subnormal (a small rate to a high power)
        under32 = (roundings + 1) * fmt("float32").eta / fmt(sc.dtype).u
        t = const(val, abs(float(val)) * (roundings * ratio + held + 1) + under32 + float(daz_scale(float(val), sc.daz)))
    else:
        t = sc.primary(float(lr), "lr")
    if hyper.decay:
        d = sc.primary(hyper.decay, "aux")
        t = A.div(t, A.add(const(1), A.mul(d, const(iterations))))
    return t


def _schedule_exact(s: Schedule, step_: int) -> tuple[gmpy2.mpfr, int]:
    """The schedule's exact value and how many roundings a float evaluation spends,
    counting the hyperparameters' own roundings at their condition numbers: rate**p
    carries the rate's rounding p times."""
    if s.kind == "piecewise":
        for b, val in zip(s.boundaries, s.values):
            if step_ <= b:
                return decimal_of(val), 0
        return decimal_of(s.values[-1]), 0
    p = exact(step_) / decimal_of(s.steps)
    if s.staircase:
        p = gmpy2.floor(p)
    if s.kind == "exponential":
        return decimal_of(s.initial) * decimal_of(s.rate) ** p, 6 + math.ceil(float(p))
    return decimal_of(s.initial) / (1 + decimal_of(s.rate) * p), 6


@dataclass
class _Slices:
    """A sparse gradient kept as its raw slices until it is densified."""

    idx: np.ndarray
    vals: Tracked
    shape: tuple[int, ...]


def _grad_input(g: Grad, daz: Format | None) -> Tracked | _Slices | None:
    if g is None:
        return None
    if isinstance(g, SparseGrad):
        return _Slices(np.asarray(g.indices, dtype=np.int64), from_array(np.asarray(g.values), daz), tuple(g.dense_shape))
    return from_array(g, daz)


def _densify(A: Arith, sl: _Slices, square: bool = False) -> Tracked:
    """Scatter-add the slices (or their squares) into a dense array; every addition of a
    repeated row rounds once."""
    vals = A.mul(sl.vals, sl.vals) if square else sl.vals
    x = np.empty(sl.shape, dtype=object)
    x[...] = exact(0)
    f = np.zeros(sl.shape)
    s = np.zeros(sl.shape)
    mag = np.zeros(sl.shape)
    count = np.zeros(sl.shape[:1], dtype=np.int64)
    np.add.at(x, sl.idx, vals.x)
    np.add.at(f, sl.idx, vals.f)
    np.add.at(s, sl.idx, np.broadcast_to(vals.s, vals.shape))
    np.add.at(mag, sl.idx, np.abs(vals.f))
    np.add.at(count, sl.idx, 1)
    extra = np.maximum(count - 1, 0).reshape((-1,) + (1,) * (len(sl.shape) - 1))
    margin = np.full(sl.shape, math.inf)
    if np.size(vals.margin) > 1:
        np.minimum.at(margin, sl.idx, vals.margin)
    return Tracked(x, f, s + extra * (mag + A.add_tiny), margin)


def _clip(A: Arith, sc: _Scalars, policy: str, hyper: Hyper, gs: list) -> list:
    """Clip dense gradients, or the raw slices of sparse ones, by the variant's policy."""
    order = ["clipvalue", "clipnorm", "global_clipnorm"]
    if policy == "first-of":
        first = next((k for k in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(hyper, k) is not None), None)
        order = [first] if first else []
    active = [k for k in order if getattr(hyper, k) is not None]
    tensor = lambda g: g.vals if isinstance(g, _Slices) else g  # noqa: E731
    rewrap = lambda g, t: _Slices(g.idx, t, g.shape) if isinstance(g, _Slices) else t  # noqa: E731
    for k in active:
        c = sc.primary(getattr(hyper, k), "param")
        if k == "clipvalue":
            gs = [None if g is None else rewrap(g, A.clip(tensor(g), c)) for g in gs]
        elif k == "clipnorm":
            gs = [None if g is None else rewrap(g, _scale_by_norm(A, tensor(g), _norm(A, [tensor(g)]), c)) for g in gs]
        else:
            norm = _norm(A, [tensor(g) for g in gs if g is not None])
            if sc.variant.global_norm_overflow == "nan" and not gmpy2.is_finite(mp(norm)):
                # an infinite norm (an infinite gradient, or in ieee mode an overflowed
                # sum of squares): this op marks every gradient NaN
                gs = [None if g is None else rewrap(g, A.mul(tensor(g), const(math.nan))) for g in gs]
                continue
            gs = [None if g is None else rewrap(g, _scale_by_norm(A, tensor(g), norm, c)) for g in gs]
    return gs


def _norm(A: Arith, gs: list[Tracked]) -> Tracked:
    total = None
    for g in gs:
        part = A.sum(A.mul(g, g))
        total = part if total is None else A.add(total, part)
    return A.sqrt(total)


def _scale_by_norm(A: Arith, g: Tracked, norm: Tracked, c: Tracked) -> Tracked:
    """g * c / max(norm, c): unchanged (up to two roundings) when the norm is within c."""
    return A.div(A.mul(g, c), A.maximum(norm, c))


def _step(variant: Variant, dtype: str, hyper: Hyper, st: ExactState, grads: list[Grad],
          mode: str, flush: Collection[str] = (), ieee: bool | str = False) -> StepResult:
    hyper = resolved(hyper)   # a callable hyperparameter counts with its value at step time
    _validate(variant, hyper, st, grads)
    # scalars held off the dtype's grid make even additions round in its subnormal range
    wider = compute_dtype(variant, dtype) != dtype
    A = Arith(dtype, dtype in flush, off_grid=wider, ieee=ieee)
    # addcdiv is one kernel: where it computes in a wider type (torch's opmath for half
    # formats) lr * m_hat cannot overflow the format on the way, so it is formed outside ieee mode
    kernel = Arith(dtype, dtype in flush, off_grid=True) if wider else A
    sc = _Scalars(variant, dtype, mode, dtype in flush)
    t = st.iterations + 1
    notes: list[str] = []

    # scalars shared by every parameter
    lr = _learning_rate(sc, A, hyper, st.iterations)
    b1, b2 = sc.primary(hyper.beta_1), sc.primary(hyper.beta_2)
    c1, c2 = sc.one_minus(hyper.beta_1, A), sc.one_minus(hyper.beta_2, A)
    eps = sc.primary(variant.effective_epsilon(hyper.epsilon), "eps")
    next_p1 = next_p2 = None
    if variant.beta_powers == "accumulated":
        # TF1: float32 accumulators, used cast to the parameter dtype, then multiplied
        # by beta in float32 for the next step.
        f32 = Arith("float32", "float32" in flush)
        acc1 = st.beta1_power if st.beta1_power is not None else _f32_beta(sc, hyper.beta_1)
        acc2 = st.beta2_power if st.beta2_power is not None else _f32_beta(sc, hyper.beta_2)
        p1, p2 = _cast_power(acc1, dtype, mode), _cast_power(acc2, dtype, mode)
        next_p1 = f32.mul(acc1, _f32_beta(sc, hyper.beta_1))
        next_p2 = f32.mul(acc2, _f32_beta(sc, hyper.beta_2))
    else:
        count_exact = variant.hyper_dtype == "float64" or variant.power_dtype in ("float64", "opmath")
        tt = t if mode == "decimal" or count_exact else _round_to(t, dtype)
        if tt != t:
            notes.append(f"step count {t} is held as {tt:g} in {dtype}")
        p1 = _pow(A, sc.power_base(hyper.beta_1), tt)
        p2 = _pow(A, sc.power_base(hyper.beta_2), tt)
    one = const(1)
    bc1, bc2 = A.sub(one, p1), A.sub(one, p2)

    gs = [_grad_input(g, sc.daz) for g in grads]
    if variant.clip_policy != "none" and any(getattr(hyper, k) is not None for k in ("clipvalue", "clipnorm", "global_clipnorm")):
        if variant.sparse_clip == "summed":
            gs = [_densify(A, g) if isinstance(g, _Slices) else g for g in gs]
        gs = _clip(A, sc, variant.clip_policy, hyper, gs)
    # v's target: g*g, except that Keras 3 squares the raw slices before summing them
    gsq = [_densify(A, g, square=True) if isinstance(g, _Slices) and variant.sparse == "squares-summed" else None
           for g in gs]
    gs = [_densify(A, g) if isinstance(g, _Slices) else g for g in gs]

    alpha = None
    if variant.formula == "epsilon-hat":
        alpha = A.div(A.mul(lr, A.sqrt(bc2)), bc1)
        if hyper.adaptive_epsilon:
            eps = A.mul(eps, A.sqrt(bc2))
    wd = sc.primary(hyper.weight_decay, "aux") if hyper.weight_decay else None
    mu = sc.primary(hyper.ema_momentum, "param") if hyper.use_ema else None
    if mu is not None and st.iterations == 0 and variant.ema_first_step == "copy":
        mu = const(0)   # Keras 3: the first average is a copy of the updated variable
    one_minus_mu = None
    if mu is not None:
        if variant.ema_one_minus == "double-then-cast" and not (st.iterations == 0 and variant.ema_first_step == "copy"):
            one_minus_mu = sc.one_minus_value(hyper.ema_momentum)
        else:
            one_minus_mu = A.sub(one, mu)
    freq = hyper.ema_overwrite_frequency
    overwrite = bool(mu is not None and freq and (st.iterations + 1) % freq == 0)

    out = ExactState([], [], [], t,
                     [] if st.vhat is not None else None,
                     [] if st.ema is not None else None, next_p1, next_p2)
    for i, (p, m, v, g, g2) in enumerate(zip(st.params, st.m, st.v, gs, gsq)):
        vh = st.vhat[i] if st.vhat is not None else None
        av = st.ema[i] if st.ema is not None else None
        if g is None:  # no gradient: the variable and its slots stay; its EMA still moves
            av2 = A.lerp(av, p, one_minus_mu, mu) if mu is not None else av
            out.params.append(av2 if overwrite else p)
            out.m.append(m)
            out.v.append(v)
            if vh is not None:
                out.vhat.append(vh)
            if av is not None:
                out.ema.append(av2)
            continue
        if hyper.maximize:   # torch: the gradient is negated before anything else
            g = A.neg(g)
        if wd is not None and variant.weight_decay == "l2":
            g = A.add(g, A.mul(wd, p))
        if wd is not None and variant.weight_decay == "decoupled":
            p = A.sub(p, A.mul(A.mul(p, wd), lr))
        # the new moments and variable are held in the format by every implementation
        # (unless it computes in a wider one): where they overflow decidedly, they are inf
        held = None if wider else A
        m2 = _held(held, A.lerp(m, g, c1, b1), m, g)
        g_sq = g2 if g2 is not None else A.mul(g, g)
        # g*g past the range: inf in every order, except torch's lerp form for a weight of
        # 1/2 or more (inf - inf = NaN), so then v is left to the alternatives
        v2 = _held(held if float(c2.f) < 0.5 else None, A.lerp(v, g_sq, c2, b2), v, g2 if g2 is not None else g)
        vh2 = None
        if variant.formula == "epsilon-hat":
            den_v = v2
            if hyper.amsgrad:
                vh2 = A.maximum(vh, v2)
                den_v = vh2
            den = A.add(A.sqrt(den_v), eps)
            p2_ = _held(held, A.sub_quotient(p, alpha, m2, den), p, alpha, m2, den, divisor(den))
        else:
            vc = A.div(v2, bc2)
            if hyper.amsgrad and variant.amsgrad == "optax":
                vh2 = A.maximum(vh, vc)
                vc = vh2
            elif hyper.amsgrad:
                vh2 = A.maximum(vh, v2)
                vc = A.div(vh2, bc2)
            if hyper.eps_root:
                vc = A.add(vc, sc.primary(hyper.eps_root, "eps"))
            den = A.add(A.sqrt(vc), eps)
            # torch's CPU addcdiv forms (-lr/bc1 * m) / den, optax (m_hat / den) * lr: the
            # two orders underflow and overflow in different places, so S and the
            # conditioning cover both (and in ieee mode an overflow of either is the outcome)
            mhat = A.div(m2, bc1)
            upd = _either(A.div(kernel.mul(lr, mhat), den), A.mul(lr, A.div(mhat, den)))
            p2_ = _held(held, A.sub(p, upd), p, lr, m2, den, divisor(bc1), divisor(den))
        av2 = None
        if mu is not None:
            av2 = _held(held, A.lerp(av, p2_, one_minus_mu, mu), av, p2_)
            if overwrite:
                p2_ = av2
        out.params.append(p2_)
        out.m.append(m2)
        out.v.append(v2)
        if out.vhat is not None:
            out.vhat.append(vh2 if vh2 is not None else vh)
        if out.ema is not None:
            out.ema.append(av2 if av2 is not None else av)
    return StepResult(out, dtype, alpha, notes)


def _either(a: Tracked, b: Tracked) -> Tracked:
    """One value formed in two op orders: the larger S and the smaller margin of the two;
    where one order's IEEE outcome is non-finite (ieee mode), that outcome."""
    with np.errstate(invalid="ignore"):
        take_b = np.isfinite(np.asarray(a.f)) & ~np.isfinite(np.asarray(b.f))
        s = np.maximum(np.asarray(a.s, dtype=np.result_type(a.s, b.s)), b.s)
        margin = np.minimum(a.margin, b.margin)
    if not np.any(take_b):
        return Tracked(a.x, a.f, s, margin)
    x = np.where(take_b, mp(b), mp(a))
    return Tracked(x, np.where(take_b, b.f, a.f), np.where(take_b, b.s, s), np.where(take_b, b.margin, margin))


def _held(A: Arith | None, t: Tracked, *inputs: Tracked | Any) -> Tracked:
    """t with its decided overflows made inf (Arith.saturate); `inputs` are t's operands
    (or bare margins), whose conditioning must not hang on an earlier overflow."""
    return t if A is None else A.saturate(t, margin_of(*inputs))


def _pow(A: Arith, base: Tracked, n: float) -> Tracked:
    if float(n).is_integer():
        return A.pow_int(base, int(n))
    if math.isinf(n):   # a count past the dtype's range: beta**inf is 0 or 1 (1**inf), exactly
        x = mp(base) ** exact(n)
        settled = base.s == 0 or abs(base.f) + DECISIVE_K * A.fmt.u * base.s < 1
        return Tracked(x, float(x), 0.0 if settled else math.inf, base.margin)
    x = mp(base) ** exact(n)
    return Tracked(x, float(x), 2.0 * abs(float(x)) + n * abs(float(x)) * (base.s / abs(base.f) if base.f else 0))


def _f32_beta(sc: _Scalars, beta: float) -> Tracked:
    """Beta as TF1 holds it for its accumulators (float32; S in float32 units)."""
    if sc.mode == "rounded":
        return const(_round_to(beta, "float32"))
    return const(decimal_of(beta), abs(beta))


def _cast_power(p: Tracked, dtype: str, mode: str) -> Tracked:
    """A float32 accumulator cast to the parameter dtype: exact unless the dtype is
    narrower than float32, when the cast rounds once."""
    ratio = fmt("float32").u / fmt(dtype).u
    if dtype in ("float32", "float64"):
        return Tracked(p.x, p.f, p.s * ratio, p.margin)
    if mode == "rounded" and p.s == 0:
        return const(_round_to(float(p.x), dtype))
    return Tracked(p.x, p.f, p.s * ratio + abs(p.f), p.margin)
