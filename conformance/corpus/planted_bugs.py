"""Planted-bug backends: TextbookAdam with one realistic mistake each.

Every class overrides one method of TextbookAdam, says the mistake in its docstring,
and names in `expected_clause_area` the part of the spec whose clauses should catch
it. Where a mistake only exists in some variants or dtypes, the class declares just
those, so that every cell it claims can show the bug (given a suitable input: a sparse
bug needs sparse gradients, a duplicates bug needs repeated indices, and so on).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from adamconf.reference.state import Schedule, SparseGrad

from .op_orders import flushed_step
from .textbook import KERAS_VARIANTS, LEGACY_VARIANTS, TF1_VARIANTS, TextbookAdam, _rows_only, summed_squares

AREAS = ("update", "amsgrad", "sparse", "clip", "decay", "schedule", "ema", "weight_decay",
         "beta_powers", "epsilon", "dtype", "state", "flush")


class PlantedBug(TextbookAdam):
    """Base of the planted bugs (not itself a bug)."""

    expected_clause_area: str = ""


# ============================================================================ epsilon
class EpsInsideSqrt(PlantedBug):
    """Epsilon under the square root: sqrt(v + eps) instead of sqrt(v) + eps."""

    expected_clause_area = "epsilon"

    def denominator(self, ctx, v):
        return np.sqrt(v + ctx.eps)


class Algorithm1Epsilon(PlantedBug):
    """Algorithm 1 of the paper (PyTorch, optax): eps added to sqrt(v_hat) after bias
    correction, which is eps_hat = eps * sqrt(1 - b2^t) in the pages' form."""

    expected_clause_area = "epsilon"

    def denominator(self, ctx, v):
        one = ctx.s(1)
        return np.sqrt(v) + ctx.eps * np.sqrt(one - ctx.b2_power)


class DefaultEpsilon(PlantedBug):
    """Ignores the epsilon it is given and uses the API's default (1e-8 for TF1, 1e-7
    for Keras), as a wrapper that forgets to pass epsilon through would."""

    expected_clause_area = "epsilon"

    def round_hyper(self, ctx):
        super().round_hyper(ctx)
        default = 1e-8 if ctx.variant in TF1_VARIANTS else 1e-7
        ctx.eps = ctx.s(default) if ctx.variant == "keras3" else ctx.s(np.float32(default))


# ============================================================================ step size
class NoBiasCorrection(PlantedBug):
    """No bias correction at all: alpha = lr."""

    expected_clause_area = "update"

    def alpha(self, ctx):
        return ctx.lr


class BiasCorrectionOnlyM(PlantedBug):
    """Bias-corrects m but not v: alpha = lr / (1 - b1^t)."""

    expected_clause_area = "update"

    def alpha(self, ctx):
        return ctx.lr / (ctx.s(1) - ctx.b1_power)


class AlphaSqrtOfRatio(PlantedBug):
    """Takes the TF1 page's typeset formula literally: alpha = lr * sqrt((1 - b2^t) /
    (1 - b1^t)), the square root over the whole ratio."""

    expected_clause_area = "update"

    def alpha(self, ctx):
        one = ctx.s(1)
        return ctx.lr * np.sqrt((one - ctx.b2_power) / (one - ctx.b1_power))


class BetaPowersSwapped(PlantedBug):
    """b1^t and b2^t swapped in the step size: lr * sqrt(1 - b1^t) / (1 - b2^t)."""

    expected_clause_area = "beta_powers"

    def alpha(self, ctx):
        one = ctx.s(1)
        return ctx.lr * np.sqrt(one - ctx.b1_power) / (one - ctx.b2_power)


class StepIsIterations(PlantedBug):
    """t off by one: the powers use t = iterations (the count before this step)
    instead of iterations + 1, so the first step divides by 1 - b^0 = 0."""

    expected_clause_area = "beta_powers"
    variants = KERAS_VARIANTS

    def step_number(self, ctx):
        return ctx.iterations


