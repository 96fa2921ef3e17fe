"""Typed records for the specification: variants, their arguments, and clauses.

The spec is data (TOML files beside this module); these classes are what the loader
turns it into, so every other package reads one validated shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Closed vocabularies. The loader rejects any other value and names the field.
FORMULAS = ("epsilon-hat", "algorithm-1")
BETA_POWERS = ("accumulated", "pow")
# Where a hyperparameter lives before it is cast to the parameter dtype:
# "float32" = a float32 tensor; "param" = straight from the Python double to the
# parameter dtype; "float64" = kept as Python doubles (torch's bias corrections).
HYPER_DTYPES = ("float32", "param", "float64")
# beta**t may also be formed at "opmath": float32 for float16 and bfloat16 parameters,
# the parameter dtype otherwise, with only the bias correction cast (optax, whose
# weak-typed beta meets an integer count in JAX's default float type).
POWER_DTYPES = HYPER_DTYPES + ("opmath",)
LR_DTYPES = HYPER_DTYPES
ONE_MINUS_BETA = ("in-dtype", "double-then-cast")
# What a held scalar is cast to when it meets the tensors: "param" = the parameter dtype;
# "opmath" = float32 for float16 and bfloat16 tensors (the kernels compute in float32
# and round once per tensor they write), the parameter dtype otherwise (PyTorch's CPU
# kernels, at::opmath_type).
COMPUTE_DTYPES = ("param", "opmath")
AMSGRAD_FORMS = ("none", "raw-max", "torch", "optax")
CLIP_POLICIES = ("none", "sequential", "first-of", "exclusive")
WEIGHT_DECAY_FORMS = ("none", "decoupled", "l2")
SPARSE_FORMS = ("dense-equivalent", "densified", "squares-summed", "unsupported")
SPARSE_CLIP = ("summed", "raw-slices")
# What global-norm clipping gives when the sum of squares overflows although the norm
# itself is finite: "nan" marks every gradient NaN (tf.clip_by_global_norm and Keras 3's
# copy of it), "zero" divides by the infinite norm.
NORM_OVERFLOW = ("zero", "nan")
EMA_FIRST_STEP = ("average", "copy")
ZERO_EPSILON = ("kept", "default")  # "default": epsilon 0 or None becomes the default
LR_ALIAS = ("none", "alias", "ignored", "error")
FEATURES = (
    "amsgrad", "sparse", "clipnorm", "clipvalue", "global_clipnorm", "decay",
    "callable_hyper", "schedule", "ema", "weight_decay", "adaptive_epsilon",
    "eps_root", "use_locking", "global_step", "mesh", "jit_compile", "maximize",
)
CLAUSE_KINDS = ("numeric", "default", "api", "error")
# The middle part of a clause id <page-id>.<area>.<promise>.
CLAUSE_AREAS = (
    "update", "amsgrad", "sparse", "default", "arg", "kwargs", "clip", "decay",
    "schedule", "callable", "state", "weights", "config", "error", "example", "ema",
    "migrate", "iterations", "slots", "docs",
)
# Tolerance families of numeric clauses; each needs a K in tolerances.toml.
TOLERANCE_FAMILIES = ("step", "amsgrad", "sparse", "clip", "schedule", "ema", "trajectory")
# Exception raised by the constructor for a keyword it does not know.
KWARG_ERRORS = ("TypeError", "ValueError")
FAMILIES = ("tf", "foreign")
WEIGHTS_ORDERS = (
    "none",                 # no weights list (TF1, torch, optax)
    "iter-then-by-slot",    # [iter, m_0..m_n, v_0..v_n, vhat_0..vhat_n]
    "iter-then-interleaved",  # [iter, m_0, v_0, m_1, v_1, ..., vhat...]
    "iter-lr-interleaved",  # [iter, lr, m_0, v_0, ..., vhat...]
)
CANONICAL_ARGS = (
    "learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "name", "use_locking",
    "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
    "ema_momentum", "ema_overwrite_frequency", "jit_compile", "mesh",
    "adaptive_epsilon", "eps_root", "decay", "loss_scale_factor",
    "gradient_accumulation_steps", "maximize", "foreach", "capturable",
    "differentiable", "fused", "nesterov", "mu_dtype", "gradients_clip_option",
    "ema_option",
)


@dataclass(frozen=True)
class Argument:
    """One constructor argument as the API spells it, mapped to a canonical name."""

    name: str
    canonical: str
    default: Any
    doc: str = ""
    required: bool = False    # True when the API has no default (the caller must pass it)


@dataclass(frozen=True)
class Variant:
    """One documented (or implemented) Adam API and how its arithmetic is formed."""

    id: str
    api: str
    family: str
    era: str
    page: str | None          # seed file of the documented page, None when undocumented
    source: str               # implementation source, for readers re-checking facts
    arguments: tuple[Argument, ...]
    lr_alias: str
    unknown_kwarg_error: str | None
    formula: str
    beta_powers: str
    hyper_dtype: str
    one_minus_beta: str
    amsgrad: str
    clip_policy: str
    weight_decay: str
    sparse: str
    features: frozenset[str]
    slots: tuple[str, ...]
    weights_order: str
    notes: str = ""
    lr_dtype: str = "float32"  # dtype the learning rate is held in before the cast (LR_DTYPES)
    allowed_kwargs: tuple[str, ...] = ()
    zero_epsilon: str = "kept"  # ZERO_EPSILON: what the constructor does with epsilon 0 or None
    eps_dtype: str = ""         # HYPER_DTYPES; "" means the same as hyper_dtype
    ema_first_step: str = "average"  # EMA_FIRST_STEP: "copy" when the first update just copies
    power_dtype: str = ""       # POWER_DTYPES: where the beta that beta**t is formed from is held ("" = hyper_dtype)
    aux_dtype: str = "param"    # HYPER_DTYPES: where decay and weight_decay are held
    ema_one_minus: str = "in-dtype"  # ONE_MINUS_BETA: how 1 - ema_momentum is formed
    sparse_clip: str = "summed"      # SPARSE_CLIP: clipping sees raw slices or duplicates summed
    global_norm_overflow: str = "zero"  # NORM_OVERFLOW: global clipping when the sum of squares overflows
    compute_dtype: str = "param"     # COMPUTE_DTYPES: what scalars are cast to when they meet the tensors

    def argument(self, canonical: str) -> Argument | None:
        """The argument with this canonical name, or None when the API lacks it."""
        for arg in self.arguments:
            if arg.canonical == canonical:
                return arg
        return None

    def default(self, canonical: str, fallback: Any = None) -> Any:
        arg = self.argument(canonical)
        return fallback if arg is None else arg.default

    def has(self, feature: str) -> bool:
        return feature in self.features

    def effective_epsilon(self, epsilon: float | None) -> float:
        """The epsilon the optimizer keeps: legacy Keras replaces 0 or None by its default."""
        if not epsilon and self.zero_epsilon == "default":
            return float(self.default("epsilon"))
        return 0.0 if epsilon is None else float(epsilon)


@dataclass(frozen=True)
class Clause:
    """One testable promise of one API page, in the project's own words."""

    id: str
    variants: tuple[str, ...]
    page: str                 # API name of the page the promise comes from
    seed: str | None          # seed file of that page (None for source-derived clauses)
    section: str
    text: str
    kind: str
    family: str | None = None  # tolerance family of a numeric clause


@dataclass(frozen=True)
class Tolerance:
    """The constant K of one clause family and why it has that value."""

    family: str
    k: float
    why: str


@dataclass(frozen=True)
class Spec:
    variants: dict[str, Variant]
    clauses: dict[str, Clause]
    tolerances: dict[str, Tolerance] = field(default_factory=dict)

    def variant(self, vid: str) -> Variant:
        try:
            return self.variants[vid]
        except KeyError:
            known = ", ".join(sorted(self.variants))
            raise KeyError(f"unknown variant {vid!r}; known variants: {known}") from None

    def clauses_for(self, vid: str) -> list[Clause]:
        return [c for c in self.clauses.values() if vid in c.variants]
