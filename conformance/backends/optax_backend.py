"""optax backend: `optax.adam`, `optax.amsgrad` and `optax.adamw` on JAX's CPU, eager and jit.

  optax      each `update` and `apply_updates` dispatched op by op (eager)
  optax-jit  the same two calls under one `jax.jit`

Each step builds the real gradient transformation from the hyperparameters
(`optax.adam(learning_rate, b1, b2, eps, eps_root=...)`, `optax.amsgrad` with
AMSGrad, `optax.adamw` with a weight decay; a Schedule becomes an optax schedule of the count), initialises its state,
writes the prior state into it (`count`, `mu`, `nu`, `nu_max`, and the schedule's own
`count`), applies one update and reads everything back. float64 runs with
`jax.enable_x64` on, the other dtypes with JAX's defaults, as a user would run them.

Adapter conventions the protocol needs and optax lacks:
- optax has no missing gradients; parameters whose gradient is None are left out of
  the update (their state kept), the others go through one update with the shared count.
- `vhat` is optax.amsgrad's `nu_max`: the maximum of the bias-corrected v (the row's
  amsgrad form "optax").
- `mu_dtype` holds m in another dtype, which the protocol's state (every array in the
  parameter dtype) cannot express; the numeric steps do not use it, the API world
  judges it (clause optax.arg.mu-dtype).
- optax.amsgrad takes no weight decay: AMSGrad with weight_decay is unsupported.
"""
from __future__ import annotations

import importlib.util
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adamconf.backends.foreign import check_step
from adamconf.reference.state import DTYPES, AdamState, Hyper, Schedule, np_dtype

__all__ = ["OptaxBackend", "OptaxJitBackend", "JAX_MISSING"]

JAX_MISSING = "JAX and optax are not installed: pip install -e '.[jax]'"
FEATURES = frozenset({"amsgrad", "eps_root", "schedule", "weight_decay"})
AMSGRAD_NO_DECAY = "optax has no AMSGrad with weight decay (optax.amsgrad takes no weight_decay)"
# XLA's CPU runtime computes with flush-to-zero and denormals-are-zero; float16 goes
# through float32, where its subnormals are normal numbers (measured: tests/test_jax_backend.py).
XLA_CPU_FLUSHES = ("bfloat16", "float32", "float64")
_CACHE = 32


def _modules() -> tuple[Any, Any, Any]:
    import jax
    import jax.numpy as jnp
    import optax
    return jax, jnp, optax


def optax_schedule(s: Schedule) -> Callable[[Any], Any]:
    """Our Schedule as an optax schedule of the count: optax's own exponential_decay,
    and for the two kinds optax does not ship, the same formula written in jnp (optax
    takes any callable of the count as a learning rate)."""
    _, jnp, optax = _modules()
    if s.kind == "exponential":
        return optax.exponential_decay(float(s.initial), float(s.steps), float(s.rate), staircase=bool(s.staircase))
    if s.kind == "inverse_time":
        def inverse_time(count):
            p = count / s.steps
            if s.staircase:
                p = jnp.floor(p)
            return s.initial / (1.0 + s.rate * p)
        return inverse_time
    bounds, values = jnp.asarray(s.boundaries), jnp.asarray(s.values)

    def piecewise(count):
        # values[i] for the first boundary i with count <= boundaries[i], else the last
        return values[jnp.sum(count > bounds)]
    return piecewise


