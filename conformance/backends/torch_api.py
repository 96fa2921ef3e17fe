"""The object-level API world of torch.optim.Adam (see adamconf.api).

torch's optimizer is built over its parameters, so `optimizer_class` returns the real
class with two things filled in when the caller leaves them out: a fresh parameter (the
generic keyword checks construct without any) and this backend's code path (foreach /
fused), so the API clauses are judged on the path the backend's name promises. The
defaults come from the real class's signature. Steps are torch's own: `.grad`, then
`step()` (adamconf.api_foreign).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from adamconf.api import signature_defaults

__all__ = ["TorchApi"]


class TorchApi:
    """torch.optim.Adam on one code path and device."""

    variants = ("torch",)

    def __init__(self, name: str, path: dict[str, Any], device: str = "cpu") -> None:
        self.name, self.path, self.device = name, dict(path), device

    def optimizer_class(self, variant: str) -> Callable[..., Any]:
        import torch
        world = self

        def adam(params: Any = None, **kwargs: Any) -> Any:
            if params is None:
                params = [world.variable(np.zeros(2, np.float32), "p")]
            return torch.optim.Adam(params, **{**world.path, **kwargs})
        adam.__doc__ = "torch.optim.Adam on this backend's code path"
        return adam

    def defaults(self, variant: str) -> dict[str, Any]:
        """The signature's defaults, with the betas pair also under the spec's betas[0], betas[1]."""
        import torch
        out = signature_defaults(torch.optim.Adam)
        if isinstance(out.get("betas"), tuple):
            out["betas[0]"], out["betas[1]"] = out["betas"]
        return out

    def variable(self, value: np.ndarray, name: str) -> Any:
        """A leaf tensor; one that requires grad except with differentiable=True, whose step
        runs with autograd on and may not write in place into such a leaf."""
        import torch
        t = torch.tensor(np.asarray(value), device=self.device)
        return t.requires_grad_(not self.path.get("differentiable", False))

    def tensor(self, value: np.ndarray) -> Any:
        import torch
        return torch.tensor(np.asarray(value), device=self.device)

    def read(self, x: Any) -> np.ndarray:
        return x.detach().to("cpu").numpy().copy() if hasattr(x, "detach") else np.asarray(x)

    def loss(self, variables: list[Any], coef: float) -> Callable[[], Any]:
        return lambda: sum((coef * v * v).sum() / 2 for v in variables)

    def learning_rate(self, opt: Any) -> float:
        return float(opt.param_groups[0]["lr"])

    def iterations(self, opt: Any) -> int:
        """The parameters' common step count: 0 before the first step, -1 where they differ."""
        steps = {int(s["step"]) for s in opt.state.values() if "step" in s}
        if not steps:
            return 0
        return steps.pop() if len(steps) == 1 else -1

    def step(self, opt: Any, pairs: list[tuple[Any, Any]]) -> None:
        """One optimizer step with each parameter's .grad set to its gradient (None: none)."""
        import torch
        for g, x in pairs:
            x.grad = None if g is None else self.tensor(g) if isinstance(g, np.ndarray) else g
        with torch.no_grad():
            opt.step()
