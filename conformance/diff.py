"""`adamconf diff`: where two Adam implementations part, by how much, and why.

Both sides run the same closed-loop problem (`diff_problems`) from the same start. A
side is a spec variant computed exactly by the reference, or a backend running a
variant in a dtype (`numpy:keras3`, `tensorflow:keras-legacy`, `my_mod:Backend:torch`).
The gap B - A is measured at every step in ulps of the dtype and relative.

Attribution uses the spec as the list of causes: every arithmetic field of a variant
(grouped in CAUSES) and every hyperparameter value is a switch the reference can flip.
Side A's variant is aligned on one cause at a time (`dataclasses.replace` on the spec's
Variant), and on every subset of the causes that do something, and the exact
trajectories say how much of the measured gap each removes; the shares are Shapley
values of the gap reduction, so they add up, with the residual, to the whole gap. The
residual, what no cause explains, is `rounding` when both sides stay within their
variant's bound K*u*S at every step (checked step by step from the side's own state,
as the gate does), and `unexplained` otherwise, with where a side left its bound.

An exact side keeps TF1's beta-power accumulators as the float32 variables they are
(each step's exact product is rounded to float32 before the next step reads it); every
other state is exact, so two exact sides differ only by what the spec says differs.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np

from adamconf.diff_problems import Problem, get_problem
from adamconf.evaluate import judge, run_backend
from adamconf.loading import load_backend
from adamconf.protocol import Backend, unsupported_reason
from adamconf.reference import adam as ref
from adamconf.reference.state import AdamState, Hyper, StepInput, np_dtype
from adamconf.reference.tracked import Format, const, fmt, to_float64
from adamconf.spec.commands import HINTS
from adamconf.spec.model import Spec, Variant

__all__ = ["CAUSES", "DEFAULTS_MODES", "DiffError", "DiffResult", "Side", "aligned", "build_hypers", "diff",
           "exact_run", "find_causes", "parse_hyper", "parse_side"]

DEFAULTS_MODES = ("each", "explicit")
PRECISION = 113
MAX_SHAPLEY = 6          # players up to which every subset is computed; greedy order beyond
INTERACTION = 0.05       # a pair is reported when it interacts by more than this share of the gap


class DiffError(ValueError):
    """A usage problem: unknown side, variant the backend lacks, bad --hyper."""


# -- causes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CauseKind:
    """A group of Variant fields that together form one known cause of difference, and
    when a run exercises it (None: always)."""

    name: str
    fields: tuple[str, ...]
    exercised: Callable[[Hyper, Hyper], bool] | None = None
    idle: str = ""           # why it is not exercised, for the report


def _clipping(h: Hyper) -> bool:
    return any(getattr(h, k) is not None for k in ("clipnorm", "clipvalue", "global_clipnorm"))


# The spec's arithmetic fields, grouped by cause. Every field of Variant that changes
# numbers appears here once (tests/test_diff.py holds the list of the others).
CAUSES: tuple[CauseKind, ...] = (
    CauseKind("epsilon placement", ("formula",)),
    CauseKind("where each hyperparameter is held before the cast",
              ("hyper_dtype", "lr_dtype", "eps_dtype", "power_dtype", "aux_dtype")),
    CauseKind("1 - beta", ("one_minus_beta",)),
    CauseKind("scalars meet half-precision tensors in float32 (opmath)", ("compute_dtype",)),
    CauseKind("beta powers", ("beta_powers",)),
    CauseKind("epsilon 0 or None", ("zero_epsilon",), lambda a, b: not a.epsilon or not b.epsilon,
              "epsilon is nonzero"),
    CauseKind("AMSGrad form", ("amsgrad",), lambda a, b: a.amsgrad or b.amsgrad, "amsgrad is off"),
    CauseKind("clipping policy and order", ("clip_policy", "global_norm_overflow"), lambda a, b: _clipping(a) or _clipping(b),
              "no clipping is set"),
    CauseKind("sparse semantics", ("sparse", "sparse_clip"), lambda a, b: False,
              "the problems give dense gradients"),
    CauseKind("weight-decay form", ("weight_decay",), lambda a, b: bool(a.weight_decay or b.weight_decay),
              "weight decay is off"),
    CauseKind("EMA", ("ema_first_step", "ema_one_minus"), lambda a, b: a.use_ema or b.use_ema,
              "use_ema is off"),
)
HYPER_FIELDS = tuple(f.name for f in dataclasses.fields(Hyper))


def _resolved(v: Variant, name: str) -> Any:
    """A field's effective value: an empty eps_dtype or power_dtype means hyper_dtype."""
    val = getattr(v, name)
    if name in ("eps_dtype", "power_dtype") and not val:
        return v.hyper_dtype
    return val


