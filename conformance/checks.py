"""The checks, one per numeric promise, and which clauses each one covers.

A check names the spec features it exercises, the scenario strategy it draws from,
and the tolerance family whose K it is judged by. `COVERS` maps each check to the
clause suffixes (`area.promise`, the clause id without its page prefix) it tests, so
a clause is covered only when a check says so; every other clause is reported as
uncovered.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from adamconf import strategies as S
from adamconf.reference.state import AdamState, Hyper, StepInput, StepTime, np_dtype
from adamconf.spec.model import Clause, Variant


@dataclass(frozen=True)
class Check:
    name: str
    family: str                        # tolerance family (spec/tolerances.toml)
    features: frozenset[str]           # spec features the variant and backend need
    doc: str
    strategy: Callable[[Variant, str], st.SearchStrategy] | None = None
    kind: str = "step"                 # "step" | "trajectory" | "raises"
    covers: tuple[str, ...] = field(default_factory=tuple)
    dtypes: tuple[str, ...] | None = None  # None: every dtype
    clip_policies: tuple[str, ...] | None = None  # None: any policy
    families: tuple[str, ...] | None = None  # None: every spec family (tf, foreign)

    def applies_to(self, variant: Variant, dtype: str | None = None) -> bool:
        if dtype is not None and self.dtypes is not None and dtype not in self.dtypes:
            return False
        if self.clip_policies is not None and variant.clip_policy not in self.clip_policies:
            return False
        if self.families is not None and variant.family not in self.families:
            return False
        return self.features <= variant.features


def _scn(features: frozenset[str] = frozenset(), **kw) -> Callable[[Variant, str], st.SearchStrategy]:
    """Scenarios for a check: three examples in four are coherent for a feature check (the
    feature binds, see strategies.scenarios), two in four (less the subnormal ones) else."""
    kw.setdefault("coherent", 3 if features or kw.get("sparse") or kw.get("allow_none") else 2 - kw.get("tiny", 0))
    return lambda v, d: S.scenarios(v, d, features, **kw)


def _example(variant: Variant, dtype: str) -> st.SearchStrategy[StepInput]:
    """The keras-legacy usage example: lr 0.1, var 10.0, loss var**2/2 (grad = var)."""
    p = np.array(10.0, dtype=np_dtype(dtype))
    st_ = AdamState.zeros_like([p])
    if variant.beta_powers == "accumulated":
        st_.beta1_power, st_.beta2_power = float(np.float32(0.9)), float(np.float32(0.999))
    eps = variant.default("epsilon", 1e-7)
    return st.just(StepInput(variant.id, dtype, Hyper(learning_rate=0.1, epsilon=eps), st_, (p.copy(),)))


def _migrate(variant: Variant, dtype: str) -> st.SearchStrategy[StepInput]:
    """The compat.v1 page's before/after example: x = [1, 2, 3], grad [0.1, 0.2, 0.3], lr 0.001."""
    x = np.array([1.0, 2.0, 3.0], dtype=np_dtype(dtype))
    g = np.array([0.1, 0.2, 0.3], dtype=np_dtype(dtype))
    st_ = AdamState.zeros_like([x])
    if variant.beta_powers == "accumulated":
        st_.beta1_power, st_.beta2_power = float(np.float32(0.9)), float(np.float32(0.999))
    return st.just(StepInput(variant.id, dtype, Hyper(learning_rate=0.001, epsilon=variant.default("epsilon", 1e-7)), st_, (g,)))


def _frozen(variant: Variant, dtype: str) -> st.SearchStrategy[StepInput]:
    """Default betas in a narrow dtype: beta_2 = 0.999 rounds to 1 in bfloat16."""
    return S.scenarios(variant, dtype, edge=False).map(
        lambda inp: StepInput(inp.variant, inp.dtype, inp.hyper.replace(beta_1=0.9, beta_2=0.999), inp.state, inp.grads))


def _no_gradients(variant: Variant, dtype: str) -> st.SearchStrategy[StepInput]:
    """A valid state whose every gradient is None."""
    return S.scenarios(variant, dtype, edge=False).map(
        lambda inp: StepInput(inp.variant, inp.dtype, inp.hyper, inp.state, tuple(None for _ in inp.grads)))


def _trajectory(variant: Variant, dtype: str) -> st.SearchStrategy:
    """A start from zeros and 2-5 further gradient sets: the backend's own trajectory."""
    @st.composite
    def build(draw):
        start = draw(S.scenarios(variant, dtype, fresh=True, edge=False))
        n = draw(st.integers(2, 5))
        more = [tuple(draw(S.arrays(dtype, np.shape(p), S.scalars(dtype, edge=False))) for p in start.state.params)
                for _ in range(n - 1)]
        return start, [start.grads] + more
    return build()