class StepIsIterationsPlusTwo(PlantedBug):
    """t off by one the other way: the count is incremented before it is read and then
    1 is added again, t = iterations + 2."""

    expected_clause_area = "beta_powers"
    variants = KERAS_VARIANTS

    def step_number(self, ctx):
        return ctx.iterations + 2


class TF1PowersNotAdvanced(PlantedBug):
    """TF1's beta1_power / beta2_power are never multiplied by beta after the step (the
    _finish update op is dropped), so every later step reuses the first power."""

    expected_clause_area = "state"
    variants = TF1_VARIANTS

    def advance_powers(self, ctx, p1, p2, b1f, b2f):
        return float(p1), float(p2)


class TF1PowersAdvancedEarly(PlantedBug):
    """TF1's accumulators are multiplied by beta before the update reads them (a missing
    control dependency), so step t uses b^(t+1)."""

    expected_clause_area = "beta_powers"
    variants = TF1_VARIANTS

    def beta_powers(self, ctx, state):
        b1p, b2p, nxt = super().beta_powers(ctx, state)
        return ctx.s(np.float32(nxt[0])), ctx.s(np.float32(nxt[1])), nxt


# ============================================================================ moments
class AbsGradSecondMoment(PlantedBug):
    """The second moment tracks |g| instead of g*g."""

    expected_clause_area = "update"

    def square_grad(self, ctx, g, raw):
        return np.abs(g)


class UpdateUsesOldM(PlantedBug):
    """The parameter update reads m before this step's moment update (statements in
    the wrong order)."""

    expected_clause_area = "update"

    def moments_for_update(self, ctx, m_old, m_new, v_old, v_new):
        return m_old, v_new


class UpdateUsesOldV(PlantedBug):
    """The denominator uses sqrt of the previous v, read before the v update."""

    expected_clause_area = "update"

    def moments_for_update(self, ctx, m_old, m_new, v_old, v_new):
        return m_new, v_old


class KernelFormSignSlip(PlantedBug):
    """The kernel form of the first moment with the difference reversed:
    m += (m - g) * (1 - b1) instead of m += (g - m) * (1 - b1)."""

    expected_clause_area = "update"

    def update_m(self, ctx, m, g):
        return m + (m - g) * ctx.one_minus_b1


# ============================================================================ sparse
class LazySparseRows(PlantedBug):
    """"Lazy" Adam: with sparse gradients only the touched rows of m, v and the
    variable are updated; the pages promise every row moves."""

    expected_clause_area = "sparse"

    def lazy_rows(self, ctx, raw):
        if isinstance(raw, SparseGrad):
            return np.unique(np.asarray(raw.indices, dtype=np.int64))
        return None


class SparseLastWriteWins(PlantedBug):
    """Repeated indices are scattered with assignment, so the last slice wins instead
    of the slices being summed."""

    expected_clause_area = "sparse"

    def densify(self, ctx, grad, param):
        if isinstance(grad, SparseGrad):
            out = np.zeros(grad.dense_shape, dtype=ctx.T)
            for i, row in zip(np.asarray(grad.indices, dtype=np.int64), np.asarray(grad.values)):
                out[i] = row
            return out
        return super().densify(ctx, grad, param)


class SparseDuplicatesAveraged(PlantedBug):
    """Repeated indices are averaged (segment mean) instead of summed."""

    expected_clause_area = "sparse"

    def densify(self, ctx, grad, param):
        out = super().densify(ctx, grad, param)
        if isinstance(grad, SparseGrad) and len(grad.indices):
            counts = np.bincount(np.asarray(grad.indices, dtype=np.int64),
                                 minlength=grad.dense_shape[0])
            shape = (-1,) + (1,) * (len(grad.dense_shape) - 1)
            out = out / np.maximum(counts, 1).astype(ctx.T).reshape(shape)
        return out


