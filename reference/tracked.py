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
subnormal). Under flush-to-zero (`Arith(dtype, flush=True)`, how TensorFlow's CPU
kernels and many GPU kernels run) a result below the smallest normal number becomes 0
and such an input counts as 0, so every operation, additions included, may lose up to
that smallest normal number instead. Composite operations whose op order varies between correct
implementations (`lerp`) use a scale that covers every order.

IEEE outcomes that exact arithmetic decides are kept exact: an infinite result formed
from an infinite operand carries no rounding error, and `Arith.saturate` turns a held
quantity whose exact value lies so far past the largest finite number that every
correct order rounds it to infinity into that infinity, so what follows from it is
judged instead of being left ill-conditioned. In ieee mode (`Arith(dtype, ieee=...)`,
the outcome of one op order) intermediates overflow the same way, and a rounding below
the normal range that every error within the bound sends to the same subnormal or
zero becomes that value (`Arith.round_subnormal`).
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

# An overflow counts as decided when even DECISIVE_K * u * S cannot bring the value back
# under the rounding threshold, with operands better conditioned than 2 * DECISIVE_K * u:
# a margin well above every K in spec/tolerances.toml (tests/test_reference.py holds it so).
DECISIVE_K = 64.0
# The float64 shadow of float64 data: x86's 80-bit long double where numpy has one (its
# exponent reaches far past 2**1024), else float64 itself.
SHADOW64 = np.longdouble if np.finfo(np.longdouble).maxexp > 1024 else np.float64


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

    @property
    def overflow(self) -> Any:
        """The smallest magnitude that rounds to infinity (round to nearest, ties to
        even), in the shadow type (for float64 it lies past the largest double)."""
        two = SHADOW64(2)
        return (two - two ** -self.p) * two ** self.emax


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
    """raw: x still holds the input's Python floats (exact doubles). Mixed float/mpfr
    operations are exact, so inputs are converted only where two raw operands meet;
    this keeps the reference about a third faster."""

    __slots__ = ("x", "f", "s", "margin", "raw", "bits")

    def __init__(self, x: Any, f: Any, s: Any = 0.0, margin: Any = math.inf, raw: bool = False,
                 bits: int = 53) -> None:
        if isinstance(x, float):   # a plain double is always raw, whoever built it
            raw = True
        self.x, self.f, self.s, self.margin, self.raw = x, f, s, margin, raw
        self.bits = bits   # raw only: significant bits of the doubles in x (at most 53)

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


def _sig_bits(x: float) -> int:
    n, d = float(x).as_integer_ratio()
    return max(n.bit_length() - (n & -n).bit_length() + 1, 1) if n else 1


def const(value: Any, s: float = 0.0) -> Tracked:
    """A scalar input; s is the rounding it has already suffered, in u units. A plain
    float stays a raw double, so products with short inputs can be formed in float64."""
    if isinstance(value, (float, int)) and not isinstance(value, bool) and math.isfinite(value):
        v = float(value)
        return Tracked(v, v, s, raw=True, bits=_sig_bits(v))
    x = value if isinstance(value, gmpy2.mpfr) else exact(value)
    return Tracked(x, float(x), s)


def from_array(a: np.ndarray, daz: Format | None = None) -> Tracked:
    """An exact array input (every float16/bfloat16/float32/float64 fits a double).
    With `daz`, a subnormal element of that format may be read as 0: its own magnitude
    becomes its error scale."""
    a = np.asarray(a)
    d = a.astype(np.float64)
    bits = {2: 11, 4: 24, 8: 53}.get(a.dtype.itemsize, 53) if a.dtype.name != "bfloat16" else 8
    # float64 data gets a wider shadow, so squares and sums past the double range keep
    # their magnitudes (and S stays finite) instead of becoming inf
    f = d.astype(SHADOW64) if a.dtype == np.float64 else d
    return Tracked(d.astype(object), f, daz_scale(d, daz), raw=True, bits=bits)


