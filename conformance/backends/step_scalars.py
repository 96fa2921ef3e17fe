"""The per-step scalars of an epsilon-hat variant, formed on the host from the spec.

A device kernel needs a handful of numbers per step (1 - beta, the step size alpha,
epsilon, ...), rounded exactly as the variant rounds them. Which holder each
hyperparameter passes through, how 1 - beta is formed, how the beta powers are built,
what epsilon 0 means: all of it is read from the variant's spec fields
(`lr_dtype`, `hyper_dtype`, `eps_dtype`, `power_dtype`, `aux_dtype`, `one_minus_beta`,
`beta_powers`, `zero_epsilon`, `ema_first_step`, `ema_one_minus`), the same fields the
reference reads, so no variant fact is written down twice. The scalar arithmetic
itself runs in the parameter dtype with numpy, in the order the TF code uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adamconf.reference.emulate import power
from adamconf.reference.state import AdamState, Hyper, Schedule, dtype_name
from adamconf.spec.model import Variant

__all__ = ["StepScalars", "held", "hyper_value", "step_scalars"]


def held(x: float, holder: str, T: np.dtype) -> np.generic:
    """A Python number as the variant holds it (spec HYPER_DTYPES), then cast to T:
    "float32" rounds to float32 first, "param" and "float64" cast the double."""
    if holder == "float32":
        return np.asarray(np.float32(x)).astype(T)[()]
    return np.asarray(float(x), dtype=np.float64).astype(T)[()]


def hyper_value(x, iterations: int) -> float:
    """A hyperparameter's value at this step: a Schedule at the count before the
    increment, a zero-argument callable called, a number as is."""
    if isinstance(x, Schedule):
        return float(x(iterations))
    if callable(x):
        return float(x())
    return float(x)


@dataclass(frozen=True)
class StepScalars:
    """Scalars of T for one step, plus TF1's next float32 beta powers."""

    omb1: np.generic
    omb2: np.generic
    alpha: np.generic
    eps: np.generic
    lr: np.generic
    wd: np.generic | None
    mu: np.generic | None           # EMA momentum of this step (0 on Keras 3's first step)
    omm: np.generic | None          # 1 - mu, formed the variant's way
    next_powers: tuple[float | None, float | None]


def _power(base: np.generic, t: np.generic, T: np.dtype) -> np.generic:
    """base ** t correctly rounded (emulate.power), not np.power: its float32 and float64
    loops use SVML on AVX-512 CPUs and can be an ulp off."""
    return np.asarray(power(float(base), float(t), dtype_name(T))).astype(T)[()]


def step_scalars(variant: Variant, T: np.dtype, hyper: Hyper, state: AdamState) -> StepScalars:
    """Every scalar one epsilon-hat step of `variant` uses, in the parameter dtype T."""
    if variant.formula != "epsilon-hat":
        raise ValueError(f"variant {variant.id} uses the {variant.formula} formula, not epsilon-hat")
    it = int(state.iterations)
    hold = {"lr": variant.lr_dtype, "beta": variant.hyper_dtype,
            "eps": variant.eps_dtype or variant.hyper_dtype,
            "power": variant.power_dtype or variant.hyper_dtype, "aux": variant.aux_dtype}
    one = np.asarray(1).astype(T)[()]
    beta_1 = hyper_value(hyper.beta_1, it)
    beta_2 = hyper_value(hyper.beta_2, it)
    eps_raw = hyper.epsilon if hyper.epsilon is None else hyper_value(hyper.epsilon, it)

    lr = held(hyper_value(hyper.learning_rate, it), hold["lr"], T)
    if hyper.decay and "decay" in variant.features:     # lr / (1 + decay * iterations)
        lr = lr / (one + held(hyper.decay, hold["aux"], T) * held(it, "param", T))
    if variant.one_minus_beta == "in-dtype":
        omb1 = one - held(beta_1, hold["beta"], T)
        omb2 = one - held(beta_2, hold["beta"], T)
    else:
        omb1, omb2 = held(1.0 - beta_1, "param", T), held(1.0 - beta_2, "param", T)
    eps = held(variant.effective_epsilon(eps_raw), hold["eps"], T)

    next_powers: tuple[float | None, float | None] = (None, None)
    if variant.beta_powers == "accumulated":   # TF1: float32 accumulators, times beta after use
        f1, f2 = np.float32(beta_1), np.float32(beta_2)
        acc1 = f1 if state.beta1_power is None else np.float32(state.beta1_power)
        acc2 = f2 if state.beta2_power is None else np.float32(state.beta2_power)
        p1, p2 = np.asarray(acc1).astype(T)[()], np.asarray(acc2).astype(T)[()]
        next_powers = (float(np.float32(acc1 * f1)), float(np.float32(acc2 * f2)))
    else:
        t = held(it + 1, "param", T)
        p1 = _power(held(beta_1, hold["power"], T), t, T)
        p2 = _power(held(beta_2, hold["power"], T), t, T)
    sq = np.sqrt(one - p2)
    alpha = lr * sq / (one - p1)
    if hyper.adaptive_epsilon and "adaptive_epsilon" in variant.features:
        eps = eps * sq

    wd = held(hyper.weight_decay, hold["aux"], T) if hyper.weight_decay and variant.weight_decay == "decoupled" else None
    mu = omm = None
    if hyper.use_ema:
        first_copy = it == 0 and variant.ema_first_step == "copy"
        mu = np.asarray(0).astype(T)[()] if first_copy else held(hyper.ema_momentum, "param", T)
        if variant.ema_one_minus == "double-then-cast" and not first_copy:
            omm = held(1.0 - hyper.ema_momentum, "param", T)
        else:
            omm = one - mu
    return StepScalars(omb1, omb2, alpha, eps, lr, wd, mu, omm, next_powers)
