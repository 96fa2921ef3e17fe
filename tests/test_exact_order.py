"""Exact mode: one named op order emulated in the target format, judged bit for bit."""
from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.checks import CHECKS
from adamconf.corpus.op_orders import FlushedKernelOrder, KernelOrder, LerpOrder, PageOrder
from adamconf.corpus.planted_bugs import KernelFormSignSlip, UpdateUsesOldV
from adamconf.evaluate import evaluate
from adamconf.exact_mode import compare_bits, evaluate_exact, steps_apart
from adamconf.reference import emulate
from adamconf.reference.state import AdamState, Hyper, StepInput, np_dtype
from adamconf.reports.load import load_results
from adamconf.runner import Runner
from adamconf.spec import load_spec
from adamconf.verdicts import FAIL, PASS, UNSUPPORTED

SPEC = load_spec()
NUMERIC = ("dense", "fresh", "trajectory", "amsgrad", "special")


def _bits(T):
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(T).itemsize]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_each_operation_rounds_as_the_format_does(dtype):
    """The emulated + - * / sqrt equal numpy's (correctly rounded) ones bit for bit on
    random bit patterns of the format, scaled so many results are subnormal."""
    T = np_dtype(dtype)
    rng = np.random.default_rng(7)
    U = _bits(T)
    a = rng.integers(0, np.iinfo(U).max, 3000, dtype=np.uint64).astype(U).view(T)
    b = rng.integers(0, np.iinfo(U).max, 3000, dtype=np.uint64).astype(U).view(T)
    with np.errstate(all="ignore"):
        small = (a.astype(np.float64) * 2.0 ** -(np.finfo(np.float32).nmant if dtype == "float32" else 12)).astype(T)
    F = emulate._Fmt(dtype)
    for x, y in ((a, b), (small, b), (a, small)):
        X, Y = F.array(x), F.array(y)
        with np.errstate(all="ignore"):
            pairs = [(F.add(X, Y), x + y), (F.sub(X, Y), x - y), (F.mul(X, Y), x * y), (F.div(X, Y), x / y),
                     (F.sqrt(X), np.sqrt(x))]
            for got, want in pairs:
                assert steps_apart(F.out(got), want, dtype).max() == 0


def test_subnormal_results_are_kept_not_flushed():
    F = emulate._Fmt("float16")
    tiny = 2.0 ** -24                      # the smallest float16 subnormal
    x = F.out(F.mul(F.array(np.array([2.0 ** -12], np.float16)), F.array(np.array([2.0 ** -12], np.float16))))
    assert float(x[0]) == tiny
    F = emulate._Fmt("bfloat16")
    y = F.out(F.mul(F.array(np.array([2.0 ** -70], ml_dtypes.bfloat16)), F.array(np.array([2.0 ** -62], ml_dtypes.bfloat16))))
    assert float(y[0]) == 2.0 ** -132       # below bfloat16's smallest normal 2**-126


def test_pow_is_correctly_rounded():
    """float32 and float64: the exact power rounded once; float16: the exact power
    rounded to float32, then to float16. Cases where libm or SVML round an ulp off."""
    from fractions import Fraction

    def nearest(x: Fraction, T) -> float:     # round a rational to T by bracketing doubles
        lo = float(x)
        cands = [np.nextafter(lo, -1), lo, np.nextafter(lo, 2)]
        return float(min((np.asarray(c).astype(T) for c in cands), key=lambda c: abs(Fraction(float(c)) - x)))

    for b, t, dtype in ((float.fromhex("0x1.7d087ap-3"), 5.0, "float32"), (float.fromhex("0x1.95b46p-1"), 4.0, "float32"),
                        (float.fromhex("0x1.f7a126p-1"), 10.0, "float64")):
        assert emulate.power(b, t, dtype) == nearest(Fraction(b) ** int(t), np_dtype(dtype))
    h = float(np.float16(0.9))
    assert emulate.power(h, 5.0, "float16") == float(np.float16(nearest(Fraction(h) ** 5, np.float32)))


def _runner(backend, order, **kw):
    return Runner(SPEC, backend, type(backend).__name__, profile="ci", exact_order=order, **kw)


def _statuses(backend, order, variant, dtype, checks=NUMERIC):
    r = _runner(backend, order)
    return {c: r.run_check(CHECKS[c], SPEC.variant(variant), dtype) for c in checks
            if CHECKS[c].applies_to(SPEC.variant(variant), dtype)}


@pytest.mark.parametrize("backend,order", [(KernelOrder(), "tf-kernel"), (PageOrder(), "page"),
                                           (LerpOrder(), "torch-lerp")])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_correct_order_passes_its_own_exact_order(backend, order, dtype):
    """tf1 forms its beta powers by float32 multiplication, so the corpus's np.power
    (SVML on AVX-512, not correctly rounded) does not enter."""
    runs = _statuses(backend, order, "tf1", dtype)
    assert runs and all(r.status == PASS for r in runs.values()), {c: r.message for c, r in runs.items()}
    assert all(r.k == 0 for r in runs.values())