class SparseSumOfSquares(PlantedBug):
    """With repeated indices v accumulates the sum of the slices' squares (scatter-add
    of g_i*g_i) instead of the square of their sum, so sparse is no longer the dense
    update."""

    expected_clause_area = "sparse"
    variants = ("tf1", "tf1-compat", "keras-v2", "keras-legacy")   # Keras 3 really does this

    def square_grad(self, ctx, g, raw):
        return summed_squares(raw, ctx.T) if isinstance(raw, SparseGrad) else g * g


class NoneGradAsZero(PlantedBug):
    """A None gradient is treated as a zero gradient: the variable still moves with its
    momentum and its m and v decay, where it should be left alone."""

    expected_clause_area = "state"

    def densify(self, ctx, grad, param):
        if grad is None:
            return np.zeros(np.shape(param), dtype=ctx.T)
        return super().densify(ctx, grad, param)


# ============================================================================ clipping
class ClipnormGlobal(PlantedBug):
    """clipnorm computed over all gradients together instead of per tensor."""

    expected_clause_area = "clip"
    variants = KERAS_VARIANTS

    def clip_by_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.clipnorm)
        present = [g for g in grads if g is not None]
        norm = np.sqrt(sum((np.sum(g * g, dtype=ctx.T) for g in present), ctx.s(0)))
        return [None if g is None else g * c / np.maximum(norm, c) for g in grads]


class ClipnormWithoutSqrt(PlantedBug):
    """clipnorm compares against the squared norm (sum of g*g, the sqrt forgotten)."""

    expected_clause_area = "clip"
    variants = KERAS_VARIANTS

    def clip_by_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.clipnorm)
        return [None if g is None else g * c / np.maximum(np.sum(g * g, dtype=ctx.T), c)
                for g in grads]


class GlobalClipnormPerTensor(PlantedBug):
    """global_clipnorm applied to each tensor's own norm, like clipnorm."""

    expected_clause_area = "clip"
    variants = ("keras-legacy", "keras3")

    def clip_by_global_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.global_clipnorm)
        one = ctx.s(1)
        out = []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            norm = np.sqrt(np.sum(g * g, dtype=ctx.T))
            out.append(g * (c * np.minimum(one / norm, one / c)))
        return out


class ClipvalueIgnoredWithClipnorm(PlantedBug):
    """Applies only the first of clipnorm > global_clipnorm > clipvalue (the new
    tf_keras optimizer's rule) under legacy Keras, which applies all of them in turn."""

    expected_clause_area = "clip"
    variants = LEGACY_VARIANTS

    def clip(self, ctx, grads):
        h = ctx.hyper
        if h.clipnorm is not None:
            return self.clip_by_norm(ctx, grads)
        if h.global_clipnorm is not None:
            return self.clip_by_global_norm(ctx, grads)
        if h.clipvalue is not None:
            return [None if g is None else self.clip_value(ctx, g) for g in grads]
        return grads


# ============================================================================ decay / schedule
class DecayAfterIncrement(PlantedBug):
    """Inverse-time decay evaluated with the count after the increment:
    lr / (1 + decay * (iterations + 1))."""

    expected_clause_area = "decay"
    variants = LEGACY_VARIANTS

    def decayed_lr(self, ctx):
        if ctx.hyper.decay:
            return ctx.lr / (ctx.s(1) + ctx.s(ctx.hyper.decay) * ctx.s(ctx.iterations + 1))
        return ctx.lr


class DecayIgnored(PlantedBug):
    """The legacy `decay` argument is accepted and silently ignored."""

    expected_clause_area = "decay"
    variants = LEGACY_VARIANTS

    def decayed_lr(self, ctx):
        return ctx.lr


class ScheduleAfterIncrement(PlantedBug):
    """The learning-rate schedule is evaluated at iterations + 1 (after the increment)."""

    expected_clause_area = "schedule"
    variants = ("keras-v2", "keras-legacy", "keras3")

    def learning_rate_at(self, ctx):
        lr = ctx.hyper.learning_rate
        if isinstance(lr, Schedule):
            return float(lr(ctx.iterations + 1))
        return float(lr)


