"""optax (eager, jit) and Keras 3 on JAX and PyTorch against the reference.

Skipped without the [jax] extra. Keras reads KERAS_BACKEND once per process, so the
Keras 3 backends run in subprocesses here.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("optax", reason="install the [jax] extra: pip install -e '.[jax]'")

import jax.numpy as jnp  # noqa: E402

from adamconf.backends.optax_backend import OptaxBackend, OptaxJitBackend  # noqa: E402
from adamconf.reference import adam as ref  # noqa: E402
from adamconf.reference.bound import compare  # noqa: E402
from adamconf.reference.state import AdamState, Hyper, Schedule, np_dtype  # noqa: E402
from adamconf.spec import load_spec  # noqa: E402

SPEC = load_spec()


@pytest.mark.parametrize("cls", [OptaxBackend, OptaxJitBackend])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_optax_mid_run_step_within_bound(cls, dtype, amsgrad):
    T = np_dtype(dtype)
    rng = np.random.default_rng(3)
    p = [rng.uniform(-2, 2, (4, 3)).astype(T)]
    st = AdamState(p, [x * T.type(0.1) for x in p], [np.abs(x) * T.type(0.01) for x in p], 11,
                   vhat=[np.abs(x) * T.type(0.5) for x in p] if amsgrad else None)
    g = [rng.uniform(-1, 1, (4, 3)).astype(T)]
    h = Hyper(learning_rate=Schedule("exponential", initial=0.01, steps=10.0, rate=0.5), epsilon=1e-8,
              amsgrad=amsgrad, eps_root=1e-8)
    out = cls().step("optax", dtype, h, st, g)
    assert out.iterations == 12
    assert compare(ref.step(SPEC.variant("optax"), dtype, h, st, g, flush=cls.flushes_denormals), out, 8).ok


def test_bfloat16_bias_correction_in_float32():
    """beta_2 = 0.999 is 1 in bfloat16, but optax forms 1 - beta_2**t in float32: v moves
    and the step is finite (the row's power_dtype = opmath)."""
    st = AdamState.zeros_like([np.array([1.0, 2.0], np_dtype("bfloat16"))])
    g = [np.array([0.5, -0.5], np_dtype("bfloat16"))]
    out = OptaxBackend().step("optax", "bfloat16", Hyper(learning_rate=0.01), st, g)
    assert np.isfinite(out.params[0].astype(float)).all() and (out.params[0] != st.params[0]).all()


def test_xla_cpu_flushes_subnormals_except_float16():
    """The measurement behind flushes_denormals: half the smallest normal number."""
    for dt, flushed in (("float16", False), ("bfloat16", True), ("float32", True)):
        T = np_dtype(dt)
        tiny = float(np.finfo(np.float16).tiny) if dt == "float16" else 2.0 ** -126
        r = float(np.asarray(jnp.asarray(np.full(4, tiny, T)) * jnp.asarray(np.full(4, 0.5, T)))[0])
        assert (r == 0.0) == flushed, dt
    assert set(OptaxBackend.flushes_denormals) == {"bfloat16", "float32", "float64"}


def test_finding_xla_divides_by_reciprocal():
    """The evidence of finding xla-divide-by-broadcast-reciprocal: exact 1, XLA gives inf."""
    x = jnp.full(3, 1e-6, jnp.float16) / jnp.float16(1e-6)
    assert np.isinf(np.asarray(x, dtype=float)).all()


_KERAS = """
import numpy as np
from adamconf.loading import load_backend
from adamconf.reference import adam as ref
from adamconf.reference.bound import compare
from adamconf.reference.state import AdamState, Hyper
from adamconf.spec import load_spec
b = load_backend("{name}")
st = AdamState.zeros_like([np.array([1.0, -2.0], np.float32)], ema=True)
g = [np.array([0.5, 0.25], np.float32)]
h = Hyper(learning_rate=0.01, amsgrad=False, use_ema=True, weight_decay=0.01)
out = b.step("keras3", "float32", h, st, g)
assert compare(ref.step(load_spec().variant("keras3"), "float32", h, st, g), out, 8).ok
import keras
other = "torch" if "{name}" == "keras3-jax" else "jax"
try:
    load_backend("keras3-" + other)
except Exception as e:
    assert "already imported with the" in str(e), e
else:
    raise AssertionError("a second Keras backend in one process must be refused")
print("ok", keras.backend.backend())
"""


@pytest.mark.parametrize("name", ["keras3-jax", "keras3-torch"])
def test_keras3_backend_in_its_own_process(name):
    if name == "keras3-torch":
        pytest.importorskip("torch", reason="keras3-torch needs the [torch] extra too: pip install -e '.[torch,jax]'")
    r = subprocess.run([sys.executable, "-c", _KERAS.format(name=name)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == name.split("-")[1]


@pytest.mark.parametrize("cls", [OptaxBackend, OptaxJitBackend])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_optax_adamw_is_the_decoupled_form(cls, dtype):
    """optax.adamw meets the row's decoupled weight decay within the bound, and the bound
    tells it apart from optax.adam (the same step without the decay)."""
    T = np_dtype(dtype)
    rng = np.random.default_rng(5)
    p = [rng.uniform(-2, 2, (4, 3)).astype(T)]
    st = AdamState(p, [x * T.type(0.1) for x in p], [np.abs(x) * T.type(0.01) for x in p], 7)
    g = [rng.uniform(-1, 1, (4, 3)).astype(T)]
    h = Hyper(learning_rate=0.05, beta_2=0.9, epsilon=1e-3, weight_decay=2.0)
    exact = ref.step(SPEC.variant("optax"), dtype, h, st, g, flush=cls.flushes_denormals)
    got = compare(exact, cls().step("optax", dtype, h, st, g), 8)
    assert got.ok and got.fields["params"].ill == 0, got
    without = cls().step("optax", dtype, Hyper(learning_rate=0.05, beta_2=0.9, epsilon=1e-3), st, g)
    assert not compare(exact, without, 8).ok
    assert "weight decay" in cls().unsupported("optax", dtype, {"amsgrad", "weight_decay"})
