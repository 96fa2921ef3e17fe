"""Exact values that carry their own rounding-error scale (running error analysis).

Each `Tracked` holds
  x       the exact value at the working precision (gmpy2 mpfr, scalar or object array)
  f       a float64 shadow of x, used only to size magnitudes
  s       the error scale S, in units of the target dtype's unit roundoff u: a correct
          float implementation that forms the same terms stays within K*u*S (to first
          order), whatever order it forms them in
  margin  the smallest |d| / S_d over every divisor and square-root argument d on the
          way: where K*u >= margin/2 the first-order model no longer holds (a divisor
          could reach zero), and the element is reported as ill-conditioned instead.

`Arith` applies the rules of Higham's running error analysis for one target format:
each operation adds |result| (one rounding) to the propagated scales of its operands,
and each multiply or divide adds eta/u for underflow (eta = half the smallest
subnormal). Composite operations whose op order varies between correct
implementations (`lerp`) use a scale that covers every order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np

# One mpfr times a float object array converts the floats exactly, and is ~10x faster
# than calling mpfr() per element.
_ONE = gmpy2.mpfr(1)
_sqrt = np.frompyfunc(gmpy2.sqrt, 1, 1)
_fma = np.frompyfunc(gmpy2.fma, 3, 1)
_to_float = np.frompyfunc(float, 1, 1)


@dataclass(frozen=True)
class Format:
    """The target floating-point format whose rounding errors are being bounded."""

    name: str
    p: int          # significand bits, implicit bit included
    emin: int       # exponent of the smallest normal number
    emax: int       # exponent of the largest finite number

    @property
    def u(self) -> float:
        return 2.0 ** -self.p

    @property
    def eta(self) -> float:
        """Half the smallest subnormal: the absolute error an underflow can add."""
        return 2.0 ** (self.emin - self.p)

    @property
    def max(self) -> float:
        return (2.0 - 2.0 ** (1 - self.p)) * 2.0 ** self.emax


FORMATS = {
    "float16": Format("float16", 11, -14, 15),
    "bfloat16": Format("bfloat16", 8, -126, 127),
    "float32": Format("float32", 24, -126, 127),
    "float64": Format("float64", 53, -1022, 1023),
}


def fmt(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(FORMATS)}") from None


class Tracked:
    __slots__ = ("x", "f", "s", "margin")

    def __init__(self, x: Any, f: Any, s: Any = 0.0, margin: Any = math.inf) -> None:
        self.x, self.f, self.s, self.margin = x, f, s, margin

    @property
    def shape(self) -> tuple[int, ...]:
        return np.shape(self.f)

    def __repr__(self) -> str:
        return f"Tracked(x={self.x!r}, s={self.s!r})"


def exact(value: Any) -> gmpy2.mpfr:
    """An mpfr of a float or a decimal string at the current precision."""
    if isinstance(value, str):
        return gmpy2.mpfr(value)
    return _ONE * float(value)


def decimal_of(value: float) -> gmpy2.mpfr:
    """The decimal the user typed: Python's shortest repr of the float, read exactly."""
    return gmpy2.mpfr(repr(float(value)))


def const(value: Any, s: float = 0.0) -> Tracked:
    """A scalar input; s is the rounding it has already suffered, in u units."""
    x = value if isinstance(value, gmpy2.mpfr) else exact(value)
    return Tracked(x, float(x), s)


def from_array(a: np.ndarray) -> Tracked:
    """An exact array input (every float16/bfloat16/float32/float64 fits a double)."""
    f = np.asarray(a).astype(np.float64)
    return Tracked(_ONE * f.astype(object), f, np.zeros(f.shape))


def to_float64(t: Tracked) -> np.ndarray:
    """The exact value rounded once to float64."""
    x = t.x
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return np.float64(float(x))