def _callable_trajectory(variant: Variant, dtype: str, names: list[str]) -> st.SearchStrategy:
    """A trajectory of 2-4 steps whose hyperparameters `names` are zero-argument callables
    returning a new value at every step."""
    draws = {"learning_rate": S.learning_rates(), "beta_1": S.beta_1s(), "beta_2": S.beta_2s(), "epsilon": S.epsilons()}

    @st.composite
    def build(draw):
        start, grads_seq = draw(_trajectory(variant, dtype))
        n = len(grads_seq)
        kw = {k: StepTime(tuple(draw(st.lists(draws[k], min_size=n, max_size=n)))) for k in names}
        return StepInput(start.variant, start.dtype, start.hyper.replace(**kw), start.state, start.grads), grads_seq
    return build()


def _callable_suffixes(variant: Variant) -> set[str]:
    from adamconf.spec import load_spec  # the clauses say which hyperparameters may be callables
    return {suffix(c) for c in load_spec().clauses_for(variant.id) if c.id.split(".")[1] == "callable"}


def _callable(variant: Variant, dtype: str) -> st.SearchStrategy:
    """The learning rate, and the betas where the variant's clauses promise them, as callables."""
    betas = _callable_suffixes(variant) & {"callable.betas", "callable.hypers", "callable.eager-hypers"}
    return _callable_trajectory(variant, dtype, ["learning_rate"] + (["beta_1", "beta_2"] if betas else []))


def _callable_epsilon(variant: Variant, dtype: str) -> st.SearchStrategy:
    """Epsilon as a callable (promised with the others under eager execution)."""
    return _callable_trajectory(variant, dtype, ["epsilon"])


def _special(variant: Variant, dtype: str) -> st.SearchStrategy[StepInput]:
    """Zero, signed zero, subnormal, huge, infinite and NaN gradients and states."""
    base = S.scenarios(variant, dtype, n_vars=(1, 1), edge=False)

    @st.composite
    def build(draw):
        inp = draw(base)
        g = inp.grads[0]
        vals = draw(st.lists(S.special_values(dtype), min_size=g.size, max_size=g.size))
        g2 = np.asarray(vals, dtype=np.float64).reshape(g.shape).astype(g.dtype)
        return StepInput(inp.variant, inp.dtype, inp.hyper, inp.state, (g2,))
    return build()


