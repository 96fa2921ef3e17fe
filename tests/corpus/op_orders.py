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
