"""Object-level checks of the foreign rows: torch.optim.Adam and optax.adam.

These APIs are not Keras-shaped: torch steps through `.grad` and `step()` and keeps
its state in `state_dict()`; optax returns a gradient transformation whose state is a
named tuple. The worlds (backends/torch_api.py, backends/optax_api.py) supply the
library; the expected values come from the spec (slot names, defaults) and from the
reference (the moments after one step), never from the library under test.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from adamconf.api import ApiCheck, Verdicts, exc_name, raises

__all__ = ["FOREIGN_API_CHECKS", "optax_slots", "torch_slots"]

_P = (np.array([1.0, -2.0, 3.0], np.float32), np.array([[0.5, -0.25], [1.5, 2.0]], np.float32))
_G1 = (np.array([0.1, 0.2, -0.3], np.float32), np.array([[1.0, -1.0], [0.5, 0.25]], np.float32))
_G2 = (np.array([-0.4, 0.05, 0.3], np.float32), np.array([[0.2, 0.7], [-1.5, 0.125]], np.float32))


def _vars(world: Any) -> list[Any]:
    return [world.variable(p.copy(), f"x{i}") for i, p in enumerate(_P)]


def _bitwise(world: Any, xs: list[Any], ys: list[Any]) -> bool:
    return all(np.array_equal(world.read(x), world.read(y)) for x, y in zip(xs, ys))


def _exact_moments(out: Verdicts, grads: tuple[np.ndarray, ...]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The exact m, v and vhat after one AMSGrad step from zero, each with its allowed
    error K*u*S (float32)."""
    from adamconf.reference import adam as ref
    from adamconf.reference.state import AdamState, Hyper
    v = out.variant
    res = ref.step(v, "float32", Hyper(amsgrad=True, epsilon=v.default("epsilon", 1e-8)),
                   AdamState.zeros_like(list(_P), amsgrad=True), list(grads))
    k = out.k("step") * 2.0 ** -24
    return {n: [(np.asarray(a, np.float64), k * np.asarray(s, np.float64)) for a, s in zip(res.approx(n), res.scale(n))]
            for n in ("m", "v", "vhat")}


def _within(got: Any, want: tuple[np.ndarray, np.ndarray]) -> bool:
    got = np.asarray(got, np.float64)
    return got.shape == want[0].shape and bool(np.all(np.abs(got - want[0]) <= want[1]))


# -- torch ----------------------------------------------------------------------------------

def torch_slots(world: Any, out: Verdicts) -> None:
    """slots.names: each parameter's entry in state_dict()['state'] names step and the
    spec's slots, max_exp_avg_sq only with AMSGrad."""
    cls = world.optimizer_class(out.variant.id)
    want = {True: sorted(["step", *out.variant.slots]),
            False: sorted(["step", *(s for s in out.variant.slots if not s.startswith("max_"))])}
    bad = []
    for ams in (True, False):
        xs = _vars(world)
        opt = cls(xs, amsgrad=ams)
        world.step(opt, list(zip(_G1, xs)))
        for i, entry in opt.state_dict()["state"].items():
            if sorted(entry) != want[ams]:
                bad.append(f"amsgrad={ams}: parameter {i} holds {sorted(entry)}, the spec names {want[ams]}")
    out.judge("slots.names", not bad, "; ".join(bad))


