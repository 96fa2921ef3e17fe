"""The inputs of one Adam step, shared by the reference and every backend.

A step is a pure function of (variant, dtype, hyperparameters, prior state,
gradients): the reference computes it exactly, a backend computes it in floating
point, and the harness compares the two. Keeping the inputs in one home means both
sides see literally the same numbers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # bfloat16 needs ml_dtypes; the other dtypes do not.
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a core dependency
    _BF16 = None

DTYPES = ("float16", "bfloat16", "float32", "float64")


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype for one of DTYPES, with a clear error for anything else."""
    if name == "bfloat16":
        if _BF16 is None:
            raise ValueError("bfloat16 needs the ml_dtypes package: pip install ml_dtypes")
        return _BF16
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return np.dtype(name)


def dtype_name(dt: np.dtype) -> str:
    dt = np.dtype(dt)
    if _BF16 is not None and dt == _BF16:
        return "bfloat16"
    return dt.name


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule as data, so the reference can evaluate it exactly.

    kind: "exponential"  lr0 * rate ** (step / steps)   (floor of the ratio if staircase)
          "inverse_time" lr0 / (1 + rate * step / steps)  (floor likewise)
          "piecewise"    values[i] for the first boundary i with step <= boundaries[i]
    The step it is evaluated at is the iteration count before the increment.
    """

    kind: str
    initial: float = 0.0
    steps: float = 1.0
    rate: float = 0.0
    staircase: bool = False
    boundaries: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "inverse_time", "piecewise"):
            raise ValueError(f"unknown schedule kind {self.kind!r}; use exponential, inverse_time or piecewise")
        if self.kind == "piecewise" and len(self.values) != len(self.boundaries) + 1:
            raise ValueError("a piecewise schedule needs exactly one more value than boundaries")
        if self.kind != "piecewise" and self.steps <= 0:
            raise ValueError("schedule steps must be positive")

    def __call__(self, step: int) -> float:
        """Float64 evaluation, as a backend would do it (the reference has its own)."""
        if self.kind == "piecewise":
            for b, val in zip(self.boundaries, self.values):
                if step <= b:
                    return float(val)
            return float(self.values[-1])
        p = step / self.steps
        if self.staircase:
            p = float(np.floor(p))
        if self.kind == "exponential":
            return self.initial * self.rate ** p
        return self.initial / (1.0 + self.rate * p)


@dataclass
class StepTime:
    """A zero-argument callable hyperparameter whose value changes from step to step:
    it returns values[at], and whoever runs the steps sets `at` before each one. The
    pages promise that such a callable is read when the optimizer steps, so the value
    a step uses is the one it returns then."""

    values: tuple[float, ...]
    at: int = 0

    def __call__(self) -> float:
        return float(self.values[min(self.at, len(self.values) - 1)])


CALLABLE_HYPERS = ("learning_rate", "beta_1", "beta_2", "epsilon")


def at_step(hyper: Hyper, i: int) -> None:
    """Point every StepTime hyperparameter of `hyper` at step i of a run."""
    for k in CALLABLE_HYPERS:
        v = getattr(hyper, k)
        if isinstance(v, StepTime):
            v.at = i


def resolved(hyper: Hyper) -> Hyper:
    """`hyper` with each zero-argument callable (not a Schedule) replaced by its value now."""
    kw = {k: float(getattr(hyper, k)()) for k in CALLABLE_HYPERS
          if callable(getattr(hyper, k)) and not isinstance(getattr(hyper, k), Schedule)}
    return hyper.replace(**kw) if kw else hyper


@dataclass(frozen=True)
class Hyper:
    """Hyperparameters of a run, by canonical name, as the user wrote them."""

    learning_rate: float | Schedule = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False
    decay: float = 0.0
    clipvalue: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    weight_decay: float | None = None
    use_ema: bool = False
    ema_momentum: float = 0.99
    ema_overwrite_frequency: int | None = None
    adaptive_epsilon: bool = False
    eps_root: float = 0.0
    maximize: bool = False

    def replace(self, **kw) -> Hyper:
        return dataclasses.replace(self, **kw)

    def features(self) -> frozenset[str]:
        """The spec features this hyperparameter set exercises."""
        f = set()
        if self.amsgrad:
            f.add("amsgrad")
        if self.decay:
            f.add("decay")
        if isinstance(self.learning_rate, Schedule):
            f.add("schedule")
        for k in ("clipvalue", "clipnorm", "global_clipnorm"):
            if getattr(self, k) is not None:
                f.add(k)
        if self.weight_decay:
            f.add("weight_decay")
        if self.use_ema:
            f.add("ema")
        if self.adaptive_epsilon:
            f.add("adaptive_epsilon")
        if self.eps_root:
            f.add("eps_root")
        if self.maximize:
            f.add("maximize")
        return frozenset(f)


@dataclass(frozen=True)
class SparseGrad:
    """An IndexedSlices-like gradient: rows `indices` of a dense tensor, duplicates allowed."""

    indices: np.ndarray
    values: np.ndarray
    dense_shape: tuple[int, ...]

    def to_dense(self) -> np.ndarray:
        """Duplicates summed in the values' dtype (what a backend would do)."""
        out = np.zeros(self.dense_shape, dtype=self.values.dtype)
        np.add.at(out, np.asarray(self.indices, dtype=np.int64), self.values)
        return out