class ScheduleFrozen(PlantedBug):
    """The schedule is evaluated once, at step 0, and that rate is kept (a port that
    resolves the learning rate at construction)."""

    expected_clause_area = "schedule"
    variants = ("keras-v2", "keras-legacy", "keras3")

    def learning_rate_at(self, ctx):
        lr = ctx.hyper.learning_rate
        if isinstance(lr, Schedule):
            return float(lr(0))
        return float(lr)


# ============================================================================ AMSGrad
class AmsgradMaxBiasCorrected(PlantedBug):
    """optax's AMSGrad under a TF variant: the maximum is taken of the bias-corrected
    v / (1 - b2^t) and that maximum is stored and used, instead of the raw v."""

    expected_clause_area = "amsgrad"
    variants = KERAS_VARIANTS

    def amsgrad_max(self, ctx, vhat_old, v_new, v_old):
        return np.maximum(vhat_old, v_new / (ctx.s(1) - ctx.b2_power))


class AmsgradMaxOldV(PlantedBug):
    """AMSGrad's maximum taken with the previous v instead of this step's v."""

    expected_clause_area = "amsgrad"
    variants = KERAS_VARIANTS

    def amsgrad_max(self, ctx, vhat_old, v_new, v_old):
        return np.maximum(vhat_old, v_old)


# ============================================================================ dtype
class Float16Moments(PlantedBug):
    """m and v stored and updated in float16 for float32 or float64 variables (a
    mixed-precision policy applied to the optimizer's slots)."""

    expected_clause_area = "dtype"
    dtypes = ("float32", "float64")

    def moment_dtype(self, ctx):
        return np.dtype(np.float16)


class Float32SlotsForFloat64(PlantedBug):
    """m and v created with the default float32 dtype although the variable is
    float64."""

    expected_clause_area = "dtype"
    dtypes = ("float64",)

    def moment_dtype(self, ctx):
        return np.dtype(np.float32)


class Bfloat16Hyper(PlantedBug):
    """lr, betas and epsilon rounded to bfloat16 (the compute dtype of a mixed
    precision policy) before use; b2 = 0.999 becomes 1.0 and the step vanishes."""

    expected_clause_area = "dtype"
    dtypes = ("float16", "float32", "float64")

    def round_hyper(self, ctx):
        super().round_hyper(ctx)

        def bf(x):
            return ctx.s(ml_dtypes.bfloat16(np.float32(x)))

        ctx.lr, ctx.b1, ctx.b2, ctx.eps = bf(ctx.lr), bf(ctx.b1), bf(ctx.b2), bf(ctx.eps)
        ctx.one_minus_b1 = ctx.s(1) - ctx.b1
        ctx.one_minus_b2 = ctx.s(1) - ctx.b2


# ============================================================================ weight decay
class WeightDecayLrTwice(PlantedBug):
    """Decoupled weight decay scaled by the learning rate twice: p -= p * wd * lr * lr."""

    expected_clause_area = "weight_decay"
    variants = ("keras3",)

    def weight_decay(self, ctx, p, g):
        if ctx.hyper.weight_decay:
            p = p - p * ctx.s(ctx.hyper.weight_decay) * ctx.lr * ctx.lr
        return p, g


class WeightDecayAsL2(PlantedBug):
    """Weight decay as L2 regularisation added to the gradient (g += wd * p, Adam not
    AdamW) instead of Keras 3's decoupled p -= p * wd * lr."""

    expected_clause_area = "weight_decay"
    variants = ("keras3",)

    def weight_decay(self, ctx, p, g):
        if ctx.hyper.weight_decay:
            g = g + ctx.s(ctx.hyper.weight_decay) * p
        return p, g