class OptaxBackend:
    """optax.adam / optax.amsgrad, eager."""

    name = "optax"
    variants = ("optax",)
    dtypes = DTYPES
    features = FEATURES
    flushes_denormals = XLA_CPU_FLUSHES
    findings = str(Path(__file__).with_name("optax_findings.toml"))
    jit = False

    def __init__(self) -> None:
        if importlib.util.find_spec("jax") is None or importlib.util.find_spec("optax") is None:
            raise ImportError(JAX_MISSING)
        self._fns: OrderedDict[Any, Callable] = OrderedDict()
        self._lock = threading.Lock()

    def versions(self) -> dict[str, str]:
        jax, _, optax = _modules()
        import jaxlib
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__}

    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        return AMSGRAD_NO_DECAY if {"amsgrad", "weight_decay"} <= set(features) else None

    def api(self) -> Any:
        """The object-level API world (adamconf.api): optax.adam itself, called eagerly."""
        from adamconf.backends.optax_api import OptaxApi
        return OptaxApi(self.name)

    def transformation(self, hyper: Hyper) -> Any:
        """The optax GradientTransformation these hyperparameters describe."""
        _, _, optax = _modules()
        lr = hyper.learning_rate
        lr = optax_schedule(lr) if isinstance(lr, Schedule) else float(lr)
        kw = {"b1": float(hyper.beta_1), "b2": float(hyper.beta_2), "eps": float(hyper.epsilon),
              "eps_root": float(hyper.eps_root)}
        if hyper.weight_decay:
            if hyper.amsgrad:
                raise ValueError(AMSGRAD_NO_DECAY)
            return optax.adamw(lr, weight_decay=float(hyper.weight_decay), **kw)
        return (optax.amsgrad if hyper.amsgrad else optax.adam)(lr, **kw)

    def _update_fn(self, hyper: Hyper, dtype: str) -> Callable:
        """(params, grads, prior) -> (new params, new moments): init, load, update, apply."""
        key = (hyper, dtype)
        with self._lock:
            fn = self._fns.get(key)
            if fn is not None:
                self._fns.move_to_end(key)
                return fn
        jax, jnp, optax = _modules()
        tx = self.transformation(hyper)

        def run(params, grads, count, mu, nu, nu_max):
            state = tx.init(params)
            state = jax.tree.map(lambda s: _load(s, jnp.asarray(count, jnp.int32), mu, nu, nu_max), state,
                                 is_leaf=lambda s: hasattr(s, "_fields"))
            updates, new = tx.update(grads, state, params)
            adam = next(s for s in jax.tree.leaves(new, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu"))
            return optax.apply_updates(params, updates), adam.count, adam.mu, adam.nu, getattr(adam, "nu_max", None)

        fn = jax.jit(run) if self.jit else run
        with self._lock:
            self._fns[key] = fn
            while len(self._fns) > _CACHE:
                self._fns.popitem(last=False)
        return fn

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence) -> AdamState:
        """One real update from `state`; the inputs are left untouched."""
        jax, jnp, _ = _modules()
        grads = check_step(self, variant, hyper, state, grads)
        if all(g is None for g in grads):
            raise ValueError("no gradient for any parameter")
        T = np_dtype(dtype)
        live = [i for i, g in enumerate(grads) if g is not None]
        pick = lambda xs: [jnp.asarray(np.asarray(xs[i], dtype=T)) for i in live]  # noqa: E731
        # eps or a schedule value past the range of float16 overflows to inf on purpose
        with jax.enable_x64(dtype == "float64"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fn = self._update_fn(hyper, dtype)
            p, count, mu, nu, nu_max = fn(pick(state.params), pick(grads), state.iterations, pick(state.m),
                                          pick(state.v), pick(state.vhat) if hyper.amsgrad else None)
            back = lambda xs: [np.array(x, dtype=T, copy=True) for x in xs]  # noqa: E731
            p, mu, nu = back(p), back(mu), back(nu)
            nu_max = back(nu_max) if hyper.amsgrad else None
            count = int(count)
        out = state.copy()
        out.iterations = count
        for j, i in enumerate(live):
            out.params[i], out.m[i], out.v[i] = p[j], mu[j], nu[j]
            if nu_max is not None:
                out.vhat[i] = nu_max[j]
        return out


def _load(s: Any, count: Any, mu: Any, nu: Any, nu_max: Any) -> Any:
    """One optax state record with the prior state written into the fields it has."""
    if not hasattr(s, "_fields"):
        return s
    given = {"count": count, "mu": mu, "nu": nu, "nu_max": nu_max}
    return s._replace(**{k: v for k, v in given.items() if k in s._fields and v is not None})


class OptaxJitBackend(OptaxBackend):
    """optax.adam / optax.amsgrad with update and apply_updates under jax.jit."""

    name = "optax-jit"
    jit = True
