"""The GPU backend (one fused Triton kernel per tensor), tested without a GPU.

Without CUDA the kernel runs in Triton's interpreter on CPU tensors, so these tests
check the kernel's logic here and in CI. There the arithmetic has no fused
multiply-add, so every result must equal the numpy backend's bit for bit (on a device,
the `gpu-nofma` configuration must). The gate alone could not demand that: its bound
admits an FMA, and it even admits bfloat16 rounded toward zero (a kernel that truncated
passed the ci gate on keras3 and tf1 at worst 1.8 u*S against K = 8).
Skipped, saying what to install, without the [gpu] extra.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.reference.state import DTYPES, AdamState, Hyper, SparseGrad, np_dtype
from adamconf.spec import load_spec

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("torch", "triton"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="install the [gpu] extra: pip install -e '.[gpu]'")
SPEC = load_spec()
TF_VARIANTS = tuple(v.id for v in SPEC.variants.values() if v.family == "tf" and v.formula == "epsilon-hat")
# What CI runs through the whole gate: Keras 3 (every fused feature, 1 - beta in double,
# sparse squares summed) and TF1 (float32 holders, accumulated beta powers), every dtype.
# The other variants differ only in host-side scalars, which the bit-exact test covers.
GATE_VARIANTS = ("keras3", "tf1")


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamconf", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def test_without_the_extra_loading_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['triton'] = None\n"
            "from adamconf.loading import ConfigError, load_backend\n"
            "try:\n    load_backend('gpu')\nexcept ConfigError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert "pip install -e '.[gpu]'" in r.stdout, r.stdout + r.stderr


if HAVE_EXTRA:
    from adamconf.backends import gpu_kernel as K


@pytest.fixture(scope="module")
def gpu():
    from adamconf.loading import load_backend
    return load_backend("gpu")


@pytest.fixture(scope="module")
def exact():
    """The configuration that must equal the CPU path bit for bit: in the interpreter
    either one (it never fuses), on a device the one compiled without FMA contraction."""
    from adamconf.loading import load_backend
    return load_backend("gpu-nofma")


@pytest.fixture()
def interpreted():
    if not K.INTERPRETED:
        pytest.skip("a finding about Triton's CPU interpreter")


# -- bit-exact against the numpy backend ------------------------------------------------------

def _bits(x: np.ndarray) -> np.ndarray:
    """Comparable bits: every NaN the same, everything else exactly (signed zeros too)."""
    a = np.asarray(x).astype(np.float64).reshape(-1)
    return np.where(np.isnan(a), np.nan, a).view(np.uint64) if a.size else a.view(np.uint64)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    fa, fb = np.asarray(a).astype(np.float64).reshape(-1), np.asarray(b).astype(np.float64).reshape(-1)
    both_nan = np.isnan(fa) & np.isnan(fb)
    return bool(np.all(both_nan | (_bits(a) == _bits(b))))


def _special(T: np.dtype) -> np.ndarray:
    fi = np.finfo(T)
    vals = [0.0, -0.0, float(fi.smallest_subnormal), -float(fi.smallest_normal) / 3, float(fi.max),
            -float(fi.max) / 2, np.inf, -np.inf, np.nan, 1e-4, 3.0]
    return np.asarray(vals, dtype=np.float64).astype(T)


def _state(variant: str, dtype: str, rng: np.random.Generator, *, amsgrad: bool, ema: bool) -> tuple:
    T = np_dtype(dtype)
    shapes = [(4, 5), (11,), ()]
    sign = lambda s: rng.choice([-1.0, 1.0], s)
    params = [(rng.uniform(0.5, 2, s) * sign(s)).astype(T) for s in shapes]
    m = [(rng.uniform(0.5, 2, s) * sign(s) * 0.1).astype(T) for s in shapes]
    v = [(rng.uniform(0.5, 2, s) * 0.01).astype(T) for s in shapes]
    it = int(rng.integers(0, 40))
    st = AdamState(params, m, v, it, [(x.astype(np.float64) * rng.uniform(0.5, 2)).astype(T) for x in v] if amsgrad else None,
                   ema=[(p.astype(np.float64) * 0.9).astype(T) for p in params] if ema else None)
    if SPEC.variant(variant).beta_powers == "accumulated":
        st.beta1_power, st.beta2_power = float(np.float32(0.9) ** (it + 1)), float(np.float32(0.999) ** (it + 1))
    grads = [(rng.standard_normal(s) * 0.5).astype(T) for s in shapes]
    grads[1] = _special(T)     # zeros, subnormals, huge, infinite and NaN gradients
    return st, grads


def _hypers(variant: str) -> list[Hyper]:
    """A plain step and one with every dense feature the variant has switched on."""
    f = SPEC.variant(variant).features
    on = {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}
    if "amsgrad" in f:
        on["amsgrad"] = True
    if "clipvalue" in f:
        on["clipvalue"] = 0.3
    if "weight_decay" in f:
        on["weight_decay"] = 0.04
    if "decay" in f:
        on["decay"] = 0.01
    if "adaptive_epsilon" in f:
        on["adaptive_epsilon"] = True
    if "ema" in f:
        on.update(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=1)
    return [Hyper(learning_rate=0.001, epsilon=1e-7), Hyper(**on)]


@needs_extra
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", TF_VARIANTS)
def test_kernel_equals_the_numpy_backend_bit_for_bit(variant, dtype, exact):
    rng = np.random.default_rng(abs(hash((variant, dtype))) % 2**32)
    for hyper in _hypers(variant):
        st, grads = _state(variant, dtype, rng, amsgrad=hyper.amsgrad, ema=hyper.use_ema)
        ours = exact.step(variant, dtype, hyper, st, grads)
        theirs = NumpyBackend().step(variant, dtype, hyper, st, grads)
        assert (ours.iterations, ours.beta1_power, ours.beta2_power) == \
            (theirs.iterations, theirs.beta1_power, theirs.beta2_power)
        for name, xs in theirs.arrays().items():
            for i, (a, b) in enumerate(zip(ours.arrays()[name], xs)):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert _same(a, b), f"{variant} {dtype} {hyper} {name}[{i}]:\n{a}\n{b}"


@needs_extra
def test_the_step_leaves_its_inputs_alone(gpu):
    rng = np.random.default_rng(1)
    st, grads = _state("keras3", "bfloat16", rng, amsgrad=True, ema=True)
    before = st.copy()
    g_before = [g.copy() for g in grads]
    gpu.step("keras3", "bfloat16", _hypers("keras3")[1], st, grads)
    for name, xs in before.arrays().items():
        assert all(_same(a, b) for a, b in zip(st.arrays()[name], xs))
    assert all(_same(a, b) for a, b in zip(grads, g_before))


# -- what the backend declares -------------------------------------------------------------

@needs_extra
def test_declared_variants_and_refusals(gpu):
    assert tuple(gpu.variants) == TF_VARIANTS
    assert set(gpu.versions()) == {"torch", "triton", "device", "fp_fusion"}
    assert "epsilon-hat" in gpu.unsupported("torch", "float32", frozenset())
    assert "norm clipping" in gpu.unsupported("keras3", "float32", frozenset({"clipnorm"}))
    assert gpu.unsupported("keras3", "float16", frozenset({"amsgrad", "clipvalue", "ema", "sparse"})) is None
    p = np.ones(3, np.float32)
    st = AdamState.zeros_like([p])
    with pytest.raises(ValueError, match="norm clipping"):
        gpu.step("keras3", "float32", Hyper(clipnorm=1.0), st, [p])
    with pytest.raises(ValueError, match="No gradients"):
        gpu.step("keras3", "float32", Hyper(), st, [None])


@needs_extra
def test_sparse_gradients_are_densified_on_the_host_then_fused(gpu):
    """Keras 3 squares the raw slices before summing them for v; tf-keras sums first."""
    p = np.zeros((3, 2), np.float32)
    st = AdamState.zeros_like([p])
    g = SparseGrad(np.array([0, 0, 2]), np.array([[1, 1], [2, 2], [3, 3]], np.float32), (3, 2))
    h = Hyper(beta_2=0.5)
    k3 = gpu.step("keras3", "float32", h, st, [g]).v[0]
    tk = gpu.step("tf-keras", "float32", h, st, [g]).v[0]
    assert k3[0, 0] == np.float32(0.5) * 5 and tk[0, 0] == np.float32(0.5) * 9
    assert k3[1, 0] == 0 and k3[2, 0] == tk[2, 0] == np.float32(0.5) * 9


# -- bfloat16 in Triton's interpreter ----------------------------------------------------------

def _bf16_probe():
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def probe(x_ptr, ours_ptr, cast_ptr, add_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        tl.store(ours_ptr + offs, K._rnd(x, 2), mask=mask)
        tl.store(cast_ptr + offs, x.to(tl.bfloat16).to(tl.float32), mask=mask)
        y = x.to(tl.bfloat16)
        tl.store(add_ptr + offs, (y + y).to(tl.float32), mask=mask)

    def run(x: torch.Tensor):
        outs = [torch.empty_like(x) for _ in range(3)]
        probe[(1,)](x.to(K.device()), *[o.to(K.device()) for o in outs], x.numel(),
                    BLOCK=triton.next_power_of_2(x.numel()))
        return [o.cpu() for o in outs]
    return run


def _rounding_cases():
    import torch
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 1 << 14, dtype=np.uint64).astype(np.uint32)
    # halfway cases (ties to even and odd), one below and above, around 1, the largest
    # finite bfloat16, subnormals, zeros, infinities
    base = np.array([0x3F800000, 0x3F810000, 0x7F7F0000, 0x00010000, 0x00000000, 0x80000000,
                     0x7F800000, 0xFF800000, 0x3FFF0000, 0x007F0000], np.uint32)
    ties = np.concatenate([base + 0x8000, base + 0x7FFF, base + 0x8001, base])
    all_bits = np.concatenate([bits, ties]).astype(np.uint32)
    x = torch.from_numpy(all_bits.view(np.float32).copy())
    return x[~torch.isnan(x)]


@needs_extra
def test_kernel_rounds_to_bfloat16_to_nearest_even():
    import torch
    x = _rounding_cases()
    ours, _, _ = _bf16_probe()(x)
    want = x.to(torch.bfloat16).to(torch.float32)     # torch's CPU cast rounds to nearest even
    assert torch.equal(ours, want), (x[ours != want][:5], ours[ours != want][:5], want[ours != want][:5])
    nan = _bf16_probe()(torch.tensor([float("nan")]))[0]
    assert torch.isnan(nan).all()


@needs_extra
def test_triton_interpreter_bfloat16_deviations(interpreted):
    """Why the kernel rounds bfloat16 by hand: in Triton 3.9's interpreter a float32 ->
    bfloat16 cast truncates (100.3 becomes 100, not 100.5), and bfloat16 arithmetic adds
    the raw uint16 bit patterns (1 + 1 is 0x3F80 + 0x3F80 = 0x7F00, i.e. 1.7e38). If this
    test fails, the interpreter was fixed and gpu_kernel's bit-level workaround can go."""
    import torch
    x = torch.tensor([100.3, 1.0, 3.0])
    _, cast, add = _bf16_probe()(x)
    assert cast[0].item() == 100.0, "the interpreter's bfloat16 cast now rounds to nearest"
    assert x[:1].to(torch.bfloat16).item() == 100.5
    assert add[1].item() == torch.tensor(0x7F00, dtype=torch.int16).view(torch.bfloat16).item(), \
        "the interpreter's bfloat16 addition is now arithmetic"