# ============================================================================ EMA
class EmaMomentumSwapped(PlantedBug):
    """EMA weights swapped: avg = mu * p + (1 - mu) * avg."""

    expected_clause_area = "ema"
    variants = ("keras3",)

    def ema(self, ctx, avg, p):
        mu, one_minus_mu = self.ema_momentum(ctx)
        return mu * p + one_minus_mu * avg


class EmaOverwriteOffByOne(PlantedBug):
    """Overwrites the variables with their averages when iterations % freq == 0 (the
    count before the increment) instead of (iterations + 1) % freq == 0."""

    expected_clause_area = "ema"
    variants = ("keras3",)

    def ema_overwrite(self, ctx, p, avg):
        if ctx.iterations % ctx.hyper.ema_overwrite_frequency == 0:
            return avg.copy()
        return p


# ============================================================================ more mistakes
# Several of these show only in one regime: one magnitude range (subnormals), one dtype,
# one step count, one combination of features. The gate's strategies reach each regime.

class GlobalClipnormSumOfNorms(PlantedBug):
    """The global norm taken as the sum of the per-tensor norms instead of the square
    root of the summed squares (adding norms as if they were squares)."""

    expected_clause_area = "clip"
    variants = ("keras-legacy", "keras3")

    def clip_by_global_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.global_clipnorm)
        present = [g for g in grads if g is not None]
        norm = sum((np.sqrt(np.sum(g * g, dtype=ctx.T)) for g in present), ctx.s(0))
        one = ctx.s(1)
        scale = c * np.minimum(one / norm, one / c)
        return [None if g is None else g * scale for g in grads]


class ClipnormAlwaysScales(PlantedBug):
    """clipnorm normalises every tensor to norm c (g * c / ||g||), also those already
    shorter than c: the max with c is forgotten."""

    expected_clause_area = "clip"
    variants = KERAS_VARIANTS

    def clip_by_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.clipnorm)
        return [None if g is None else g * c / np.sqrt(np.sum(g * g, dtype=ctx.T)) for g in grads]


class GlobalClipnormAlwaysScales(PlantedBug):
    """global_clipnorm rescales the gradients to global norm c even when their norm is
    already below c (the minimum with 1/c is forgotten)."""

    expected_clause_area = "clip"
    variants = ("keras-legacy", "keras3")

    def clip_by_global_norm(self, ctx, grads):
        c = ctx.s(ctx.hyper.global_clipnorm)
        present = [g for g in grads if g is not None]
        norm = np.sqrt(sum((np.sum(g * g, dtype=ctx.T) for g in present), ctx.s(0)))
        return [None if g is None else g * (c / norm) for g in grads]


class ClipvalueOnlyUpper(PlantedBug):
    """clipvalue clips from above only, min(g, c): negative gradients below -c pass."""

    expected_clause_area = "clip"
    variants = KERAS_VARIANTS

    def clip_value(self, ctx, g):
        return np.minimum(g, ctx.s(ctx.hyper.clipvalue))


class ClipvalueAfterClipnorm(PlantedBug):
    """Legacy Keras clips by value first and by norm second; this applies clipnorm
    first, then clipvalue (the order swapped). Shows only with both options set."""

    expected_clause_area = "clip"
    variants = LEGACY_VARIANTS

    def clip(self, ctx, grads):
        h = ctx.hyper
        if h.clipnorm is not None:
            grads = self.clip_by_norm(ctx, grads)
        if h.clipvalue is not None:
            grads = [None if g is None else self.clip_value(ctx, g) for g in grads]
        if h.global_clipnorm is not None:
            grads = self.clip_by_global_norm(ctx, grads)
        return grads


class FlushUndeclared(PlantedBug):
    """Runs with denormals-are-zero and flush-to-zero (as TF's CPU kernels do): every
    subnormal input is read as 0 and every subnormal result stored as 0, but it does
    not declare so in `flushes_denormals`, so the gate expects IEEE arithmetic. Shows
    only at subnormal magnitudes."""

    expected_clause_area = "flush"
    dtypes = ("bfloat16", "float32", "float64")

    def step(self, variant, dtype, hyper, state, grads):
        return flushed_step(super().step, variant, dtype, hyper, state, grads)


