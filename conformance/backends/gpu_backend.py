"""The GPU backend: the TF family's Adam step as one fused Triton kernel per tensor.

`GpuBackend` follows the protocol (numpy state in, numpy state out) and runs each
parameter tensor's whole dense update in one launch of `gpu_kernel._adam_kernel`;
the handful of per-step scalars are formed on the host from the variant's spec fields
(`step_scalars`). On a machine with CUDA it runs on the GPU; without one, Triton's
interpreter runs the same kernel on CPU tensors, which is how CI tests it.

What runs where, as declared in `features` and `unsupported`:
- on the device, inside the one kernel: the dense update, AMSGrad, clipping by value,
  decoupled weight decay and the EMA of the weights with its overwrite;
- on the host: the scalars (learning-rate schedules, callables, legacy decay,
  adaptive epsilon, TF1's beta-power accumulators), and sparse gradients, which are
  clipped by value as raw slices where the spec says so (`sparse_clip`), densified
  with duplicates summed in the parameter dtype, and then go through the same kernel
  (Keras 3's `squares-summed` rule passes its summed squares as a second input);
- not implemented: clipnorm and global_clipnorm (a reduction before the step; a
  second kernel), and the foreign variants (torch, optax: `algorithm-1`).
Dtypes: float16, bfloat16, float32 and float64.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

try:
    import torch

    # gpu_kernel imports triton itself, after choosing the interpreter where there is no CUDA
    from adamconf.backends import gpu_kernel as K
except ImportError as e:
    raise ImportError(f"the gpu backend needs torch and triton: pip install -e '.[gpu]' ({e})") from None

from adamconf.backends.numpy_backend import _densify, _slices
from adamconf.backends.step_inputs import asked_features, check_gradient_count
from adamconf.backends.step_scalars import StepScalars, held, step_scalars
from adamconf.reference.state import (
    DTYPES,
    AdamState,
    Hyper,
    SparseGrad,
    np_dtype,
)
from adamconf.spec import load_spec
from adamconf.spec.model import Variant

__all__ = ["FEATURES", "GpuBackend", "GpuNoFmaBackend", "variants_from_spec"]

# What this backend implements of the spec's FEATURES (see the module doc).
FEATURES = frozenset({"amsgrad", "clipvalue", "weight_decay", "ema", "sparse", "decay",
                      "schedule", "callable_hyper", "adaptive_epsilon"})
_TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


def variants_from_spec() -> tuple[str, ...]:
    """The spec's TF-family variants: the ones with the epsilon-hat formula."""
    spec = load_spec()
    return tuple(v.id for v in spec.variants.values() if v.family == "tf" and v.formula == "epsilon-hat")


def _to_device(x: np.ndarray, dtype: str) -> torch.Tensor:
    """A numpy array as a flat tensor on the kernel's device (bfloat16 through its bits)."""
    a = np.ascontiguousarray(x).reshape(-1)
    if dtype == "bfloat16":
        t = torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    return t.to(K.device())


