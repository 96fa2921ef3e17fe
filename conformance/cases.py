"""One check case as data: saved exactly (floats in hex) so a failure can be replayed.

A case is a StepInput plus the clause and check it belongs to. `save`/`load` round-
trip it bit for bit; `adamconf replay FILE --backend B` runs exactly that case again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from adamconf.reference.state import (
    CALLABLE_HYPERS,
    AdamState,
    Hyper,
    Schedule,
    SparseGrad,
    StepInput,
    StepTime,
    dtype_name,
    np_dtype,
)

FORMAT = "adamconf-case/1"


class CaseError(ValueError):
    """A case file that cannot be read back."""


def _arr(a: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a)
    return {"dtype": dtype_name(a.dtype), "shape": list(a.shape),
            "hex": [float(x).hex() for x in a.astype(np.float64).ravel()]}


def _unarr(d: dict[str, Any]) -> np.ndarray:
    vals = np.array([float.fromhex(h) for h in d["hex"]], dtype=np.float64)
    return vals.reshape(d["shape"]).astype(np_dtype(d["dtype"]))


def _arrs(xs: list[np.ndarray] | None) -> list[dict[str, Any]] | None:
    return None if xs is None else [_arr(x) for x in xs]


def _unarrs(xs: list[dict[str, Any]] | None) -> list[np.ndarray] | None:
    return None if xs is None else [_unarr(x) for x in xs]


def _grad(g: Any) -> Any:
    if g is None:
        return None
    if isinstance(g, SparseGrad):
        return {"sparse": True, "indices": [int(i) for i in np.asarray(g.indices)],
                "values": _arr(g.values), "dense_shape": list(g.dense_shape)}
    return _arr(g)


def _ungrad(d: Any) -> Any:
    if d is None:
        return None
    if d.get("sparse"):
        return SparseGrad(np.array(d["indices"], dtype=np.int64), _unarr(d["values"]), tuple(d["dense_shape"]))
    return _unarr(d)


def _hyper(h: Hyper) -> dict[str, Any]:
    d = dataclasses.asdict(h)
    lr = h.learning_rate
    if isinstance(lr, Schedule):
        d["learning_rate"] = {"schedule": dataclasses.asdict(lr)}
    for k in CALLABLE_HYPERS:
        v = getattr(h, k)
        if isinstance(v, StepTime):
            d[k] = {"callable": {"values": [x.hex() for x in map(float, v.values)], "at": v.at}}
    for k, v in d.items():
        if isinstance(v, float):
            d[k] = {"hex": v.hex()}
    return d


def _unhyper(d: dict[str, Any]) -> Hyper:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and "hex" in v:
            v = float.fromhex(v["hex"])
        elif isinstance(v, dict) and "schedule" in v:
            s = dict(v["schedule"])
            s["boundaries"] = tuple(s.get("boundaries", ()))
            s["values"] = tuple(s.get("values", ()))
            v = Schedule(**s)
        elif isinstance(v, dict) and "callable" in v:
            c = v["callable"]
            v = StepTime(tuple(float.fromhex(x) for x in c["values"]), int(c["at"]))
        out[k] = v
    return Hyper(**out)


def to_json(inp: StepInput, clause: str = "", check: str = "", exact_order: str | None = None) -> dict[str, Any]:
    """The case as data; `exact_order` (exact mode) is recorded so a replay judges it the same way."""
    st = inp.state
    extra = {} if exact_order is None else {"exact_order": exact_order}
    return extra | {
        "format": FORMAT, "clause": clause, "check": check,
        "variant": inp.variant, "dtype": inp.dtype, "hyper": _hyper(inp.hyper),
        "state": {"params": _arrs(st.params), "m": _arrs(st.m), "v": _arrs(st.v),
                  "iterations": st.iterations, "vhat": _arrs(st.vhat), "ema": _arrs(st.ema),
                  "beta1_power": None if st.beta1_power is None else float(st.beta1_power).hex(),
                  "beta2_power": None if st.beta2_power is None else float(st.beta2_power).hex()},
        "grads": [_grad(g) for g in inp.grads],
    }


def from_json(d: dict[str, Any]) -> tuple[StepInput, str, str]:
    if d.get("format") != FORMAT:
        raise CaseError(f"not an adamconf case (format {d.get('format')!r}, expected {FORMAT!r})")
    try:
        s = d["state"]
        bp = lambda h: None if h is None else float.fromhex(h)  # noqa: E731
        state = AdamState(_unarrs(s["params"]), _unarrs(s["m"]), _unarrs(s["v"]), int(s["iterations"]),
                          _unarrs(s["vhat"]), bp(s["beta1_power"]), bp(s["beta2_power"]), _unarrs(s["ema"]))
        inp = StepInput(d["variant"], d["dtype"], _unhyper(d["hyper"]), state,
                        tuple(_ungrad(g) for g in d["grads"]))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CaseError(f"malformed case: {type(e).__name__}: {e}") from None
    return inp, d.get("clause", ""), d.get("check", "")


def save(path: Path, inp: StepInput, clause: str, check: str, exact_order: str | None = None) -> None:
    """Write atomically: a crash never leaves a half-written case behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_json(inp, clause, check, exact_order), indent=1))
    tmp.replace(path)


