"""TextbookAdam: the Adam step as the TensorFlow pages describe it, in plain numpy.

The step is written as a sequence of small methods so that a subclass can change one
thing and nothing else: `op_orders.py` changes only the order of floating-point
operations (still correct), `planted_bugs.py` plants one realistic mistake each.

Every array op runs in the parameter dtype T (numpy rounds each float16, bfloat16,
float32 or float64 op once to T), and the scalars are rounded the way each variant
rounds them:

  tf1, keras-legacy   lr, beta_1, beta_2, epsilon -> float32 -> T; 1 - beta in T
  keras3              lr -> float32 -> T; betas, epsilon straight from the double to T;
                      1 - beta in double, then cast to T

The method order of one step (see `step`):

  check_arguments -> learning_rate_at -> round_hyper -> decayed_lr -> beta_powers ->
  alpha -> densify -> clip -> per variable: weight_decay, square_grad, update_m,
  update_v, amsgrad_max, moments_for_update, denominator, apply_update, lazy_rows ->
  ema, ema_overwrite -> new AdamState
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adamconf.reference.state import AdamState, Grad, Hyper, Schedule, SparseGrad, np_dtype

# Which features each variant has (the spec's variant files say the same). keras-v2 and
# tf1-compat share the arithmetic of keras-legacy and tf1.
VARIANT_FEATURES: dict[str, frozenset[str]] = {
    "tf1": frozenset({"sparse"}),
    "tf1-compat": frozenset({"sparse"}),
    "keras-v2": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "decay", "schedule"}),
    "keras-legacy": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm",
                               "decay", "schedule"}),
    "keras3": frozenset({"amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm",
                         "schedule", "ema", "weight_decay"}),
}
TF1_VARIANTS = ("tf1", "tf1-compat")
KERAS_VARIANTS = ("keras-v2", "keras-legacy", "keras3")
LEGACY_VARIANTS = ("keras-v2", "keras-legacy")
ALL_FEATURES = tuple(sorted(set().union(*VARIANT_FEATURES.values())))


@dataclass
class StepContext:
    """Everything about one step that is the same for every variable.

    Scalars named here are numpy scalars of T unless the comment says otherwise.
    """

    variant: str
    dtype: str
    T: np.dtype
    hyper: Hyper
    iterations: int          # steps already taken (Python int)
    lr_value: float = 0.0    # the learning rate at this step, float64, before rounding
    lr: Any = None           # the rounded rate, after keras-legacy decay
    b1: Any = None
    b2: Any = None
    eps: Any = None
    one_minus_b1: Any = None
    one_minus_b2: Any = None
    b1_power: Any = None     # b1^t and b2^t used by this step
    b2_power: Any = None
    next_powers: tuple[float, float] | None = None  # TF1 accumulators handed back
    alpha: Any = None        # lr * sqrt(1 - b2^t) / (1 - b1^t)

    def s(self, x: Any) -> Any:
        """x as a scalar of T (one rounding from whatever x is)."""
        return self.T.type(x)


class TextbookAdam:
    """The correct Adam step, in the op order the pages write (the page order)."""

    name = "TextbookAdam"
    variants: tuple[str, ...] = tuple(VARIANT_FEATURES)
    dtypes: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
    features: tuple[str, ...] = ALL_FEATURES

    # Keras 3's EMA has two details the project brief leaves out; they are switches so
    # the corpus can follow whichever the reference adopts. Keras 3 source
    # (keras/src/optimizers/base_optimizer.py): on the very first step (iterations == 0)
    # the momentum is 0, so the average becomes a copy of the variable; and the average
    # of every trainable variable moves, also those whose gradient is None.
    ema_first_step_copies = True   # Keras 3: the first average is a copy (momentum 0)
    ema_skips_none_grads = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.name = cls.__name__

    def __repr__(self) -> str:
        return f"{self.name}()"

    # ------------------------------------------------------------------ support
    def unsupported(self, variant: str, dtype: str, features: frozenset[str]) -> str | None:
        """Refuse the feature/variant combinations a variant does not have."""
        if variant not in VARIANT_FEATURES or variant not in self.variants:
            return f"{self.name} does not implement variant {variant}"
        if dtype not in self.dtypes:
            return f"{self.name} does not support {dtype}"
        lacking = sorted(set(features) - VARIANT_FEATURES[variant])
        if lacking:
            return f"variant {variant} has no {', '.join(lacking)}"
        return None

    # ------------------------------------------------------------------ the step
    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
             grads: Sequence[Grad]) -> AdamState:
        # inf and NaN inputs have documented outcomes; they are results, not warnings
        with np.errstate(all="ignore"):
            return self._step(variant, dtype, hyper, state, list(grads))

    def _step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
              grads: list[Grad]) -> AdamState:
        self.check_arguments(variant, dtype, hyper, state, grads)
        T = np_dtype(dtype)
        ctx = StepContext(variant=variant, dtype=dtype, T=T, hyper=hyper,
                          iterations=int(state.iterations))
        ctx.lr_value = self.learning_rate_at(ctx)
        self.round_hyper(ctx)
        ctx.lr = self.decayed_lr(ctx)
        ctx.b1_power, ctx.b2_power, ctx.next_powers = self.beta_powers(ctx, state)
        ctx.alpha = self.alpha(ctx)

        dense = [self.densify(ctx, g, p) for g, p in zip(grads, state.params)]
        dense = self.clip(ctx, dense)

        n = len(state.params)
        params: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        vhats: list[np.ndarray] | None = [] if hyper.amsgrad else None
        for i in range(n):
            p_old = np.asarray(state.params[i])
            m_old = np.asarray(state.m[i])
            v_old = np.asarray(state.v[i])
            vh_old = None if vhats is None else np.asarray(state.vhat[i])
            g = dense[i]
            if g is None:  # no gradient: this variable and its slots stay as they are
                params.append(p_old.copy())
                ms.append(m_old.copy())
                vs.append(v_old.copy())
                if vhats is not None:
                    vhats.append(vh_old.copy())
                continue
            p, m, v, vh = self.update_variable(ctx, p_old, m_old, v_old, vh_old, g, grads[i])
            rows = self.lazy_rows(ctx, grads[i])
            if rows is not None:  # only these rows take the new values
                p = _rows_only(p_old, p, rows)
                m, v = _rows_only(m_old, m, rows), _rows_only(v_old, v, rows)
                if vh is not None:
                    vh = _rows_only(vh_old, vh, rows)
            params.append(p)
            ms.append(m)
            vs.append(v)
            if vhats is not None:
                vhats.append(vh)

        ema = None
        if hyper.use_ema:
            ema = []
            for i in range(n):
                if grads[i] is None and self.ema_skips_none_grads:
                    ema.append(np.array(state.ema[i], copy=True))
                else:
                    ema.append(self.ema(ctx, np.asarray(state.ema[i]), params[i]))
            if hyper.ema_overwrite_frequency:
                params = [self.ema_overwrite(ctx, p, a) for p, a in zip(params, ema)]

        nb1, nb2 = ctx.next_powers if ctx.next_powers is not None else (None, None)
        return AdamState(params=_arrays(params), m=_arrays(ms), v=_arrays(vs),
                         iterations=ctx.iterations + 1, vhat=_arrays(vhats),
                         beta1_power=nb1, beta2_power=nb2, ema=_arrays(ema))

    def update_variable(self, ctx: StepContext, p_old, m_old, v_old, vh_old, g, raw):
        """One variable's step: returns new (param, m, v, vhat-or-None)."""
        p, g = self.weight_decay(ctx, p_old, g)
        gg = self.square_grad(ctx, g, raw)
        MT = self.moment_dtype(ctx)
        if MT == ctx.T:
            m = self.update_m(ctx, m_old, g)
            v = self.update_v(ctx, v_old, gg)
        else:  # moments kept in another dtype (only planted bugs do this)
            mctx = _retyped(ctx, MT)
            m = self.update_m(mctx, m_old.astype(MT), g.astype(MT)).astype(ctx.T)
            v = self.update_v(mctx, v_old.astype(MT), gg.astype(MT)).astype(ctx.T)
        vh = None
        v_denominator = v
        if vh_old is not None:
            vh = self.amsgrad_max(ctx, vh_old, v, v_old)
            v_denominator = vh
        m_use, v_use = self.moments_for_update(ctx, m_old, m, v_old, v_denominator)
        p = self.apply_update(ctx, p, m_use, self.denominator(ctx, v_use))
        return p, m, v, vh

    # ------------------------------------------------------------------ arguments
    def check_arguments(self, variant: str, dtype: str, hyper: Hyper, state: AdamState,
                        grads: list[Grad]) -> None:
        if variant not in VARIANT_FEATURES:
            raise ValueError(f"unknown variant {variant!r}; "
                             f"{self.name} implements {', '.join(VARIANT_FEATURES)}")
        np_dtype(dtype)
        if len(grads) != len(state.params):
            raise ValueError(f"{len(grads)} gradients for {len(state.params)} variables")
        if all(g is None for g in grads):
            raise ValueError("No gradients provided for any variable.")
        if variant == "keras3":
            set_clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm")
                         if getattr(hyper, k) is not None]
            if len(set_clips) > 1:
                raise ValueError("Only one of clipnorm, clipvalue and global_clipnorm can be "
                                 f"set; got {', '.join(set_clips)}")
        used = set(hyper.features())
        if any(isinstance(g, SparseGrad) for g in grads):
            used.add("sparse")
        reason = self.unsupported(variant, dtype, frozenset(used))
        if reason is not None:
            raise NotImplementedError(reason)
        if hyper.amsgrad and state.vhat is None:
            raise ValueError("amsgrad is on but the state has no vhat")
        if hyper.use_ema and state.ema is None:
            raise ValueError("use_ema is on but the state has no ema averages")
        for i, (g, p) in enumerate(zip(grads, state.params)):
            if g is None:
                continue
            shape = tuple(g.dense_shape if isinstance(g, SparseGrad) else np.shape(g))
            if shape != tuple(np.shape(p)):
                raise ValueError(f"gradient {i} has shape {shape}, variable has {np.shape(p)}")

    # ------------------------------------------------------------------ scalars
    def learning_rate_at(self, ctx: StepContext) -> float:
        """The rate for this step, float64: a schedule is evaluated at the count before
        the increment."""
        lr = ctx.hyper.learning_rate
        if isinstance(lr, Schedule):
            return float(lr(ctx.iterations))
        return float(lr)

    def round_hyper(self, ctx: StepContext) -> None:
        """Round lr, betas, epsilon and form 1 - beta the way the variant does."""
        h, s = ctx.hyper, ctx.s
        ctx.lr = s(np.float32(ctx.lr_value))
        if ctx.variant == "keras3":
            ctx.b1, ctx.b2, ctx.eps = s(h.beta_1), s(h.beta_2), s(h.epsilon)
            ctx.one_minus_b1 = s(1.0 - h.beta_1)
            ctx.one_minus_b2 = s(1.0 - h.beta_2)
        else:
            eps = h.epsilon
            if ctx.variant in LEGACY_VARIANTS and not eps:
                eps = 1e-7  # legacy Keras turns epsilon 0 or None into backend epsilon
            ctx.b1, ctx.b2 = s(np.float32(h.beta_1)), s(np.float32(h.beta_2))
            # TF1 holds epsilon as a float32 tensor; legacy Keras converts it straight to T
            ctx.eps = s(eps) if ctx.variant in LEGACY_VARIANTS else s(np.float32(eps))
            ctx.one_minus_b1 = s(1) - ctx.b1
            ctx.one_minus_b2 = s(1) - ctx.b2

    def decayed_lr(self, ctx: StepContext) -> Any:
        """keras-legacy inverse-time decay, lr / (1 + decay * iterations), in T."""
        if ctx.variant in LEGACY_VARIANTS and ctx.hyper.decay:
            # OptimizerV2 casts the decay through a float32 tensor
            return ctx.lr / (ctx.s(1) + ctx.s(np.float32(ctx.hyper.decay)) * ctx.s(ctx.iterations))
        return ctx.lr

    def step_number(self, ctx: StepContext) -> int:
        """t of this step (Keras: iterations + 1)."""
        return ctx.iterations + 1

    def beta_powers(self, ctx: StepContext, state: AdamState):
        """(b1^t, b2^t, next accumulators). TF1 reads its float32 accumulators and
        multiplies them by float32(beta) for the next step; Keras uses pow in T."""
        s = ctx.s
        if ctx.variant in TF1_VARIANTS:
            b1f, b2f = np.float32(ctx.hyper.beta_1), np.float32(ctx.hyper.beta_2)
            p1 = np.float32(b1f if state.beta1_power is None else state.beta1_power)
            p2 = np.float32(b2f if state.beta2_power is None else state.beta2_power)
            return s(p1), s(p2), self.advance_powers(ctx, p1, p2, b1f, b2f)
        t = s(self.step_number(ctx))
        # Keras forms beta**t from tf.cast(beta, T): a float32 tensor first
        b1, b2 = s(np.float32(ctx.hyper.beta_1)), s(np.float32(ctx.hyper.beta_2))
        return np.power(b1, t), np.power(b2, t), None

    def advance_powers(self, ctx: StepContext, p1, p2, b1f, b2f) -> tuple[float, float]:
        """TF1's `beta1_power * beta1` after the step, in float32."""
        return float(np.float32(p1 * b1f)), float(np.float32(p2 * b2f))

    def alpha(self, ctx: StepContext) -> Any:
        one = ctx.s(1)
        return ctx.lr * np.sqrt(one - ctx.b2_power) / (one - ctx.b1_power)

    # ------------------------------------------------------------------ gradients
    def densify(self, ctx: StepContext, grad: Grad, param: np.ndarray) -> np.ndarray | None:
        """A dense gradient in T; sparse slices with repeated indices are summed."""
        if grad is None:
            return None
        if isinstance(grad, SparseGrad):
            out = np.zeros(grad.dense_shape, dtype=ctx.T)
            np.add.at(out, np.asarray(grad.indices, dtype=np.int64),
                      np.asarray(grad.values).astype(ctx.T, copy=False))
            return out
        return np.asarray(grad).astype(ctx.T, copy=False)

    def clip(self, ctx: StepContext, grads: list) -> list:
        """Legacy order: clipvalue, then per-tensor clipnorm, then global_clipnorm
        (Keras 3 allows only one, checked in check_arguments)."""
        h = ctx.hyper
        if h.clipvalue is not None:
            grads = [None if g is None else self.clip_value(ctx, g) for g in grads]
        if h.clipnorm is not None:
            grads = self.clip_by_norm(ctx, grads)
        if h.global_clipnorm is not None:
            grads = self.clip_by_global_norm(ctx, grads)
        return grads

    def clip_value(self, ctx: StepContext, g: np.ndarray) -> np.ndarray:
        c = ctx.s(ctx.hyper.clipvalue)
        return np.minimum(np.maximum(g, -c), c)

    def clip_by_norm(self, ctx: StepContext, grads: list) -> list:
        """Each tensor: g * c / max(||g||, c)."""
        c = ctx.s(ctx.hyper.clipnorm)
        out = []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            norm = np.sqrt(np.sum(g * g, dtype=ctx.T))
            out.append(g * c / np.maximum(norm, c))
        return out

    def clip_by_global_norm(self, ctx: StepContext, grads: list) -> list:
        """All tensors: g * (c * min(1/||G||, 1/c)), ||G|| over every gradient."""
        c = ctx.s(ctx.hyper.global_clipnorm)
        present = [g for g in grads if g is not None]
        norm = np.sqrt(sum((np.sum(g * g, dtype=ctx.T) for g in present), ctx.s(0)))
        one = ctx.s(1)
        scale = c * np.minimum(one / norm, one / c)
        if not np.isfinite(norm):   # tf.clip_by_global_norm then marks every gradient NaN
            scale = ctx.s(np.nan)
        return [None if g is None else g * scale for g in grads]

    def square_grad(self, ctx: StepContext, g: np.ndarray, raw: Grad) -> np.ndarray:
        """The target of the second moment: g*g of the (summed) gradient; Keras 3 on TF
        squares the raw slices of a sparse gradient and then sums repeated rows."""
        if ctx.variant == "keras3" and isinstance(raw, SparseGrad):
            return summed_squares(raw, ctx.T)
        return g * g

    # ------------------------------------------------------------------ one variable
    def weight_decay(self, ctx: StepContext, p: np.ndarray, g: np.ndarray):
        """Keras 3 decoupled decay before the update: p -= p * wd * lr."""
        wd = ctx.hyper.weight_decay
        if ctx.variant == "keras3" and wd:
            p = p - p * ctx.s(np.float32(wd)) * ctx.lr   # tf.cast of a Python float: float32 first
        return p, g

    def moment_dtype(self, ctx: StepContext) -> np.dtype:
        return ctx.T

    def update_m(self, ctx: StepContext, m: np.ndarray, g: np.ndarray) -> np.ndarray:
        return ctx.b1 * m + ctx.one_minus_b1 * g

    def update_v(self, ctx: StepContext, v: np.ndarray, gg: np.ndarray) -> np.ndarray:
        return ctx.b2 * v + ctx.one_minus_b2 * gg

    def amsgrad_max(self, ctx: StepContext, vhat_old: np.ndarray, v_new: np.ndarray,
                    v_old: np.ndarray) -> np.ndarray:
        return np.maximum(vhat_old, v_new)

    def moments_for_update(self, ctx: StepContext, m_old, m_new, v_old, v_new):
        """Which moments the parameter update reads: the new ones."""
        return m_new, v_new

    def denominator(self, ctx: StepContext, v: np.ndarray) -> np.ndarray:
        return np.sqrt(v) + ctx.eps

    def apply_update(self, ctx: StepContext, p: np.ndarray, m: np.ndarray,
                     denom: np.ndarray) -> np.ndarray:
        return p - ctx.alpha * m / denom

    def lazy_rows(self, ctx: StepContext, raw: Grad) -> np.ndarray | None:
        """Rows restricted to the gradient's slices; None = every row moves."""
        return None

    # ------------------------------------------------------------------ EMA
    def ema_momentum(self, ctx: StepContext):
        mu = ctx.s(ctx.hyper.ema_momentum)
        if self.ema_first_step_copies and ctx.iterations == 0:
            mu = ctx.s(0)
        return mu, ctx.s(1) - mu

    def ema(self, ctx: StepContext, avg: np.ndarray, p: np.ndarray) -> np.ndarray:
        mu, one_minus_mu = self.ema_momentum(ctx)
        return mu * avg + one_minus_mu * p

    def ema_overwrite(self, ctx: StepContext, p: np.ndarray, avg: np.ndarray) -> np.ndarray:
        if (ctx.iterations + 1) % ctx.hyper.ema_overwrite_frequency == 0:
            return avg.copy()
        return p


def summed_squares(raw: SparseGrad, T: np.dtype) -> np.ndarray:
    """Each slice squared, then repeated rows summed (not the square of the sum)."""
    out = np.zeros(raw.dense_shape, dtype=T)
    vals = np.asarray(raw.values).astype(T, copy=False)
    np.add.at(out, np.asarray(raw.indices, dtype=np.int64), vals * vals)
    return out


def _arrays(xs: list | None) -> list[np.ndarray] | None:
    """numpy turns 0-d results into scalars; the state holds arrays."""
    return None if xs is None else [np.asarray(x) for x in xs]


def _rows_only(old: np.ndarray, new: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.array(old, copy=True)
    out[rows] = new[rows]
    return out


def _retyped(ctx: StepContext, MT: np.dtype) -> StepContext:
    """A copy of ctx whose moment coefficients are held in MT."""
    c = StepContext(**{k: getattr(ctx, k) for k in ctx.__dataclass_fields__})
    c.T = np.dtype(MT)
    for k in ("b1", "b2", "one_minus_b1", "one_minus_b2"):
        setattr(c, k, c.T.type(getattr(ctx, k)))
    return c