@pytest.mark.parametrize("backend,other", [(KernelOrder(), "page"), (PageOrder(), "tf-kernel"),
                                           (LerpOrder(), "tf-kernel"), (KernelOrder(), "torch-lerp")])
def test_a_correct_order_fails_another_order(backend, other):
    runs = _statuses(backend, other, "tf1", "float32", ("dense", "fresh"))
    assert any(r.status == FAIL for r in runs.values())
    failed = next(r for r in runs.values() if r.status == FAIL)
    assert f"exact order {other}" in failed.message and "representable float32 values apart" in failed.message


@pytest.mark.parametrize("bug", [KernelFormSignSlip(), UpdateUsesOldV()])
def test_planted_bugs_fail(bug):
    order = "tf-kernel" if isinstance(bug, KernelFormSignSlip) else "page"
    runs = _statuses(bug, order, "tf1", "float32", ("dense",))
    assert runs["dense"].status == FAIL


class _AlphaRegrouped(KernelOrder):
    """The kernel order but with the step size regrouped as lr * (sqrt(1 - b2^t) / (1 -
    b1^t)): correct to rounding, so the normal gate passes it; it is not the TF kernel's
    order, so exact mode must not."""

    def alpha(self, ctx):
        one = ctx.s(1)
        return ctx.lr * (np.sqrt(one - ctx.b2_power) / (one - ctx.b1_power))


def test_a_rounding_level_deviation_passes_normal_mode_and_fails_exact_mode():
    normal = Runner(SPEC, _AlphaRegrouped(), "regrouped", profile="ci").run_check(
        CHECKS["dense"], SPEC.variant("tf1"), "float32")
    exact = _statuses(_AlphaRegrouped(), "tf-kernel", "tf1", "float32", ("dense", "fresh", "trajectory"))
    assert normal.status == PASS
    assert any(r.status == FAIL for r in exact.values())


def _ill_input():
    """float16, epsilon 0, v = two subnormal spacings, beta_2 = 0.75, g = 1e-4: the new
    v is 0.75 * v + 0.25 * g*g, about 1.5 spacings, which the orders round to one or two
    spacings, so the divisor sqrt(v) is uncertain by a fifth of itself. The normal mode
    cannot judge that element (nor can the plain order's outcome, which starts from a
    nonzero v)."""
    p = np.array([1.0, 0.5], np.float16)
    st = AdamState([p], [np.array([0.0, 0.25], np.float16)], [np.array([2 ** -23, 1.0], np.float16)], 3)
    st.beta1_power, st.beta2_power = float(np.float32(0.9) ** 4), float(np.float32(0.75) ** 4)
    return StepInput("tf1", "float16", Hyper(learning_rate=0.001, beta_2=0.75, epsilon=0.0), st,
                     (np.array([1e-4, 0.5], np.float16),))


class _OneUlpThere(NumpyBackend):
    """The numpy backend, except that params[0] element 0 is one ulp lower."""

    def step(self, variant, dtype, hyper, state, grads):
        out = super().step(variant, dtype, hyper, state, grads)
        p = out.params[0].copy()
        p[0] = np.nextafter(p[0], np.float16(-np.inf))
        out.params[0] = p
        return out


def test_exact_mode_judges_ill_conditioned_elements():
    inp = _ill_input()
    variant = SPEC.variant("tf1")
    k = SPEC.tolerances["step"].k
    normal = evaluate(NumpyBackend(), variant, inp, k, 10.0)
    assert normal.ok and normal.ill >= 1                     # left unjudged in the normal mode
    exact = evaluate_exact(NumpyBackend(), variant, inp, "tf-kernel", 10.0)
    assert exact.ok and exact.ill == 0
    assert exact.verdict.fields["params"].n == 2              # both elements judged
    # a backend that differs only in that element: unjudged by the normal mode, failed by exact mode
    assert evaluate(_OneUlpThere(), variant, inp, k, 10.0).ok
    wrong = evaluate_exact(_OneUlpThere(), variant, inp, "tf-kernel", 10.0)
    assert not wrong.ok and "params[0] element 0" in wrong.message


def test_signed_zeros_must_match():
    e = AdamState([np.array([0.0], np.float32)], [np.array([0.0], np.float32)], [np.array([0.0], np.float32)], 1)
    o = AdamState([np.array([-0.0], np.float32)], [np.array([0.0], np.float32)], [np.array([0.0], np.float32)], 1)
    v = compare_bits(e, o, "float32")
    assert not v.ok and v.worst_ratio == 1
    nan = AdamState([np.array([np.nan], np.float32)], e.m, e.v, 1)
    other_nan = AdamState([np.array([-np.nan], np.float32)], e.m, e.v, 1)
    assert compare_bits(nan, other_nan, "float32").ok         # NaN payloads and signs are not judged


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_numpy_backend_matches_tf_kernel_in_half_formats(dtype):
    runs = _statuses(NumpyBackend(), "tf-kernel", "keras3", dtype, NUMERIC + ("clipvalue", "weight_decay", "ema"))
    assert all(r.status == PASS for r in runs.values()), {c: r.message for c, r in runs.items() if r.status != PASS}


