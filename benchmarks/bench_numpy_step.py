"""Speed of one dense float32 Adam step on N elements, best of --repeat.

    python benchmarks/bench_numpy_step.py [--n 16777216] [--repeat 5] [--json]

Rows (elements per second; one element = one parameter with its m, v and gradient):

  memcopy floor     np.copyto bandwidth (bytes read + written per second, one thread,
                    as ADAM-FACTS measured it) divided by the 28 bytes an in-place Adam
                    step must move per float32 element (read g, m, v, var; write m, v,
                    var). A step cannot beat this unless it runs on more memory channels
                    than one copy uses; the next row shows what two threads reach.
  streaming floor   the same traffic as an in-place step (read g, m, v, var; write m, v,
                    var) with trivial arithmetic, chunked over the same threads as the
                    backend: the memory ceiling numpy can reach on this machine.
  numpy expression  the pages' formula as plain numpy expressions, allocating temporaries.
  fused in place    NumpyBackend.apply_dense_inplace: the backend's fused, chunked,
                    threaded kernel on the caller's arrays, no copies.
  backend step      NumpyBackend.step: the same kernel reading the inputs and writing
                    new output arrays (the protocol forbids touching the inputs). The
                    outputs come from the backend's recycling allocator, so in this loop,
                    which drops each result, they reuse already-mapped memory; set
                    ADAMCONF_NUMPY_RECYCLE=0 to see the cost of fresh pages.
  tf ResourceApplyAdam  tf.raw_ops.ResourceApplyAdam on tf.Variables, if TensorFlow is
                    importable (skipped with a message otherwise).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adamconf.backends import numpy_backend as nb  # noqa: E402
from adamconf.reference.state import AdamState, Hyper  # noqa: E402

BYTES_PER_ELEMENT = 28  # float32: read g, m, v, var (16) + write m, v, var (12)


def best_of(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def make_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "p": rng.standard_normal(n, dtype=np.float32),
        "g": rng.standard_normal(n, dtype=np.float32),
        "m": (rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)),
        "v": rng.random(n, dtype=np.float32),
    }


def bench_memcopy(n: int, repeat: int) -> dict:
    src = np.ones(n, np.float32)
    dst = np.empty(n, np.float32)
    t = best_of(lambda: np.copyto(dst, src), repeat)
    gbs = 2 * 4 * n / t / 1e9                     # bytes read + written per second
    return {"row": "memcopy floor", "seconds": None, "elements_per_s": gbs * 1e9 / BYTES_PER_ELEMENT,
            "note": f"np.copyto {gbs:.1f} GB/s (read+write, 1 thread) / {BYTES_PER_ELEMENT} B"}


def bench_streaming(a: dict[str, np.ndarray], repeat: int, threads: int) -> dict:
    g, m, v, p = a["g"], a["m"].copy(), a["v"].copy(), a["p"].copy()
    n = g.shape[0]
    chunk = nb._chunk_elems(g.dtype)

    def rng_(lo: int, hi: int) -> None:
        for s in range(lo, hi, chunk):
            e = min(s + chunk, hi)
            gg = g[s:e]
            np.add(m[s:e], gg, m[s:e])
            np.add(v[s:e], gg, v[s:e])
            np.add(p[s:e], gg, p[s:e])

    t = best_of(lambda: nb._parallel(n, chunk, rng_, threads), repeat)
    return {"row": "streaming floor", "seconds": t, "elements_per_s": n / t,
            "note": f"same 28 B/element traffic, trivial arithmetic, {threads} thread(s): "
                    f"{BYTES_PER_ELEMENT * n / t / 1e9:.1f} GB/s"}


def bench_expression(a: dict[str, np.ndarray], repeat: int) -> dict:
    g, m0, v0, p0 = a["g"], a["m"], a["v"], a["p"]
    b1, b2, lr, eps = np.float32(0.9), np.float32(0.999), np.float32(0.001), np.float32(1e-7)
    t_ = 1
    alpha = lr * np.sqrt(np.float32(1) - b2 ** t_) / (np.float32(1) - b1 ** t_)

    def step():
        m = b1 * m0 + (np.float32(1) - b1) * g
        v = b2 * v0 + (np.float32(1) - b2) * (g * g)
        p = p0 - alpha * m / (np.sqrt(v) + eps)
        return p, m, v

    t = best_of(step, repeat)
    n = g.shape[0]
    return {"row": "numpy expression", "seconds": t, "elements_per_s": n / t,
            "note": "m = b1*m + (1-b1)*g ...; new arrays, temporaries, one thread"}


def bench_inplace(a: dict[str, np.ndarray], repeat: int, backend: nb.NumpyBackend) -> dict:
    g, m, v, p = a["g"], a["m"].copy(), a["v"].copy(), a["p"].copy()
    hyper = Hyper()
    t = best_of(lambda: backend.apply_dense_inplace("keras-legacy", "float32", hyper, p, m, v, g), repeat)
    n = g.shape[0]
    return {"row": "fused in place", "seconds": t, "elements_per_s": n / t,
            "note": f"apply_dense_inplace, chunk {nb._chunk_elems(g.dtype)} elements, "
                    f"{backend.threads or nb._default_threads()} thread(s)"}


def bench_step(a: dict[str, np.ndarray], repeat: int, backend: nb.NumpyBackend) -> dict:
    st = AdamState([a["p"]], [a["m"]], [a["v"]], 0)
    hyper = Hyper()
    grads = [a["g"]]
    t = best_of(lambda: backend.step("keras-legacy", "float32", hyper, st, grads), repeat)
    n = a["g"].shape[0]
    return {"row": "backend step", "seconds": t, "elements_per_s": n / t,
            "note": "NumpyBackend.step: reads the inputs, writes new (recycled) output arrays"}


def bench_tf(a: dict[str, np.ndarray], repeat: int) -> dict:
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf  # type: ignore
    except Exception as e:  # noqa: BLE001 - any import failure means "skip"
        return {"row": "tf ResourceApplyAdam", "seconds": None, "elements_per_s": None,
                "note": f"skipped: tensorflow not importable ({type(e).__name__}: {e})"}
    var = tf.Variable(a["p"])
    m = tf.Variable(a["m"])
    v = tf.Variable(a["v"])
    g = tf.constant(a["g"])
    f = lambda x: tf.constant(x, tf.float32)  # noqa: E731
    args = dict(beta1_power=f(0.9), beta2_power=f(0.999), lr=f(0.001), beta1=f(0.9), beta2=f(0.999),
                epsilon=f(1e-7), grad=g, use_locking=False)

    def step():
        tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, **args)
        _ = var.read_value()[0].numpy()             # wait for completion

    t = best_of(step, repeat)
    n = a["g"].shape[0]
    return {"row": "tf ResourceApplyAdam", "seconds": t, "elements_per_s": n / t,
            "note": f"tensorflow {tf.__version__}"}


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24, help="float32 elements (default 2^24)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per row; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="backend threads (default: all cores)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = ap.parse_args(argv)

    backend = nb.NumpyBackend(threads=args.threads)
    threads = args.threads or nb._default_threads()
    a = make_arrays(args.n)
    j0, t0 = _cpu_jiffies(), os.times()
    rows = [
        bench_memcopy(args.n, args.repeat),
        bench_streaming(a, args.repeat, threads),
        bench_expression(a, args.repeat),
        bench_inplace(a, args.repeat, backend),
        bench_step(a, args.repeat, backend),
        bench_tf(a, args.repeat),
    ]
    j1, t1 = _cpu_jiffies(), os.times()
    background = None
    if j0 and j1 and j1[1] > j0[1]:
        hz = os.sysconf("SC_CLK_TCK")
        ours = (t1.user + t1.system - t0.user - t0.system) * hz
        ncpu = os.cpu_count() or 1
        # busy jiffies not spent by this process, as a fraction of one CPU
        background = max(0.0, (j1[0] - j0[0] - ours)) / ((j1[1] - j0[1]) / ncpu)
    if args.json:
        print(json.dumps({"n": args.n, "repeat": args.repeat, "threads": threads,
                          "cpus": os.cpu_count(), "background_cpus": background, "rows": rows}, indent=2))
        return 0
    print(f"one dense float32 Adam step, n = {args.n:,} elements, best of {args.repeat}, "
          f"{threads} thread(s), {os.cpu_count()} CPU(s)")
    print(f"{'row':22} {'G elem/s':>9} {'ms':>8}  note")
    for r in rows:
        eps = "-" if r["elements_per_s"] is None else f"{r['elements_per_s'] / 1e9:.3f}"
        ms = "-" if r["seconds"] is None else f"{r['seconds'] * 1e3:.2f}"
        print(f"{r['row']:22} {eps:>9} {ms:>8}  {r['note']}")
    if background is not None:
        print(f"other load during the run: {background:.2f} CPUs busy outside this process"
              + ("  (numbers are depressed; rerun on an idle machine)" if background > 0.15 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