# -- the gate ---------------------------------------------------------------------------------

@needs_extra
def test_ci_gate_passes_through_the_interpreter(tmp_path):
    args = ["check", "--backend", "gpu", "--profile", "ci", "--quiet", "--out", str(tmp_path)]
    for v in GATE_VARIANTS:
        args += ["--variant", v]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    res = json.loads((tmp_path / "results.json").read_text())
    status = {(c["variant"], c["dtype"], c["check"]): c["status"] for c in res["checks"]}
    assert {s for s in status.values()} <= {"pass", "unsupported"}
    for dtype in DTYPES:
        for check in ("dense", "trajectory", "amsgrad", "sparse", "clipvalue", "weight_decay", "ema", "special"):
            assert status[("keras3", dtype, check)] == "pass", (dtype, check)
        assert status[("tf1", dtype, "trajectory")] == "pass"
    unsupported = {k[2] for k, s in status.items() if s == "unsupported" and k[1] != "api"}
    assert unsupported == {"clipnorm", "global_clipnorm", "clip-exclusive"}
    assert {s for k, s in status.items() if k[1] == "api"} == {"unsupported"}   # the gpu backend offers no API world


# -- the compiled kernel, without a GPU ---------------------------------------------------------

_PTX_SCRIPT = """
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from adamconf.backends import gpu_kernel as K
fn, names, out = K._adam_kernel, K._adam_kernel.arg_names, {}
ptr = {"float32": "*fp32", "float64": "*fp64", "float16": "*fp16", "bfloat16": "*bf16"}
for dtype, fusion in json.loads(sys.argv[1]):
    const = dict(CLIP=True, WD=True, GSQ=False, AMSGRAD=True, EMA=True, OVERWRITE=True, HALF=K.HALF[dtype], BLOCK=1024)
    sig = {n: ptr[dtype] for n in names if n.endswith("_ptr")}
    sig.update(n="i64", **{k: "constexpr" for k in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
    opts = {"enable_reflect_ftz": False, "enable_fp_fusion": fusion}
    out[f"{dtype}-{fusion}"] = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["ptx"]
print(json.dumps(out))
"""


@needs_extra
def test_compiled_for_hopper_the_kernel_uses_ieee_division_and_square_root():
    """Triton compiles for sm_90 without a GPU (its wheel carries ptxas): the PTX must use
    the IEEE forms (div.rn, sqrt.rn), no approximations and no flush-to-zero; without fp
    fusion it has no FMA, so each operation rounds once, as on the CPU."""
    cases = [[d, True] for d in DTYPES] + [["float32", False], ["float16", False]]
    r = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, json.dumps(cases)], check=False,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ptx = json.loads(r.stdout.splitlines()[-1])
    for key, code in ptx.items():
        assert "div.rn" in code and "sqrt.rn" in code, key
        for bad in ("div.full", "div.approx", "sqrt.approx", ".ftz"):
            assert bad not in code, (key, bad)
    assert "fma.rn" in ptx["float32-True"]                # what a GPU compiler does by default
    assert "fma" not in ptx["float32-False"] and "fma" not in ptx["float16-False"]
    assert "fma" not in ptx["bfloat16-True"]              # integer rounding leaves nothing to contract
