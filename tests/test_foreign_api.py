"""The API worlds of the foreign rows: torch.optim.Adam (every code path), optax.adam and
Keras 3 on JAX and PyTorch pass every API clause of their rows, and planted API bugs in
torch and optax fail the clause they break."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adamconf.api import validate_world
from adamconf.api_checks import API_CHECKS
from adamconf.loading import load_backend
from adamconf.runner import Runner
from adamconf.spec import load_spec

SPEC = load_spec()
API_ONLY = list(API_CHECKS)


def _api(backend, variant):
    res = Runner(SPEC, backend, "test", profile="ci").run([variant], ["float32"], only=API_ONLY)
    return {c.clause: c.status["api"] for c in res.clauses if "api" in c.status}


def _api_clauses(variant):
    return {c.id for c in SPEC.clauses_for(variant) if c.kind != "numeric"}


@pytest.mark.parametrize("name", ["torch", "torch-foreach", "torch-fused", "torch-differentiable", "optax", "optax-jit"])
def test_every_api_clause_of_the_row_passes(name):
    pytest.importorskip("torch" if name.startswith("torch") else "optax")
    b = load_backend(name)
    validate_world(b.api(), name)
    variant = b.variants[0]
    got = _api(b, variant)
    assert set(got) == _api_clauses(variant)
    # differentiable=True: a tensor lr changes its arithmetic (torch_differentiable_findings.toml)
    known = {"torch.arg.lr-tensor"} if name == "torch-differentiable" else set()
    assert all(s == ("known deviation" if c in known else "pass") for c, s in got.items()), got


# -- planted bugs -----------------------------------------------------------------------------

def _torch_planted(cls_patch=None, defaults_patch=None):
    torch = pytest.importorskip("torch")
    from adamconf.backends.torch_api import TorchApi
    from adamconf.backends.torch_backend import TorchBackend

    class World(TorchApi):
        def optimizer_class(self, variant):
            world = self
            base = type("Planted", (torch.optim.Adam,), cls_patch or {})

            def adam(params=None, **kw):
                return base(params if params is not None else [world.variable(np.zeros(2, np.float32), "p")],
                            **{**world.path, **kw})
            return adam

        def defaults(self, variant):
            d = super().defaults(variant)
            return {**d, **(defaults_patch or {})}

    class Backend(TorchBackend):
        def api(self):
            return World(self.name, self.path_kwargs, self.device)
    return Backend()


def _renamed_state(self):
    sd = torch_adam_state_dict(self)
    sd["state"] = {i: {("m" if k == "exp_avg" else k): v for k, v in s.items()} for i, s in sd["state"].items()}
    return sd


def torch_adam_state_dict(opt):
    import torch
    return torch.optim.Adam.state_dict(opt)


def _flat_groups(self, params, **kw):
    import torch
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    torch.optim.Adam.__init__(self, flat, **kw)


def _lr_float32(self, params, lr=1e-3, **kw):
    import torch
    if isinstance(lr, torch.Tensor):
        lr = torch.tensor(float(np.float32(lr.item())), dtype=torch.float64)
    torch.optim.Adam.__init__(self, params, lr=lr, **kw)


def _capturable_dropped(self, params, capturable=False, **kw):
    import torch
    torch.optim.Adam.__init__(self, params, **kw)


def _densify(self, closure=None):
    import torch
    for g in self.param_groups:
        for p in g["params"]:
            if p.grad is not None and p.grad.is_sparse:
                p.grad = p.grad.to_dense()
    return torch.optim.Adam.step(self, closure)


TORCH_PLANTED = {
    "eps-1e-7": ({}, {"eps": 1e-7}, "torch.default.hypers"),
    "exp_avg-renamed": ({"state_dict": _renamed_state}, None, "torch.slots.names"),
    "groups-flattened": ({"__init__": _flat_groups}, None, "torch.arg.param-groups"),
    "lr-tensor-float32": ({"__init__": _lr_float32}, None, "torch.arg.lr-tensor"),
    "sparse-densified": ({"step": _densify}, None, "torch.sparse.unsupported"),
    "capturable-dropped": ({"__init__": _capturable_dropped}, None, "torch.arg.capturable"),
}


@pytest.mark.parametrize("name", sorted(TORCH_PLANTED))
def test_planted_torch_api_bug_fails_its_clause(name):
    cls_patch, defaults_patch, clause = TORCH_PLANTED[name]
    got = _api(_torch_planted(cls_patch, defaults_patch), "torch")
    assert got[clause] == "fail", got
    assert sum(s == "fail" for s in got.values()) <= 3, got


def test_planted_state_dict_rename_also_breaks_the_layout_clause():
    got = _api(_torch_planted({"state_dict": _renamed_state}), "torch")
    assert got["torch.state.state-dict"] == "fail", got


def _optax_planted(make):
    pytest.importorskip("optax")
    from adamconf.backends.optax_api import OptaxApi
    from adamconf.backends.optax_backend import OptaxBackend

    class World(OptaxApi):
        def optimizer_class(self, variant):
            return make

    class Backend(OptaxBackend):
        def api(self):
            return World(self.name)
    return Backend()


def test_planted_optax_default_learning_rate_fails():
    import optax

    def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *, nesterov=False):
        return optax.adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    got = _api(_optax_planted(adam), "optax")
    assert got["optax.arg.required-lr"] == "fail" and got["optax.default.hypers"] == "pass", got


def test_planted_optax_count_from_one_fails():
    import jax.numpy as jnp
    import optax

    def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *, nesterov=False):
        tx = optax.adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
        init = lambda p: tuple(s._replace(count=jnp.ones([], jnp.int32)) if "count" in getattr(s, "_fields", ()) else s  # noqa: E501, E731
                               for s in tx.init(p))
        return optax.GradientTransformation(init, tx.update)
    got = _api(_optax_planted(adam), "optax")
    assert got["optax.slots.names"] == "fail", got


# -- Keras 3 on JAX and PyTorch: the keras3 row's API clauses, each in its own process --------

@pytest.mark.parametrize("name", ["keras3-jax", "keras3-torch"])
def test_keras3_api_world_passes_the_keras3_api_clauses(name, tmp_path):
    # keras is not imported here: it would fix this process's Keras backend
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec(name.split("-")[1]) is None:
        pytest.skip(f"{name} needs keras and {name.split('-')[1]}: pip install -e '.[torch,jax]'")
    checks = [a for c in API_CHECKS for a in ("--check", c)]
    r = subprocess.run([sys.executable, "-m", "adamconf", "check", "--backend", name, "--variant", "keras3",
                        "--quiet", "--out", str(tmp_path), *checks], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KERAS_BACKEND": name.split("-")[1]})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.loads((tmp_path / "results.json").read_text())
    api = {c["clause"]: c["status"]["api"] for c in rec["clauses"] if "api" in c["status"]}
    judged = {k: s for k, s in api.items() if s != "uncovered"}
    assert len(judged) >= 18 and all(s == "pass" for s in judged.values()), api


def test_planted_optax_mu_dtype_ignored_fails():
    import optax

    def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *, nesterov=False):
        return optax.adam(learning_rate, b1, b2, eps, eps_root, None, nesterov=nesterov)
    got = _api(_optax_planted(adam), "optax")
    assert got["optax.arg.mu-dtype"] == "fail" and got["optax.slots.names"] == "pass", got