class Float16SlotsForBfloat16(PlantedBug):
    """bfloat16 variables whose m and v slots are float16 (a half-precision default for
    the slots): within float16's range nothing is lost, but v = g*g overflows to inf
    once |g| passes 256 and small moments flush. Shows only in bfloat16, at the ends
    of the range."""

    expected_clause_area = "dtype"
    dtypes = ("bfloat16",)

    def moment_dtype(self, ctx):
        return np.dtype(np.float16)


class LegacyZeroEpsilonKept(PlantedBug):
    """Legacy Keras turns epsilon 0 (or None) into the backend epsilon 1e-7; this keeps
    0. Shows only when epsilon is exactly 0."""

    expected_clause_area = "epsilon"
    variants = LEGACY_VARIANTS

    def round_hyper(self, ctx):
        super().round_hyper(ctx)
        if not ctx.hyper.epsilon:
            ctx.eps = ctx.s(0)


class EpsilonOutsideDivide(PlantedBug):
    """A precedence slip: p - (alpha * m / sqrt(v) + eps) instead of
    p - alpha * m / (sqrt(v) + eps)."""

    expected_clause_area = "epsilon"

    def denominator(self, ctx, v):
        return np.sqrt(v)

    def apply_update(self, ctx, p, m, denom):
        return p - (ctx.alpha * m / denom + ctx.eps)


class TF1PowersFromCount(PlantedBug):
    """TF1's beta powers recomputed as float32 pow(beta, iterations + 1) instead of read
    from the float32 accumulators the optimizer multiplies step by step; the two part
    by the rounding the product accumulates, which shows after hundreds of steps."""

    expected_clause_area = "beta_powers"
    variants = TF1_VARIANTS

    def beta_powers(self, ctx, state):
        t = np.float32(ctx.iterations + 1)
        b1f, b2f = np.float32(ctx.hyper.beta_1), np.float32(ctx.hyper.beta_2)
        p1, p2 = np.power(b1f, t), np.power(b2f, t)
        return ctx.s(p1), ctx.s(p2), (float(np.power(b1f, t + 1)), float(np.power(b2f, t + 1)))


class TF1PowersInVariableDtype(PlantedBug):
    """TF1's beta1_power / beta2_power accumulators created with the variable's dtype
    instead of float32, so in float16 and bfloat16 they are rounded to that dtype."""

    expected_clause_area = "beta_powers"
    variants = TF1_VARIANTS
    dtypes = ("float16", "bfloat16")

    def beta_powers(self, ctx, state):
        s = ctx.s
        b1, b2 = s(np.float32(ctx.hyper.beta_1)), s(np.float32(ctx.hyper.beta_2))
        p1 = b1 if state.beta1_power is None else s(state.beta1_power)
        p2 = b2 if state.beta2_power is None else s(state.beta2_power)
        return p1, p2, (float(p1 * b1), float(p2 * b2))


class FirstMomentWithBeta2(PlantedBug):
    """A typo: the first moment decays with beta_2, m = b2 * m + (1 - b2) * g."""

    expected_clause_area = "update"

    def update_m(self, ctx, m, g):
        return ctx.b2 * m + ctx.one_minus_b2 * g


class SecondMomentWithOneMinusBeta1(PlantedBug):
    """A typo: v = b2 * v + (1 - b1) * g * g."""

    expected_clause_area = "update"

    def update_v(self, ctx, v, gg):
        return ctx.b2 * v + ctx.one_minus_b1 * gg


class StepCountNotIncremented(PlantedBug):
    """The iteration counter is never incremented (the assign_add is dropped)."""

    expected_clause_area = "state"

    def step(self, variant, dtype, hyper, state, grads):
        out = super().step(variant, dtype, hyper, state, grads)
        out.iterations = state.iterations
        return out