def daz_scale(f: Any, daz: Format | None) -> Any:
    """|x|/u where x is subnormal in `daz` (denormals-are-zero reads it as 0), else 0."""
    if daz is None:
        return np.zeros(np.shape(f))
    a = np.abs(np.asarray(f, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        return np.where((a > 0) & (a < 2.0 ** daz.emin), a / daz.u, 0.0)


def _exact_product(a: Tracked, b: Tracked) -> bool:
    """Both raw and short enough that the float64 product is exact (the operands come
    from formats whose products stay inside float64's normal range)."""
    return a.raw and b.raw and a.bits + b.bits <= 53


def mp(t: Tracked) -> Any:
    """t's exact value as mpfr (converting raw doubles once)."""
    return _ONE * t.x if t.raw else t.x


def _pair(a: Tracked, b: Tracked) -> tuple[Any, Any]:
    """Operands for one exact operation: never two raw doubles (that would round), and
    a raw scalar is converted once rather than once per element it meets."""
    ax = mp(a) if a.raw and (b.raw or not isinstance(a.x, np.ndarray)) else a.x
    bx = mp(b) if b.raw and not isinstance(b.x, np.ndarray) else b.x
    return ax, bx


def to_float64(t: Tracked) -> np.ndarray:
    """The exact value rounded once to float64."""
    x = t.x
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return np.float64(float(x))


class Arith:
    """Tracked operations for one target format."""

    def __init__(self, dtype: str, flush: bool = False, off_grid: bool = False, ieee: bool | str = False) -> None:
        """off_grid: operands may lie off the format's grid (scalars held in a wider
        type), so an addition can round in the subnormal range too. ieee: every
        operation, and the plain op order inside the composites (b - a in a lerp, the
        product before the quotient, a sum of squares), overflows to inf where that
        overflow is decided, and every operation rounds to zero where that is decided
        (g*g far below the subnormal range): the outcome of an implementation that
        forms them so."""
        self.fmt = fmt(dtype)
        self.ieee = bool(ieee)
        # the update alpha * m / den: the kernels scale m first; ieee="quotient-first"
        # is the outcome of an order that divides first (see sub_quotient)
        self.quotient_first = ieee == "quotient-first"
        self.flush = flush
        if flush:
            # a result below the smallest normal number may become 0: that number / u,
            # for every operation (an addition of normals can land there too)
            self.tiny = self.add_tiny = 2.0 ** (self.fmt.emin + self.fmt.p)
        else:
            # underflow eta / u, in u units (eta itself underflows for float64); gradual
            # underflow makes additions of values on the grid exact below the normal range
            self.tiny = 2.0 ** self.fmt.emin
            self.add_tiny = self.tiny if off_grid else 0.0

    def _under(self, f: Any, prop: Any, exact_zero: Any, mag: Any = None) -> Any:
        """The underflow allowance of one rounding: none where the result is an exact
        zero (an exactly zero operand) or lies in the normal range whatever errors
        within DECISIVE_K * u * prop its operands carry. A rounding never moves a value
        by more than the value itself, so a result far below the subnormal range (of
        magnitude at most `mag`, |f| by default) may lose only |f| + prop of it:
        min(eta, |x| + K*u*prop) <= K*u*min(eta/u, |x|/u + prop) for every K >= 1."""
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.abs(f) if mag is None else np.abs(mag)
            normal = np.abs(f) - DECISIVE_K * self.fmt.u * prop >= 2.0 ** self.fmt.emin
            # only where |f| / u is a normal double, as S is (below every eta but float64's,
            # whose decided roundings ieee mode judges instead)
            small = np.where(a >= 2.0 ** -960, np.minimum(self.tiny, 2.0 * a / self.fmt.u + prop), self.tiny)
            return np.where(normal | exact_zero, 0.0, small)

    # -- elementary operations --------------------------------------------------
    def _ovf(self, f: Any, margin: Any, *operands: Any) -> Any:
        """An intermediate at or past the rounding threshold (where round to nearest gives
        inf; between the largest finite number and it, the value rounds to that number
        like any other) voids the first-order model, unless an operand was already
        infinite or NaN (then IEEE rules decide)."""
        with np.errstate(invalid="ignore"):
            flag = np.abs(f) >= self.fmt.overflow
            for op in operands:
                flag = flag & np.isfinite(op)
            return np.where(flag, 0.0, margin)

    def add(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f + b.f
        x, y = _pair(a, b)
        s = _inf_exact(f, a.s + b.s + np.abs(f) + self.add_tiny, a, b)
        return self._op(Tracked(x + y, f, s, self._ovf(f, np.minimum(a.margin, b.margin), a.f, b.f)), a, b,
                        prop=a.s + b.s)

    def sub(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f - b.f
        x, y = _pair(a, b)
        s = _inf_exact(f, a.s + b.s + np.abs(f) + self.add_tiny, a, b)
        return self._op(Tracked(x - y, f, s, self._ovf(f, np.minimum(a.margin, b.margin), a.f, b.f)), a, b,
                        prop=a.s + b.s)

    def neg(self, a: Tracked) -> Tracked:
        return Tracked(-a.x, -a.f, a.s, a.margin, a.raw)

    def mul(self, a: Tracked, b: Tracked) -> Tracked:
        f = a.f * b.f
        prop = np.abs(b.f) * a.s + np.abs(a.f) * b.s
        s = _inf_exact(f, prop + np.abs(f) + self._under(f, prop, _zero(a) | _zero(b)), a, b)
        m = self._ovf(f, np.minimum(a.margin, b.margin), a.f, b.f)
        if _exact_product(a, b):
            x = f.astype(np.float64).astype(object) if isinstance(f, np.ndarray) else float(f)
            return self._op(Tracked(x, f, s, m, raw=True, bits=a.bits + b.bits), a, b, prop=prop)
        x, y = _pair(a, b)
        return self._op(Tracked(x * y, f, s, m), a, b, prop=prop)

    def div(self, a: Tracked, b: Tracked, plain: bool = True) -> Tracked:
        """a / b; plain=False: a quotient the plain order never forms on its own (see
        sub_quotient), so ieee mode leaves it unrounded."""
        with np.errstate(divide="ignore", invalid="ignore"):
            f = a.f / b.f
            ab = np.abs(b.f)
            prop = a.s / ab + np.abs(f) * b.s / ab
            s = _inf_exact(f, prop + np.abs(f) + self._under(f, prop, _zero(a) & (ab > 0)), a, b)
        m = divisor(b)
        margin = np.minimum(np.minimum(a.margin, b.margin), m)
        if plain or not self.ieee:   # an overflow of the quotient alone voids the bound of orders that form it
            margin = self._ovf(f, margin, a.f, b.f)
        out = Tracked(_safe_div(*_pair(a, b)), f, s, margin)
        return self._op(out, a, b, m, prop=prop) if plain else out

    def sqrt(self, a: Tracked) -> Tracked:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.sqrt(a.f)
            # |sqrt(a + d) - sqrt(a)| <= min(|d| / (2 sqrt(a)), sqrt(|d|)), and
            # sqrt(K*u*S) <= K*u*sqrt(S/u) for K >= 1: near zero the absolute bound holds
            prop = np.where(a.s > 0, np.minimum(a.s / (2.0 * f), np.sqrt(a.s / self.fmt.u)), 0.0)
            s = _inf_exact(f, prop + f, a)
        x = _sqrt(a.x) if isinstance(a.x, np.ndarray) else gmpy2.sqrt(mp(a))
        return Tracked(x, f, s, a.margin)

    def sub_quotient(self, p: Tracked, alpha: Tracked, num: Tracked, den: Tracked) -> Tracked:
        """p - alpha * num / den in two exact operations (a quotient and a fused
        multiply-add); S is that of the three separate roundings a backend spends. The
        plain order (the TF kernel's, Keras's) forms alpha * num before dividing, so in
        ieee mode num / den alone neither overflows nor rounds; with quotient_first it
        is num / den that is formed, and alpha * num that is not."""
        q = self.div(num, den, plain=self.quotient_first)
        upd_f = alpha.f * q.f
        # the order (alpha * num) / den can underflow before the division: eta / |den|
        with np.errstate(divide="ignore"):
            under = self.tiny / np.abs(den.f)
        upd_s = np.abs(q.f) * alpha.s + np.abs(alpha.f) * q.s + np.abs(upd_f) + self.tiny + under
        f = p.f - upd_f
        s = _inf_exact(f, p.s + _inf_exact(upd_f, upd_s, alpha, q) + np.abs(f) + self.add_tiny, p, alpha, q)
        ops = (p.f, alpha.f, num.f, den.f)
        margin = self._ovf(f, self._ovf(upd_f, np.minimum(np.minimum(p.margin, q.margin), alpha.margin), *ops), *ops)
        # the order (alpha * num) / den overflows first, even where den is inf (inf / inf)
        margin = self._ovf(alpha.f * num.f, margin, alpha.f, num.f)
        x = _fma(-mp(alpha), q.x, p.x) if isinstance(q.x, np.ndarray) else p.x - mp(alpha) * q.x
        out = Tracked(x, f, s, margin)
        if self.ieee and not self.quotient_first:
            # alpha * num formed first, then divided by den (> 0): its overflow is the update's sign
            inputs = margin_of(p, q, alpha)
            prod = alpha.f * num.f
            dec = self._decided(prod, np.abs(prod) + np.abs(alpha.f) * num.s + np.abs(num.f) * alpha.s, inputs)
            out = self._to_inf(out, dec & np.isfinite(p.f) & (den.f > 0),
                               np.where(np.isinf(den.f), math.nan, -np.sign(prod) * math.inf))
        return self._op(out, p, alpha, num, den)

    def maximum(self, a: Tracked, b: Tracked) -> Tracked:
        """Exact max; its error is at most the larger error of the two operands."""
        pick = a.f >= b.f
        ax, bx = (a.x, b.x) if (a.raw and b.raw) else (mp(a), mp(b))   # never a mixed array
        x = np.where(ax >= bx, ax, bx)
        # where the pick is decided (the operands lie further apart than their errors
        # can reach), only the picked operand's conditioning matters
        with np.errstate(invalid="ignore"):
            well = 2.0 * DECISIVE_K * self.fmt.u
            gap = (np.abs(a.f - b.f) > DECISIVE_K * self.fmt.u * (a.s + b.s)) & (a.margin > well) & (b.margin > well)
        margin = np.where(gap, np.where(pick, a.margin, b.margin), np.minimum(a.margin, b.margin))
        return Tracked(x, np.where(pick, a.f, b.f), np.maximum(a.s, b.s), margin, a.raw and b.raw)

    def clip(self, a: Tracked, c: Tracked) -> Tracked:
        """Clip to [-c, c]; a clipped element inherits the scale of c."""
        ax, cx = (a.x, c.x) if (a.raw and c.raw) else (mp(a), mp(c))   # never a mixed array
        lo = np.asarray(ax < -cx, dtype=bool)
        hi = np.asarray(ax > cx, dtype=bool)
        x = np.where(lo, -cx, np.where(hi, cx, ax))
        f = np.where(lo, -c.f, np.where(hi, c.f, a.f))
        s = np.where(lo | hi, c.s, a.s)
        return Tracked(x, f, s, np.minimum(a.margin, c.margin), a.raw and c.raw)

    def pow_int(self, a: Tracked, n: int, extra: float = 1.0) -> Tracked:
        """a**n for a scalar a; a library pow rounds within `extra` ulps (powf and pow
        are faithful), and is exact for n = 1 and for a base of 0 or 1."""
        x = mp(a) ** n
        f = float(x)
        if n == 1 or (a.s == 0 and (x == 1 or x == 0)):
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
        if not isinstance(a.x, np.ndarray):
            x = mp(c) * a.x + mp(w) * b.x
        elif _exact_product(w, b):      # w*b exact in float64: one fused op
            x = _fma(mp(c), a.x, (w.f * b.f).astype(np.float64).astype(object))
        elif _exact_product(c, a):
            x = _fma(mp(w), b.x, (c.f * a.f).astype(np.float64).astype(object))
        else:
            x = _fma(mp(c), a.x, mp(w) * b.x)
        f = c.f * a.f + w.f * b.f
        prop = np.abs(c.f) * a.s + np.abs(w.f) * b.s + c.s * np.abs(a.f) + w.s * np.abs(b.f)
        s = prop + np.abs(a.f) + 2.0 * np.abs(w.f * b.f) + np.abs(f)
        # each of the two products (c*a and w*b, or (b - a)*w) is at most this large
        mag = (np.abs(a.f) + np.abs(b.f)) * np.maximum(1.0, np.maximum(np.abs(w.f), np.abs(c.f)))
        # both products exactly zero (an exactly zero factor in each): so is every order's result
        both_zero = (_zero(a) | _zero(c)) & (_zero(b) | _zero(w))
        s = s + 2.0 * self._under(f, s, both_zero, mag) + (2.0 * self.add_tiny if self.add_tiny else 0.0)
        s = _inf_exact(f, s, a, b)
        # the kernel order forms b - a first: it may overflow where the result does not
        margin = self._ovf(b.f - a.f, self._ovf(f, np.minimum(a.margin, b.margin), a.f, b.f), a.f, b.f)
        # an infinite end gives inf in some orders and inf - inf = NaN in others (a + (b - a)*w
        # from an infinite a; torch's b - (b - a)*(1 - w) for w >= 1/2 from an infinite b)
        nan_prone = lerp_nan_prone(a, b, w)
        if np.any(nan_prone):
            margin = np.where(nan_prone, 0.0, margin)
        out = Tracked(x, f, s, margin)
        if self.ieee:
            # a + (b - a) * w (the kernel's, and torch's below w = 1/2): b - a overflows with
            # its own sign, which 0 < w < 1/2 keeps; torch's b - (b - a) * (1 - w) from
            # w = 1/2 on gives the opposite sign, so those stay ill
            d = b.f - a.f
            wf = np.asarray(w.f)
            out = self._to_inf(out, self._decided(d, a.s + b.s + np.abs(d), np.minimum(a.margin, b.margin))
                               & np.isfinite(a.f) & (wf > 0) & (wf < 0.5), np.sign(d) * math.inf)
            # from an exact zero every order below w = 1/2 rounds the one product w*b
            first = _zero(a) & (wf < 0.5)
            if np.any(first):
                inputs = np.where(first, b.margin, 0.0)
                out = self.round_subnormal(out, np.abs(w.f) * b.s + w.s * np.abs(b.f), inputs)
        return self._op(out, a, b)

    def sum(self, a: Tracked) -> Tracked:
        """Sum of all elements; a reduction of n terms is allowed ceil(log2 n)+1 roundings
        of the total magnitude (pairwise or tree order, as numpy and TF reduce)."""
        n = max(int(np.size(a.f)), 1)
        x = _ONE * 0
        for v in np.ravel(a.x):
            x = x + v
        f = np.sum(np.asarray(a.f))   # the shadow's own type: a long double keeps past-double sums
        depth = math.ceil(math.log2(n)) + 1 if n > 1 else 0
        total = np.sum(np.abs(np.asarray(a.f)))
        s = np.sum(np.asarray(a.s)) + depth * total + (n - 1) * self.add_tiny
        margin = float(np.min(a.margin)) if np.size(a.margin) else math.inf
        # a partial sum past the largest finite number (e.g. a squared norm) voids the bound
        if total >= self.fmt.overflow and bool(np.all(np.isfinite(a.f))):
            margin = 0.0
        if math.isinf(f) and bool(np.any(_exactly_inf(a))):
            s = 0.0   # an infinite term: the IEEE sum is exact
        out = Tracked(x, f, s, margin)
        if self.ieee and (bool(np.all(a.f >= 0)) or bool(np.all(a.f <= 0))):
            # terms of one sign: any order's partial sums pass the threshold with the total
            out = self._to_inf(out, self._decided(f, s, float(np.min(a.margin)) if np.size(a.margin) else math.inf),
                               np.sign(f) * math.inf)
        return out

    def saturate(self, t: Tracked, inputs: Any) -> Tracked:
        """`t`, a quantity every implementation holds in this format (a new moment, a new
        variable), with the elements whose overflow is decided made +-inf: the exact
        value lies past the rounding threshold by more than DECISIVE_K * u * S, and
        `inputs` (the margin of t's operands, before t's own intermediates could
        overflow) is well conditioned. Any op order then overflows to the same signed
        infinity (an intermediate that overflows first does so with the result's sign),
        so the element is an IEEE outcome with nothing to excuse."""
        return self._to_inf(t, self._decided(t.f, t.s, inputs), np.sign(t.f) * math.inf)

    def _decided(self, f: Any, s: Any, inputs: Any) -> np.ndarray:
        """Where |f| overflows whatever rounding errors within DECISIVE_K * u * s do."""
        f = np.asarray(f)
        with np.errstate(invalid="ignore", over="ignore"):
            s = np.broadcast_to(np.asarray(s), f.shape)
            return (np.isfinite(f) & np.isfinite(s) & (np.abs(f) - DECISIVE_K * self.fmt.u * s >= self.fmt.overflow)
                    & (np.broadcast_to(inputs, f.shape) > 2.0 * DECISIVE_K * self.fmt.u))

    def _to_inf(self, t: Tracked, dec: np.ndarray, value: Any) -> Tracked:
        """t with the elements under `dec` replaced by `value` (+-inf, NaN or a rounded
        value), exact (S = 0)."""
        if not np.any(dec):
            return t
        f = np.asarray(t.f)
        val = np.broadcast_to(np.asarray(value, dtype=f.dtype if f.dtype.kind == "f" else np.float64), f.shape)
        x = np.asarray(mp(t) if not isinstance(t.x, np.ndarray) else t.x, dtype=object)
        x = np.where(dec, (_ONE * val.astype(np.float64)).astype(object) if val.ndim else _ONE * float(val), x)
        s = np.broadcast_to(np.asarray(t.s), f.shape)
        margin = np.where(dec, math.inf, np.broadcast_to(t.margin, f.shape))
        if not f.ndim:   # scalars stay scalars
            return Tracked(x.item(), float(np.where(dec, val, f)), float(np.where(dec, 0.0, s)), float(margin))
        return Tracked(x, np.where(dec, val, f), np.where(dec, 0.0, s), margin)

    def _op(self, t: Tracked, *operands: Tracked | Any, prop: Any = None) -> Tracked:
        """In ieee mode, t overflowed to inf where that is decided (see __init__), and
        rounded where it lies below the normal range (`round_subnormal`; `prop` is the
        propagated error before t's own rounding)."""
        if not self.ieee:
            return t
        inputs = margin_of(*operands)
        t = self.saturate(t, inputs)
        return t if prop is None else self.round_subnormal(t, prop, inputs)

    def round_subnormal(self, t: Tracked, prop: Any, inputs: Any) -> Tracked:
        """t, one rounding of the plain order (ieee mode), made the format's value where
        its exact value lies below the normal range and every error within
        DECISIVE_K * u * prop (the operands' propagated errors, before this rounding)
        rounds to that same value. On the subnormal grid one rounding moves a value by
        up to half the spacing, which the first-order model can only charge as eta
        (a divisor made of it is then ill-conditioned), so the IEEE outcome is judged
        instead. Under flush-to-zero only a rounding to zero is certain."""
        f = np.asarray(t.f)
        q = 2.0 ** (self.fmt.emin - self.fmt.p + 1)   # the subnormal spacing (2 * eta)
        with np.errstate(invalid="ignore", over="ignore"):
            # the error bound in units of q (u / q is a power of two inside the double range)
            d = np.broadcast_to(np.asarray(prop, dtype=np.float64), f.shape) * (self.fmt.u / q) * DECISIVE_K
            cand = ((f != 0) & np.isfinite(f) & (np.abs(f) < 2.0 ** self.fmt.emin) & np.isfinite(d)
                    & (np.broadcast_to(inputs, f.shape) > 2.0 * DECISIVE_K * self.fmt.u))
        if not np.any(cand):
            return t
        xs = np.ravel(np.asarray(mp(t) if not isinstance(t.x, np.ndarray) else t.x, dtype=object))
        dec = np.zeros(f.size, dtype=bool)
        val = np.zeros(f.size)
        dd = np.ravel(d)
        for j in np.flatnonzero(np.ravel(cand)):
            y = xs[j] / q                            # exact: q is a power of two
            n = gmpy2.rint(y)                        # round to nearest, ties to even
            dj = float(dd[j])
            if (dj == 0.0 or abs(float(y - n)) + dj < 0.5) and (n == 0 or not self.flush):
                dec[j], val[j] = True, math.copysign(float(n) * q, float(xs[j]))
        return self._to_inf(t, dec.reshape(f.shape), val.reshape(f.shape))

    def where(self, cond: np.ndarray, a: Tracked, b: Tracked) -> Tracked:
        ax, bx = (a.x, b.x) if (a.raw and b.raw) else (mp(a), mp(b))
        return Tracked(np.where(cond, ax, bx), np.where(cond, a.f, b.f),
                       np.where(cond, a.s, b.s), np.where(cond, a.margin, b.margin), a.raw and b.raw)


def margin_of(*operands: Tracked | Any) -> Any:
    """The smallest margin over `operands` (Tracked values, or bare margins): the
    conditioning a result inherits before its own rounding."""
    margin: Any = math.inf
    for o in operands:
        margin = np.minimum(margin, o.margin if isinstance(o, Tracked) else o)
    return margin


def lerp_nan_prone(a: Tracked, b: Tracked, w: Tracked) -> Any:
    """Where a lerp from a towards b by w may give NaN in one correct order and inf in
    another."""
    return _exactly_inf(a) | (_exactly_inf(b) & (np.asarray(w.f) >= 0.5))


def _zero(t: Tracked) -> Any:
    """Where t is exactly zero (an exact input or constant, S = 0)."""
    return (np.asarray(t.f) == 0) & (np.asarray(t.s) == 0)


def divisor(t: Tracked) -> Any:
    """The margin a division by t adds: |t| / S_t (0 where t may be 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ab = np.abs(t.f)
        return np.where(t.s > 0, ab / np.where(t.s > 0, t.s, 1.0), np.where(ab > 0, math.inf, 0.0))


_is_inf = np.frompyfunc(lambda v: bool(gmpy2.is_infinite(v)), 1, 1)


def _exactly_inf(t: Tracked) -> Any:
    """Where t's exact value is infinite (its float64 shadow can overflow while the exact
    value stays finite, for float64 data)."""
    hit = np.isinf(t.f)
    if not np.any(hit):
        return hit
    return hit & np.asarray(_is_inf(t.x) if isinstance(t.x, np.ndarray) else bool(gmpy2.is_infinite(mp(t))), dtype=bool)


def _inf_exact(f: Any, s: Any, *operands: Tracked) -> Any:
    """S with no rounding error where an infinite result comes from an exactly infinite
    operand (IEEE arithmetic on infinities is exact; 0 * inf in S would make it NaN)."""
    if not np.any(np.isinf(f)):
        return s
    from_inf = np.zeros(np.shape(f), dtype=bool)
    for op in operands:
        from_inf = from_inf | _exactly_inf(op)
    hit = np.isinf(f) & from_inf
    return np.where(hit, 0.0, s) if np.any(hit) else s


def _safe_div(a: Any, b: Any) -> Any:
    """Exact division where x/0 gives the IEEE outcome (inf or nan) instead of raising."""
    try:
        return a / b
    except ZeroDivisionError:  # pragma: no cover - gmpy2 follows IEEE by default
        return gmpy2.nan()