Grad = np.ndarray | SparseGrad | None


def present_fields(state: Any) -> dict[str, list]:
    """params, m, v, and vhat / ema where present: the per-variable fields of a state
    (plain or exact), in one fixed order."""
    out = {"params": state.params, "m": state.m, "v": state.v}
    if state.vhat is not None:
        out["vhat"] = state.vhat
    if state.ema is not None:
        out["ema"] = state.ema
    return out


@dataclass
class AdamState:
    """Full optimizer state around one step; every array has the parameter's dtype.

    iterations  steps already taken (the step about to run is iterations + 1)
    beta*_power TF1's accumulators: the power the *next* step uses (b**(iterations+1)
                when nothing went wrong); None for variants that use pow
    vhat        AMSGrad maxima, or None when amsgrad is off
    ema         EMA averages, or None when use_ema is off
    """

    params: list[np.ndarray]
    m: list[np.ndarray]
    v: list[np.ndarray]
    iterations: int = 0
    vhat: list[np.ndarray] | None = None
    beta1_power: float | None = None
    beta2_power: float | None = None
    ema: list[np.ndarray] | None = None

    @classmethod
    def zeros_like(cls, params: Sequence[np.ndarray], *, amsgrad: bool = False,
                   ema: bool = False, beta_powers: tuple[float, float] | None = None) -> AdamState:
        """A fresh state: m = v = 0, iterations = 0, as every page initialises it."""
        z = [np.zeros_like(p) for p in params]
        return cls(
            params=[np.array(p, copy=True) for p in params],
            m=[a.copy() for a in z], v=[a.copy() for a in z],
            vhat=[a.copy() for a in z] if amsgrad else None,
            ema=[np.array(p, copy=True) for p in params] if ema else None,
            beta1_power=None if beta_powers is None else beta_powers[0],
            beta2_power=None if beta_powers is None else beta_powers[1],
        )

    def copy(self) -> AdamState:
        cp = lambda xs: None if xs is None else [np.array(x, copy=True) for x in xs]  # noqa: E731
        return AdamState(cp(self.params), cp(self.m), cp(self.v), self.iterations,
                         cp(self.vhat), self.beta1_power, self.beta2_power, cp(self.ema))

    def arrays(self) -> dict[str, list[np.ndarray]]:
        """The array fields that are present, by name (for comparison and reporting)."""
        return present_fields(self)


@dataclass(frozen=True)
class StepInput:
    """Everything one step needs, bundled so it can be replayed and printed."""

    variant: str
    dtype: str
    hyper: Hyper
    state: AdamState
    grads: tuple[Grad, ...] = field(default_factory=tuple)