CHECKS: dict[str, Check] = {c.name: c for c in [
    Check("dense", "step", frozenset(), "one dense step from an arbitrary reachable state", _scn(tiny=1, coherent=2),
          covers=("update.moments", "update.step-size", "update.epsilon-hat", "iterations.increment",
                  "update.algorithm-1",)),
    Check("fresh", "step", frozenset(), "the first step from the documented initial state (m = v = 0, t = 0)",
          _scn(fresh=True, tiny=1), covers=("state.zero-init",)),
    Check("trajectory", "trajectory", frozenset(), "several steps, each judged from the backend's own previous state",
          _trajectory, kind="trajectory", covers=("update.trajectory", "state.accumulated-beta-powers")),
    Check("amsgrad", "amsgrad", frozenset({"amsgrad"}), "AMSGrad: running max of v in the denominator",
          _scn(frozenset({"amsgrad"})), covers=("amsgrad.max-rule", "amsgrad.state", "amsgrad.form")),
    Check("sparse", "sparse", frozenset({"sparse"}), "IndexedSlices with repeated indices: dense-equivalent",
          _scn(sparse=True), covers=("sparse.dense-equivalent", "sparse.untouched-rows-move",
                                     "sparse.whole-accumulator-decays",
                                     "sparse.densified")),
    Check("none-grad", "step", frozenset(), "a variable whose gradient is None is left untouched",
          _scn(n_vars=(2, 3), allow_none=True), covers=("state.none-gradient-skipped",)),
    Check("no-gradients", "step", frozenset(), "no gradient for any variable is an error (ValueError)",
          _no_gradients, kind="raises", covers=("error.no-gradients",),
          # a TF promise: torch's step() and optax's update skip missing gradients silently
          families=("tf",)),
    Check("clip-exclusive", "step", frozenset({"clipvalue", "clipnorm", "global_clipnorm"}),
          "setting more than one clip option is an error (ValueError)",
          _scn(frozenset({"clipvalue", "clipnorm", "global_clipnorm"}), edge=False), kind="raises",
          covers=( "error.clip-exclusive",), clip_policies=("exclusive",)),
    Check("clipnorm-with-global", "step", frozenset({"clipnorm", "global_clipnorm"}),
          "clipnorm together with global_clipnorm is an error (ValueError)",
          _scn(frozenset({"clipnorm", "global_clipnorm"}), edge=False), kind="raises",
          covers=("error.clipnorm-with-global",), clip_policies=("first-of",)),
    Check("clipvalue", "clip", frozenset({"clipvalue"}), "each gradient element clipped to [-c, c]",
          _scn(frozenset({"clipvalue"})), covers=("clip.clipvalue",)),
    Check("clipnorm", "clip", frozenset({"clipnorm"}), "each gradient tensor scaled to norm at most c",
          _scn(frozenset({"clipnorm"})), covers=("clip.clipnorm",)),
    Check("global_clipnorm", "clip", frozenset({"global_clipnorm"}), "all gradients scaled to global norm at most c",
          _scn(frozenset({"global_clipnorm"}), n_vars=(1, 3)), covers=("clip.global-clipnorm",)),
    Check("clip-combined", "clip", frozenset({"clipvalue", "clipnorm"}),
          "several clip options at once, applied in the variant's order or precedence",
          lambda v, d: S.scenarios(v, d, frozenset({"clipvalue", "clipnorm", "global_clipnorm"}) & v.features, coherent=3),
          covers=("clip.order", "clip.first-of"),
          clip_policies=("sequential", "first-of")),
    Check("decay", "step", frozenset({"decay"}), "legacy decay: lr / (1 + decay * iterations), count before the increment",
          _scn(frozenset({"decay"}), coherent=4), covers=("decay.inverse-time",)),
    Check("schedule", "schedule", frozenset({"schedule"}), "a learning-rate schedule evaluated at the count before the increment",
          _scn(frozenset({"schedule"})), covers=("schedule.learning-rate", "schedule.count")),
    Check("weight_decay", "step", frozenset({"weight_decay"}), "decoupled weight decay before the update",
          _scn(frozenset({"weight_decay"})), covers=( "update.weight-decay",
                                                     "update.l2-weight-decay")),
    Check("maximize", "step", frozenset({"maximize"}), "maximize: the gradient is negated, the step climbs",
          _scn(frozenset({"maximize"})), covers=("update.maximize",)),
    Check("ema", "ema", frozenset({"ema"}), "EMA of the weights and its overwrite frequency",
          _scn(frozenset({"ema"})), covers=("ema.momentum-formula", "ema.overwrite-frequency", "ema.no-overwrite",)),
    Check("adaptive_epsilon", "step", frozenset({"adaptive_epsilon"}), "adaptive_epsilon: eps * sqrt(1 - beta_2^t)",
          _scn(frozenset({"adaptive_epsilon"})), covers=("update.adaptive-epsilon",)),
    Check("eps_root", "step", frozenset({"eps_root"}), "optax eps_root inside the square root",
          _scn(frozenset({"eps_root"})), covers=("update.eps-root",)),
    Check("bfloat16-frozen", "step", frozenset(), "default betas in bfloat16: beta_2 rounds to 1 and nothing moves",
          _frozen, covers=("update.bfloat16-frozen",), dtypes=("bfloat16",)),
    Check("migrate-example", "step", frozenset(), "the compat.v1 before/after example in float32",
          _migrate, covers=("migrate.same-formula", "example.before-after"), dtypes=("float32",)),
    Check("callable", "schedule", frozenset({"callable_hyper"}),
          "a callable learning rate (and betas where promised), read anew at every step",
          _callable, kind="trajectory",
          covers=("callable.learning-rate", "callable.betas", "callable.hypers", "callable.eager-hypers")),
    Check("callable-epsilon", "schedule", frozenset({"callable_hyper"}),
          "a callable epsilon, read anew at every step", _callable_epsilon, kind="trajectory",
          covers=("callable.eager-hypers",)),
    Check("example", "step", frozenset(), "the usage example: lr 0.1, var 10.0, grad = var; one step gives 9.9",
          _example, covers=("example.first-step", "example.sign-step")),
    # The update rule's clauses promise its outcome for every input, special values too:
    # this check judges them there alongside `dense`.
    Check("special", "step", frozenset(), "zero, subnormal, huge, infinite and NaN gradients: IEEE outcomes",
          _special, covers=("update.moments", "update.algorithm-1")),
]}


def suffix(clause: Clause) -> str:
    """`tf1.update.moments` -> `update.moments` (a page prefix has no dot)."""
    return clause.id.partition(".")[2]


def checks_for(clause: Clause) -> list[Check]:
    """The checks that cover this clause; its verdict combines theirs."""
    sfx = suffix(clause)
    return [c for c in CHECKS.values() if sfx in c.covers]


def binds(check: Check, clauses: Iterable[Clause]) -> bool:
    """A check runs on a variant only when the variant has a clause it covers."""
    return any(suffix(c) in check.covers for c in clauses)
