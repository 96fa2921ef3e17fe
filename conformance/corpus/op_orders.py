"""Four correct Adam backends that differ only in the order of floating-point ops.

All of them compute in the parameter dtype T with the same rounded scalars; the
conformance gate must accept every one of them (the differences are rounding only).

  PageOrder    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p -= alpha*m/(sqrt(v)+eps)
  KernelOrder  the TF C++ kernel / Keras 3: m += (g-m)*(1-b1); v += (g*g-v)*(1-b2);
               p -= (m*alpha)/(sqrt(v)+eps)
  LerpOrder    PyTorch's lerp: m = m + w*(g-m) if w < 0.5 else g - (g-m)*(1-w), w = 1-b1;
               p -= alpha*(m/(sqrt(v)+eps))
  FmaOrder     every a*b + c contracted into one fused multiply-add, rounded once to T
               (emulated exactly with gmpy2 in the IEEE format of T, subnormals included)
"""
from __future__ import annotations

import gmpy2
import numpy as np

from .textbook import LEGACY_VARIANTS, StepContext, TextbookAdam


class PageOrder(TextbookAdam):
    """The formulas exactly as the pages write them (TextbookAdam's own order)."""


class KernelOrder(TextbookAdam):
    """The order of TF's ApplyAdam kernel (training_ops.cc) and Keras 3's update_step;
    the EMA in tf.train.ExponentialMovingAverage's form avg -= (avg - p) * (1 - mu)."""

    def update_m(self, ctx, m, g):
        return m + (g - m) * ctx.one_minus_b1

    def update_v(self, ctx, v, gg):
        return v + (gg - v) * ctx.one_minus_b2

    def apply_update(self, ctx, p, m, denom):
        return p - (m * ctx.alpha) / denom

    def ema(self, ctx, avg, p):
        mu, one_minus_mu = self.ema_momentum(ctx)
        return avg - (avg - p) * one_minus_mu


def _lerp(ctx: StepContext, start: np.ndarray, end: np.ndarray, w) -> np.ndarray:
    """torch.lerp(start, end, w) in T, with torch's two-sided formula."""
    if w < ctx.s(0.5):
        return start + w * (end - start)
    return end - (end - start) * (ctx.s(1) - w)


class LerpOrder(TextbookAdam):
    """PyTorch's style: moments by lerp toward the target, the step as alpha*(m/denom)."""

    def update_m(self, ctx, m, g):
        return _lerp(ctx, m, g, ctx.one_minus_b1)

    def update_v(self, ctx, v, gg):
        return _lerp(ctx, v, gg, ctx.one_minus_b2)

    def apply_update(self, ctx, p, m, denom):
        return p - ctx.alpha * (m / denom)

    def ema(self, ctx, avg, p):
        mu, one_minus_mu = self.ema_momentum(ctx)
        return _lerp(ctx, avg, p, one_minus_mu)


# --------------------------------------------------------------------------- FMA
def _context(dtype_name: str) -> gmpy2.context:
    """gmpy2 context that rounds like the IEEE format of T, subnormals included."""
    if dtype_name == "float16":
        return gmpy2.ieee(16)
    if dtype_name == "float32":
        return gmpy2.ieee(32)
    if dtype_name == "float64":
        return gmpy2.ieee(64)
    if dtype_name == "bfloat16":  # 8 significand bits, float32's exponent range
        return gmpy2.context(precision=8, emin=-132, emax=128, subnormalize=True)
    raise ValueError(f"no FMA format for {dtype_name}")


_FMA = np.frompyfunc(gmpy2.fma, 3, 1)
_FLOAT = np.frompyfunc(float, 1, 1)


def fma(ctx: StepContext, a, b, c) -> np.ndarray:
    """a*b + c with a single rounding to T, element-wise (inputs are values of T, so
    converting them to float64 and then to mpfr is exact)."""
    a, b, c = (np.asarray(x).astype(ctx.T, copy=False).astype(np.float64) for x in (a, b, c))
    with gmpy2.context(_context(ctx.dtype)):
        r = _FMA(a, b, c)
    r = np.asarray(_FLOAT(r), dtype=np.float64)
    return r.astype(ctx.T)