@dataclass
class Cause:
    """One difference between the two sides and what it explains."""

    name: str
    kind: str                                 # "variant" | "hyper" | "rest"
    fields: dict[str, tuple[Any, Any]]        # field -> (value in A, value in B)
    hint: str = ""
    exercised: bool = True
    idle: str = ""
    active: bool = False                      # aligning it alone changes the trajectory
    share: float = 0.0                        # of the measured gap over all steps (Shapley value / |gap|)
    final_share: float = 0.0                  # the same at the final step alone
    alone: float = 0.0                        # gap removed by aligning it alone

    def describe(self) -> str:
        if len(self.fields) == 1 and self.kind != "rest":
            (k, (a, b)), = self.fields.items()
            return f"{self.name}, {_val(k, a)} (A) versus {_val(k, b)} (B)"
        return f"{self.name} ({', '.join(self.fields)})"


# Plain words for the spec's vocabulary where its own value names are terse.
VALUE_WORDS: dict[tuple[str, Any], str] = {
    ("one_minus_beta", "in-dtype"): "formed in the dtype",
    ("one_minus_beta", "double-then-cast"): "formed in double, then cast",
    ("formula", "epsilon-hat"): "eps added to sqrt(v) (epsilon-hat)",
    ("formula", "algorithm-1"): "eps added after bias correction (Algorithm 1)",
    ("beta_powers", "accumulated"): "float32 running products",
    ("beta_powers", "pow"): "pow(beta, t)",
    ("amsgrad", "raw-max"): "max of the raw v",
    ("amsgrad", "torch"): "max of the raw v, bias-corrected after",
    ("amsgrad", "optax"): "max of the bias-corrected v",
    ("weight_decay", "decoupled"): "decoupled",
    ("weight_decay", "l2"): "L2 added to the gradient",
}


def _val(key: str, x: Any) -> str:
    if (key, x) in VALUE_WORDS:
        return VALUE_WORDS[(key, x)]
    return f"{x:g}" if isinstance(x, float) else str(x)


def find_causes(va: Variant, vb: Variant, ha: Hyper, hb: Hyper) -> list[Cause]:
    out = []
    for kind in CAUSES:
        diffs = {f: (_resolved(va, f), _resolved(vb, f)) for f in kind.fields
                 if _resolved(va, f) != _resolved(vb, f)}
        if not diffs:
            continue
        ex = kind.exercised(ha, hb) if kind.exercised else True
        hint = "; ".join(HINTS[f] for f in diffs if f in HINTS)
        out.append(Cause(kind.name, "variant", diffs, hint, ex, "" if ex else kind.idle))
    for name in HYPER_FIELDS:
        a, b = getattr(ha, name), getattr(hb, name)
        if a != b:
            out.append(Cause(f"default {name}", "hyper", {name: (a, b)}, "each side's documented default"))
    return out


def aligned(va: Variant, vb: Variant, ha: Hyper, hb: Hyper, causes: Sequence[Cause]) -> tuple[Variant, Hyper]:
    """Side A's variant and hyperparameters with these causes set to side B's values."""
    vkw: dict[str, Any] = {}
    hkw: dict[str, Any] = {}
    for c in causes:
        if c.kind == "hyper":
            hkw.update({k: getattr(hb, k) for k in c.fields})
        else:   # the whole group takes B's raw values (so "" keeps meaning hyper_dtype)
            group = next((k.fields for k in CAUSES if k.name == c.name), tuple(c.fields))
            vkw.update({f: getattr(vb, f) for f in group})
    # features: the union, so that B's hyperparameters pass A's feature check
    v = dataclasses.replace(va, features=va.features | vb.features, **vkw)
    return v, ha.replace(**hkw) if hkw else ha


