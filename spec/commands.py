"""The `adamconf spec` subcommands: list, show and diff the specified Adam variants.

The CLI wires these in with `add_parser(subparsers)` and dispatches to `run(args)`;
`python -m spec.commands list` runs them stand-alone. Every subcommand takes
`--json` for machine-readable output and `--spec-root DIR` to read another spec folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .loader import SpecError, load_spec
from .model import Spec, Variant

__all__ = ["add_parser", "run", "main", "diff_rows"]

EXIT_OK = 0
EXIT_USAGE = 2

# Why a difference in a field matters when comparing two implementations.
HINTS: dict[str, str] = {
    "eps_dtype": "epsilon is rounded through float32 or straight to the parameter dtype",
    "power_dtype": "beta**t starts from a float32-rounded beta or from the double (float64 only)",
    "aux_dtype": "decay and weight_decay are rounded through float32 or straight to the dtype",
    "zero_epsilon": "epsilon=0 is kept, or silently replaced by the default",
    "ema_first_step": "the first EMA update averages with the old copy, or just copies",
    "ema_one_minus": "1 - ema_momentum formed in double or in the dtype",
    "sparse_clip": "IndexedSlices are clipped before or after their duplicates are summed",
    "global_norm_overflow": "an overflowing sum of squares in global clipping gives NaN gradients or zero ones",
    "compute_dtype": "in float16 and bfloat16 the scalars meet the tensors in float32 or in the dtype itself",
    "family": "a TF API versus a foreign peer: only the formula family decides comparability",
    "formula": "epsilon placement: no constant maps one onto the other "
               "(eps_hat = eps * sqrt(1 - beta_2^t) changes with t)",
    "beta_powers": "float32 running products drift from pow(beta, t) by a few ulps per step",
    "hyper_dtype": "betas and epsilon are rounded differently before the cast; "
                   "1 - beta_2 has condition ~1000, so tens of ulps per float32 step",
    "lr_dtype": "the learning rate is rounded once more (or once less) before the cast",
    "one_minus_beta": "1 - beta_2 formed in double versus in the dtype moves v's update "
                      "by ~1e-5 relative (condition ~1000)",
    "amsgrad": "which v is kept as the maximum (raw or bias-corrected) changes every AMSGrad step",
    "clip_policy": "with several clip options set: all applied in order, only the first, or an error",
    "weight_decay": "decoupled decay shrinks the variable directly; L2 decay passes through "
                    "the moments and is normalised away",
    "sparse": "whether rows without a gradient still move, and whether IndexedSlices are accepted",
    "lr_alias": "what lr=... does: same as learning_rate, silently ignored, or an error",
    "unknown_kwarg_error": "a misspelt keyword raises a different exception type",
    "allowed_kwargs": "a keyword accepted by one constructor is refused by the other",
    "weights_order": "saved optimizer weights cannot be loaded across the two layouts",
    "slots": "slot names differ: moving state between them needs a name map",
    "features": "scenarios using these features run on one side only",
}
ARG_HINTS: dict[str, str] = {
    "epsilon": "a different default epsilon changes every step where sqrt(v) is small",
    "learning_rate": "the same call without learning_rate takes different step sizes",
    "beta_1": "a different default decay rate changes the first moment",
    "beta_2": "a different default decay rate changes the second moment",
    "name": "variable and op names differ, so checkpoints do not match by name",
}
_COMPARED = ("family", "formula", "beta_powers", "hyper_dtype", "lr_dtype", "eps_dtype", "power_dtype",
             "aux_dtype", "compute_dtype", "one_minus_beta", "zero_epsilon", "amsgrad", "clip_policy", "weight_decay",
             "sparse", "sparse_clip", "global_norm_overflow", "ema_first_step", "ema_one_minus", "lr_alias",
             "unknown_kwarg_error", "weights_order", "slots", "allowed_kwargs")


# --------------------------------------------------------------------------- parser

def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="spec_command", metavar="{list,show,diff}")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--spec-root", type=Path, default=None, metavar="DIR",
                       help="read the spec from DIR instead of the installed package")

    p = sub.add_parser("list", help="list the variants and count their clauses")
    common(p)
    p = sub.add_parser("show", help="show one variant: fields, arguments, clauses")
    p.add_argument("variant", help="variant id, e.g. keras-legacy")
    common(p)
    p = sub.add_parser("diff", help="fields where two variants differ, with why it matters")
    p.add_argument("a", help="first variant id")
    p.add_argument("b", help="second variant id")
    common(p)


def add_parser(subparsers: Any) -> None:
    """Register `spec` on the CLI's subparsers (the object returned by add_subparsers)."""
    parser = subparsers.add_parser(
        "spec", help="inspect the specification: variants, clauses, differences",
        description="Inspect the Adam specification: list variants, show one, diff two.")
    _add_subcommands(parser)
    parser.set_defaults(func=run)


# --------------------------------------------------------------------------- data

def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return ", ".join(str(v) for v in items) or "(none)"
    return repr(value) if isinstance(value, str) and value == "" else str(value)


def _default_text(arg: Any) -> Any:
    if arg is None:
        return None
    return "(required)" if arg.required else arg.default


def _same_default(x: Any, y: Any) -> bool:
    """Equal defaults: 0 and 0.0 match, but False and 0 (or True and 1) do not."""
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    return x == y