def test_numpy_backend_subnormal_state_matches():
    """Subnormal m, v and gradients in bfloat16 and float16: the emulation keeps them."""
    for dtype in ("float16", "bfloat16"):
        T = np_dtype(dtype)
        tiny = float(np.finfo(np.float16).smallest_subnormal) if dtype == "float16" else 2.0 ** -130
        p = np.array([tiny, -3 * tiny, 1.0], T)
        st = AdamState([p], [np.array([5 * tiny, 0.0, -tiny], T)], [np.array([tiny, 0.0, 2 * tiny], T)], 4)
        inp = StepInput("keras3", dtype, Hyper(learning_rate=0.5, epsilon=1e-7), st, (np.array([tiny, 2 * tiny, -tiny], T),))
        out = evaluate_exact(NumpyBackend(), SPEC.variant("keras3"), inp, "tf-kernel", 10.0)
        assert out.ok, out.message
        m = np.asarray(out.observed.m[0], np.float64)
        smallest_normal = 2.0 ** (-14 if dtype == "float16" else -126)
        assert 0 < abs(m[0]) < smallest_normal                    # a subnormal moment came out


def test_unemulated_checks_are_unsupported_with_the_reason():
    r = _runner(NumpyBackend(), "tf-kernel")
    for chk in ("sparse", "clipnorm", "schedule"):
        run = r.run_check(CHECKS[chk], SPEC.variant("keras3"), "float32")
        assert run.status == UNSUPPORTED and "exact mode" in run.message and chk in run.message
    torch = r.run_check(CHECKS["dense"], SPEC.variant("torch"), "float32")
    assert torch.status == UNSUPPORTED
    flushed = _runner(FlushedKernelOrder(), "tf-kernel").run_check(CHECKS["dense"], SPEC.variant("tf1"), "float32")
    assert flushed.status == UNSUPPORTED and "flushes subnormals" in flushed.message
    refusal = r.run_check(CHECKS["no-gradients"], SPEC.variant("keras3"), "float32")
    assert refusal.status == PASS                              # refusals are judged as in the normal mode


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="tf-kernel, page, torch-lerp"):
        _runner(NumpyBackend(), "fma")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "adamconf", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_records_the_order_and_replays_it(tmp_path):
    bad = _cli("check", "--backend", "numpy", "--exact-order", "nope", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode == 2 and "tf-kernel, page, torch-lerp" in bad.stderr
    out = tmp_path / "run"
    r = _cli("check", "--backend", "numpy", "--variant", "tf1", "--dtype", "float32", "--check", "dense",
             "--exact-order", "page", "--out", str(out), "--in-process", "--quiet", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    res = load_results(out / "results.json")                   # valid against the schema
    assert res["exact_order"] == "page"
    assert "Exact mode" in (out / "report.md").read_text() and "`page`" in (out / "report.md").read_text()
    case = out / "cases" / "tf1__float32__dense.json"
    assert json.loads(case.read_text())["exact_order"] == "page"
    again = _cli("replay", str(case), "--backend", "numpy", "--in-process", cwd=tmp_path)
    assert again.returncode == 1 and "exact order page" in again.stdout
    kernel = _cli("replay", str(case), "--backend", "numpy", "--in-process", "--exact-order", "tf-kernel", cwd=tmp_path)
    assert kernel.returncode == 0 and "bit for bit" in kernel.stdout
    cell = _cli("replay", str(out / "results.json"), "--cell", "tf1-float32-dense", "--backend", "numpy",
                "--in-process", cwd=tmp_path)
    assert cell.returncode == 1 and "exact order page" in cell.stdout
    unknown = _cli("replay", str(case), "--backend", "numpy", "--exact-order", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "tf-kernel, page, torch-lerp" in unknown.stderr


def test_pytest_route_takes_the_order(tmp_path):
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--adam-backend", "numpy",
            "--adam-variant", "tf1", "--adam-dtype", "float32", "--adam-check", "dense", "--adam-in-process"]
    run = lambda *a: subprocess.run([*base, *a], cwd=tmp_path, capture_output=True, text=True, timeout=600)  # noqa: E731
    assert run("--adam-exact-order", "tf-kernel").returncode == 0
    page = run("--adam-exact-order", "page", "--adam-out", str(tmp_path / "out"))
    assert page.returncode == 1 and "exact order page" in page.stdout
    assert load_results(tmp_path / "out" / "results.json")["exact_order"] == "page"
    bad = run("--adam-exact-order", "nope")
    assert bad.returncode == 4 and "tf-kernel, page, torch-lerp" in bad.stderr