class NoneGradShiftsGradients(PlantedBug):
    """None gradients are filtered out and the rest zipped with the variables, so each
    gradient after a None lands on the wrong variable (an error where shapes differ)."""

    expected_clause_area = "state"

    def step(self, variant, dtype, hyper, state, grads):
        present = [g for g in grads if g is not None]
        return super().step(variant, dtype, hyper, state, present + [None] * (len(grads) - len(present)))


class AlphaInFloat32(PlantedBug):
    """The step size lr * sqrt(1 - b2^t) / (1 - b1^t) formed in float32 and cast, where
    Keras forms the powers and the step size in the variable's dtype: in bfloat16 the
    default beta_2 then no longer freezes the step. Shows only in the narrow dtypes."""

    expected_clause_area = "dtype"
    variants = KERAS_VARIANTS
    dtypes = ("float16", "bfloat16")

    def alpha(self, ctx):
        t = np.float32(self.step_number(ctx))
        b1, b2 = np.float32(ctx.hyper.beta_1), np.float32(ctx.hyper.beta_2)
        one = np.float32(1)
        return ctx.s(np.float32(ctx.lr) * np.sqrt(one - np.power(b2, t)) / (one - np.power(b1, t)))


class AmsgradMinimum(PlantedBug):
    """AMSGrad with the minimum instead of the maximum of vhat and v."""

    expected_clause_area = "amsgrad"
    variants = KERAS_VARIANTS

    def amsgrad_max(self, ctx, vhat_old, v_new, v_old):
        return np.minimum(vhat_old, v_new)


class AmsgradStoresV(PlantedBug):
    """AMSGrad divides by max(vhat, v) but stores v, not that maximum, in the vhat slot."""

    expected_clause_area = "amsgrad"
    variants = KERAS_VARIANTS

    def update_variable(self, ctx, p_old, m_old, v_old, vh_old, g, raw):
        p, m, v, vh = super().update_variable(ctx, p_old, m_old, v_old, vh_old, g, raw)
        return p, m, v, None if vh is None else np.array(v, copy=True)


class AmsgradVhatNeverUpdated(PlantedBug):
    """AMSGrad divides by max(vhat, v) but never assigns the new maximum to vhat."""

    expected_clause_area = "amsgrad"
    variants = KERAS_VARIANTS

    def update_variable(self, ctx, p_old, m_old, v_old, vh_old, g, raw):
        p, m, v, vh = super().update_variable(ctx, p_old, m_old, v_old, vh_old, g, raw)
        return p, m, v, None if vh is None else np.array(vh_old, copy=True)


class SparseMomentsLazy(PlantedBug):
    """With a sparse gradient m and v are updated only at the gradient's rows (a scatter
    update), while every row of the variable takes a step with its undecayed moments."""

    expected_clause_area = "sparse"

    def update_variable(self, ctx, p_old, m_old, v_old, vh_old, g, raw):
        if not isinstance(raw, SparseGrad):
            return super().update_variable(ctx, p_old, m_old, v_old, vh_old, g, raw)
        rows = np.unique(np.asarray(raw.indices, dtype=np.int64))
        p, g = self.weight_decay(ctx, p_old, g)
        m = _rows_only(m_old, self.update_m(ctx, m_old, g), rows)
        v = _rows_only(v_old, self.update_v(ctx, v_old, self.square_grad(ctx, g, raw)), rows)
        vh = None if vh_old is None else self.amsgrad_max(ctx, vh_old, v, v_old)
        p = self.apply_update(ctx, p, m, self.denominator(ctx, v if vh is None else vh))
        return p, m, v, vh


class WeightDecayAfterUpdate(PlantedBug):
    """Decoupled weight decay applied to the updated variable (after the Adam step)
    instead of before it."""

    expected_clause_area = "weight_decay"
    variants = ("keras3",)

    def weight_decay(self, ctx, p, g):
        return p, g

    def apply_update(self, ctx, p, m, denom):
        p = super().apply_update(ctx, p, m, denom)
        wd = ctx.hyper.weight_decay
        return p - p * ctx.s(np.float32(wd)) * ctx.lr if wd else p


