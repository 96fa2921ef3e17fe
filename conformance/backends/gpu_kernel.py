"""One fused Triton kernel for the dense Adam step of the TF family.

`launch` runs the whole elementwise update of one parameter tensor in one kernel:
clipping by value, decoupled weight decay, the TF kernel's moment updates
(`m += (g - m) * (1 - b1)`, `v += (g*g - v) * (1 - b2)`), the AMSGrad maximum, the
epsilon-hat step `p -= (m * alpha) / (sqrt(v) + eps)` and the EMA of the weights (with
its overwrite). The per-step scalars come in as a small tensor of the parameter dtype,
formed on the host (`gpu_scalars`), so one compiled kernel serves every step.

Rounding is the point of a conformance backend, so the kernel rounds the way the
variants do, after every operation, in the parameter dtype:
- float32 and float64 compute natively; division and the float32 square root use the
  IEEE round-to-nearest forms (`div_rn`, `sqrt_rn`), not the fast approximations
  Triton emits for `/` and `sqrt` on NVIDIA. With `fp_fusion` the GPU compiler
  contracts multiply-adds into FMAs (the gate's bound admits that); without it the
  device's results equal the numpy backend's bit for bit.
- float16 and bfloat16 compute each operation in float32 and round the result to the
  dtype before the next one. Float32 carries 24 bits, at least 2p + 2 for both, so
  this double rounding equals one correct rounding for + - * / and sqrt.
- bfloat16 values are converted by bit manipulation (load: shift the 16 bits up;
  round: round-to-nearest-even on the float32 bits), never by the dtype cast or bf16
  arithmetic: Triton 3.9's CPU interpreter truncates float32 -> bfloat16 casts and does
  bfloat16 arithmetic on the raw uint16 bit patterns (tests/test_gpu_backend.py shows
  both). The integer rounding is exact on the device too, so CPU and GPU run one kernel.

Without a CUDA device the kernel runs in Triton's interpreter (TRITON_INTERPRET=1,
set here before the kernel is defined) on CPU tensors: slow, but the same code. The
kernel calls no jit function of Triton's standard library (tl.zeros_like and the like):
those stay compiled-mode objects when triton was imported before the switch was set.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# imported after the switch: triton.jit reads TRITON_INTERPRET when a kernel is defined
import triton
import triton.language as tl

__all__ = ["COEF", "HALF", "INTERPRETED", "TRITON_VERSION", "block_for", "device", "launch"]

TRITON_VERSION = triton.__version__
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Order of the per-step scalars in the coefficient tensor.
COEF = ("omb1", "omb2", "alpha", "eps", "wd", "lr", "clip_lo", "clip_hi", "mu", "omm")
# How each dtype is computed: 0 natively, 1 float16 through float32, 2 bfloat16 likewise.
HALF = {"float32": 0, "float64": 0, "float16": 1, "bfloat16": 2}
GPU_BLOCK = int(os.environ.get("ADAMCONF_GPU_BLOCK", "1024"))


def device() -> torch.device:
    """Where the kernel's tensors live: the CUDA device, or the CPU under the interpreter."""
    return torch.device("cpu") if INTERPRETED else torch.device("cuda")


def block_for(n: int) -> int:
    """Elements per program. The interpreter pays per operation, not per element, so it
    takes the whole (test-sized) tensor in one program; the GPU a fixed tile."""
    if INTERPRETED:
        return max(16, min(1 << 16, triton.next_power_of_2(max(n, 1))))
    return GPU_BLOCK


@triton.jit
def _rnd(x, HALF: tl.constexpr):
    """Round a computed value to the parameter dtype (kept in the compute type). bfloat16:
    round-to-nearest-even on the float32 bits; NaN stays NaN."""
    if HALF == 1:
        return x.to(tl.float16).to(tl.float32)
    elif HALF == 2:
        bits = x.to(tl.uint32, bitcast=True)
        r = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        r = tl.where(x != x, 0x7FC00000, r)  # noqa: PLR0124 - x != x is the NaN test
        return r.to(tl.float32, bitcast=True)
    else:
        return x


@triton.jit
def _load(ptr, offs, mask, HALF: tl.constexpr):
    """Load in the parameter dtype, widen exactly to the compute type."""
    x = tl.load(ptr + offs, mask=mask, other=0)
    if HALF == 1:
        return x.to(tl.float32)
    elif HALF == 2:
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
        return bits.to(tl.float32, bitcast=True)
    else:
        return x


