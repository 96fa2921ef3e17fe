"""Bit-exact emulation of one named op order in the target floating-point format.

The gate's normal mode judges a backend within K*u*S of the exact result, so any
correct op order passes and elements whose error model fails (a divisor or square root
argument near zero) are left unjudged. This module is the stricter oracle: it computes
what one named op order gives when every operation rounds correctly to the target
format (gmpy2 with the format's precision, exponent range and subnormals), so a
backend that claims that order can be held to bit-for-bit equality on every element,
ill-conditioned ones included.

What the order names is the sequence of tensor operations (`ORDERS`). Everything a
variant decides is read from its spec row, as the reference and the numpy backend
read it: where each hyperparameter is held (`lr_dtype`, `hyper_dtype`, `eps_dtype`,
`power_dtype`, `aux_dtype`), how 1 - beta is formed (`one_minus_beta`), the beta
powers (`beta_powers`), epsilon 0 (`zero_epsilon`), the EMA's first step and 1 - mu
(`ema_first_step`, `ema_one_minus`), the clipping policy and weight-decay form.

The elementary operations and how each rounds:
  + - * / sqrt   correctly rounded in the format (IEEE 754), signed zeros and
                 subnormals included; overflow gives inf, 0/0 and inf-inf give NaN
  cast           a double (a hyperparameter) or a float32 value rounded once to the format
  max            NaN when either operand is NaN, else the larger; on a tie (+0, -0) the
                 first operand (vhat = max(vhat, v): numpy's maximum, Eigen's cwiseMax)
  pow(b, t)      b ** t correctly rounded in float32 and then rounded to the format
                 when the format is narrower than float32 (what numpy, ml_dtypes,
                 Eigen and torch do for half formats: a float32 power, rounded once
                 more); correctly rounded in the format itself for float32 and float64.
                 A libm pow that is not correctly rounded differs from this on some
                 inputs, and exact mode reports it.

Scalars are formed once per step in the same arithmetic: alpha = (lr * sqrt(1 - p2)) /
(1 - p1), the decayed rate lr / (1 + decay * iterations), adaptive epsilon eps * sqrt(1
- p2), TF1's next float32 accumulators acc * beta in float32.

Not emulated, so a check that needs them is `unsupported` in exact mode (never judged
loosely): sparse gradients (each library scatters and deduplicates in its own order),
clipnorm and global_clipnorm (the order of a sum of squares is the library's), learning
rate schedules (evaluated in the library's own float arithmetic), the algorithm-1
formula (torch, optax), scalars held at "opmath", and flush-to-zero.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np

from adamconf.reference.state import AdamState, Grad, Hyper, Schedule, SparseGrad, np_dtype
from adamconf.reference.tracked import fmt
from adamconf.spec.model import Variant

__all__ = ["EMULATED_FEATURES", "ORDERS", "OpOrder", "Unemulated", "context", "power", "step", "unemulated"]


class Unemulated(ValueError):
    """The step uses something the emulator does not model (see the module doc)."""


@dataclass(frozen=True)
class OpOrder:
    """One named order of the tensor operations of an epsilon-hat step.

    moments  "kernel": m + (g - m) * (1 - b1)     (TF's ApplyAdam kernel, Keras 3)
             "page":   b1 * m + (1 - b1) * g      (the API pages' formulas)
             "lerp":   torch.lerp(m, g, w), w = 1 - b1: m + w * (g - m) when w < 0.5,
                       else g - (g - m) * (1 - w), 1 - w formed in the format
             (v likewise, with g*g for g and b2)
    update   "quotient": p - (alpha * m) / (sqrt(v) + eps)
             "scaled":   p - alpha * (m / (sqrt(v) + eps))
    ema      "weighted": mu * avg + (1 - mu) * p   (Keras's moving average)
             "lerp":     torch.lerp(avg, p, 1 - mu)
    Decoupled weight decay is p - (p * wd) * lr in every order; clipvalue is
    min(max(g, -c), c).
    """

    name: str
    doc: str
    moments: str
    update: str
    ema: str


ORDERS: dict[str, OpOrder] = {o.name: o for o in [
    OpOrder("tf-kernel", "TF's ApplyAdam kernel (training_ops.cc) and Keras's update_step: "
            "m += (g - m) * (1 - b1); v += (g*g - v) * (1 - b2); p -= (m * alpha) / (sqrt(v) + eps)",
            "kernel", "quotient", "weighted"),
    OpOrder("page", "the API pages' formulas: m = b1*m + (1 - b1)*g; v = b2*v + (1 - b2)*g*g; "
            "p -= alpha*m / (sqrt(v) + eps)", "page", "quotient", "weighted"),
    OpOrder("torch-lerp", "PyTorch's style: m and v by torch.lerp towards g and g*g with weight 1 - beta; "
            "p -= alpha * (m / (sqrt(v) + eps))", "lerp", "scaled", "lerp"),
]}

# Spec features whose arithmetic the emulator models; a step asking for any other is
# refused with Unemulated.
EMULATED_FEATURES = frozenset({"amsgrad", "clipvalue", "decay", "weight_decay", "ema", "adaptive_epsilon",
                               "callable_hyper", "use_locking", "global_step", "mesh", "jit_compile"})


def context(dtype: str) -> gmpy2.context:
    """A gmpy2 context that rounds exactly as the IEEE binary format of `dtype` does:
    its precision, its largest exponent, and gradual underflow to its subnormals."""
    f = fmt(dtype)
    return gmpy2.context(precision=f.p, emin=f.emin - f.p + 2, emax=f.emax + 1, subnormalize=True,
                         round=gmpy2.RoundToNearest)


def unemulated(variant: Variant, features: Sequence[str] | frozenset[str] = (), dtype: str | None = None,
               flushes: Sequence[str] = ()) -> str | None:
    """Why steps of this variant with these features cannot be emulated, or None."""
    if variant.formula != "epsilon-hat":
        return (f"variant {variant.id} uses the {variant.formula} formula; the exact orders are defined "
                "for the epsilon-hat variants only")
    held = (variant.hyper_dtype, variant.lr_dtype, variant.eps_dtype, variant.power_dtype, variant.aux_dtype)
    if variant.compute_dtype != "param" or "opmath" in held:
        return f"variant {variant.id} holds scalars at opmath, which the exact orders do not model"
    lacking = sorted(set(features) - EMULATED_FEATURES)
    if lacking:
        return (f"the exact orders do not emulate {', '.join(lacking)} (the library's own reduction, scatter "
                "or schedule arithmetic decides those bits); run without --exact-order to judge it within K*u*S")
    if variant.weight_decay == "l2" and "weight_decay" in features:
        return f"variant {variant.id} folds weight decay into the gradient (l2), which the exact orders do not model"
    if dtype is not None and dtype in flushes:
        return (f"the backend flushes subnormals to zero in {dtype}; the exact orders emulate IEEE gradual "
                "underflow, so they cannot judge it bit for bit")
    return None


# -- elementwise arithmetic in one format -------------------------------------------------

_add = np.frompyfunc(gmpy2.add, 2, 1)
_sub = np.frompyfunc(gmpy2.sub, 2, 1)
_mul = np.frompyfunc(gmpy2.mul, 2, 1)
_div = np.frompyfunc(gmpy2.div, 2, 1)
_sqrt = np.frompyfunc(gmpy2.sqrt, 1, 1)
_float = np.frompyfunc(float, 1, 1)
_mpfr = np.frompyfunc(gmpy2.mpfr, 1, 1)


def _max1(a: Any, b: Any) -> Any:
    if gmpy2.is_nan(a):
        return a
    if gmpy2.is_nan(b):
        return b
    return b if b > a else a


def _min1(a: Any, b: Any) -> Any:
    if gmpy2.is_nan(a):
        return a
    if gmpy2.is_nan(b):
        return b
    return b if b < a else a


_max = np.frompyfunc(_max1, 2, 1)
_min = np.frompyfunc(_min1, 2, 1)


def _pow(base: Any, t: Any) -> Any:
    return base ** t   # mpfr's pow: correctly rounded to the active context


def _lt_half(w: Any) -> bool:
    return bool(w < 0.5)


# wide enough to hold any double exactly
_WIDE = gmpy2.context(precision=64, emin=-1100, emax=1100)


class _Fmt:
    """Values of one format as (object arrays of) mpfr, and its correctly rounded ops.
    Every operation runs inside the format's context; inputs are values of the format,
    so reading them in is exact."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.ctx = context(dtype)
        self.T = np_dtype(dtype)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with gmpy2.context(self.ctx):
            return fn(*args)

    def array(self, a: np.ndarray) -> np.ndarray:
        x = np.asarray(a).astype(np.float64)
        return self.run(_mpfr, x.astype(object)) if x.shape else np.asarray(self.run(gmpy2.mpfr, float(x)), dtype=object)

    def scalar(self, x: float) -> Any:
        """A double rounded once to the format (read exactly first, in a wide context)."""
        with gmpy2.context(_WIDE):
            wide = gmpy2.mpfr(float(x))
        return self.cast(wide)

    def cast(self, x: Any) -> Any:
        """An mpfr from another format rounded once to this one."""
        return self.run(lambda: +x)

    def out(self, x: Any) -> np.ndarray:
        return np.asarray(_float(np.asarray(x, dtype=object)), dtype=np.float64).astype(self.T)

    def add(self, a: Any, b: Any) -> Any:
        return self.run(_add, a, b)

    def sub(self, a: Any, b: Any) -> Any:
        return self.run(_sub, a, b)

    def mul(self, a: Any, b: Any) -> Any:
        return self.run(_mul, a, b)

    def div(self, a: Any, b: Any) -> Any:
        return self.run(_div, a, b)

    def sqrt(self, a: Any) -> Any:
        return self.run(_sqrt, a)

    def max(self, a: Any, b: Any) -> Any:
        return _max(a, b)

    def min(self, a: Any, b: Any) -> Any:
        return _min(a, b)

    def pow(self, base: Any, t: Any) -> Any:
        """base ** t as the module doc defines it (via float32 for half formats)."""
        if self.T.itemsize < 4:
            return self.cast(_Fmt("float32").run(_pow, base, t))
        return self.run(_pow, base, t)


def power(base: float, t: float, dtype: str) -> float:
    """base ** t for two values of `dtype`, rounded as the module doc defines pow (via a
    correctly rounded float32 power for half formats). Backends that form their beta
    powers on the host use this rather than np.power, whose float32 and float64 loops
    run SVML on AVX-512 CPUs and can be an ulp off."""
    F = _Fmt(dtype)
    return float(F.pow(F.scalar(base), F.scalar(t)))


def _value(x: Any) -> float:
    """A hyperparameter's value at this step: a callable called, a number as is."""
    if isinstance(x, Schedule):
        raise Unemulated("a learning-rate schedule is evaluated in the library's own arithmetic; "
                         "the exact orders do not emulate it")
    return float(x()) if callable(x) else float(x)


# -- the step ----------------------------------------------------------------------------

@dataclass
class _Scalars:
    lr: Any
    b1: Any
    b2: Any
    c1: Any                 # 1 - b1, formed the variant's way
    c2: Any
    eps: Any
    alpha: Any
    wd: Any | None
    mu: Any | None
    omm: Any | None         # 1 - mu
    next_powers: tuple[float | None, float | None]


def _held(F: _Fmt, x: float, holder: str) -> Any:
    """A Python number as the variant holds it (float32 first, or straight from the
    double), then in the format."""
    if holder == "float32":
        return F.cast(_Fmt("float32").scalar(x))
    return F.scalar(x)


def _scalars(variant: Variant, F: _Fmt, hyper: Hyper, state: AdamState) -> _Scalars:
    it = int(state.iterations)
    hold = {"lr": variant.lr_dtype, "beta": variant.hyper_dtype, "eps": variant.eps_dtype or variant.hyper_dtype,
            "power": variant.power_dtype or variant.hyper_dtype, "aux": variant.aux_dtype}
    one = F.scalar(1.0)
    beta_1, beta_2 = _value(hyper.beta_1), _value(hyper.beta_2)
    lr = _held(F, _value(hyper.learning_rate), hold["lr"])
    if hyper.decay and "decay" in variant.features:             # lr / (1 + decay * iterations)
        lr = F.div(lr, F.add(one, F.mul(_held(F, hyper.decay, hold["aux"]), F.scalar(float(it)))))
    b1, b2 = _held(F, beta_1, hold["beta"]), _held(F, beta_2, hold["beta"])
    if variant.one_minus_beta == "in-dtype":
        c1, c2 = F.sub(one, b1), F.sub(one, b2)
    else:
        c1, c2 = F.scalar(1.0 - beta_1), F.scalar(1.0 - beta_2)
    eps_raw = None if hyper.epsilon is None else _value(hyper.epsilon)
    eps = _held(F, variant.effective_epsilon(eps_raw), hold["eps"])

    next_powers: tuple[float | None, float | None] = (None, None)
    if variant.beta_powers == "accumulated":       # TF1: float32 accumulators, times beta after use
        F32 = _Fmt("float32")
        f1, f2 = F32.scalar(beta_1), F32.scalar(beta_2)
        acc1 = f1 if state.beta1_power is None else F32.scalar(float(np.float32(state.beta1_power)))
        acc2 = f2 if state.beta2_power is None else F32.scalar(float(np.float32(state.beta2_power)))
        p1, p2 = F.cast(acc1), F.cast(acc2)
        next_powers = (float(F32.mul(acc1, f1)), float(F32.mul(acc2, f2)))
    else:
        t = F.scalar(float(it + 1))
        p1 = F.pow(_held(F, beta_1, hold["power"]), t)
        p2 = F.pow(_held(F, beta_2, hold["power"]), t)
    sq = F.sqrt(F.sub(one, p2))
    alpha = F.div(F.mul(lr, sq), F.sub(one, p1))
    if hyper.adaptive_epsilon and "adaptive_epsilon" in variant.features:
        eps = F.mul(eps, sq)

    wd = None
    if hyper.weight_decay and variant.weight_decay == "decoupled":
        wd = _held(F, hyper.weight_decay, hold["aux"])
    mu = omm = None
    if hyper.use_ema:
        first_copy = it == 0 and variant.ema_first_step == "copy"
        mu = F.scalar(0.0) if first_copy else F.scalar(float(hyper.ema_momentum))
        if variant.ema_one_minus == "double-then-cast" and not first_copy:
            omm = F.scalar(1.0 - float(hyper.ema_momentum))
        else:
            omm = F.sub(one, mu)
    return _Scalars(lr, b1, b2, c1, c2, eps, alpha, wd, mu, omm, next_powers)


def _moment(order: OpOrder, F: _Fmt, old: Any, target: Any, beta: Any, w: Any) -> Any:
    """The new first or second moment from its old value and its target (g or g*g)."""
    if order.moments == "kernel":
        return F.add(old, F.mul(F.sub(target, old), w))
    if order.moments == "page":
        return F.add(F.mul(beta, old), F.mul(w, target))
    return _lerp(F, old, target, w)


def _lerp(F: _Fmt, start: Any, end: Any, w: Any) -> Any:
    """torch.lerp with a scalar weight: start + w*(end - start) below one half, else
    end - (end - start)*(1 - w)."""
    if _lt_half(w):
        return F.add(start, F.mul(w, F.sub(end, start)))
    return F.sub(end, F.mul(F.sub(end, start), F.sub(F.scalar(1.0), w)))


def _update(order: OpOrder, F: _Fmt, p: Any, m: Any, alpha: Any, den: Any) -> Any:
    if order.update == "quotient":
        return F.sub(p, F.div(F.mul(m, alpha), den))
    return F.sub(p, F.mul(alpha, F.div(m, den)))


def _ema(order: OpOrder, F: _Fmt, avg: Any, p: Any, mu: Any, omm: Any) -> Any:
    if order.ema == "weighted":
        return F.add(F.mul(mu, avg), F.mul(omm, p))
    return _lerp(F, avg, p, omm)


def _clip(variant: Variant, F: _Fmt, hyper: Hyper, gs: list[Any]) -> list[Any]:
    if variant.clip_policy == "none" or hyper.clipvalue is None:
        return gs
    if hyper.clipnorm is not None or hyper.global_clipnorm is not None:
        raise Unemulated("clipnorm and global_clipnorm sum squares in the library's own order; "
                         "the exact orders do not emulate them")
    c = F.scalar(float(hyper.clipvalue))
    lo = F.scalar(-float(hyper.clipvalue))
    return [None if g is None else F.min(F.max(g, lo), c) for g in gs]


def step(order: str | OpOrder, variant: Variant, dtype: str, hyper: Hyper, state: AdamState,
         grads: Sequence[Grad]) -> AdamState:
    """The state one step of `variant` in `dtype` gives when `order`'s operations each
    round correctly to the format. Raises Unemulated for what the module doc excludes."""
    o = ORDERS[order] if isinstance(order, str) else order
    features = set(hyper.features())
    if any(isinstance(g, SparseGrad) for g in grads):
        features.add("sparse")
    why = unemulated(variant, features)
    if why:
        raise Unemulated(why)
    if hyper.maximize or hyper.eps_root:
        raise Unemulated("maximize and eps_root belong to the algorithm-1 variants, which the exact orders do not model")
    F = _Fmt(dtype)
    with np.errstate(all="ignore"):
        return _step(o, variant, F, hyper, state, list(grads))


def _step(o: OpOrder, variant: Variant, F: _Fmt, hyper: Hyper, state: AdamState, grads: list[Grad]) -> AdamState:
    sc = _scalars(variant, F, hyper, state)
    gs = _clip(variant, F, hyper, [None if g is None else F.array(g) for g in grads])
    freq = hyper.ema_overwrite_frequency
    overwrite = bool(sc.mu is not None and freq and (state.iterations + 1) % freq == 0)
    amsgrad = bool(hyper.amsgrad)
    params, ms, vs = [], [], []
    vhats: list[np.ndarray] | None = None if state.vhat is None else []
    emas: list[np.ndarray] | None = None if state.ema is None else []
    for i, g in enumerate(gs):
        p_in = np.asarray(state.params[i])
        p, m, v = F.array(p_in), F.array(state.m[i]), F.array(state.v[i])
        vh = None if state.vhat is None else F.array(state.vhat[i])
        if g is not None:
            if sc.wd is not None:                       # decoupled decay before the update
                p = F.sub(p, F.mul(F.mul(p, sc.wd), sc.lr))
            m = _moment(o, F, m, g, sc.b1, sc.c1)
            v = _moment(o, F, v, F.mul(g, g), sc.b2, sc.c2)
            den_v = v
            if amsgrad:
                vh = F.max(vh, v)
                den_v = vh
            p = _update(o, F, p, m, sc.alpha, F.add(F.sqrt(den_v), sc.eps))
        if emas is not None:
            if sc.mu is not None:   # the average moves for every variable, with or without a gradient
                avg = _ema(o, F, F.array(state.ema[i]), p, sc.mu, sc.omm)
                emas.append(F.out(avg))
                if overwrite:
                    p = avg
            else:
                emas.append(np.array(state.ema[i], copy=True))
        params.append(F.out(p))
        ms.append(F.out(m))
        vs.append(F.out(v))
        if vhats is not None:
            vhats.append(F.out(vh))
    b1p, b2p = sc.next_powers
    return AdamState(params, ms, vs, state.iterations + 1, vhats, b1p, b2p, emas)