class Arith:
    """Tracked operations for one target format."""

    def __init__(self, dtype: str) -> None:
        self.fmt = fmt(dtype)
        self.tiny = self.fmt.eta / self.fmt.u   # underflow, in u units

    # -- elementary operations --------------------------------------------------
    def _ovf(self, f: Any, margin: Any) -> Any:
        """An intermediate past the largest finite number voids the first-order model."""
        with np.errstate(invalid="ignore"):
            return np.where(np.abs(f) > self.fmt.max, 0.0, margin)

    def add(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f + b.f
        return Tracked(a.x + b.x, f, a.s + b.s + np.abs(f), self._ovf(f, np.minimum(a.margin, b.margin)))

    def sub(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f - b.f
        return Tracked(a.x - b.x, f, a.s + b.s + np.abs(f), self._ovf(f, np.minimum(a.margin, b.margin)))

    def neg(self, a: Tracked) -> Tracked:
        return Tracked(-a.x, -a.f, a.s, a.margin)

    def mul(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f * b.f
        s = np.abs(b.f) * a.s + np.abs(a.f) * b.s + np.abs(f) + self.tiny
        return Tracked(a.x * b.x, f, s, self._ovf(f, np.minimum(a.margin, b.margin)))

    def div(self, a: Tracked, b: Tracked) -> Tracked:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = a.f / b.f
            ab = np.abs(b.f)
            s = a.s / ab + np.abs(f) * b.s / ab + np.abs(f) + self.tiny
            m = np.where(b.s > 0, ab / np.where(b.s > 0, b.s, 1.0), np.where(ab > 0, math.inf, 0.0))
        return Tracked(_safe_div(a.x, b.x), f, s, self._ovf(f, np.minimum(np.minimum(a.margin, b.margin), m)))

    def sqrt(self, a: Tracked) -> Tracked:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.sqrt(a.f)
            s = np.where(a.s > 0, a.s / (2.0 * f), 0.0) + f
            m = np.where(a.s > 0, a.f / np.where(a.s > 0, a.s, 1.0), math.inf)
        x = _sqrt(a.x) if isinstance(a.x, np.ndarray) else gmpy2.sqrt(a.x)
        return Tracked(x, f, s, np.minimum(a.margin, m))

    def maximum(self, a: Tracked, b: Tracked) -> Tracked:
        """Exact max; its error is at most the larger error of the two operands."""
        pick = a.f >= b.f
        x = np.where(a.x >= b.x, a.x, b.x)
        return Tracked(x, np.where(pick, a.f, b.f), np.maximum(a.s, b.s), np.minimum(a.margin, b.margin))

    def clip(self, a: Tracked, c: Tracked) -> Tracked:
        """Clip to [-c, c]; a clipped element inherits the scale of c."""
        lo = np.asarray(a.x < -c.x, dtype=bool)
        hi = np.asarray(a.x > c.x, dtype=bool)
        x = np.where(lo, -c.x, np.where(hi, c.x, a.x))
        f = np.where(lo, -c.f, np.where(hi, c.f, a.f))
        s = np.where(lo | hi, c.s, a.s)
        return Tracked(x, f, s, np.minimum(a.margin, c.margin))

    def pow_int(self, a: Tracked, n: int, extra: float = 1.0) -> Tracked:
        """a**n for a scalar a; a library pow rounds within `extra` ulps (powf and pow
        are faithful), and is exact for n = 1 and for a base of 0 or 1."""
        x = a.x ** n
        f = float(x)
        if n == 1 or (a.s == 0 and (a.x == 1 or a.x == 0)):
            return Tracked(x, f, a.s, a.margin)
        cond = n * abs(f) * (a.s / abs(a.f)) if a.f else 0.0
        return Tracked(x, f, cond + extra * abs(f) + self.tiny, a.margin)

    # -- composites whose op order varies between correct implementations -------
    def lerp(self, a: Tracked, b: Tracked, w: Tracked, c: Tracked) -> Tracked:
        """c*a + w*b with c = 1 - w (moment and EMA updates).

        Correct implementations form this as c*a + w*b, a + (b - a)*w, or a torch-style
        lerp; their first-order errors are all bounded by
          |a| + 2|w*b| + |result|  (plus the operands' own scales, and the hyper
          rounding scales of w and c times |b| and |a|).
        """
        x = _fma(c.x, a.x, w.x * b.x) if isinstance(a.x, np.ndarray) else c.x * a.x + w.x * b.x
        f = c.f * a.f + w.f * b.f
        s = (np.abs(c.f) * a.s + np.abs(w.f) * b.s + c.s * np.abs(a.f) + w.s * np.abs(b.f)
             + np.abs(a.f) + 2.0 * np.abs(w.f * b.f) + np.abs(f) + 2.0 * self.tiny)
        return Tracked(x, f, s, self._ovf(f, np.minimum(a.margin, b.margin)))

    def sum(self, a: Tracked) -> Tracked:
        """Sum of all elements; a reduction of n terms is allowed ceil(log2 n)+1 roundings
        of the total magnitude (pairwise or tree order, as numpy and TF reduce)."""
        n = max(int(np.size(a.f)), 1)
        x = _ONE * 0
        for v in np.ravel(a.x):
            x = x + v
        f = float(np.sum(a.f))
        depth = math.ceil(math.log2(n)) + 1 if n > 1 else 0
        s = float(np.sum(a.s)) + depth * float(np.sum(np.abs(a.f)))
        return Tracked(x, f, s, float(np.min(a.margin)) if np.size(a.margin) else math.inf)

    def where(self, cond: np.ndarray, a: Tracked, b: Tracked) -> Tracked:
        return Tracked(np.where(cond, a.x, b.x), np.where(cond, a.f, b.f),
                       np.where(cond, a.s, b.s), np.where(cond, a.margin, b.margin))


def _safe_div(a: Any, b: Any) -> Any:
    """Exact division where x/0 gives the IEEE outcome (inf or nan) instead of raising."""
    try:
        return a / b
    except ZeroDivisionError:  # pragma: no cover - gmpy2 follows IEEE by default
        return gmpy2.nan()
