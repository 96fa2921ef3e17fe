"""Speed of the exact reference, in element-steps per second, against plain mpmath.

Both compute one keras-legacy float32 step at 113 bits on the same random state. The
plain-mpmath baseline is the straightforward per-element loop (mpf objects, the page's
formula, no error scale); the reference also computes S and the ill-conditioning margin
for every element.

    python benchmarks/bench_reference.py [--n 20000] [--repeat 5] [--json]

The two are timed in interleaved rounds, so a loaded machine slows both alike; the
speed-up is reported best against best and per round (min, median, max). A third row,
the op floor, times only the six 113-bit operations one element-step cannot do without
(two moment updates as fused multiply-adds, a square root, + epsilon, a quotient and the
final fused multiply-add) over the same elements, one gmpy2 call per element each, as
the reference makes them: the reference's time over the floor is what its error scales,
margins and bookkeeping add.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import gmpy2
import mpmath
import numpy as np

from adamconf.reference import AdamState, Hyper, step
from adamconf.reference.tracked import _fma, _sqrt
from adamconf.spec import load_spec


def state(n: int, seed: int = 0) -> tuple[AdamState, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    f = lambda x: x.astype(np.float32)  # noqa: E731
    st = AdamState([f(rng.standard_normal(n))], [f(rng.standard_normal(n) * 0.1)],
                   [f(rng.standard_normal(n) ** 2 * 0.01)], iterations=5)
    return st, [f(rng.standard_normal(n))]


def plain_mpmath(st: AdamState, grads: list[np.ndarray], h: Hyper) -> list[float]:
    mpmath.mp.prec = 113
    b1, b2, eps, lr = (mpmath.mpf(float(np.float32(x))) for x in (h.beta_1, h.beta_2, h.epsilon, h.learning_rate))
    t = st.iterations + 1
    alpha = lr * mpmath.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    out = []
    for p, m, v, g in zip(st.params[0].tolist(), st.m[0].tolist(), st.v[0].tolist(), grads[0].tolist()):
        p, m, v, g = mpmath.mpf(p), mpmath.mpf(m), mpmath.mpf(v), mpmath.mpf(g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append(float(p - alpha * m / (mpmath.sqrt(v) + eps)))
    return out


def op_floor(st: AdamState, grads: list[np.ndarray], h: Hyper) -> np.ndarray:
    """The six exact operations of one step over object arrays, nothing else."""
    with gmpy2.context(precision=113):
        b1, b2, eps, lr = (gmpy2.mpfr(float(np.float32(x))) for x in (h.beta_1, h.beta_2, h.epsilon, h.learning_rate))
        alpha = lr * gmpy2.sqrt(1 - b2 ** 6) / (1 - b1 ** 6)
        p, m, v, g = (a.astype(np.float64).astype(object) for a in (st.params[0], st.m[0], st.v[0], grads[0]))
        g64 = grads[0].astype(np.float64)
        m2 = _fma(b1, m, (float(1 - b1) * g64).astype(object))
        v2 = _fma(1 - b2, (g64 * g64).astype(object), (float(b2) * st.v[0].astype(np.float64)).astype(object))
        q = m2 / (_sqrt(v2) + eps)
        return _fma(-alpha, q, p)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds (reference, then plain mpmath)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    variant = load_spec().variant("keras-legacy")
    h = Hyper()
    st, g = state(a.n)
    n_plain = max(a.n // 10, 1000)
    st_small, g_small = state(n_plain)
    # interleaved, so both sides see the same load; each round gives one ratio
    t_ref, t_plain, t_floor = [], [], []
    for _ in range(a.repeat):
        t_ref.append(timed(lambda: step(variant, "float32", h, st, g)))
        t_plain.append(timed(lambda: plain_mpmath(st_small, g_small, h)) * (a.n / n_plain))
        t_floor.append(timed(lambda: op_floor(st, g, h)))
    ratios = sorted(p / r for p, r in zip(t_plain, t_ref))
    res = {"elements": a.n, "reference_elem_steps_per_s": a.n / min(t_ref),
           "plain_mpmath_elem_steps_per_s": a.n / min(t_plain), "speedup": min(t_plain) / min(t_ref),
           "speedup_per_round": {"min": ratios[0], "median": ratios[len(ratios) // 2], "max": ratios[-1]},
           "op_floor_elem_steps_per_s": a.n / min(t_floor), "reference_vs_op_floor": min(t_floor) / min(t_ref),
           "op_floor_vs_plain_mpmath": min(t_plain) / min(t_floor),
           "loadavg": os.getloadavg()}
    # agreement of the two on the shared elements (sanity: same formula, same inputs)
    r = step(variant, "float32", h, st_small, g_small).approx("params")[0]
    res["max_abs_diff_vs_plain"] = float(np.max(np.abs(r - np.array(plain_mpmath(st_small, g_small, h)))))
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"reference (gmpy2, with error scale) {res['reference_elem_steps_per_s']:12,.0f} element-steps/s")
    print(f"plain mpmath loop                   {res['plain_mpmath_elem_steps_per_s']:12,.0f} element-steps/s")
    print(f"op floor (6 gmpy2 ops per element)  {res['op_floor_elem_steps_per_s']:12,.0f} element-steps/s"
          f"   ({res['op_floor_vs_plain_mpmath']:.1f} x plain mpmath; the reference runs at "
          f"{res['reference_vs_op_floor']:.2f} of it)")
    r = res["speedup_per_round"]
    print(f"speedup (best / best)               {res['speedup']:12.1f} x   per round: min {r['min']:.1f}, "
          f"median {r['median']:.1f}, max {r['max']:.1f}; load average {res['loadavg'][0]:.1f}")
    print(f"max |difference| of the results     {res['max_abs_diff_vs_plain']:12.3g}")


if __name__ == "__main__":
    main()