def exact_order_of(path: Path) -> str | None:
    """The exact order a case file was judged under (None: the normal mode)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return d.get("exact_order") if isinstance(d, dict) else None


def load(path: Path, spec: Any = None) -> tuple[StepInput, str, str]:
    """Read a case back; with `spec`, refuse one that names an unknown variant or dtype, or
    whose arrays do not fit it (CaseError names the problem)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaseError(f"no case file at {p}") from None
    except IsADirectoryError:
        raise CaseError(f"{p} is a folder; give a case file (DIR/cases/*.json)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaseError(f"{p} is not a JSON case file ({type(e).__name__}: {e}); re-run the check to write it again") from None
    except OSError as e:
        raise CaseError(f"{p} cannot be read ({e.strerror})") from None
    if not isinstance(d, dict):
        raise CaseError(f"{p} holds a JSON {type(d).__name__}, not an adamconf case")
    inp, clause, check = from_json(d)
    if spec is not None:
        validate(inp, spec, p)
    return inp, clause, check


def validate(inp: StepInput, spec: Any, where: Any = "case") -> None:
    """The case must name a spec variant and dtype, and its arrays must fit them."""
    from adamconf.reference.state import DTYPES
    if inp.variant not in spec.variants:
        raise CaseError(f"{where}: unknown variant {inp.variant!r}; known: {', '.join(spec.variants)}")
    if inp.dtype not in DTYPES:
        raise CaseError(f"{where}: unknown dtype {inp.dtype!r}; use one of {', '.join(DTYPES)}")
    st = inp.state
    n = len(st.params)
    if n == 0 or len(st.m) != n or len(st.v) != n or len(inp.grads) != n:
        raise CaseError(f"{where}: params, m, v and grads must be lists of the same non-zero length")
    for name, arrs in st.arrays().items():
        for i, a in enumerate(arrs):
            if dtype_name(np.asarray(a).dtype) != inp.dtype:
                raise CaseError(f"{where}: {name}[{i}] is {dtype_name(np.asarray(a).dtype)}, the case says {inp.dtype}")
            if name != "params" and np.shape(a) != np.shape(st.params[i]):
                raise CaseError(f"{where}: {name}[{i}] has shape {np.shape(a)}, params[{i}] {np.shape(st.params[i])}")
    for i, g in enumerate(inp.grads):
        shape = None if g is None else (tuple(g.dense_shape) if isinstance(g, SparseGrad) else np.shape(g))
        if shape is not None and shape != np.shape(st.params[i]):
            raise CaseError(f"{where}: grads[{i}] has shape {shape}, params[{i}] {np.shape(st.params[i])}")


def describe(inp: StepInput, limit: int = 6) -> str:
    """A short human-readable rendering of a case for failure messages."""
    h = inp.hyper
    parts = [f"variant={inp.variant} dtype={inp.dtype} iterations={inp.state.iterations}",
             f"epsilon={h.epsilon!r} beta_2={h.beta_2!r} beta_1={h.beta_1!r} lr={h.learning_rate!r}"]
    extras = {k: getattr(h, k) for k in ("amsgrad", "decay", "clipvalue", "clipnorm", "global_clipnorm",
                                         "weight_decay", "use_ema", "adaptive_epsilon") if getattr(h, k)}
    if extras:
        parts.append(" ".join(f"{k}={v!r}" for k, v in extras.items()))
    for i, (p, g) in enumerate(zip(inp.state.params, inp.grads)):
        flat = lambda a: np.asarray(a, dtype=np.float64).ravel()[:limit].tolist()  # noqa: E731
        gs = "None" if g is None else (f"sparse(indices={np.asarray(g.indices).tolist()[:limit]}, values={flat(g.values)})"
                                       if isinstance(g, SparseGrad) else str(flat(g)))
        parts.append(f"var{i} shape={np.shape(p)} param={flat(p)} m={flat(inp.state.m[i])} v={flat(inp.state.v[i])} grad={gs}")
    return "\n".join(parts)