def _to_numpy(t: torch.Tensor, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    t = t.cpu()
    if dtype == "bfloat16":
        return t.view(torch.uint16).numpy().view(np_dtype("bfloat16")).reshape(shape)
    return t.numpy().reshape(shape)


def _coef(sc: StepScalars, clip: np.generic | None, dtype: str) -> torch.Tensor:
    """The scalars in gpu_kernel.COEF order, as a tensor of the parameter dtype."""
    T = np_dtype(dtype)
    z = np.asarray(0).astype(T)[()]
    pick = lambda x: z if x is None else x
    vals = {"omb1": sc.omb1, "omb2": sc.omb2, "alpha": sc.alpha, "eps": sc.eps, "wd": pick(sc.wd),
            "lr": sc.lr, "clip_lo": z if clip is None else -clip, "clip_hi": pick(clip),
            "mu": pick(sc.mu), "omm": pick(sc.omm)}
    return _to_device(np.array([vals[k] for k in K.COEF], dtype=T), dtype)


class GpuBackend:
    """The TF-family variants' dense step as one fused Triton kernel per tensor; the GPU
    compiler may contract multiply-adds into FMAs, as GPU compilers do by default."""

    name = "gpu"
    dtypes = DTYPES
    features = FEATURES
    fp_fusion = True

    def __init__(self) -> None:
        self.variants = variants_from_spec()
        self._spec = load_spec()

    def versions(self) -> dict[str, str]:
        where = "triton interpreter on CPU" if K.INTERPRETED else torch.cuda.get_device_name()
        return {"torch": torch.__version__, "triton": K.TRITON_VERSION, "device": where,
                "fp_fusion": str(self.fp_fusion and not K.INTERPRETED)}

    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        if variant not in self.variants:
            return f"gpu implements the TF family's epsilon-hat variants only, not {variant}"
        if dtype not in DTYPES:
            return f"gpu does not support {dtype}"
        v = self._spec.variant(variant)
        lacking = sorted(set(features) - set(v.features))
        if lacking:
            return f"variant {variant} has no {', '.join(lacking)}"
        mine = sorted(set(features) - FEATURES)
        if mine:
            return f"gpu does not implement {', '.join(mine)} (norm clipping needs a reduction before the step)"
        return None

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence) -> AdamState:
        """One step into fresh arrays; the inputs are left untouched."""
        with np.errstate(all="ignore"):
            return self._step(variant, dtype, hyper, state, list(grads))

    # -- the work ------------------------------------------------------------------------
    def _step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: list) -> AdamState:
        if variant not in self.variants:
            raise ValueError(self.unsupported(variant, dtype, ()))
        v = self._spec.variant(variant)
        T = np_dtype(dtype)
        n = len(state.params)
        check_gradient_count(state, grads)
        reason = self.unsupported(variant, dtype, asked_features(hyper, grads))
        if reason:
            raise ValueError(reason)
        if hyper.clipvalue is not None and not hyper.clipvalue > 0:
            raise ValueError(f"clipvalue must be positive, got {hyper.clipvalue}")
        fields = self._fields(state, T, n, hyper)
        sc = step_scalars(v, T, hyper, state)
        clip = held(hyper.clipvalue, "param", T) if hyper.clipvalue is not None else None
        coef = _coef(sc, clip, dtype)
        freq = hyper.ema_overwrite_frequency
        overwrite = bool(hyper.use_ema and freq and (state.iterations + 1) % freq == 0)

        out: dict[str, list | None] = {k: (None if fields[k] is None else []) for k in fields}
        for i, g in enumerate(grads):
            p = fields["params"][i]
            if g is None:
                self._untouched(i, fields, out, sc, overwrite)
                continue
            g, gsq, clip_here = self._gradient(v, T, g, p.shape, clip)
            dev = lambda x: _to_device(x, dtype)
            ins = [dev(fields[k][i]) for k in ("params", "m", "v")]
            outs = tuple(torch.empty_like(ins[0]) for _ in range(3))
            vhat = ema = None
            if hyper.amsgrad:
                vh_in = dev(fields["vhat"][i])
                vhat = (vh_in, torch.empty_like(vh_in))
            if hyper.use_ema:
                e_in = dev(fields["ema"][i])
                ema = (e_in, torch.empty_like(e_in))
            K.launch(dtype, coef, *ins, dev(g), outs, vhat=vhat, ema=ema, overwrite=overwrite,
                     gsq=None if gsq is None else dev(gsq), clip=clip_here, weight_decay=sc.wd is not None,
                     fp_fusion=self.fp_fusion)
            shape = p.shape
            for k, t in zip(("params", "m", "v"), outs):
                out[k].append(_to_numpy(t, dtype, shape))
            if out["vhat"] is not None:
                out["vhat"].append(_to_numpy(vhat[1], dtype, shape) if vhat else fields["vhat"][i].copy())
            if out["ema"] is not None:
                out["ema"].append(_to_numpy(ema[1], dtype, shape) if ema else fields["ema"][i].copy())
        b1p, b2p = sc.next_powers
        return AdamState(out["params"], out["m"], out["v"], state.iterations + 1, out["vhat"], b1p, b2p, out["ema"])

    @staticmethod
    def _fields(state: AdamState, T: np.dtype, n: int, hyper: Hyper) -> dict[str, list | None]:
        """The state's arrays, checked (dtype, count, shape); vhat zeros and the EMA a
        copy of the parameters when the feature is on and the state lacks them."""
        fields: dict[str, list | None] = {"params": state.params, "m": state.m, "v": state.v,
                                          "vhat": state.vhat, "ema": state.ema}
        if fields["vhat"] is None and hyper.amsgrad:
            fields["vhat"] = [np.zeros_like(p) for p in state.params]
        if fields["ema"] is None and hyper.use_ema:
            fields["ema"] = [np.array(p, copy=True) for p in state.params]
        for name, xs in fields.items():
            if xs is None:
                continue
            if len(xs) != n:
                raise ValueError(f"state.{name} has {len(xs)} arrays for {n} parameters")
            for i, (x, p) in enumerate(zip(xs, state.params)):
                x = np.asarray(x)
                if x.dtype != T:
                    raise ValueError(f"state.{name}[{i}] has dtype {x.dtype}, expected {T}")
                if x.shape != np.shape(p):
                    raise ValueError(f"state.{name}[{i}] has shape {x.shape}, the parameter {np.shape(p)}")
        return fields

    @staticmethod
    def _gradient(v: Variant, T: np.dtype, g, shape: tuple[int, ...], clip):
        """(dense gradient in T, summed squares or None, clip in the kernel?). Sparse
        gradients are clipped as raw slices where the spec says so, then densified."""
        if not isinstance(g, SparseGrad):
            ga = np.asarray(g)
            if ga.shape != shape:
                raise ValueError(f"gradient of shape {ga.shape} for a parameter of shape {shape}")
            return np.ascontiguousarray(ga, dtype=T), None, clip is not None
        idx, vals = _slices(g, T, shape)
        clip_here = clip is not None
        if clip_here and v.sparse_clip == "raw-slices":
            vals = np.minimum(np.maximum(vals, -clip), clip)
            clip_here = False
        gsq = _densify(idx, np.multiply(vals, vals), shape) if v.sparse == "squares-summed" else None
        return _densify(idx, vals, shape), gsq, clip_here

    @staticmethod
    def _untouched(i: int, fields: dict, out: dict, sc: StepScalars, overwrite: bool) -> None:
        """A variable without a gradient keeps its value and slots; its EMA still moves
        (Keras averages every trainable variable), on the host: there is nothing to fuse."""
        p = fields["params"][i]
        new_p = p.copy()
        if out["ema"] is not None:
            avg = fields["ema"][i]
            if sc.mu is not None:
                avg = np.add(np.multiply(avg, sc.mu), np.multiply(p, sc.omm))
                if overwrite:
                    new_p = avg.copy()
            out["ema"].append(np.array(avg, copy=True))
        out["params"].append(new_p)
        out["m"].append(fields["m"][i].copy())
        out["v"].append(fields["v"][i].copy())
        if out["vhat"] is not None:
            out["vhat"].append(fields["vhat"][i].copy())


class GpuNoFmaBackend(GpuBackend):
    """The same kernel compiled without multiply-add contraction: every operation rounds
    once, as on the CPU, so the device's results equal the numpy backend's bit for bit."""

    name = "gpu-nofma"
    fp_fusion = False