@triton.jit
def _store(ptr, offs, x, mask, HALF: tl.constexpr):
    """Store a value already rounded to the parameter dtype (the narrowing is exact)."""
    if HALF == 1:
        tl.store(ptr + offs, x.to(tl.float16), mask=mask)
    elif HALF == 2:
        bits = (x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16)
        tl.store(ptr + offs, bits.to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(ptr + offs, x, mask=mask)


@triton.jit
def _div(a, b, HALF: tl.constexpr):
    if a.dtype == tl.float64:
        return a / b               # float64 division lowers to IEEE div.rn.f64
    else:
        return _rnd(tl.div_rn(a, b), HALF)


@triton.jit
def _sqrt(a, HALF: tl.constexpr):
    if a.dtype == tl.float64:
        return tl.sqrt(a)          # float64 square roots lower to IEEE sqrt.rn.f64
    else:
        return _rnd(tl.sqrt_rn(a), HALF)


@triton.jit
def _adam_kernel(p_ptr, m_ptr, v_ptr, vh_ptr, g_ptr, gsq_ptr, ema_ptr, coef_ptr,
                 po_ptr, mo_ptr, vo_ptr, vho_ptr, emao_ptr, n,
                 CLIP: tl.constexpr, WD: tl.constexpr, GSQ: tl.constexpr, AMSGRAD: tl.constexpr,
                 EMA: tl.constexpr, OVERWRITE: tl.constexpr, HALF: tl.constexpr,
                 BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    zero = offs * 0                            # not tl.zeros_like (see the module doc)
    # the per-step scalars, in COEF order
    omb1 = _load(coef_ptr, zero + 0, mask, HALF)
    omb2 = _load(coef_ptr, zero + 1, mask, HALF)
    alpha = _load(coef_ptr, zero + 2, mask, HALF)
    eps = _load(coef_ptr, zero + 3, mask, HALF)

    p = _load(p_ptr, offs, mask, HALF)
    m = _load(m_ptr, offs, mask, HALF)
    v = _load(v_ptr, offs, mask, HALF)
    g = _load(g_ptr, offs, mask, HALF)
    if CLIP:                                   # clip by value: exact, NaN propagates
        lo = _load(coef_ptr, zero + 6, mask, HALF)
        hi = _load(coef_ptr, zero + 7, mask, HALF)
        g = tl.minimum(tl.maximum(g, lo, propagate_nan=tl.PropagateNan.ALL), hi,
                       propagate_nan=tl.PropagateNan.ALL)
    if WD:                                     # var -= var * wd * lr, before the update
        wd = _load(coef_ptr, zero + 4, mask, HALF)
        lr = _load(coef_ptr, zero + 5, mask, HALF)
        d = _rnd(_rnd(p * wd, HALF) * lr, HALF)
        p = _rnd(p - d, HALF)
    m = _rnd(m + _rnd(_rnd(g - m, HALF) * omb1, HALF), HALF)
    if GSQ:                                    # the squared slices summed (Keras 3 sparse)
        gg = _load(gsq_ptr, offs, mask, HALF)
    else:
        gg = _rnd(g * g, HALF)
    v = _rnd(v + _rnd(_rnd(gg - v, HALF) * omb2, HALF), HALF)
    den_v = v
    if AMSGRAD:
        vh = tl.maximum(_load(vh_ptr, offs, mask, HALF), v, propagate_nan=tl.PropagateNan.ALL)
        _store(vho_ptr, offs, vh, mask, HALF)
        den_v = vh
    den = _rnd(_sqrt(den_v, HALF) + eps, HALF)
    p = _rnd(p - _div(_rnd(m * alpha, HALF), den, HALF), HALF)
    if EMA:                                    # avg = avg * mu + var * (1 - mu)
        mu = _load(coef_ptr, zero + 8, mask, HALF)
        omm = _load(coef_ptr, zero + 9, mask, HALF)
        avg = _load(ema_ptr, offs, mask, HALF)
        avg = _rnd(_rnd(avg * mu, HALF) + _rnd(p * omm, HALF), HALF)
        _store(emao_ptr, offs, avg, mask, HALF)
        if OVERWRITE:
            p = avg
    _store(po_ptr, offs, p, mask, HALF)
    _store(mo_ptr, offs, m, mask, HALF)
    _store(vo_ptr, offs, v, mask, HALF)


def launch(dtype: str, coef: torch.Tensor, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
           g: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *,
           vhat: tuple[torch.Tensor, torch.Tensor] | None = None,
           ema: tuple[torch.Tensor, torch.Tensor] | None = None, overwrite: bool = False,
           gsq: torch.Tensor | None = None, clip: bool = False, weight_decay: bool = False,
           fp_fusion: bool = True) -> None:
    """One fused step over flat, contiguous tensors of one dtype on `device()`.

    `out` receives (param, m, v); `vhat` and `ema` are (input, output) pairs when AMSGrad
    or the EMA is on. Outputs may alias inputs (an in-place step). `coef` holds the
    scalars in COEF order, in the parameter dtype. `fp_fusion` lets the GPU compiler
    contract a multiply and an add into one FMA (float32 and float64, and float16, whose
    float32 round trips LLVM folds into native half operations); it is passed explicitly
    because Triton's default changes in 3.10. The interpreter never fuses."""
    n = p.numel()
    if n == 0:
        return
    block = block_for(n)
    vh_in, vh_out = vhat if vhat is not None else (p, p)   # unused pointers when off
    ema_in, ema_out = ema if ema is not None else (p, p)
    # keep subnormals in libdevice too (Triton flushes them there by default)
    extra = {} if INTERPRETED else {"enable_reflect_ftz": False, "enable_fp_fusion": fp_fusion}
    _adam_kernel[(triton.cdiv(n, block),)](
        p, m, v, vh_in, g, g if gsq is None else gsq, ema_in, coef,
        out[0], out[1], out[2], vh_out, ema_out, n,
        CLIP=clip, WD=weight_decay, GSQ=gsq is not None, AMSGRAD=vhat is not None,
        EMA=ema is not None, OVERWRITE=overwrite, HALF=HALF[dtype], BLOCK=block, **extra)