def _state_dict_layout(world: Any, sd: dict, out: Verdicts) -> list[str]:
    """What is wrong with a state_dict taken after one AMSGrad step over the two parameters."""
    bad = []
    if sorted(sd) != ["param_groups", "state"]:
        return [f"state_dict() has keys {sorted(sd)}, expected param_groups and state"]
    if sorted(sd["state"]) != [0, 1]:
        bad.append(f"'state' is keyed by {sorted(sd['state'])}, expected the positions 0 and 1")
    exact = _exact_moments(out, _G1)
    for i, entry in sorted(sd["state"].items()):
        step = entry.get("step")
        if step is None or float(world.read(step)) != 1.0:
            bad.append(f"parameter {i}: step is {step!r} after one step")
        for name, ref in (("exp_avg", "m"), ("exp_avg_sq", "v"), ("max_exp_avg_sq", "vhat")):
            if name not in entry or not _within(world.read(entry[name]), exact[ref][i]):
                got = world.read(entry[name]).ravel()[:3] if name in entry else "absent"
                bad.append(f"parameter {i}: {name} is {got}, the exact value is {exact[ref][i][0].ravel()[:3]}")
    groups = sd["param_groups"]
    opts = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "capturable", "differentiable")
    if len(groups) != 1 or groups[0].get("params") != [0, 1] or any(k not in groups[0] for k in opts):
        bad.append(f"'param_groups' is {groups!r}: expected one group with params [0, 1] and {', '.join(opts)}")
    return bad


def _torch_state_dict(world: Any, cls: Any, out: Verdicts) -> None:
    xs = _vars(world)
    opt = cls(xs, amsgrad=True)
    world.step(opt, list(zip(_G1, xs)))
    sd = copy.deepcopy(opt.state_dict())
    bad = _state_dict_layout(world, sd, out)
    if bad:     # a round trip of a state the layout already refutes proves nothing more
        out.judge("state.state-dict", False, "; ".join(bad))
        return
    ys = [world.variable(world.read(x), f"y{i}") for i, x in enumerate(xs)]
    again = cls(ys, amsgrad=True)
    again.load_state_dict(sd)
    world.step(opt, list(zip(_G2, xs)))
    world.step(again, list(zip(_G2, ys)))
    out.judge("state.state-dict", _bitwise(world, xs, ys),
              f"after load_state_dict the next step gives {world.read(ys[0])}, the original {world.read(xs[0])}")