# -- sides and hyperparameters ------------------------------------------------------------

@dataclass
class Side:
    """One side of a diff: a variant, computed exactly or by a backend."""

    label: str
    variant: Variant
    backend_ref: str | None = None
    backend: Backend | None = None

    @property
    def exact(self) -> bool:
        return self.backend is None

    @property
    def flush(self) -> tuple[str, ...]:
        """The dtypes the backend flushes denormals in (none for an exact side)."""
        return tuple(getattr(self.backend, "flushes_denormals", ())) if self.backend is not None else ()

    def how(self, dtype: str) -> str:
        if self.exact:
            return f"variant {self.variant.id}, exact (reference, hyperparameters rounded as in {dtype})"
        fl = " (flushes denormals)" if dtype in self.flush else ""
        return f"backend {self.backend_ref} running {self.variant.id} in {dtype}{fl}"


def parse_side(text: str, spec: Spec) -> Side:
    """`VARIANT` (exact), or `BACKEND:VARIANT` where BACKEND is a registered name or module:attr."""
    if ":" not in text:
        if text not in spec.variants:
            raise DiffError(f"unknown variant {text!r}; known: {', '.join(spec.variants)} "
                            "(or give BACKEND:VARIANT, e.g. numpy:keras3)")
        return Side(text, spec.variants[text])
    bref, vid = text.rsplit(":", 1)
    if vid not in spec.variants:
        raise DiffError(f"side {text!r}: unknown variant {vid!r}; known: {', '.join(spec.variants)}")
    from adamconf.loading import ConfigError
    try:
        backend = load_backend(bref)
    except ConfigError as e:
        raise DiffError(str(e)) from None
    if vid not in backend.variants:
        raise DiffError(f"side {text!r}: backend {bref} does not implement {vid} "
                        f"(it has {', '.join(backend.variants)}); the exact side {vid!r} needs no backend")
    return Side(text, spec.variants[vid], bref, backend)


def _parse_value(s: str) -> Any:
    low = s.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return int(s) if low.lstrip("+-").isdigit() else float(s)
    except ValueError:
        raise DiffError(f"--hyper value {s!r} is not a number, true, false or none") from None


def parse_hyper(items: Sequence[str], variants: Sequence[Variant]) -> dict[str, Any]:
    """`k=v` pairs; k is a canonical name or either side's own spelling (beta1, lr, eps)."""
    names = {a.name: a.canonical for v in variants for a in v.arguments}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise DiffError(f"--hyper {item!r}: write name=value, e.g. epsilon=1e-8")
        canonical = key if key in HYPER_FIELDS else names.get(key)
        if canonical not in HYPER_FIELDS:
            raise DiffError(f"--hyper {key!r}: not a hyperparameter; use one of {', '.join(HYPER_FIELDS)}")
        out[canonical] = _parse_value(val)
    return out


def _documented(v: Variant) -> dict[str, Any]:
    """A variant's documented defaults, for the hyperparameters a step takes."""
    out = {}
    for a in v.arguments:
        if a.canonical in HYPER_FIELDS and not a.required and a.default is not None:
            out[a.canonical] = a.default
    return out


def build_hypers(va: Variant, vb: Variant, given: dict[str, Any], mode: str) -> tuple[Hyper, Hyper, list[str]]:
    """The hyperparameters of each side. `each`: each side's own documented defaults,
    then the given values; `explicit`: both sides get A's defaults (B's where A has
    none), then the given values."""
    if mode not in DEFAULTS_MODES:
        raise DiffError(f"--defaults {mode!r}: use one of {', '.join(DEFAULTS_MODES)}")
    notes: list[str] = []
    da, db = _documented(va), _documented(vb)
    if mode == "explicit":
        da = db = {**db, **da}
    out = []
    for v, own, other in ((va, da, db), (vb, db, da)):
        kw = {**own, **given}
        arg = v.argument("learning_rate")
        if "learning_rate" not in kw:
            if "learning_rate" in other:
                kw["learning_rate"] = other["learning_rate"]
                notes.append(f"{v.id} has no default learning_rate; it takes the other side's "
                             f"{other['learning_rate']:g} (set --hyper learning_rate=...)")
            elif arg is not None and arg.required:
                raise DiffError(f"{v.id} needs a learning rate: --hyper learning_rate=...")
        try:
            out.append(Hyper(**kw))
        except TypeError as e:
            raise DiffError(f"hyperparameters for {v.id}: {e}") from None
    return out[0], out[1], notes


