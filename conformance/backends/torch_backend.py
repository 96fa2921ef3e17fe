"""PyTorch backend: `torch.optim.Adam` run for real, one registered name per code path.

  torch          the single-tensor for-loop (foreach=False, fused=False)
  torch-foreach  the multi-tensor path (torch._foreach_* ops)
  torch-fused    the fused kernel (torch._fused_adam_; on CPU aten's FusedAdamKernel)
  torch-differentiable  the for-loop path with differentiable=True, which has an
                 arithmetic of its own (see TorchDifferentiableBackend)

Each step builds an optimizer over fresh tensors, loads the whole prior state through
`load_state_dict` (per parameter `step`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`),
sets `.grad`, calls `step()` once and reads everything back through `state_dict()`:
no arithmetic is re-implemented here. The device is the CPU unless the constructor
is given another (`TorchBackend(device="cuda")`) or ADAMCONF_TORCH_DEVICE names one
(`cuda`, `cuda:N`, or `auto` for CUDA where torch sees it); a CUDA device that is not
there refuses the backend before any cell runs. versions() states the device.

What the protocol's single step counter cannot say: torch counts steps per parameter
and a parameter whose gradient is None keeps its count. Every parameter's `step` is
loaded from `state.iterations`; after the step the counter is that of the parameters
that moved.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adamconf.backends.foreign import check_step
from adamconf.reference.state import DTYPES, AdamState, Hyper, SparseGrad, np_dtype

__all__ = ["TorchBackend", "TorchDifferentiableBackend", "TorchForeachBackend", "TorchFusedBackend", "TORCH_MISSING"]

TORCH_MISSING = "PyTorch is not installed: pip install -e '.[torch]'"
# The device every torch backend runs on: cpu (the default), cuda[:N], or auto.
DEVICE_VARIABLE = "ADAMCONF_TORCH_DEVICE"
FEATURES = frozenset({"amsgrad", "weight_decay", "maximize"})


def resolve_device(device: str) -> str:
    """The torch device to run on: `cpu`, `cuda` (or `cuda:N`), or `auto` (CUDA where torch
    sees it, else the CPU). Asking for CUDA where there is none is an ImportError naming
    the fix, so the backend is refused before any cell runs."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImportError(f"{DEVICE_VARIABLE}={device}, but this torch ({torch.__version__}) sees no CUDA device; "
                          f"use {DEVICE_VARIABLE}=auto to fall back to the CPU")
    if device != "cpu" and not device.startswith("cuda"):
        raise ImportError(f"{DEVICE_VARIABLE}={device!r} is not a device the torch backends know: cpu, cuda[:N] or auto")
    return device


def _torch():
    import torch
    return torch


def _torch_dtype(dtype: str):
    torch = _torch()
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
            "float64": torch.float64}[dtype]


def to_tensor(x: np.ndarray, dtype: str, device: str = "cpu"):
    """A new tensor holding x (bfloat16 travels as its 16-bit pattern: numpy's
    bfloat16 comes from ml_dtypes, which torch.from_numpy does not know)."""
    torch = _torch()
    a = np.array(x, dtype=np_dtype(dtype), order="C", copy=True)
    if dtype == "bfloat16":
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    return t.to(device)


def to_numpy(t: Any, dtype: str) -> np.ndarray:
    """A fresh numpy array of `dtype` with the tensor's values."""
    torch = _torch()
    t = t.detach().to("cpu").contiguous()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().copy().view(np_dtype("bfloat16"))
    return t.numpy().copy()


