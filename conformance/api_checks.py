"""Object-level checks: one per group of API, default and error clauses.

Each check builds real optimizer objects through an `ApiWorld` (adamconf.api), calls
the documented methods and judges every clause it covers on its own: `covers` lists
the clause suffixes (`area.promise`), and a check runs on a variant only when the
spec gives that variant one of them. The expected values come from the spec (the
variant's arguments and defaults, `lr_alias`, `unknown_kwarg_error`,
`allowed_kwargs`, `weights_order`, `slots`), not from the implementation under test.
"""
from __future__ import annotations

import traceback
import warnings
from typing import Any

import numpy as np

from adamconf.api import ApiCheck, Verdicts, exc_name, raises, same
from adamconf.api_foreign import FOREIGN_API_CHECKS, optax_slots, torch_slots
from adamconf.spec.model import Clause, Spec, Variant

# The clause suffix of each default clause and the canonical arguments it speaks of.
DEFAULT_ARGS: dict[str, tuple[str, ...]] = {
    "default.learning-rate": ("learning_rate",),
    "default.betas": ("beta_1", "beta_2"),
    "default.epsilon": ("epsilon",),
    "migrate.epsilon-default": ("epsilon",),
    "default.amsgrad": ("amsgrad",),
    "default.name": ("name",),
    "default.use-locking": ("use_locking",),
    "default.mesh": ("mesh", "gradients_clip_option", "ema_option"),
    "default.ema": ("use_ema", "ema_momentum", "ema_overwrite_frequency"),
    "default.jit-compile": ("jit_compile",),
    "default.hypers": ("learning_rate", "beta_1", "beta_2", "epsilon", "eps_root", "weight_decay", "amsgrad",
                       "maximize", "capturable", "differentiable", "nesterov"),
    "default.extra-args": ("loss_scale_factor", "gradient_accumulation_steps", "weight_decay", "clipnorm",
                           "clipvalue", "global_clipnorm"),
}


def _arg_name(v: Variant, canonical: str) -> str:
    arg = v.argument(canonical)
    return arg.name if arg is not None else canonical


_PARAMS = (np.array([1.0, -2.0, 3.0], np.float32), np.array([[0.5, -0.25], [1.5, 2.0]], np.float32))


def _two_vars(world: Any) -> list[Any]:
    return [world.variable(p.copy(), f"x{i + 1}") for i, p in enumerate(_PARAMS)]


def _grads(world: Any) -> list[np.ndarray]:
    return [np.array([0.1, 0.2, -0.3], np.float32), np.array([[1.0, -1.0], [0.5, 0.25]], np.float32)]


def _apply(world: Any, opt: Any, grads: list[np.ndarray], xs: list[Any], **kw: Any) -> Any:
    return opt.apply_gradients(list(zip([world.tensor(g) for g in grads], xs)), **kw)


# -- the checks ---------------------------------------------------------------------------

def check_defaults(world: Any, out: Verdicts) -> None:
    """Each documented default, read from the implementation's effective values."""
    v = out.variant
    actual = world.defaults(v.id)
    for sfx, canon in DEFAULT_ARGS.items():
        if not out.wants(sfx):
            continue
        names = [(c, v.argument(c)) for c in canon]
        known = [(c, a) for c, a in names if a is not None and not a.required]
        if not known:
            out.skip(sfx, f"the spec lists none of {', '.join(canon)} for {v.id}")
            continue
        bad = []
        for _, a in known:
            if a.name not in actual:
                bad.append(f"{a.name} is not an argument (documented default {a.default!r})")
            elif not same(actual[a.name], a.default):
                bad.append(f"{a.name} defaults to {actual[a.name]!r}, documented {a.default!r}")
        out.judge(sfx, not bad, "; ".join(bad))
    if out.wants("arg.names"):
        missing = [a.name for a in v.arguments if a.name not in actual and not a.name.endswith("]")]
        out.judge("arg.names", not missing, f"documented arguments missing from the constructor: {', '.join(missing)}")


