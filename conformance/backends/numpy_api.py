"""A Keras-like Adam object in numpy: the object-level API world of the numpy backend.

`KerasLikeAdam(variant)` builds the optimizer class that the spec describes for a
Keras variant (keras-v2, keras-legacy, tf-keras, keras3): its argument names and
defaults, which extra keywords it takes and what `lr` means, the exception for an
unknown keyword, the clip rules, the weights order, get_config/from_config and EMA.
Every step is computed by the bundled numpy backend. numpy has no automatic
differentiation, so `minimize` needs a loss made by `NumpyApi.loss`, which knows its
own gradient.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.reference.state import AdamState, Hyper
from adamconf.spec import load_spec
from adamconf.spec.model import Variant

__all__ = ["NumpyApi", "Variable", "KerasLikeAdam"]

KERAS_VARIANTS = ("keras-v2", "keras-legacy", "tf-keras", "keras3")
_CLIPS = ("clipnorm", "clipvalue", "global_clipnorm")


class Variable:
    """A named, assignable numpy array (what an optimizer updates)."""

    def __init__(self, value: Any, name: str = "variable") -> None:
        self.value = np.array(value)
        self.name = name

    def numpy(self) -> np.ndarray:
        return self.value.copy()

    def assign(self, value: Any) -> None:
        self.value = np.asarray(value, dtype=self.value.dtype).reshape(self.value.shape).copy()


class QuadraticLoss:
    """sum(coef * x**2) / 2 over the variables: a zero-argument loss with its gradient."""

    def __init__(self, variables: list[Variable], coef: float) -> None:
        self.variables, self.coef = list(variables), coef

    def __call__(self) -> float:
        return float(sum(np.sum(self.coef * v.value.astype(np.float64) ** 2) / 2 for v in self.variables))

    def gradient(self, var: Any) -> np.ndarray | None:
        if not isinstance(var, Variable):
            raise ValueError(f"var_list holds {type(var).__name__}, not a Variable")
        if not any(var is v for v in self.variables):
            return None
        return (self.coef * var.value).astype(var.value.dtype)


def KerasLikeAdam(variant: str) -> type:
    """The Adam class of one Keras variant, shaped by the spec."""
    spec_v = load_spec().variant(variant)
    if variant not in KERAS_VARIANTS:
        raise ValueError(f"KerasLikeAdam covers {', '.join(KERAS_VARIANTS)}, not {variant}")
    return type(f"Adam[{variant}]", (_KerasAdam,), {"spec": spec_v})


class _KerasAdam:
    spec: Variant
    _backend = NumpyBackend()

    def __init__(self, **kwargs: Any) -> None:
        v = self.spec
        names = {a.name: a.default for a in v.arguments}
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        args = {**names, **kwargs}
        self._check_extra(extra, args)
        if v.zero_epsilon == "default" and not args.get("epsilon"):
            args["epsilon"] = 1e-7
        for k in _CLIPS:
            val = args.get(k, extra.get(k))
            if val is not None and not val > 0:
                raise ValueError(f"{k} must be positive, got {val}")
            setattr(self, k, val)
        if self.clipnorm is not None and self.global_clipnorm is not None and v.clip_policy != "exclusive":
            raise ValueError("pass at most one of clipnorm and global_clipnorm")
        if v.clip_policy == "exclusive" and sum(getattr(self, k) is not None for k in _CLIPS) > 1:
            raise ValueError("pass at most one of clipnorm, clipvalue and global_clipnorm")
        self._args = args
        self._decay = float(extra.get("decay", 0.0)) if v.has("decay") else 0.0
        self.name = args.get("name") or ("adam" if v.id == "keras3" else "Adam")
        self.iterations = 0
        self._slots: dict[int, dict[str, np.ndarray]] = {}
        self._order: list[tuple[int, str]] = []
        self._vars: dict[int, Variable] = {}

    def _check_extra(self, extra: dict[str, Any], args: dict[str, Any]) -> None:
        v = self.spec
        for k, val in extra.items():
            if k == "lr" and v.lr_alias == "error":
                raise ValueError("lr is not an argument; use learning_rate")
            if k == "decay" and v.id == "tf-keras":
                raise ValueError("decay is an argument of the legacy optimizer only")
            if k not in v.allowed_kwargs and k not in _CLIPS:
                raise {"TypeError": TypeError, "ValueError": ValueError}[v.unknown_kwarg_error](
                    f"unexpected keyword argument {k!r}")
            if k == "lr" and v.lr_alias == "alias":
                args["learning_rate"] = val
            if k == "decay" and not v.has("decay"):
                warnings.warn("decay is accepted but ignored", UserWarning, stacklevel=3)

    # hyperparameters -------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return float(self._args["learning_rate"])

    def _hyper(self) -> Hyper:
        a, v = self._args, self.spec
        b1 = a.get("beta_1", 0.9)
        return Hyper(learning_rate=a["learning_rate"], beta_1=b1, beta_2=a.get("beta_2", 0.999),
                     epsilon=a["epsilon"], amsgrad=bool(a.get("amsgrad")), decay=self._decay,
                     clipnorm=self.clipnorm, clipvalue=self.clipvalue, global_clipnorm=self.global_clipnorm,
                     weight_decay=a.get("weight_decay"), use_ema=bool(a.get("use_ema")),
                     ema_momentum=a.get("ema_momentum", 0.99), ema_overwrite_frequency=a.get("ema_overwrite_frequency"),
                     adaptive_epsilon=bool(a.get("adaptive_epsilon")) if v.has("adaptive_epsilon") else False)

    def get_config(self) -> dict[str, Any]:
        cfg = {k: self._args[k] for k in self._args}
        cfg["name"] = self.name
        cfg.pop("adaptive_epsilon", None)   # as documented for tf-keras: the config omits it
        for k in _CLIPS:
            cfg[k] = getattr(self, k)
        if self._decay:
            cfg["decay"] = self._decay
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _KerasAdam:
        return cls(**dict(config))

    # state -----------------------------------------------------------------------------
    def _build(self, variables: list[Variable]) -> None:
        new = [x for x in variables if id(x) not in self._slots]
        if not new:
            return
        names = ["m", "v"] + (["vhat"] if self._args.get("amsgrad") else [])
        for x in new:
            self._vars[id(x)] = x
            self._slots[id(x)] = {n: np.zeros_like(x.value) for n in names}
            if self._args.get("use_ema"):
                self._slots[id(x)]["ema"] = x.value.copy()
        if self.spec.weights_order == "iter-then-by-slot":
            self._order += [(id(x), n) for n in names for x in new]
        else:
            self._order += [(id(x), n) for x in new for n in ("m", "v")]
            self._order += [(id(x), "vhat") for x in new if "vhat" in names]

    def get_slot_names(self) -> list[str]:
        """The spec's slot names (m, v, vhat in OptimizerV2; the slot lists elsewhere)."""
        return list(self.spec.slots[:3 if self._args.get("amsgrad") else 2])

    def get_slot(self, var: Variable, name: str) -> Variable:
        key = ("m", "v", "vhat")[list(self.spec.slots).index(name)]
        return Variable(self._slots[id(var)][key], f"{var.name}/{name}")

    def get_weights(self) -> list[np.ndarray]:
        lead = [np.asarray(self.iterations, np.int64)]
        if self.spec.weights_order == "iter-lr-interleaved":
            lead.append(np.asarray(self.learning_rate, np.float32))
        return lead + [self._slots[i][n].copy() for i, n in self._order]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        lead = 2 if self.spec.weights_order == "iter-lr-interleaved" else 1
        if len(weights) != lead + len(self._order):
            raise ValueError(f"expected {lead + len(self._order)} weights, got {len(weights)}")
        self.iterations = int(np.asarray(weights[0]))
        for (i, n), w in zip(self._order, weights[lead:]):
            if np.shape(w) != self._slots[i][n].shape:
                raise ValueError(f"weight for slot {n} has shape {np.shape(w)}, expected {self._slots[i][n].shape}")
            self._slots[i][n] = np.asarray(w, dtype=self._slots[i][n].dtype).copy()

    @property
    def variables(self) -> list[Variable]:
        return [Variable(w) for w in self.get_weights()]

    # steps -------------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Any) -> None:
        try:
            pairs = list(grads_and_vars)
        except TypeError:
            raise TypeError("grads_and_vars must be a sequence of (gradient, variable) pairs") from None
        for p in pairs:
            if not isinstance(p, (tuple, list)) or len(p) != 2 or not isinstance(p[1], Variable):
                raise TypeError(f"grads_and_vars must hold (gradient, variable) pairs, got {p!r:.60}")
        pairs = [(g, x) for g, x in pairs]
        if all(g is None for g, _ in pairs):
            raise ValueError("no gradients provided for any variable")
        xs = [x for _, x in pairs]
        self._build(xs)
        slots = [self._slots[id(x)] for x in xs]
        hyper = self._hyper()
        dtype = xs[0].value.dtype.name
        st = AdamState([x.value for x in xs], [s["m"] for s in slots], [s["v"] for s in slots], self.iterations,
                       [s["vhat"] for s in slots] if hyper.amsgrad else None, None, None,
                       [s["ema"] for s in slots] if hyper.use_ema else None)
        grads = [None if g is None else np.asarray(g, dtype=xs[0].value.dtype) for g, _ in pairs]
        out = self._backend.step(self.spec.id, dtype, hyper, st, grads)
        for i, (x, s) in enumerate(zip(xs, slots)):
            x.assign(out.params[i])
            s["m"], s["v"] = out.m[i], out.v[i]
            if hyper.amsgrad:
                s["vhat"] = out.vhat[i]
            if hyper.use_ema:
                s["ema"] = out.ema[i]
        self.iterations = out.iterations
        return None

    def minimize(self, loss: Any, var_list: Any, tape: Any = None) -> None:
        if tape is not None:
            raise ValueError("the numpy optimizer has no tapes; pass a loss made by NumpyApi.loss")
        if not isinstance(loss, QuadraticLoss):
            raise TypeError("the numpy optimizer can only differentiate losses made by NumpyApi.loss")
        loss()
        xs = list(var_list() if callable(var_list) else var_list)
        grads = [loss.gradient(x) for x in xs]
        self.apply_gradients(list(zip(grads, xs)))

    def finalize_variable_values(self, var_list: list[Variable]) -> None:
        if not self._args.get("use_ema"):
            return
        for x in var_list:
            x.assign(self._slots[id(x)]["ema"])


class NumpyApi:
    """The API world of the numpy backend (adamconf.api)."""

    name = "numpy"
    variants = KERAS_VARIANTS

    def __init__(self) -> None:
        self._classes = {v: KerasLikeAdam(v) for v in KERAS_VARIANTS}

    def optimizer_class(self, variant: str) -> type:
        return self._classes[variant]

    def defaults(self, variant: str) -> dict[str, Any]:
        opt = self._classes[variant]()
        return {a.name: opt.get_config().get(a.name, a.default) for a in opt.spec.arguments}

    def variable(self, value: np.ndarray, name: str) -> Variable:
        return Variable(value, name)

    def tensor(self, value: np.ndarray) -> np.ndarray:
        return np.array(value)

    def read(self, x: Any) -> np.ndarray:
        return x.numpy() if isinstance(x, Variable) else np.asarray(x)

    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]:
        return QuadraticLoss(variables, coef)

    def learning_rate(self, opt: Any) -> float:
        return opt.learning_rate

    def iterations(self, opt: Any) -> int:
        return int(opt.iterations)
