"""Calibration of K: correct op orders must stay under it with margin, bugs above it.

Phase 1 (bulk): every correct op order in conformance/corpus runs many random one-step
scenarios (arrays whose elements mix zeros, subnormals, tiny, moderate and huge
values; beta_2 up to a few ulps below 1; epsilon zero, tiny and huge; step counts up to
10^7; with and without AMSGrad) in float32 and float64 on tf1, keras-legacy and keras3;
the largest err/(u*S) over all well-conditioned elements is reported per order.
Phase 2 (edge cases): the same orders through every gate check under the `dev`
hypothesis profile. Phase 3 (bugs): each planted bug through the gate's checks; the
largest ratio its failing check saw is reported.

    python benchmarks/calibrate.py [--elements 100000] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adamconf.corpus.op_orders import CORRECT  # noqa: E402
from adamconf.corpus.planted_bugs import BUGS  # noqa: E402
from adamconf.reference import AdamState, Hyper, step  # noqa: E402
from adamconf.reference.bound import compare  # noqa: E402
from adamconf.reference.state import np_dtype  # noqa: E402
from adamconf.reference.tracked import fmt  # noqa: E402
from adamconf.runner import Runner  # noqa: E402
from adamconf.spec import load_spec  # noqa: E402

SPEC = load_spec()
VARIANTS = ("tf1", "keras-legacy", "keras3")


def mixed(rng: np.random.Generator, n: int, dtype: str, positive: bool = False) -> np.ndarray:
    f = fmt(dtype)
    lo = max(f.emin - f.p + 1, -60)
    e = rng.integers(lo, min(f.emax // 2, 20), n)
    x = rng.uniform(1, 2, n) * 2.0 ** e
    kind = rng.random(n)
    x[kind < 0.04] = 0.0
    x[(kind >= 0.04) & (kind < 0.06)] = 2.0 ** (f.emin - f.p + 1) * rng.integers(1, 8, int(((kind >= 0.04) & (kind < 0.06)).sum()))
    x[(kind >= 0.06) & (kind < 0.5)] = rng.standard_normal(int(((kind >= 0.06) & (kind < 0.5)).sum()))
    if not positive:
        x *= rng.choice([-1.0, 1.0], n)
    return np.abs(x).astype(np_dtype(dtype)) if positive else x.astype(np_dtype(dtype))


def scenario(rng: np.random.Generator, vid: str, dtype: str, n: int, amsgrad: bool):
    b1 = float(rng.choice([0.9, 0.0, 0.5, 0.99, rng.uniform(0, 0.999)]))
    b2 = float(rng.choice([0.999, 0.9, 0.99999, 1 - rng.integers(1, 40) * 2.0 ** -26, rng.uniform(0.5, 0.9999)]))
    eps = float(rng.choice([1e-7, 1e-8, 0.0, 1e-30, 1e-3, 1.0, 1e8]))
    lr = float(rng.choice([0.001, 0.1, 1.0, rng.uniform(1e-6, 10)]))
    it = int(rng.choice([0, rng.integers(0, 12), rng.integers(0, 10_000), rng.integers(0, 10 ** 7)]))
    p, g = mixed(rng, n, dtype), mixed(rng, n, dtype)
    if it == 0:
        st = AdamState.zeros_like([p], amsgrad=amsgrad)
    else:
        v = mixed(rng, n, dtype, positive=True)
        st = AdamState([p], [mixed(rng, n, dtype)], [v], it,
                       [np.maximum(v, mixed(rng, n, dtype, positive=True))] if amsgrad else None)
    if SPEC.variant(vid).beta_powers == "accumulated":
        st.beta1_power = float(np.float32(b1) ** np.float32(it + 1))
        st.beta2_power = float(np.float32(b2) ** np.float32(it + 1))
    return Hyper(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, amsgrad=amsgrad), st, [g]


def bulk(backend, elements: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for dtype in ("float32", "float64"):
        worst, count, ill = 0.0, 0, 0
        per = elements // (len(VARIANTS) * 2)
        for vid in VARIANTS:
            for amsgrad in (False, True):
                done = 0
                while done < per:
                    h, st, g = scenario(rng, vid, dtype, 512, amsgrad and vid != "tf1")
                    k = SPEC.tolerances["amsgrad" if h.amsgrad else "step"].k
                    ref = step(SPEC.variant(vid), dtype, h, st, g)
                    obs = backend.step(vid, dtype, h, st, g)
                    v = compare(ref, obs, k)
                    worst = max(worst, v.worst_ratio)
                    ill += v.ill
                    done += 512
                count += done
        out[dtype] = {"element_steps": count, "worst_ratio": worst, "ill_conditioned": ill}
    return out


def gate(backend, profile: str, checks=None, variants=VARIANTS, dtypes=("float32", "float64"), max_examples=None) -> dict:
    runner = Runner(SPEC, backend, type(backend).__name__, profile=profile, seed=1, max_examples=max_examples)
    res = runner.run(variants, dtypes, checks)
    bad = [f"{c.variant}/{c.dtype}/{c.check}: {c.message}" for c in res.checks if c.status in ("fail", "error")]
    return {"worst_ratio": max((c.worst_ratio for c in res.checks), default=0.0),
            "examples": sum(c.examples for c in res.checks), "failures": bad, "checks": res.checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elements", type=int, default=100_000, help="bulk element-steps per order and dtype")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--dev-examples", type=int, default=None, help="examples per check in the dev-profile phase (default: the profile's)")
    a = ap.parse_args()
    report: dict = {"K": {f: t.k for f, t in SPEC.tolerances.items()}, "correct": {}, "bugs": {}}
    t0 = time.perf_counter()
    for b in CORRECT:
        name = type(b).__name__
        r = {"bulk": bulk(b, a.elements)}
        g = gate(b, "dev", max_examples=a.dev_examples)
        r["edge_cases"] = {"worst_ratio": g["worst_ratio"], "examples": g["examples"], "failures": g["failures"]}
        report["correct"][name] = r
        print(f"{name:14s} bulk f32 worst {r['bulk']['float32']['worst_ratio']:.3g} "
              f"({r['bulk']['float32']['element_steps']} el-steps), f64 worst {r['bulk']['float64']['worst_ratio']:.3g}; "
              f"dev-profile edge cases worst {g['worst_ratio']:.3g} over {g['examples']} examples, "
              f"{len(g['failures'])} false failures", flush=True)
    for bug in BUGS:
        name = type(bug).__name__
        vid = bug.variants[0]
        dtype = "float32" if "float32" in bug.dtypes else bug.dtypes[0]
        g = gate(bug, "ci", variants=(vid,), dtypes=(dtype,))
        failing = [c for c in g["checks"] if c.status == "fail"]
        top = max(failing, key=lambda c: c.worst_ratio, default=None)
        report["bugs"][name] = {"variant": vid, "dtype": dtype, "caught": bool(failing),
                                "checks": sorted({c.check for c in failing}),
                                "max_ratio": top.worst_ratio if top else 0.0}
        print(f"{name:30s} {'caught' if failing else 'MISSED':7s} by {', '.join(sorted({c.check for c in failing})) or '-':40s} "
              f"max ratio {report['bugs'][name]['max_ratio']:.3g}", flush=True)
    report["seconds"] = time.perf_counter() - t0
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