def check_kwargs(world: Any, out: Verdicts) -> None:
    """Extra keywords: the accepted set, the lr alias, decay, unknown names, bad values."""
    v = out.variant
    cls = world.optimizer_class(v.id)
    sample = {"lr": 0.25, "decay": 0.01, "clipnorm": 1.0, "clipvalue": 1.0, "global_clipnorm": 1.0}
    if out.wants("kwargs.allowed"):
        bad = [f"{k}: {exc_name(e)}" for k in v.allowed_kwargs
               if (e := raises(lambda k=k: cls(**{k: sample.get(k, 1.0)}))) is not None]
        out.judge("kwargs.allowed", not bad, "refused: " + "; ".join(bad))
    if out.wants("docs.kwargs-list"):
        bad = [f"{k}: {exc_name(e)}" for k in ("lr", "decay") if (e := raises(lambda k=k: cls(**{k: sample[k]})))]
        out.judge("docs.kwargs-list", not bad, "the implementation refuses " + "; ".join(bad))
    for sfx, want in (("kwargs.lr-alias", 0.25), ("kwargs.lr-overrides", 0.25), ("kwargs.lr-ignored", 0.125)):
        if out.wants(sfx):
            kw = {"lr": 0.25} if sfx == "kwargs.lr-alias" else {"learning_rate": 0.125, "lr": 0.25}
            try:
                got = world.learning_rate(cls(**kw))
            except Exception as e:  # noqa: BLE001
                out.judge(sfx, False, f"{kw} raised {exc_name(e)}")
                continue
            out.judge(sfx, same(got, want), f"with {kw} the rate is {got!r}, expected {want!r}")
    if out.wants("kwargs.lr-error"):
        e = raises(lambda: cls(lr=0.25))
        out.judge("kwargs.lr-error", isinstance(e, ValueError), f"lr=0.25 raised {exc_name(e)}, expected ValueError")
    if out.wants("error.decay"):
        e = raises(lambda: cls(decay=0.5))
        out.judge("error.decay", isinstance(e, ValueError), f"decay=0.5 raised {exc_name(e)}, expected ValueError")
    if out.wants("kwargs.decay-ignored"):
        _decay_ignored(world, cls, out)
    if out.wants("error.unknown-kwarg"):
        needed = {a.name: 0.001 for a in v.arguments if a.required}   # so the keyword is the only fault
        e = raises(lambda: cls(**needed, not_an_adam_argument=1))
        want = v.unknown_kwarg_error
        out.judge("error.unknown-kwarg", e is not None and type(e).__name__ == want,
                  f"an unknown keyword raised {exc_name(e)}, expected {want}")
    if out.wants("error.invalid-argument"):
        e = raises(lambda: cls(clipnorm=-1.0))
        out.judge("error.invalid-argument", isinstance(e, ValueError), f"clipnorm=-1 raised {exc_name(e)}, expected ValueError")
    if out.wants("clip.attributes"):
        bad = []
        for k in ("clipnorm", "clipvalue", "global_clipnorm"):
            opt = cls(**{k: 0.5})
            for j in ("clipnorm", "clipvalue", "global_clipnorm"):
                got, want = getattr(opt, j, "missing"), 0.5 if j == k else None
                if not same(got, want):
                    bad.append(f"with {k}=0.5, .{j} is {got!r} (expected {want!r})")
        out.judge("clip.attributes", not bad, "; ".join(bad))
    if out.wants("migrate.use-locking"):
        e = raises(lambda: cls(use_locking=True))
        has = "use_locking" in world.defaults(v.id)
        out.judge("migrate.use-locking", e is not None and not has,
                  f"use_locking=True raised {exc_name(e)}; in the signature: {has}")
    if out.wants("default.epsilon-fallback"):
        bad = []
        for eps in (None, 0, 0.0):
            try:
                got = cls(epsilon=eps).get_config()["epsilon"]
            except Exception as e:  # noqa: BLE001
                bad.append(f"epsilon={eps!r} raised {exc_name(e)}")
                continue
            if not same(got, 1e-7):
                bad.append(f"epsilon={eps!r} is kept as {got!r}")
        out.judge("default.epsilon-fallback", not bad, "; ".join(bad))