class FmaOrder(TextbookAdam):
    """A compiler that contracts every a*b + c into one fused multiply-add."""

    def decayed_lr(self, ctx):
        if ctx.variant in LEGACY_VARIANTS and ctx.hyper.decay:
            return ctx.lr / fma(ctx, ctx.s(np.float32(ctx.hyper.decay)), ctx.s(ctx.iterations), ctx.s(1))[()]
        return ctx.lr

    def weight_decay(self, ctx, p, g):
        wd = ctx.hyper.weight_decay
        if ctx.variant == "keras3" and wd:
            p = fma(ctx, -(p * ctx.s(np.float32(wd))), ctx.lr, p)
        return p, g

    def update_m(self, ctx, m, g):
        return fma(ctx, ctx.b1, m, ctx.one_minus_b1 * g)

    def update_v(self, ctx, v, gg):
        return fma(ctx, ctx.b2, v, ctx.one_minus_b2 * gg)

    def apply_update(self, ctx, p, m, denom):
        return fma(ctx, -ctx.alpha, m / denom, p)

    def ema(self, ctx, avg, p):
        mu, one_minus_mu = self.ema_momentum(ctx)
        return fma(ctx, mu, avg, one_minus_mu * p)


CORRECT = [PageOrder(), KernelOrder(), LerpOrder(), FmaOrder()]


def _flush(a, T):
    """Flush-to-zero in T: every magnitude below the smallest normal number becomes 0."""
    a = np.asarray(a)
    if a.dtype.kind != "f" and a.dtype.name != "bfloat16":
        return a
    tiny = float(np.finfo(np.float32).tiny) if a.dtype.name == "bfloat16" else float(np.finfo(a.dtype).tiny)
    f = a.astype(np.float64)
    return np.where(np.abs(f) < tiny, 0.0, f).astype(a.dtype)


def _flush32(p):
    """TF1's float32 beta-power accumulators, flushed like any float32 value."""
    return p if p is None or abs(p) >= float(np.finfo(np.float32).tiny) else 0.0


def flushed_step(step, variant, dtype, hyper, state, grads):
    """`step` run with denormals-are-zero on every input and flush-to-zero on every
    result it hands back."""
    from adamconf.reference.state import SparseGrad
    T = state.params[0].dtype
    fl = lambda xs: None if xs is None else [_flush(x, T) for x in xs]  # noqa: E731
    st = type(state)(fl(state.params), fl(state.m), fl(state.v), state.iterations, fl(state.vhat),
                     _flush32(state.beta1_power), _flush32(state.beta2_power), fl(state.ema))
    gs = [g if g is None else (SparseGrad(g.indices, _flush(g.values, T), g.dense_shape)
                               if isinstance(g, SparseGrad) else _flush(g, T)) for g in grads]
    out = step(variant, dtype, hyper, st, gs)
    return type(out)(fl(out.params), fl(out.m), fl(out.v), out.iterations, fl(out.vhat),
                     _flush32(out.beta1_power), _flush32(out.beta2_power), fl(out.ema))


class FlushedKernelOrder(KernelOrder):
    """The kernel order run the way TF's CPU executors run it: denormals-are-zero on
    every input and flush-to-zero on every result it hands back (and on the moments
    in between). It declares so; the gate then allows the flush."""

    flushes_denormals = ("bfloat16", "float32", "float64")

    def step(self, variant, dtype, hyper, state, grads):
        return flushed_step(super().step, variant, dtype, hyper, state, grads)

    def update_m(self, ctx, m, g):
        return _flush(super().update_m(ctx, m, g), ctx.T)

    def update_v(self, ctx, v, gg):
        return _flush(super().update_v(ctx, v, _flush(gg, ctx.T)), ctx.T)