# -- running ------------------------------------------------------------------------------

@dataclass
class Faith:
    """How far a backend side strays from its own variant, step by step."""

    k: float
    worst: float = 0.0
    first_out: str = ""          # where it first left its bound, empty while it stays within

    @property
    def within(self) -> bool:
        return not self.first_out


def _k(spec: Spec, hyper: Hyper) -> float:
    f = hyper.features()
    on = {"step": True, "trajectory": True, "amsgrad": "amsgrad" in f, "ema": "ema" in f,
          "schedule": "schedule" in f, "clip": bool(f & {"clipnorm", "clipvalue", "global_clipnorm"})}
    fams = [x for x, used in on.items() if used]
    return max(spec.tolerances[x].k for x in fams if x in spec.tolerances) if spec.tolerances else 8.0


def _grads(problem: Problem, params: list[np.ndarray], t: int, T: np.dtype) -> list[np.ndarray]:
    with np.errstate(all="ignore"):
        return [np.asarray(g, dtype=np.float64).astype(T) for g in problem.grad(params, t)]


def _flat(xs: Sequence[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=object).ravel() for x in xs])


def _start(problem: Problem, T: np.dtype, hyper: Hyper) -> AdamState:
    params = [np.asarray(p, dtype=np.float64).astype(T) for p in problem.init()]
    return AdamState.zeros_like(params, amsgrad=bool(hyper.amsgrad), ema=bool(hyper.use_ema))


def exact_run(variant: Variant, hyper: Hyper, dtype: str, problem: Problem, steps: int) -> np.ndarray:
    """The exact closed-loop trajectory of params: (steps + 1, n) object array of mpfr."""
    T = np_dtype(dtype)
    st = _start(problem, T, hyper)
    with gmpy2.context(gmpy2.get_context(), precision=PRECISION):
        ex = ref.ExactState.from_state(st)
        rows = [_flat([p.x for p in ex.params])]
        for t in range(steps):
            grads = _grads(problem, [to_float64(p) for p in ex.params], t, T)
            ex = ref.step(variant, dtype, hyper, ex, grads).state
            if variant.beta_powers == "accumulated":   # TF1's accumulators are float32 variables
                held = ex.rounded(dtype)
                ex.beta1_power = const(held.beta1_power)
                ex.beta2_power = const(held.beta2_power)
            rows.append(_flat([p.x for p in ex.params]))
    return np.stack(rows)


def backend_run(side: Side, hyper: Hyper, dtype: str, problem: Problem, steps: int, k: float,
                timeout: float = 60.0) -> tuple[np.ndarray, Faith]:
    """The backend's closed-loop trajectory of params ((steps + 1, n) float64), each step
    also judged against the exact step from the backend's own state."""
    reason = unsupported_reason(side.backend, side.variant.id, dtype, hyper.features())
    if reason:
        raise DiffError(f"side {side.label}: {reason}")
    T = np_dtype(dtype)
    st = _start(problem, T, hyper)
    flush = side.flush
    faith = Faith(k)
    rows = [_flat([p.astype(np.float64) for p in st.params]).astype(np.float64)]
    for t in range(steps):
        grads = _grads(problem, [p.astype(np.float64) for p in st.params], t, T)
        inp = StepInput(side.variant.id, dtype, hyper, st, tuple(grads))
        new, msg = run_backend(side.backend, inp, timeout)
        if new is None:
            raise DiffError(f"side {side.label}, step {t + 1}: {msg}")
        exact = ref.step(side.variant, dtype, hyper, st, grads, flush=flush)
        verdict = judge(side.variant, inp, exact, new, k, tuple(flush), ("params", "m", "v", "vhat"))
        faith.worst = max(faith.worst, verdict.worst_ratio)
        if not faith.first_out and (verdict.problems or not verdict.ok):
            where = "; ".join(verdict.problems) or (
                f"{verdict.worst_field}[{verdict.worst_at[0]}] element {verdict.worst_at[1]}: "
                f"{verdict.worst_ratio:.3g} u*S > K = {k:g}")
            faith.first_out = f"step {t + 1}, {where}"
        st = new
        rows.append(_flat([np.asarray(p).astype(np.float64) for p in st.params]).astype(np.float64))
    return np.stack(rows), faith


