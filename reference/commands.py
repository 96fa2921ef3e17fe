"""`adamconf ref`: print the exact trajectory of a variant from given inputs.

Values are printed with 34 significant digits, enough to settle any float64
comparison, next to each element's error scale S (in units of u of --dtype).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from adamconf.reference.adam import ReferenceError, trajectory
from adamconf.reference.state import AdamState, Hyper, np_dtype


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ref", help="exact trajectory of one variant from given inputs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True, help="spec variant id (see: adamconf spec list)")
    p.add_argument("--param", type=float, action="append", help="parameter element (repeat for an array)")
    p.add_argument("--grad", type=float, action="append", help="gradient element (repeat; same length as --param)")
    p.add_argument("--m", type=float, action="append", help="prior first moment (default zeros)")
    p.add_argument("--v", type=float, action="append", help="prior second moment (default zeros)")
    p.add_argument("--npz", help="a .npz with arrays param and grad (grad may have a leading steps axis), optionally m, v")
    p.add_argument("--iterations", type=int, default=0, help="steps already taken (default 0)")
    p.add_argument("--lr", type=float, help="learning rate (default: the variant's)")
    p.add_argument("--beta1", type=float, help="beta_1 (default: the variant's)")
    p.add_argument("--beta2", type=float, help="beta_2 (default: the variant's)")
    p.add_argument("--eps", type=float, help="epsilon (default: the variant's)")
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--steps", type=int, default=1, help="number of steps (default 1)")
    p.add_argument("--dtype", default="float32", help="working dtype the inputs are rounded to (default float32)")
    p.add_argument("--mode", default="rounded", choices=("rounded", "decimal"),
                   help="hyperparameters as the variant rounds them, or the decimals as written")
    p.add_argument("--precision", type=int, default=113, help="working precision in bits (default 113)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _inputs(args: argparse.Namespace) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None, np.ndarray | None]:
    dt = np_dtype(args.dtype)
    m = v = None
    if args.npz:
        try:
            data = np.load(args.npz)
        except (OSError, ValueError) as e:
            raise ReferenceError(f"cannot read {args.npz}: {e}") from None
        missing = [k for k in ("param", "grad") if k not in data]
        if missing:
            raise ReferenceError(f"{args.npz} lacks array(s) {', '.join(missing)}; it needs param and grad")
        param, grad = data["param"], data["grad"]
        m, v = data.get("m"), data.get("v")
    else:
        if not args.param or not args.grad:
            raise ReferenceError("give --param and --grad (repeat them for arrays), or --npz FILE")
        param, grad = np.array(args.param), np.array(args.grad)
        m = np.array(args.m) if args.m else None
        v = np.array(args.v) if args.v else None
    param = np.asarray(param).astype(dt)
    grad = np.asarray(grad)
    if grad.shape == param.shape:
        grads = [grad.astype(dt)] * args.steps
    elif grad.ndim == param.ndim + 1 and grad.shape[1:] == param.shape and grad.shape[0] == args.steps:
        grads = [g.astype(dt) for g in grad]
    else:
        raise ReferenceError(f"grad has shape {grad.shape}; expected {param.shape} or ({args.steps},)+{param.shape}")
    for name, arr in (("m", m), ("v", v)):
        if arr is not None and np.shape(arr) != param.shape:
            raise ReferenceError(f"{name} has shape {np.shape(arr)}; expected {param.shape} like param")
    return param, grads, None if m is None else np.asarray(m).astype(dt), None if v is None else np.asarray(v).astype(dt)


def run(args: argparse.Namespace) -> int:
    from adamconf.spec import load_spec

    spec = load_spec()
    try:
        variant = spec.variant(args.variant)
    except KeyError as e:
        print(f"adamconf ref: {e.args[0]}", file=sys.stderr)
        return 2
    try:
        param, grads, m, v = _inputs(args)
        lr_default = variant.default("learning_rate")
        hyper = Hyper(
            learning_rate=args.lr if args.lr is not None else (lr_default if lr_default is not None else 0.001),
            beta_1=args.beta1 if args.beta1 is not None else variant.default("beta_1", 0.9),
            beta_2=args.beta2 if args.beta2 is not None else variant.default("beta_2", 0.999),
            epsilon=args.eps if args.eps is not None else variant.default("epsilon", 1e-7),
            amsgrad=args.amsgrad)
        state = AdamState.zeros_like([param], amsgrad=args.amsgrad)
        state.iterations = args.iterations
        if m is not None:
            state.m = [m]
        if v is not None:
            state.v = [v]
        results = trajectory(variant, args.dtype, hyper, state, [[g] for g in grads],
                             mode=args.mode, precision=args.precision)
    except (ReferenceError, ValueError) as e:
        print(f"adamconf ref: {e}", file=sys.stderr)
        return 2
    rows = []
    for res in results:
        row: dict[str, Any] = {"step": res.state.iterations}
        for name in res.state.fields():
            t = res.state.fields()[name][0]
            xs = np.ravel(t.x) if isinstance(t.x, np.ndarray) else [t.x]
            row[name] = [format(x, ".34e") for x in xs]
            row[name + "_S"] = [float(s) for s in np.ravel(np.broadcast_to(t.s, t.shape))]
        if res.alpha is not None:
            row["alpha"] = format(res.alpha.x, ".34e")
        if res.notes:
            row["notes"] = res.notes
        rows.append(row)
    if args.json:
        print(json.dumps({"variant": variant.id, "dtype": args.dtype, "mode": args.mode,
                          "precision": args.precision, "steps": rows}, indent=2))
        return 0
    print(f"variant {variant.id}  dtype {args.dtype}  hyperparameters {args.mode}  precision {args.precision} bits")
    print(f"lr={hyper.learning_rate} beta_1={hyper.beta_1} beta_2={hyper.beta_2} epsilon={hyper.epsilon} amsgrad={hyper.amsgrad}")
    for row in rows:
        print(f"-- after step {row['step']}" + (f"  (alpha = {row['alpha']})" if "alpha" in row else ""))
        for name in ("params", "m", "v", "vhat"):
            if name in row:
                for i, (x, s) in enumerate(zip(row[name], row[name + "_S"])):
                    print(f"  {name}[{i}] = {x}   S = {s:.4g}")
        for note in row.get("notes", []):
            print(f"  note: {note}")
    return 0