def diff_rows(a: Variant, b: Variant) -> list[dict[str, Any]]:
    """Every field where two variants differ: field, value in a, value in b, hint."""
    rows: list[dict[str, Any]] = []
    for field in _COMPARED:
        va, vb = getattr(a, field), getattr(b, field)
        if va != vb:
            rows.append({"field": field, "a": _jsonable(va), "b": _jsonable(vb),
                         "hint": HINTS.get(field, "")})
    only_a, only_b = sorted(a.features - b.features), sorted(b.features - a.features)
    if only_a or only_b:
        rows.append({"field": "features", "a": only_a, "b": only_b,
                     "hint": HINTS["features"] + " (listed: present on that side only)"})
    order = [arg.canonical for arg in a.arguments]
    order += [arg.canonical for arg in b.arguments if arg.canonical not in order]
    for canonical in order:
        xa, xb = a.argument(canonical), b.argument(canonical)
        if xa is None or xb is None:
            rows.append({"field": f"argument.{canonical}",
                         "a": None if xa is None else xa.name,
                         "b": None if xb is None else xb.name,
                         "hint": "the argument exists on one side only"})
            continue
        if xa.name != xb.name:
            rows.append({"field": f"argument.{canonical}.name", "a": xa.name, "b": xb.name,
                         "hint": "callers must spell the keyword differently"})
        da, db = _default_text(xa), _default_text(xb)
        if not _same_default(da, db):
            rows.append({"field": f"argument.{canonical}.default", "a": da, "b": db,
                         "hint": ARG_HINTS.get(canonical,
                                               "the same call without this argument behaves differently")})
    return rows


def _unknown(spec: Spec, vid: str, err: TextIO) -> int:
    known = ", ".join(sorted(spec.variants))
    print(f"adamconf spec: unknown variant {vid!r}; known variants: {known}", file=err)
    return EXIT_USAGE


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- commands

def _cmd_list(spec: Spec, args: argparse.Namespace, out: TextIO) -> int:
    variants = [{"id": v.id, "api": v.api, "formula": v.formula,
                 "clauses": len(spec.clauses_for(v.id))} for v in spec.variants.values()]
    kinds = Counter(c.kind for c in spec.clauses.values())
    totals = {"variants": len(spec.variants), "clauses": len(spec.clauses),
              "by_kind": dict(sorted(kinds.items()))}
    if args.json:
        print(json.dumps({"variants": variants, "totals": totals}, indent=2), file=out)
        return EXIT_OK
    print(_table([[v["id"], v["api"], v["formula"], str(v["clauses"])] for v in variants],
                 ["variant", "api", "formula", "clauses"]), file=out)
    by_kind = ", ".join(f"{k} {n}" for k, n in totals["by_kind"].items())
    print(f"\n{totals['variants']} variants, {totals['clauses']} clauses ({by_kind})", file=out)
    return EXIT_OK


def _cmd_show(spec: Spec, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.variant not in spec.variants:
        return _unknown(spec, args.variant, err)
    v = spec.variants[args.variant]
    clauses = spec.clauses_for(v.id)
    if args.json:
        data = _jsonable(v)
        data["clauses"] = [_jsonable(c) for c in clauses]
        print(json.dumps(data, indent=2), file=out)
        return EXIT_OK
    for f in dataclasses.fields(v):
        if f.name in ("arguments", "notes"):
            continue
        print(f"{f.name + ':':22}{_fmt(getattr(v, f.name))}", file=out)
    if v.notes:
        print(f"{'notes:':22}{v.notes}", file=out)
    print("\narguments:", file=out)
    rows = [[a.name, a.canonical, "(required)" if a.required else repr(a.default), a.doc]
            for a in v.arguments]
    print(_table(rows, ["name", "canonical", "default", "doc"]), file=out)
    print(f"\nclauses ({len(clauses)}):", file=out)
    print(_table([[c.id, c.kind, c.text] for c in clauses], ["id", "kind", "text"]), file=out)
    return EXIT_OK


def _cmd_diff(spec: Spec, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    for vid in (args.a, args.b):
        if vid not in spec.variants:
            return _unknown(spec, vid, err)
    a, b = spec.variants[args.a], spec.variants[args.b]
    rows = diff_rows(a, b)
    if args.json:
        print(json.dumps({"a": a.id, "b": b.id, "rows": rows}, indent=2), file=out)
        return EXIT_OK
    if not rows:
        print(f"{a.id} and {b.id} do not differ in any specified field", file=out)
        return EXIT_OK
    print(_table([[r["field"], _fmt(r["a"]), _fmt(r["b"]), r["hint"]] for r in rows],
                 ["field", a.id, b.id, "why it matters"]), file=out)
    return EXIT_OK


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one `spec` subcommand; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        spec = load_spec(getattr(args, "spec_root", None))
    except SpecError as exc:
        print(f"adamconf spec: {exc}", file=err)
        return EXIT_USAGE
    command = args.spec_command
    if command == "list":
        return _cmd_list(spec, args, out)
    if command == "show":
        return _cmd_show(spec, args, out, err)
    if command == "diff":
        return _cmd_diff(spec, args, out, err)
    print(f"adamconf spec: unknown subcommand {command!r}", file=err)  # pragma: no cover
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adamconf spec", description=__doc__.splitlines()[0])
    _add_subcommands(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