def _decay_ignored(world: Any, cls: type, out: Verdicts) -> None:
    xs_a, xs_b = _two_vars(world), _two_vars(world)
    e = raises(lambda: cls(learning_rate=0.125, decay=0.5))
    if e is not None:
        out.judge("kwargs.decay-ignored", False, f"decay=0.5 raised {exc_name(e)}")
        return
    a, b = cls(learning_rate=0.125, decay=0.5), cls(learning_rate=0.125)
    for _ in range(3):
        _apply(world, a, _grads(world), xs_a)
        _apply(world, b, _grads(world), xs_b)
    equal = all(np.array_equal(world.read(p), world.read(q)) for p, q in zip(xs_a, xs_b))
    out.judge("kwargs.decay-ignored", equal and same(world.learning_rate(a), 0.125),
              "three steps with decay=0.5 differ from three without it")


def _expected_slots(order: str, grads: list[np.ndarray], v: Variant, k: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The exact slots after one AMSGrad step from zero (value, allowed error K*u*S),
    in the variant's documented weights order."""
    from adamconf.reference import adam as ref
    from adamconf.reference.state import AdamState, Hyper
    res = ref.step(v, "float32", Hyper(amsgrad=True, epsilon=v.default("epsilon", 1e-7)),
                   AdamState.zeros_like(list(_PARAMS), amsgrad=True), grads)
    pair = lambda name: [(a.astype(np.float64), k * 2.0 ** -24 * s)  # noqa: E731
                         for a, s in zip(res.approx(name), res.scale(name))]
    m, vv, vh = pair("m"), pair("v"), pair("vhat")
    if order == "iter-then-by-slot":
        return m + vv + vh
    return [x for two in zip(m, vv) for x in two] + vh


def check_state(world: Any, out: Verdicts) -> None:
    """Slots, the weights list and its order, set_weights, iterations and minimize."""
    v = out.variant
    if v.api.startswith(("torch.", "optax.")):
        if out.wants("slots.names"):
            (torch_slots if v.api.startswith("torch.") else optax_slots)(world, out)
        return
    cls = world.optimizer_class(v.id)
    keras = v.weights_order != "none"
    if keras:
        xs = _two_vars(world)
        opt = cls(amsgrad=True)
        ret = _apply(world, opt, _grads(world), xs)
        if out.wants("arg.returns-none"):
            out.judge("arg.returns-none", ret is None, f"apply_gradients returned {type(ret).__name__}")
        if out.wants("iterations.increment"):
            out.judge("iterations.increment", world.iterations(opt) == 1, f"iterations is {world.iterations(opt)} after one step")
        values = _weights(world, opt)
        lead = 2 if v.weights_order == "iter-lr-interleaved" else 1
        want = _expected_slots(v.weights_order, _grads(world), v, out.k("step"))
        ok = len(values) == lead + len(want) and int(np.ravel(values[0])[0]) == 1
        detail = f"{len(values)} weights, expected {lead + len(want)} (iteration count first)"
        if ok and lead == 2:
            ok = same(float(np.ravel(values[1])[0]), v.default("learning_rate", 0.001))
            detail = f"second weight is {values[1]!r}, expected the learning rate"
        if ok:
            for i, (got, (exp, tol)) in enumerate(zip(values[lead:], want)):
                if np.shape(got) != np.shape(exp) or not np.all(np.abs(np.asarray(got, np.float64) - exp) <= tol):
                    ok, detail = False, f"weight {lead + i} is {np.ravel(got)[:4]}, expected {np.ravel(exp)[:4]} ({v.weights_order})"
                    break
        out.judge("weights.order", ok, detail)
        if out.wants("slots.names"):
            _slot_names(world, cls, opt, xs, values, lead, out)
        if out.wants("weights.variables"):
            listed = [world.read(w) for w in _call(opt.variables)]
            listed_all = len(listed) == len(values) and all(np.array_equal(a, b) for a, b in zip(listed, values))
            out.judge("weights.variables", listed_all, f"variables lists {len(listed)} arrays; get_weights {len(values)}")
        if out.wants("weights.set-weights"):
            new = [np.asarray(w).copy() for w in values]
            new[0] = np.asarray(5, dtype=np.asarray(values[0]).dtype)
            new[1] = new[1] + 1
            opt.set_weights(new)
            back = _weights(world, opt)
            ok = world.iterations(opt) == 5 and all(np.array_equal(a, b) for a, b in zip(back, new))
            out.judge("weights.set-weights", ok, f"after set_weights iterations is {world.iterations(opt)}")
        if out.wants("iterations.minimize"):
            x = world.variable(np.array([2.0], np.float32), "x")
            o = cls()
            o.minimize(world.loss([x], 1.0), var_list=[x])
            out.judge("iterations.minimize", world.iterations(o) == 1, f"iterations is {world.iterations(o)} after minimize")
        if out.wants("update.minimize-callable-var-list"):
            x = world.variable(np.array([2.0], np.float32), "x")
            o = cls(learning_rate=0.1)
            e = raises(lambda: o.minimize(world.loss([x], 1.0), var_list=lambda: [x]))
            out.judge("update.minimize-callable-var-list", e is None and float(world.read(x)[0]) < 2.0,
                      f"minimize with a callable var_list: raised {exc_name(e)}, x = {world.read(x)}")
        if out.wants("update.minimize-tensor-loss"):
            tape_loss = getattr(world, "tape_loss", None)
            if tape_loss is None:
                out.skip("update.minimize-tensor-loss", f"{world.name} has no tensor losses")
            else:
                x = world.variable(np.array([2.0], np.float32), "x")
                o = cls(learning_rate=0.1)
                loss, tape = tape_loss([x], 1.0)
                e = raises(lambda: o.minimize(loss, var_list=[x], tape=tape))
                out.judge("update.minimize-tensor-loss", e is None and float(world.read(x)[0]) < 2.0,
                          f"minimize(tensor, tape=...) raised {exc_name(e)}")
    else:
        _tf1_state(world, cls, out)


def _slot_names(world: Any, cls: type, opt: Any, xs: list[Any], values: list[np.ndarray], lead: int,
                out: Verdicts) -> None:
    """Slot names where the API has get_slot_names (OptimizerV2): the spec's names, and
    get_slot returns the slot itself; everywhere: AMSGrad's third slot exists only
    when amsgrad is on."""
    v = out.variant
    bad = []
    if hasattr(opt, "get_slot_names"):
        names = list(opt.get_slot_names())
        if sorted(names) != sorted(v.slots):
            bad.append(f"get_slot_names() is {names}, the spec names {list(v.slots)}")
        elif not np.array_equal(world.read(opt.get_slot(xs[0], names[0])), values[lead]):
            bad.append(f"get_slot(x, {names[0]!r}) is not the first slot weight")
    plain = cls()
    _apply(world, plain, _grads(world), _two_vars(world))
    n = len(_weights(world, plain))
    if n != lead + 2 * len(xs):
        bad.append(f"without amsgrad there are {n} weights, expected {lead + 2 * len(xs)} (m and v per variable)")
    out.judge("slots.names", not bad, "; ".join(bad))


def _plain(x: Any) -> bool:
    """JSON-ready plain Python data (what a config promises to be)."""
    if x is None or type(x) in (bool, int, float, str):
        return True
    if type(x) in (list, tuple):
        return all(_plain(i) for i in x)
    if type(x) is dict:
        return all(type(k) is str and _plain(i) for k, i in x.items())
    return False


def _call(x: Any) -> Any:
    return x() if callable(x) else x


def _weights(world: Any, opt: Any) -> list[np.ndarray]:
    if hasattr(opt, "get_weights"):
        return [np.asarray(w) for w in opt.get_weights()]
    return [world.read(w) for w in _call(opt.variables)]


def _tf1_state(world: Any, cls: type, out: Verdicts) -> None:
    """TF1: get_slot / get_slot_names, global_step, minimize = compute + apply."""
    xs = _two_vars(world)
    opt = cls()
    gs = world.variable(np.array(0, np.int64), "global_step")
    _apply(world, opt, _grads(world), xs, global_step=gs)
    if out.wants("slots.get-slot"):
        names = sorted(opt.get_slot_names())
        m = opt.get_slot(xs[0], "m")
        ok = names == ["m", "v"] and m is not None and np.allclose(world.read(m), np.float32(0.1) * _grads(world)[0], rtol=1e-6)
        ok = ok and opt.get_slot(xs[0], "vhat") is None
        out.judge("slots.get-slot", ok, f"slot names {names}; get_slot(x, 'm') = {None if m is None else world.read(m)}")
    if out.wants("iterations.global-step"):
        first = int(world.read(gs))
        _apply(world, opt, _grads(world), xs)
        out.judge("iterations.global-step", first == 1 and int(world.read(gs)) == 1,
                  f"global_step after one step with it: {first}; after one without it: {int(world.read(gs))}")
    if out.wants("update.minimize"):
        a, b = world.variable(np.array([2.0, -1.0], np.float32), "a"), world.variable(np.array([2.0, -1.0], np.float32), "b")
        oa, ob = cls(learning_rate=0.1), cls(learning_rate=0.1)
        ga, gb = world.variable(np.array(0, np.int64), "ga"), world.variable(np.array(0, np.int64), "gb")
        oa.minimize(world.loss([a], 3.0), var_list=[a], global_step=ga)
        ob.apply_gradients(ob.compute_gradients(world.loss([b], 3.0), var_list=[b]), global_step=gb)
        ok = np.array_equal(world.read(a), world.read(b)) and int(world.read(ga)) == int(world.read(gb)) == 1
        out.judge("update.minimize", ok, f"minimize gave {world.read(a)}, compute+apply {world.read(b)}")


def check_config(world: Any, out: Verdicts) -> None:
    """get_config is plain data naming the hyperparameters; from_config rebuilds them."""
    v = out.variant
    cls = world.optimizer_class(v.id)
    given = {_arg_name(v, "learning_rate"): 0.25, _arg_name(v, "beta_1"): 0.8, _arg_name(v, "beta_2"): 0.99,
             "epsilon": 1e-5, "amsgrad": True}
    if "clipnorm" in v.allowed_kwargs or v.argument("clipnorm") is not None:
        given["clipnorm"] = 0.5
    opt = cls(**given)
    cfg = opt.get_config()
    if out.wants("config.serializable"):
        odd = {k: type(x).__name__ for k, x in cfg.items() if not _plain(x)}
        ok = not odd and all(k in cfg for k in given)
        msg = (f"get_config holds values that are not plain Python data: {odd}" if odd
               else f"keys {sorted(cfg)} lack some of {sorted(given)}")
        out.judge("config.serializable", ok, msg)
    if out.wants("config.round-trip"):
        back = type(opt).from_config(cfg)
        cfg2 = back.get_config()
        lost = [f"{k}: {given[k]!r} -> {cfg2.get(k, 'absent')!r}" for k in given if not same(cfg2.get(k), given[k])]
        fresh = world.iterations(back) == 0
        out.judge("config.round-trip", not lost and fresh,
                  ("lost in the round trip: " + "; ".join(lost)) if lost else "the rebuilt optimizer is not fresh")
    if out.wants("docs.adaptive-epsilon-config"):
        c = cls(adaptive_epsilon=True).get_config()
        out.judge("docs.adaptive-epsilon-config", "adaptive_epsilon" not in c,
                  f"get_config now holds adaptive_epsilon = {c.get('adaptive_epsilon')!r}: the documented gap is closed")


def check_errors(world: Any, out: Verdicts) -> None:
    """Malformed grads_and_vars and non-variables in var_list."""
    v = out.variant
    cls = world.optimizer_class(v.id)
    x = world.variable(np.array([1.0, 2.0], np.float32), "x")
    if out.wants("error.malformed"):
        g = world.tensor(np.array([0.1, 0.2], np.float32))
        forms = {"bare gradients": [g], "1-tuples": [(g,)], "3-tuples": [(g, x, 1)], "an int": 5}
        got = {k: raises(lambda a=a: cls().apply_gradients(a)) for k, a in forms.items()}
        bad = [f"{k}: {exc_name(e)}" for k, e in got.items() if not isinstance(e, TypeError)]
        out.judge("error.malformed", not bad, "expected TypeError; " + "; ".join(bad))
    t = world.tensor(np.array([1.0, 2.0], np.float32))
    if out.wants("error.minimize-non-variable"):
        e = raises(lambda: cls().minimize(world.loss([x], 1.0), var_list=[t]))
        out.judge("error.minimize-non-variable", isinstance(e, ValueError),
                  f"minimize with a tensor in var_list raised {exc_name(e)}, expected ValueError")
    if out.wants("error.var-list-type") or out.wants("docs.var-list-exception"):
        e1 = raises(lambda: cls().compute_gradients(world.loss([x], 1.0), var_list=[t]))
        e2 = raises(lambda: cls().minimize(world.loss([x], 1.0), var_list=[t]))
        out.judge("error.var-list-type", e1 is not None and e2 is not None,
                  f"compute_gradients raised {exc_name(e1)}; minimize raised {exc_name(e2)}")
        # minimize calls compute_gradients, so one exception type reaches both callers:
        # the pages' TypeError and ValueError cannot both be right.
        out.judge("docs.var-list-exception", e1 is not None and e2 is not None and type(e1) is type(e2),
                  f"compute_gradients raised {exc_name(e1)}; minimize raised {exc_name(e2)}")


def check_ema(world: Any, out: Verdicts) -> None:
    """finalize_variable_values writes the moving averages into the variables."""
    from adamconf.reference import adam as ref
    from adamconf.reference.state import AdamState, Hyper
    v = out.variant
    cls = world.optimizer_class(v.id)
    p0 = np.array([1.0, -2.0, 3.0], np.float32)
    x = world.variable(p0.copy(), "x")
    opt = cls(learning_rate=0.1, use_ema=True, ema_momentum=0.5)
    grads = [np.array([0.5, -1.0, 2.0], np.float32), np.array([1.0, 1.0, -1.0], np.float32)]
    for g in grads:
        opt.apply_gradients([(world.tensor(g), x)])
    before = world.read(x).copy()
    opt.finalize_variable_values([x])
    after = world.read(x)
    hyper = Hyper(learning_rate=0.1, epsilon=v.default("epsilon", 1e-7), use_ema=True, ema_momentum=0.5)
    res = ref.trajectory(v, "float32", hyper, AdamState.zeros_like([p0], ema=True), [[g] for g in grads])
    ema = np.asarray(res[-1].approx("ema")[0], dtype=np.float64)
    scale = np.asarray(res[-1].scale("ema")[0], dtype=np.float64)
    ok = bool(np.all(np.abs(after - ema) <= out.k("ema") * 2.0 ** -24 * scale)) and not np.array_equal(before, after)
    out.judge("ema.finalize", ok, f"after finalize the variable is {after}, the exact average {ema} (before: {before})")


def check_migrate(world: Any, out: Verdicts) -> None:
    """The compat.v1 migration table: TF1 arguments map onto the Keras names, and both
    optimizers take the page's example to the same place within their error bounds."""
    tf1_id = "tf1-compat"
    keras_id = out.variant.id if out.variant.id in ("keras-v2", "keras-legacy") else "keras-legacy"
    if tf1_id not in world.variants or keras_id not in world.variants:
        out.skip("migrate.arg-map", f"{world.name} lacks {tf1_id} or {keras_id}")
        return
    from adamconf.reference import adam as ref
    from adamconf.reference.state import AdamState, Hyper
    old = world.optimizer_class(tf1_id)(learning_rate=0.001, beta1=0.8, beta2=0.99, epsilon=1e-6)
    new = world.optimizer_class(keras_id)(learning_rate=0.001, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    cfg = new.get_config()
    mapped = all(same(cfg[k], w) for k, w in (("beta_1", 0.8), ("beta_2", 0.99), ("epsilon", 1e-6), ("learning_rate", 0.001)))
    x0 = np.array([1.0, 2.0, 3.0], np.float32)
    a, b = world.variable(x0.copy(), "a"), world.variable(x0.copy(), "b")
    g0 = np.array([0.1, 0.2, 0.3], np.float32)
    g = world.tensor(g0)
    for _ in range(3):
        old.apply_gradients([(g, a)])
        new.apply_gradients([(g, b)])
    xa, xb = world.read(a).astype(np.float64), world.read(b).astype(np.float64)
    # Agreement within the sum of both bounds, S from each variant's exact trajectory.
    hyper = Hyper(learning_rate=0.001, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    start = {tf1_id: AdamState.zeros_like([x0], beta_powers=(float(np.float32(0.8)), float(np.float32(0.99)))),
             keras_id: AdamState.zeros_like([x0])}
    s = sum(np.asarray(ref.trajectory(out.spec.variant(vid), "float32", hyper, st, [[g0]] * 3)[-1].scale("params")[0],
                       dtype=np.float64) for vid, st in start.items())
    tol = out.k("trajectory") * 2.0 ** -24 * s
    out.judge("migrate.arg-map", mapped and bool(np.all(np.abs(xa - xb) <= tol)),
              f"TF1 gives {xa}, Keras {xb} (allowed {tol}); config mapped: {mapped}")


API_CHECKS: dict[str, ApiCheck] = {c.name: c for c in [
    ApiCheck("api-defaults", "documented defaults and argument names", tuple(DEFAULT_ARGS) + ("arg.names",),
             check_defaults),
    ApiCheck("api-kwargs", "extra keywords, the lr alias, decay, unknown and invalid arguments",
             ("kwargs.allowed", "docs.kwargs-list", "kwargs.lr-alias", "kwargs.lr-overrides", "kwargs.lr-ignored",
              "kwargs.lr-error", "error.decay", "kwargs.decay-ignored", "error.unknown-kwarg",
              "error.invalid-argument", "clip.attributes", "migrate.use-locking", "default.epsilon-fallback"),
             check_kwargs),
    ApiCheck("api-state", "slots, weights and their order, set_weights, iterations, minimize",
             ("weights.order", "slots.names", "slots.get-slot", "weights.variables", "weights.set-weights",
              "iterations.minimize", "iterations.global-step", "update.minimize", "update.minimize-callable-var-list",
              "update.minimize-tensor-loss", "arg.returns-none"), check_state),
    ApiCheck("api-config", "get_config and from_config",
             ("config.serializable", "config.round-trip", "docs.adaptive-epsilon-config"), check_config),
    ApiCheck("api-errors", "malformed grads_and_vars and var_list",
             ("error.malformed", "error.minimize-non-variable", "error.var-list-type", "docs.var-list-exception"),
             check_errors),
    ApiCheck("api-ema", "finalize_variable_values", ("ema.finalize",), check_ema),
    ApiCheck("api-migrate", "the compat.v1 migration table", ("migrate.arg-map",), check_migrate),
    *FOREIGN_API_CHECKS,
]}


def api_check_for(clause: Clause) -> ApiCheck | None:
    sfx = clause.id.split(".", 1)[1]
    return next((c for c in API_CHECKS.values() if sfx in c.covers), None)


def run_api_check(world: Any, spec: Spec, vid: str, chk: ApiCheck, timeout: float) -> Any:
    """One API check on one variant, as a runner.CheckRun record (dtype "api").

    Each covered clause gets its own verdict; the check's verdict combines them, so a
    check that judged no clause is never `pass`."""
    from adamconf.evaluate import Hung, guarded
    from adamconf.runner import CheckRun
    from adamconf.verdicts import ERROR, FAIL, JUDGED, UNCOVERED, UNSUPPORTED, combine
    variant, clauses = spec.variant(vid), spec.clauses_for(vid)
    run = CheckRun(chk.name, variant.id, "api", UNCOVERED)
    out = Verdicts(spec, variant, chk.covers, clauses)
    if variant.id not in world.variants:
        run.status, run.message = UNSUPPORTED, f"{world.name} has no API adapter for {variant.id}"
        run.clause_status = {cid: UNSUPPORTED for cid in out.ids.values()}
        return run

    def body() -> None:
        with warnings.catch_warnings():   # deprecation notices are expected: lr, decay
            warnings.simplefilter("ignore")
            chk.fn(world, out)
    broke = None
    try:
        guarded(body, max(timeout, 60.0), f"the {chk.name} check's calls")
    except Hung as e:
        broke = FAIL, f"HUNG: {e}"
    except Exception as e:  # noqa: BLE001 - an unexpected exception is a finding about the backend
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        broke = ERROR, f"{type(e).__name__}: {e} ({tb[-2].strip().splitlines()[0] if len(tb) > 1 else ''})"
    for cid in out.ids.values():
        out.status.setdefault(cid, broke[0] if broke else UNCOVERED)
    run.clause_status = dict(out.status)
    run.examples = sum(1 for s in out.status.values() if s in JUDGED)
    run.status = broke[0] if broke else combine(out.status.values())
    notes = [f"{cid}: {m}" for cid, m in out.messages.items() if out.status[cid] != "pass"]
    run.message = "; ".join(([broke[1]] if broke else []) + notes)
    return run