def _torch_param_groups(world: Any, cls: Any, out: Verdicts) -> None:
    a, b = _vars(world)
    opt = cls([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.125)
    lrs = [g["lr"] for g in opt.param_groups]
    a1, b1 = _vars(world)
    one, two = cls([a1], lr=0.125), cls([b1], lr=0.5)
    for g in (_G1, _G2):
        world.step(opt, list(zip(g, (a, b))))
        world.step(one, [(g[0], a1)])
        world.step(two, [(g[1], b1)])
    ok = lrs == [0.125, 0.5] and _bitwise(world, [a, b], [a1, b1])
    out.judge("arg.param-groups", ok, f"group rates {lrs} (expected [0.125, 0.5]); the grouped steps "
              f"{'match' if _bitwise(world, [a, b], [a1, b1]) else 'differ from'} two optimizers with one rate each")


def _torch_lr_tensor(world: Any, cls: Any, out: Verdicts) -> None:
    import torch
    lr = torch.tensor(0.01, dtype=torch.float64, device=world.device)
    multi = world.path.get("foreach") and not world.path.get("fused")
    e = raises(lambda: cls(_vars(world), lr=lr))
    if multi:
        out.judge("arg.lr-tensor", isinstance(e, ValueError),
                  f"a tensor lr on the multi-tensor path without capturable raised {exc_name(e)}, expected ValueError")
        return
    if e is not None:
        out.judge("arg.lr-tensor", False, f"a tensor lr raised {exc_name(e)}")
        return
    # float64 parameters: a rate held at any lower precision shows in every element
    xs, ys = ([world.variable(p.astype(np.float64), f"x{i}") for i, p in enumerate(_P)] for _ in range(2))
    t, f = cls(xs, lr=lr), cls(ys, lr=0.01)
    for g in ([a.astype(np.float64) for a in gs] for gs in (_G1, _G2)):
        world.step(t, list(zip(g, xs)))
        world.step(f, list(zip(g, ys)))
    out.judge("arg.lr-tensor", _bitwise(world, xs, ys),
              f"with lr as a float64 tensor the parameters are {world.read(xs[0])}, with the float {world.read(ys[0])}")


def _torch_capturable(world: Any, cls: Any, out: Verdicts) -> None:
    if world.device != "cpu":
        out.skip("arg.capturable", f"on {world.device} capturable is its own arithmetic (the step count stays a "
                                   "device tensor); the clause speaks of the CPU")
        return
    xs, ys = _vars(world), _vars(world)
    cap, plain = cls(xs, capturable=True), cls(ys)
    e = raises(lambda: world.step(cap, list(zip(_G1, xs))))
    if not world.path.get("fused"):
        out.judge("arg.capturable", e is not None and "capturable" in str(e),
                  f"capturable=True on the CPU raised {exc_name(e)}, expected a refusal naming capturable")
        return
    world.step(plain, list(zip(_G1, ys)))
    out.judge("arg.capturable", e is None and _bitwise(world, xs, ys),
              f"the fused step with capturable=True raised {exc_name(e)}" if e is not None else
              f"the fused step with capturable=True gives {world.read(xs[0])}, without it {world.read(ys[0])}")


def _torch_sparse(world: Any, cls: Any, out: Verdicts) -> None:
    x = world.variable(np.array([1.0, 2.0, 3.0], np.float32), "x")
    opt = cls([x])
    g = world.tensor(np.array([0.0, 0.5, 0.0], np.float32)).to_sparse()
    e = raises(lambda: world.step(opt, [(g, x)]))
    out.judge("sparse.unsupported", isinstance(e, RuntimeError) and np.array_equal(world.read(x), [1.0, 2.0, 3.0]),
              f"a sparse gradient raised {exc_name(e)}, expected RuntimeError with the parameter untouched")


def check_torch(world: Any, out: Verdicts) -> None:
    """state_dict layout and round trip, parameter groups, a tensor lr, capturable, sparse gradients."""
    cls = world.optimizer_class(out.variant.id)
    for sfx, fn in (("state.state-dict", _torch_state_dict), ("arg.param-groups", _torch_param_groups),
                    ("arg.lr-tensor", _torch_lr_tensor), ("arg.capturable", _torch_capturable),
                    ("sparse.unsupported", _torch_sparse)):
        if out.wants(sfx):
            fn(world, cls, out)


# -- optax ----------------------------------------------------------------------------------

def _adam_record(state: Any) -> Any:
    """The named-tuple record in a (possibly chained) optax state that holds the count."""
    if hasattr(state, "_fields") and "count" in state._fields:
        return state
    if isinstance(state, tuple):
        return next((r for r in map(_adam_record, state) if r is not None), None)
    return None


def _fresh_record(world: Any, make: Any, kind: str, fields: tuple[str, ...]) -> tuple[Any, list[str]]:
    """init's record and what is wrong with it: its type name, a zero count, zero moments
    shaped as the parameters."""
    params = _vars(world)
    rec = _adam_record(make(0.1).init(params))
    if rec is None:
        return None, [f"init returned no record with a count: {make(0.1).init(params)!r}"[:200]]
    bad = []
    if type(rec).__name__ != kind or tuple(rec._fields) != fields:
        bad.append(f"init gives {type(rec).__name__}{tuple(rec._fields)}, expected {kind}{fields}")
    elif int(world.read(rec.count)) != 0:
        bad.append(f"the count starts at {world.read(rec.count)}")
    else:
        for f in fields[1:]:
            arrays = [world.read(a) for a in getattr(rec, f)]
            if [a.shape for a in arrays] != [p.shape for p in _P] or any(np.any(a != 0) for a in arrays):
                bad.append(f"{f} does not start as zeros shaped as the parameters")
    return rec, bad


def optax_slots(world: Any, out: Verdicts) -> None:
    """slots.names: optax.adam's state record, its zero start, and one update counting 1
    with mu and nu at their exact values."""
    make = world.optimizer_class(out.variant.id)
    fields = ("count", *out.variant.slots)
    rec, bad = _fresh_record(world, make, "ScaleByAdamState", fields)
    if not bad:
        tx = make(0.1)
        _, state = world.step(tx, tx.init(_vars(world)), _vars(world), list(_G1))
        rec = _adam_record(state)
        exact = _exact_moments(out, _G1)
        if int(world.read(rec.count)) != 1:
            bad.append(f"the count is {world.read(rec.count)} after one update")
        for f, ref in zip(out.variant.slots, ("m", "v")):
            if not all(_within(world.read(a), e) for a, e in zip(getattr(rec, f), exact[ref])):
                bad.append(f"{f} after one update is not the exact {ref}")
    out.judge("slots.names", not bad, "; ".join(bad))


def _optax_mu_dtype(world: Any, make: Any, out: Verdicts) -> None:
    """mu_dtype=bfloat16 over float32 parameters, against the same update without it."""
    low = world.dtype("bfloat16")
    tx, plain = make(0.1, mu_dtype=low), make(0.1)
    start = _adam_record(tx.init(_vars(world)))
    _, s1 = world.step(tx, tx.init(_vars(world)), _vars(world), list(_G1))
    _, s2 = world.step(plain, plain.init(_vars(world)), _vars(world), list(_G1))
    a, b = _adam_record(s1), _adam_record(s2)
    kinds = [str(x.dtype) for x in (*start.mu, *a.mu)] + [str(x.dtype) for x in (*start.nu, *a.nu)]
    want = ["bfloat16"] * 4 + ["float32"] * 4
    mu_ok = all(np.array_equal(world.read(x), world.read(y.astype(low))) for x, y in zip(a.mu, b.mu))
    nu_ok = all(np.array_equal(world.read(x), world.read(y)) for x, y in zip(a.nu, b.nu))
    out.judge("arg.mu-dtype", kinds == want and mu_ok and nu_ok,
              f"dtypes of mu, mu after a step, nu, nu after a step: {kinds} (expected {want}); mu is the "
              f"rounded float32 mu: {mu_ok}; nu as without mu_dtype: {nu_ok}")


def check_optax(world: Any, out: Verdicts) -> None:
    """learning_rate must be given (a float or a schedule); mu_dtype; optax.amsgrad's state record."""
    make = world.optimizer_class(out.variant.id)
    if out.wants("arg.required-lr"):
        e = raises(make)
        tx_f, tx_s = make(0.01), make(lambda count: 0.01)
        xs, ys = _vars(world), _vars(world)
        sf, ss = tx_f.init(xs), tx_s.init(ys)
        for g in (_G1, _G2):
            xs, sf = world.step(tx_f, sf, xs, list(g))
            ys, ss = world.step(tx_s, ss, ys, list(g))
        same_steps = _bitwise(world, xs, ys)
        out.judge("arg.required-lr", isinstance(e, TypeError) and same_steps,
                  f"optax.adam() raised {exc_name(e)} (expected TypeError); a constant schedule "
                  f"{'steps as' if same_steps else 'differs from'} the float")
    if out.wants("arg.mu-dtype"):
        _optax_mu_dtype(world, make, out)
    if out.wants("slots.amsgrad"):
        _, bad = _fresh_record(world, world.amsgrad_class(), "ScaleByAmsgradState", ("count", "mu", "nu", "nu_max"))
        out.judge("slots.amsgrad", not bad, "; ".join(bad))


FOREIGN_API_CHECKS = [
    ApiCheck("api-torch", "torch: state_dict, parameter groups, a tensor lr, capturable, sparse gradients",
             ("state.state-dict", "arg.param-groups", "arg.lr-tensor", "arg.capturable", "sparse.unsupported"),
             check_torch),
    ApiCheck("api-optax", "optax: the required learning rate, mu_dtype, optax.amsgrad's state",
             ("arg.required-lr", "arg.mu-dtype", "slots.amsgrad"), check_optax),
]