class WeightDecayWithoutLr(PlantedBug):
    """Decoupled weight decay not scaled by the learning rate: p -= p * wd."""

    expected_clause_area = "weight_decay"
    variants = ("keras3",)

    def weight_decay(self, ctx, p, g):
        wd = ctx.hyper.weight_decay
        return (p - p * ctx.s(np.float32(wd)) if wd else p), g


class EmaOfOldWeights(PlantedBug):
    """The EMA is taken of the weights before this step's update instead of after."""

    expected_clause_area = "ema"
    variants = ("keras3",)

    def step(self, variant, dtype, hyper, state, grads):
        out = super().step(variant, dtype, hyper, state, grads)
        if hyper.use_ema:
            T = out.params[0].dtype
            with np.errstate(all="ignore"):
                mu = T.type(0 if state.iterations == 0 else hyper.ema_momentum)
                out.ema = [np.asarray(mu * a + (T.type(1) - mu) * p) for a, p in zip(state.ema, state.params)]
        return out


class EmaFirstStepAverages(PlantedBug):
    """Keras 3's first EMA update copies the weights (momentum 0 at iterations 0); this
    averages with the initial copy as on every later step. Shows only on the first step."""

    expected_clause_area = "ema"
    variants = ("keras3",)
    ema_first_step_copies = False


class EmaOverwriteEveryStep(PlantedBug):
    """Overwrites the variables with their averages on every step, whatever the
    overwrite frequency."""

    expected_clause_area = "ema"
    variants = ("keras3",)

    def ema_overwrite(self, ctx, p, avg):
        return avg.copy()


BUG_CLASSES = [
    EpsInsideSqrt, Algorithm1Epsilon, DefaultEpsilon,
    NoBiasCorrection, BiasCorrectionOnlyM, AlphaSqrtOfRatio, BetaPowersSwapped,
    StepIsIterations, StepIsIterationsPlusTwo, TF1PowersNotAdvanced, TF1PowersAdvancedEarly,
    AbsGradSecondMoment, UpdateUsesOldM, UpdateUsesOldV, KernelFormSignSlip,
    LazySparseRows, SparseLastWriteWins, SparseDuplicatesAveraged, SparseSumOfSquares,
    NoneGradAsZero,
    ClipnormGlobal, ClipnormWithoutSqrt, GlobalClipnormPerTensor, ClipvalueIgnoredWithClipnorm,
    DecayAfterIncrement, DecayIgnored, ScheduleAfterIncrement, ScheduleFrozen,
    AmsgradMaxBiasCorrected, AmsgradMaxOldV,
    Float16Moments, Float32SlotsForFloat64, Bfloat16Hyper,
    WeightDecayLrTwice, WeightDecayAsL2,
    EmaMomentumSwapped, EmaOverwriteOffByOne,
    GlobalClipnormSumOfNorms, ClipnormAlwaysScales, GlobalClipnormAlwaysScales, ClipvalueOnlyUpper,
    ClipvalueAfterClipnorm, FlushUndeclared, Float16SlotsForBfloat16, LegacyZeroEpsilonKept, EpsilonOutsideDivide,
    TF1PowersFromCount, TF1PowersInVariableDtype, FirstMomentWithBeta2, SecondMomentWithOneMinusBeta1,
    StepCountNotIncremented, NoneGradShiftsGradients, AlphaInFloat32,
    AmsgradMinimum, AmsgradStoresV, AmsgradVhatNeverUpdated, SparseMomentsLazy,
    WeightDecayAfterUpdate, WeightDecayWithoutLr, EmaOfOldWeights, EmaFirstStepAverages, EmaOverwriteEveryStep,
]
BUGS = [cls() for cls in BUG_CLASSES]