class TorchBackend:
    """torch.optim.Adam, single-tensor for-loop path."""

    name = "torch"
    variants = ("torch",)
    dtypes = DTYPES
    features = FEATURES
    findings = str(Path(__file__).with_name("torch_findings.toml"))
    path_kwargs: dict[str, Any] = {"foreach": False, "fused": False}

    def __init__(self, device: str | None = None) -> None:
        if importlib.util.find_spec("torch") is None:
            raise ImportError(TORCH_MISSING)
        self.device = resolve_device(device or os.environ.get(DEVICE_VARIABLE, "cpu"))

    def versions(self) -> dict[str, str]:
        return {"torch": _torch().__version__, "device": self.device}

    def unsupported(self, variant: str, dtype: str, features: Collection[str]) -> str | None:
        return None

    def api(self) -> Any:
        """The object-level API world (adamconf.api): the real class on this path and device."""
        from adamconf.backends.torch_api import TorchApi
        return TorchApi(self.name, self.path_kwargs, self.device)

    def make(self, params: list, hyper: Hyper):
        """The optimizer for this path over `params`, configured from `hyper`."""
        torch = _torch()
        return torch.optim.Adam(params, lr=float(hyper.learning_rate), betas=(float(hyper.beta_1), float(hyper.beta_2)),
                                eps=float(hyper.epsilon), weight_decay=float(hyper.weight_decay or 0.0),
                                amsgrad=bool(hyper.amsgrad), maximize=bool(hyper.maximize), **self.path_kwargs)

    def step(self, variant: str, dtype: str, hyper: Hyper, state: AdamState, grads: Sequence) -> AdamState:
        """One real `optimizer.step()` from `state`; the inputs are left untouched."""
        torch = _torch()
        grads = check_step(self, variant, hyper, state, grads)
        dev = self.device
        params = [to_tensor(p, dtype, dev) for p in state.params]
        opt = self.make(params, hyper)
        per_param = {}
        for i in range(len(params)):
            s = {"step": torch.tensor(float(state.iterations), dtype=torch.float32),
                 "exp_avg": to_tensor(state.m[i], dtype, dev), "exp_avg_sq": to_tensor(state.v[i], dtype, dev)}
            if hyper.amsgrad:
                s["max_exp_avg_sq"] = to_tensor(state.vhat[i], dtype, dev)
            per_param[i] = s
        sd = opt.state_dict()
        sd["state"] = per_param
        opt.load_state_dict(sd)
        for p, g in zip(params, grads):
            if isinstance(g, SparseGrad):
                p.grad = torch.sparse_coo_tensor(to_tensor(np.asarray(g.indices).reshape(1, -1), "float64").long(),
                                                 to_tensor(g.values, dtype), g.dense_shape).to(dev)
            else:
                p.grad = None if g is None else to_tensor(g, dtype, dev)
        with torch.no_grad():
            opt.step()
        out = opt.state_dict()["state"]
        moved = [i for i, g in enumerate(grads) if g is not None]
        steps = {int(out[i]["step"].item()) for i in moved}
        iterations = steps.pop() if len(steps) == 1 else -1
        return AdamState(
            params=[to_numpy(p, dtype) for p in params],
            m=[to_numpy(out[i]["exp_avg"], dtype) for i in range(len(params))],
            v=[to_numpy(out[i]["exp_avg_sq"], dtype) for i in range(len(params))],
            iterations=iterations if moved else state.iterations,
            vhat=[to_numpy(out[i]["max_exp_avg_sq"], dtype) for i in range(len(params))] if hyper.amsgrad else None,
        )


class TorchForeachBackend(TorchBackend):
    """torch.optim.Adam, multi-tensor (foreach) path."""

    name = "torch-foreach"
    path_kwargs = {"foreach": True, "fused": False}


class TorchFusedBackend(TorchBackend):
    """torch.optim.Adam, fused kernel."""

    name = "torch-fused"
    path_kwargs = {"fused": True}


class TorchDifferentiableBackend(TorchBackend):
    """torch.optim.Adam, for-loop path with differentiable=True: an arithmetic of its own
    (the step count stays a float32 tensor, so the bias corrections are float32 tensors,
    and the update divides by sqrt(v) / (sqrt(bc2) * -step_size) + eps / -step_size)."""

    name = "torch-differentiable"
    findings = str(Path(__file__).with_name("torch_differentiable_findings.toml"))
    path_kwargs = {"foreach": False, "fused": False, "differentiable": True}