def _minus(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """b - a element-wise, exactly at PRECISION bits, returned as float64."""
    with gmpy2.context(gmpy2.get_context(), precision=PRECISION):
        one = gmpy2.mpfr(1)
        d = (one * np.asarray(b, dtype=object)) - (one * np.asarray(a, dtype=object))
        return d.astype(np.float64)


def _plus(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """a + d as float64 (a may hold mpfr): the model's B, for sizing its gap in ulps."""
    return np.asarray(a, dtype=np.float64) + d


def ulp(mag: np.ndarray, f: Format) -> np.ndarray:
    """The spacing of format f at magnitude mag (the subnormal spacing below the normals)."""
    _, e = np.frexp(np.asarray(mag, dtype=np.float64))
    e = np.maximum(e - 1, f.emin)
    return np.ldexp(1.0, e - (f.p - 1))


# -- measuring ----------------------------------------------------------------------------

@dataclass
class StepGap:
    step: int
    ulps: float          # largest gap over elements, in ulps of the dtype at that element
    rel: float           # largest |gap| / max(|a|, |b|)
    abs: float           # largest |gap|
    at: int              # flat element of the largest ulps gap


def _gaps(a: np.ndarray, b: np.ndarray, d: np.ndarray, f: Format) -> tuple[np.ndarray, np.ndarray]:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mag = np.maximum(np.abs(a64), np.abs(b64))
    with np.errstate(all="ignore"):
        ulps = np.where(d == 0, 0.0, np.abs(d) / ulp(mag, f))
        rel = np.where(d == 0, 0.0, np.abs(d) / np.where(mag > 0, mag, np.inf))
    return ulps, rel


def _growth(series: Sequence[StepGap]) -> float | None:
    """Exponent g of gap ~ step**g over the second half of the run (None if too few points)."""
    pts = [(s.step, s.ulps) for s in series[len(series) // 2:] if s.ulps > 0 and s.step > 0]
    if len(pts) < 3 or pts[0][0] == pts[-1][0]:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class DiffResult:
    a: Side
    b: Side
    dtype: str
    steps: int
    problem: Problem
    defaults: str
    hyper_a: Hyper
    hyper_b: Hyper
    series: list[StepGap]
    elements: list[str]
    causes: list[Cause]
    residual: float                       # share of the gap no cause explains
    residual_kind: str                    # "none" | "rounding" | "unexplained"
    faith_a: Faith | None
    faith_b: Faith | None
    pairs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    norm: float = 0.0                     # |gap| over every step and element
    final_residual: float = 0.0           # share of the final step's gap no cause explains
    model_ulps: list[float] = field(default_factory=list)   # per step: the gap the spec's causes make

    # where they part
    @property
    def first(self) -> StepGap | None:
        return next((s for s in self.series if s.abs > 0), None)

    @property
    def largest(self) -> StepGap:
        return max(self.series, key=lambda s: s.ulps)

    @property
    def final(self) -> StepGap:
        return self.series[-1]

    @property
    def growth(self) -> float | None:
        return _growth(self.series)

    def verdict(self) -> str:
        first = self.first
        b, a = self.b.label, self.a.label
        if first is None:
            return f"{b} does not differ from {a}: 0 ulps at every step of {self.steps}"
        head = f"{b} differs from {a} by {first.ulps:.3g} ulps at step {first.step}"
        if first.step != self.largest.step:
            head += f" ({self.largest.ulps:.3g} at step {self.largest.step})"
        ranked = sorted((c for c in self.causes if c.active and c.share > 0), key=lambda c: -c.share)
        parts = [f"{pct(c.share)} explained by {c.describe()}" for c in ranked if c.share >= 0.005]
        if self.residual >= 0.005 or not parts:
            what = {"rounding": "rounding (both sides within their bounds K*u*S)",
                    "unexplained": "unexplained"}.get(self.residual_kind, self.residual_kind)
            parts.append(f"{pct(self.residual)} {what}")
        small = [f"{c.name} {pct(c.share)}" for c in ranked if c.share < 0.005]
        if small:
            parts.append("also " + ", ".join(small))
        return head + "; " + "; ".join(parts)


def pct(x: float) -> str:
    """A share as a percentage with three significant digits (99.9%, 57.3%, 0.12%)."""
    return f"{100 * x:.3g}%"


def _element_names(problem: Problem) -> list[str]:
    names = []
    for i, p in enumerate(problem.init()):
        names += [f"param[{i}]" + ("" if p.ndim == 0 else str([int(k) for k in np.unravel_index(j, p.shape)]))
                  for j in range(p.size)]
    return names


# -- attribution --------------------------------------------------------------------------

def _shapley(n: int, value: Callable[[frozenset[int]], float]) -> list[float]:
    phi = [0.0] * n
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for sub in itertools.combinations(others, r):
                s = frozenset(sub)
                phi[i] += w * (value(s | {i}) - value(s))
    return phi


@dataclass
class _Game:
    """Gap reductions of every coalition of causes, from their exact effects."""

    d: np.ndarray                                    # measured gap B - A, (steps + 1, n)
    effect: Callable[[frozenset[int]], np.ndarray]   # model(A aligned on the coalition) - model(A)

    def value(self, s: frozenset[int], rows: slice) -> float:
        """How much aligning s shrinks |gap| over these steps."""
        d = self.d[rows]
        return float(np.linalg.norm(d) - np.linalg.norm(d - self.effect(s)[rows])) if s else 0.0


def _shares(game: _Game, n: int, rows: slice, notes: list[str] | None = None) -> list[float]:
    norm = float(np.linalg.norm(game.d[rows]))
    if not norm:
        return [0.0] * n
    value = lambda s: game.value(s, rows)
    if n <= MAX_SHAPLEY:
        return [x / norm for x in _shapley(n, value)]
    order = sorted(range(n), key=lambda i: -value(frozenset([i])))   # marginal gains, largest first
    phi, got, s = [0.0] * n, 0.0, frozenset()
    for i in order:
        s = s | {i}
        now = value(s)
        phi[i], got = (now - got) / norm, now
    if notes is not None:
        notes.append(f"{n} active causes: shares are marginal gains in order of size, not Shapley values")
    return phi


def _attribute(d: np.ndarray, va: Variant, vb: Variant, ha: Hyper, hb: Hyper, causes: list[Cause],
               model: Callable[[Variant, Hyper], np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """Fill each cause's shares of |d|; return the model's own gap, interacting pairs, notes."""
    base = model(va, ha)
    notes: list[str] = []

    def effect_of(cs: Sequence[Cause]) -> np.ndarray:
        v, h = aligned(va, vb, ha, hb, cs)
        return _minus(model(v, h), base)

    everything = slice(None)
    final = slice(len(d) - 1, len(d))
    norm = float(np.linalg.norm(d))
    ex = [c for c in causes if c.exercised]
    for c in ex:
        e = effect_of([c])
        c.active = bool(np.any(e != 0))
        c.alone = (norm - float(np.linalg.norm(d - e))) / norm if norm else 0.0
    players: list[list[Cause]] = [[c] for c in ex if c.active]
    total = effect_of(causes)                       # every cause: the model's own gap B - A
    if np.any(total != effect_of([c for p in players for c in p])):
        rest = [c for c in ex if not c.active]
        players.append(rest)                        # causes that act only together
        causes.append(Cause("causes acting only together", "rest",
                            {f: fv for c in rest for f, fv in c.fields.items()}, active=True))
        notes.append("some causes change nothing alone but do together: " + ", ".join(c.name for c in rest))
    cache: dict[frozenset[int], np.ndarray] = {}

    def effect(s: frozenset[int]) -> np.ndarray:
        if s not in cache:
            cache[s] = effect_of([c for i in s for c in players[i]])
        return cache[s]

    game = _Game(d, effect)
    n = len(players)
    owners = [p[0] if len(p) == 1 else causes[-1] for p in players]
    for share, final_share, c in zip(_shares(game, n, everything, notes), _shares(game, n, final), owners):
        c.share, c.final_share = share, final_share
    pairs = []
    if norm and n <= MAX_SHAPLEY:
        for i, j in itertools.combinations(range(n), 2):
            si, sj, sij = (game.value(frozenset(x), everything) / norm for x in ([i], [j], [i, j]))
            if abs(sij - si - sj) > INTERACTION:
                pairs.append({"causes": [owners[i].name, owners[j].name], "together": sij, "alone": [si, sj]})
    return total, pairs, notes


# -- the whole diff ----------------------------------------------------------------------

def diff(spec: Spec, a: Side, b: Side, *, dtype: str = "float32", steps: int = 100,
         problem: str = "quadratic", hyper: dict[str, Any] | None = None, defaults: str = "each",
         timeout: float = 60.0) -> DiffResult:
    """Run both sides on the problem, measure the gap per step and attribute it."""
    if steps < 1:
        raise DiffError("--steps must be at least 1")
    try:
        f = fmt(dtype)
    except ValueError as e:
        raise DiffError(str(e)) from None
    prob = get_problem(problem) if isinstance(problem, str) else problem
    ha, hb, notes = build_hypers(a.variant, b.variant, dict(hyper or {}), defaults)
    for side, h in ((a, ha), (b, hb)):
        lacking = sorted(h.features() - side.variant.features)
        if lacking:
            raise DiffError(f"side {side.label}: variant {side.variant.id} has no {', '.join(lacking)}")
    models: dict[tuple[Variant, Hyper], np.ndarray] = {}

    def model(v: Variant, h: Hyper) -> np.ndarray:
        key = (v, h)
        if key not in models:
            try:
                models[key] = exact_run(v, h, dtype, prob, steps)
            except ref.ReferenceError as e:
                raise DiffError(f"the reference cannot run {v.id} with these settings: {e}") from None
        return models[key]

    def run(side: Side, h: Hyper) -> tuple[np.ndarray, Faith | None]:
        if side.exact:
            return model(side.variant, h), None
        return backend_run(side, h, dtype, prob, steps, _k(spec, h), timeout)

    ra, fa = run(a, ha)
    rb, fb = run(b, hb)
    d = _minus(rb, ra)
    ulps, rel = _gaps(ra, rb, d, f)
    series = []
    for t in range(1, steps + 1):
        j = int(np.argmax(ulps[t]))
        series.append(StepGap(t, float(ulps[t, j]), float(rel[t].max()), float(np.abs(d[t]).max()), j))
    causes = find_causes(a.variant, b.variant, ha, hb)
    total, pairs, more = _attribute(d, a.variant, b.variant, ha, hb, causes, model)
    notes += more
    norm = float(np.linalg.norm(d))
    residual = float(np.linalg.norm(d - total)) / norm if norm else 0.0
    final_norm = float(np.linalg.norm(d[-1]))
    final_residual = float(np.linalg.norm(d[-1] - total[-1])) / final_norm if final_norm else 0.0
    model_ulps, _ = _gaps(ra, _plus(ra, total), total, f)
    faithful = all(x is None or x.within for x in (fa, fb))
    kind = "none" if residual == 0 else "rounding" if faithful else "unexplained"
    for name, side, fa_ in (("A", a, fa), ("B", b, fb)):
        if fa_ is not None and not fa_.within:
            notes.append(f"{name} ({side.label}) leaves the bound of its variant {side.variant.id} at {fa_.first_out}")
    return DiffResult(a, b, dtype, steps, prob, defaults, ha, hb, series, _element_names(prob), causes,
                      residual, kind, fa, fb, pairs, notes, norm, final_residual,
                      [float(x) for x in model_ulps[1:].max(axis=1)])
