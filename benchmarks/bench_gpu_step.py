"""Speed of the GPU backend's fused kernel on a CUDA device, and where its results part
from the CPU path.

Timed, for one float32 step at 2^24 and 2^28 elements (in place, as an optimizer runs):
- `ours`: one launch of gpu_kernel._adam_kernel (the TF epsilon-hat step; per-step
  scalars already on the device);
- `torch`: torch's fused CUDA Adam kernel (`torch._fused_adam_`), and the whole
  `torch.optim.Adam(fused=True).step()` around it;
- `copy`: a device-to-device copy moving the same bytes as the step (Adam reads p, m,
  v, g and writes p, m, v: 28 bytes per float32 element, so the copy reads and writes
  14 bytes per element): the HBM floor.
It prints each time, the copy floor as a fraction of each (goal >= 0.8 for ours) and
ours against torch (goal >= 1.0x). A bfloat16 line is for information.

`--compare` steps every TF variant in every dtype on the device (backends `gpu` and
`gpu-nofma`) and through the numpy backend from the same inputs and counts the elements
that differ. `gpu-nofma` must agree everywhere bit for bit. `gpu` may differ where the
compiler contracted a multiply-add into an FMA: float32, float64 and float16 (LLVM folds
the float32 round trips into native half operations, then contracts those), never
bfloat16 (rounded with integer operations); the gate (`adamconf check --backend gpu`)
judges those differences against its bound.

Run on the device through benchmarks/gpu_device_run.sh; needs CUDA.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from adamconf.backends import gpu_kernel as K


def cuda_ms(fn, reps: int, repeats: int = 7) -> float:
    """Median over `repeats` of the mean time of `reps` back-to-back calls, in ms."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def bench(n: int, dtype: str, reps: int) -> None:
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    p = torch.randn(n, device=dev, dtype=tdt, generator=gen)
    g = torch.randn(n, device=dev, dtype=tdt, generator=gen)
    m = torch.zeros(n, device=dev, dtype=tdt)
    v = torch.zeros(n, device=dev, dtype=tdt)
    # omb1, omb2, alpha, eps, wd, lr, clip_lo, clip_hi, mu, omm (gpu_kernel.COEF)
    coef = torch.tensor([0.1, 0.001, 1e-3 * 0.0447 / 0.1, 1e-7, 0, 1e-3, 0, 0, 0, 0], device=dev, dtype=tdt)
    ours = cuda_ms(lambda: K.launch(dtype, coef, p, m, v, g, (p, m, v)), reps)

    per_elem = 7 * p.element_size()                      # read p, m, v, g; write p, m, v
    half = per_elem * n // 2
    src = torch.empty(half // 4, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy = cuda_ms(lambda: dst.copy_(src), reps)

    line = (f"{dtype:8s} n=2^{n.bit_length() - 1}: ours {ours * 1e3:8.1f} us  copy floor {copy * 1e3:8.1f} us"
            f"  floor/ours {copy / ours:5.2f}  ({per_elem * n / ours / 1e9:6.0f} GB/s)")
    if dtype == "float32":
        try:      # one prepared device run: a torch API change must not cost the other numbers
            line += "\n" + _torch_line(p, m, v, g, copy, ours, reps)
        except Exception as e:  # noqa: BLE001
            line += f"\n          torch fused Adam failed: {type(e).__name__}: {e}"
    print(line, flush=True)


def _torch_line(p, m, v, g, copy: float, ours: float, reps: int) -> str:
    """torch's fused CUDA Adam on copies of the same data: the kernel, then the whole step."""
    tp, tm, tv, tg = p.clone(), m.clone(), v.clone(), g.clone()
    step = torch.ones((), device=p.device, dtype=torch.float32)
    kernel = cuda_ms(lambda: torch._fused_adam_([tp], [tg], [tm], [tv], [], [step], lr=1e-3, beta1=0.9,
                                                beta2=0.999, weight_decay=0.0, eps=1e-7, amsgrad=False,
                                                maximize=False), reps)
    tp.grad = tg
    opt = torch.optim.Adam([tp], lr=1e-3, eps=1e-7, fused=True)
    whole = cuda_ms(opt.step, reps)
    return (f"          torch fused kernel {kernel * 1e3:8.1f} us (floor/torch {copy / kernel:5.2f}, "
            f"ours {kernel / ours:5.2f}x)  Adam(fused=True).step() {whole * 1e3:8.1f} us (ours {whole / ours:5.2f}x)")


def compare() -> None:
    """GPU against the numpy backend on the same inputs, every TF variant and dtype."""
    from adamconf.backends.gpu_backend import (
        GpuBackend,
        GpuNoFmaBackend,
        variants_from_spec,
    )
    from adamconf.backends.numpy_backend import NumpyBackend
    from adamconf.reference.state import DTYPES, AdamState, Hyper, np_dtype
    from adamconf.spec import load_spec

    cpu = NumpyBackend()
    rng = np.random.default_rng(0)
    for variant in variants_from_spec():
        for dtype in DTYPES:
            T = np_dtype(dtype)
            shape = (1 << 16,)
            sign = rng.choice([-1.0, 1.0], shape)
            acc = load_spec().variant(variant).beta_powers == "accumulated"
            st = AdamState([(rng.uniform(0.5, 2, shape) * sign).astype(T)],
                           [(rng.uniform(0.5, 2, shape) * 0.1 * sign).astype(T)],
                           [(rng.uniform(0.5, 2, shape) * 0.01).astype(T)], 9,
                           beta1_power=float(np.float32(0.9) ** 10) if acc else None,
                           beta2_power=float(np.float32(0.999) ** 10) if acc else None)
            g = [(rng.standard_normal(shape) * 0.5).astype(T)]
            h = Hyper(learning_rate=0.01, epsilon=1e-7)
            b = cpu.step(variant, dtype, h, st, g)
            for gpu in (GpuBackend(), GpuNoFmaBackend()):
                a = gpu.step(variant, dtype, h, st, g)
                diffs = []
                for name in ("params", "m", "v"):
                    x = a.arrays()[name][0].astype(np.float64)
                    y = b.arrays()[name][0].astype(np.float64)
                    rel = np.abs(x - y) / np.maximum(np.abs(y), float(np.finfo(T).tiny)) / float(np.finfo(T).eps)
                    diffs.append(f"{name} {int((x != y).sum()):6d} differ (max {float(np.max(rel, initial=0)):.2g} eps)")
                print(f"compare {gpu.name:9s} {variant:13s} {dtype:8s} " + "; ".join(diffs), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2", type=int, nargs="+", default=[24, 28])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    if K.INTERPRETED:
        if args.compare:         # the comparison's logic can be tried on CPU; it must find nothing
            compare()
        raise SystemExit("no CUDA device: the timings need the compiled kernel (the interpreter is a test vehicle)")
    print(f"torch {torch.__version__}, triton {K.TRITON_VERSION}, {torch.cuda.get_device_name()}, "
          f"block {K.GPU_BLOCK}", flush=True)
    for k in args.log2:
        bench(1 << k, "float32", args.reps)
    for k in args.log2:
        bench(1 << k, "bfloat16", args.reps)
    if args.compare:
        compare()


if __name__ == "__main__":
    main()
