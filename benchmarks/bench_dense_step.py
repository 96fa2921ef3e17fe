"""One dense Adam step on N elements, every CPU implementation side by side, one run.

    python benchmarks/bench_dense_step.py [--n 16777216] [--dtype float32] [--repeat 5]
                                          [--rounds 3] [--threads T] [--json OUT.json]

Every row updates its own param, m and v in place from the same gradient, so each
moves the same bytes: read g, m, v, var and write m, v, var, 7 * itemsize per element
(28 B in float32). Rows:

  copy floor, 1 thread    np.copyto of the same number of bytes (half read, half
                          written): what one core's stream reaches
  copy floor, T threads   the same copy cut across the numpy backend's thread pool
  stream floor            a compiled in-place p += g, m += g, v += g under the same pool:
                          the step's own access pattern (a copy's destination is also
                          read for ownership unless the copy streams past the cache, so
                          a copy of the same bytes can move more than the step does)
  compiled kernel         NumpyBackend.apply_dense_inplace with numba installed: the
                          compiled kernel (conformance/backends/numpy_compiled.py)
                          under the backend's pool of T threads
  compiled, prange        the same kernel built with numba parallel=True (numba's own
                          threading layer, named in the note); not what the backend uses
  numpy ufunc path        NumpyBackend(compiled=False).apply_dense_inplace
  backend step            NumpyBackend.step: the protocol's out-of-place step (reads the
                          inputs, writes fresh arrays: 3 more streams of write traffic)
  torch fused / foreach   torch.optim.Adam(fused=True / foreach=True).step()
  tf ResourceApplyAdam    tf.raw_ops.ResourceApplyAdam on tf.Variables
  optax jit, donated      jax.jit(optax.adam update + apply_updates, donate_argnums)

Rows whose library is missing are listed as skipped. The machine is shared, so the
rows are timed in --rounds interleaved rounds of --repeat calls each; a row's time is
its best call over all rounds, and `spread` is its median over its best. Ratios are
speeds (higher is faster): `vs floor` = floor time / row time (1.0 is the memory floor,
the fastest floor row), `vs torch fused` = torch fused time / row time. Before timing,
the compiled rows are checked bit for bit against the numpy ufunc path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adamconf.backends import numpy_backend as nb
from adamconf.backends import numpy_compiled as nc
from adamconf.reference.state import AdamState, Hyper

B1, B2, LR, EPS = 0.9, 0.999, 0.001, 1e-7
VARIANT = "keras-legacy"        # 1 - beta in T, float32 hypers: the ResourceApplyAdam arithmetic


def make_arrays(n: int, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = np.dtype(dtype)
    return {"p": rng.standard_normal(n).astype(T), "g": rng.standard_normal(n).astype(T),
            "m": (rng.standard_normal(n) * 0.1).astype(T), "v": rng.random(n).astype(T)}


Row = tuple[str, Callable[[], object] | None, str]


def copy_rows(a: dict, threads: int) -> list[Row]:
    nbytes = 7 * a["g"].nbytes // 2                     # read half, write half: 7 * itemsize * n in all
    src, dst = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)

    def pooled():
        nb._parallel(nbytes, 0, lambda lo, hi: np.copyto(dst[lo:hi], src[lo:hi]), threads)

    rows: list[Row] = [("copy floor, 1 thread", lambda: np.copyto(dst, src), "np.copyto"),
                       (f"copy floor, {threads} threads", pooled, "np.copyto cut across the backend's pool")]
    if nc.AVAILABLE:
        import numba

        @numba.njit(nogil=True)
        def stream(g, p, m, v):                      # the step's access pattern, no arithmetic to speak of
            for i in range(g.shape[0]):
                x = g[i]
                p[i] += x
                m[i] += x
                v[i] += x

        g, p, m, v = a["g"], a["p"].copy(), a["m"].copy(), a["v"].copy()
        rows.append(("stream floor", lambda: nb._parallel(g.size, 0, lambda lo, hi: stream(
            g[lo:hi], p[lo:hi], m[lo:hi], v[lo:hi]), threads),
            "compiled p += g; m += g; v += g in place: the step's 4 reads and 3 writes"))
    return rows


def numpy_rows(a: dict, dtype: str, threads: int) -> list[Row]:
    rows: list[Row] = []
    h = Hyper(beta_1=B1, beta_2=B2, learning_rate=LR, epsilon=EPS)

    def inplace(backend: nb.NumpyBackend) -> Callable[[], object]:
        p, m, v, g = a["p"].copy(), a["m"].copy(), a["v"].copy(), a["g"]
        return lambda: backend.apply_dense_inplace(VARIANT, dtype, h, p, m, v, g)

    if nc.supports(np.dtype(dtype), a["g"].size):
        check_bits(a, dtype, h, threads)
        rows.append(("compiled kernel", inplace(nb.NumpyBackend(threads=threads)),
                     f"numba {nc.version()}, {threads} thread(s) of the backend's pool"))
        rows.append(prange_row(a, dtype, threads))
    else:
        rows.append(("compiled kernel", None, f"skipped: numba not installed or {dtype} not served; "
                                              "pip install -e '.[fast]'"))
    rows.append(("numpy ufunc path", inplace(nb.NumpyBackend(threads=threads, compiled=False)),
                 f"chunk {nb._chunk_elems(np.dtype(dtype))} elements, {threads} thread(s)"))
    st = AdamState([a["p"]], [a["m"]], [a["v"]], 0)
    backend = nb.NumpyBackend(threads=threads)
    rows.append(("backend step", lambda: backend.step(VARIANT, dtype, h, st, [a["g"]]),
                 "out of place: fresh (recycled) outputs"))
    return rows


def check_bits(a: dict, dtype: str, h: Hyper, threads: int) -> None:
    """One step by the compiled kernel, its prange build and the ufunc path, same bits."""
    outs = []
    for backend in (nb.NumpyBackend(threads=threads), nb.NumpyBackend(threads=threads, compiled=False)):
        st = AdamState([a["p"].copy()], [a["m"].copy()], [a["v"].copy()], 0)
        outs.append(backend.step_inplace(VARIANT, dtype, h, st, [a["g"]]))
    _, run = prange_row(a, dtype, threads, check=True)
    for x, y, z in zip(outs[0].arrays().values(), outs[1].arrays().values(), run):
        if not (np.array_equal(x[0].view(np.uint8), y[0].view(np.uint8)) and np.array_equal(y[0].view(np.uint8), z.view(np.uint8))):
            raise SystemExit("the compiled kernel and the numpy path disagree: run tests/test_numpy_compiled.py")


def prange_row(a: dict, dtype: str, threads: int, check: bool = False):
    import numba
    kernel, _ = nc.build(parallel=True)
    T = np.dtype(dtype).type
    p, m, v, g = a["p"].copy(), a["m"].copy(), a["v"].copy(), a["g"]
    e = np.empty(0, dtype)
    omb1, omb2 = T(1) - T(np.float32(B1)), T(1) - T(np.float32(B2))
    alpha = T(np.float32(LR)) * np.sqrt(T(1) - T(np.float32(B2))) / (T(1) - T(np.float32(B1)))
    args = (0, g.size, g, e, p, m, v, e, omb1, omb2, T(alpha), T(EPS), T(0), T(0), False, False, False)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    kernel(*args)
    if check:
        return None, (p, m, v)
    return ("compiled, prange", lambda: kernel(*args), f"numba parallel=True, layer {numba.threading_layer()}")


def torch_rows(a: dict, dtype: str, threads: int) -> list[Row]:
    try:
        import torch
    except ImportError as e:
        return [("torch fused", None, f"skipped: {e}; pip install torch==2.13.0")]
    torch.set_num_threads(threads)
    rows: list[Row] = []
    for kind in ("fused", "foreach"):
        p = torch.from_numpy(a["p"].copy())
        p.grad = torch.from_numpy(a["g"])
        opt = torch.optim.Adam([p], lr=LR, betas=(B1, B2), eps=EPS, **{kind: True})
        opt.step()                                    # creates the state
        rows.append((f"torch {kind}", opt.step, f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"))
    return rows


def tf_row(a: dict, dtype: str) -> Row:
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
    except ImportError as e:
        return ("tf ResourceApplyAdam", None, f"skipped: {e}; pip install -e '.[tf]'")
    var, m, v = (tf.Variable(a[k]) for k in ("p", "m", "v"))
    g = tf.constant(a["g"])
    c = lambda x: tf.constant(x, dtype)  # noqa: E731
    kw = dict(beta1_power=c(B1), beta2_power=c(B2), lr=c(LR), beta1=c(B1), beta2=c(B2), epsilon=c(EPS), grad=g)
    return ("tf ResourceApplyAdam", lambda: tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, **kw),
            f"tensorflow {tf.__version__}")


def optax_row(a: dict, dtype: str) -> Row:
    try:
        import jax
        import optax
    except ImportError as e:
        return ("optax jit, donated", None, f"skipped: {e}; pip install jax optax")
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    opt = optax.adam(LR, b1=B1, b2=B2, eps=EPS)

    def update(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(update, donate_argnums=(0, 1))
    box = {"p": jax.numpy.asarray(a["p"]), "g": jax.numpy.asarray(a["g"])}
    box["s"] = opt.init(box["p"])

    def run():
        box["p"], box["s"] = step(box["p"], box["s"], box["g"])
        box["p"].block_until_ready()

    run()
    return ("optax jit, donated", run, f"jax {jax.__version__}, optax {optax.__version__}")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(f) - f[3] - f[4], sum(f)


def measure(n: int, dtype: str, repeat: int, rounds: int, threads: int) -> dict:
    a = make_arrays(n, dtype)
    rows = copy_rows(a, threads) + numpy_rows(a, dtype, threads) + torch_rows(a, dtype, threads)
    rows += [tf_row(a, dtype), optax_row(a, dtype)]
    live = [(name, fn) for name, fn, _ in rows if fn is not None]
    for _, fn in live:                                 # warm up: compile, first touch
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in live}
    j0, c0 = _cpu_jiffies(), os.times()
    for _ in range(rounds):
        for name, fn in live:
            times[name] += timed(fn, repeat)
    j1, c1 = _cpu_jiffies(), os.times()
    best = {k: min(v) for k, v in times.items()}
    floor = min(v for k, v in best.items() if "floor" in k)
    torch_fused = best.get("torch fused")
    bpe = 7 * np.dtype(dtype).itemsize
    out_rows = []
    for name, fn, note in rows:
        r: dict = {"row": name, "note": note}
        if fn is not None:
            t = best[name]
            r.update(seconds=t, median_seconds=statistics.median(times[name]),
                     spread=statistics.median(times[name]) / t, gb_per_s=bpe * n / t / 1e9,
                     vs_floor=floor / t, vs_torch_fused=None if torch_fused is None else torch_fused / t)
        out_rows.append(r)
    background = None
    if j0 and j1 and j1[1] > j0[1]:
        hz = os.sysconf("SC_CLK_TCK")
        ours = (c1.user + c1.system - c0.user - c0.system) * hz
        ncpu = os.cpu_count() or 1
        background = max(0.0, j1[0] - j0[0] - ours) / ((j1[1] - j0[1]) / ncpu)
    return {"n": n, "dtype": dtype, "bytes_per_element": bpe, "repeat": repeat, "rounds": rounds,
            "threads": threads, "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "background_cpus": background, "loadavg": os.getloadavg(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_THREADING_LAYER")},
            "rows": out_rows}


def print_table(res: dict) -> None:
    print(f"one dense {res['dtype']} Adam step in place, n = {res['n']:,}, {res['bytes_per_element']} B/element, "
          f"best of {res['rounds']} x {res['repeat']}, {res['threads']} thread(s), {res['cpus']} CPU(s)")
    print(f"{'row':24} {'ms':>8} {'GB/s':>6} {'vs floor':>8} {'vs torch fused':>14} {'spread':>6}  note")
    for r in res["rows"]:
        if "seconds" not in r:
            print(f"{r['row']:24} {'-':>8} {'-':>6} {'-':>8} {'-':>14} {'-':>6}  {r['note']}")
            continue
        vt = "-" if r["vs_torch_fused"] is None else f"{r['vs_torch_fused']:.2f}"
        print(f"{r['row']:24} {r['seconds'] * 1e3:8.2f} {r['gb_per_s']:6.1f} {r['vs_floor']:8.2f} {vt:>14} "
              f"{r['spread']:6.2f}  {r['note']}")
    bg = res["background_cpus"]
    print(f"load: {bg if bg is None else round(bg, 2)} CPUs busy outside this process during the run; "
          f"load average {', '.join(f'{x:.1f}' for x in res['loadavg'])}; "
          f"OPENBLAS_CORETYPE={res['env']['OPENBLAS_CORETYPE']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per row and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all rows")
    ap.add_argument("--threads", type=int, default=None, help="threads for every row (default: the usable cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    threads = args.threads or nb._default_threads()
    res = measure(args.n, args.dtype, args.repeat, args.rounds, threads)
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
