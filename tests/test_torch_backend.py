"""The torch backends (for-loop, foreach, fused): real torch.optim.Adam against the reference.

Skipped as a whole without PyTorch. The cases are the smallest ones that decide how the
torch row is written: which dtype the scalars meet half tensors in.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="install the [torch] extra: pip install -e '.[torch]'")

from adamconf.backends.torch_backend import TorchBackend, TorchForeachBackend, TorchFusedBackend  # noqa: E402
from adamconf.loading import load_backend  # noqa: E402
from adamconf.reference import adam as ref  # noqa: E402
from adamconf.reference.bound import compare  # noqa: E402
from adamconf.reference.state import AdamState, Hyper, np_dtype  # noqa: E402
from adamconf.spec import load_spec  # noqa: E402

SPEC = load_spec()
PATHS = (TorchBackend, TorchForeachBackend, TorchFusedBackend)


@pytest.mark.parametrize("name", ["torch", "torch-foreach", "torch-fused", "torch-differentiable"])
def test_registered_and_versioned(name):
    b = load_backend(name)
    assert b.name == name and "torch" in b.versions()


@pytest.mark.parametrize("cls", PATHS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_mid_run_step_within_bound_and_inputs_untouched(cls, dtype, amsgrad):
    T = np_dtype(dtype)
    rng = np.random.default_rng(7)
    p = [rng.uniform(-2, 2, (5, 3)).astype(T), rng.uniform(-2, 2, 4).astype(T)]
    st = AdamState(p, [x * T.type(0.1) for x in p], [np.abs(x) * T.type(0.01) for x in p], 37,
                   vhat=[np.abs(x) * T.type(0.02) for x in p] if amsgrad else None)
    g = [rng.uniform(-1, 1, x.shape).astype(T) for x in p]
    h = Hyper(learning_rate=0.01, epsilon=1e-8, amsgrad=amsgrad, weight_decay=0.01, maximize=True)
    before = st.copy()
    out = cls().step("torch", dtype, h, st, g)
    assert all((a == b).all() for a, b in zip(st.params, before.params))
    v = compare(ref.step(SPEC.variant("torch"), dtype, h, st, g), out, 8)
    assert v.ok, v


@pytest.mark.parametrize("cls", PATHS)
def test_half_scalars_are_float32(cls):
    """1 - beta_2 = 2^-26 is 0 in float16 but not in float32: torch's v moves."""
    h = Hyper(learning_rate=0.001, beta_2=1 - 2.0 ** -26, epsilon=1e-7)
    st = AdamState.zeros_like([np.array([-1.0, -1.0], np.float16)])
    out = cls().step("torch", "float16", h, st, [np.array([-8.0, -8.0], np.float16)])
    assert out.v[0][0] == np.float16(64 * 2.0 ** -26)
    assert compare(ref.step(SPEC.variant("torch"), "float16", h, st, [np.full(2, -8.0, np.float16)]), out, 8).ok


def test_none_gradient_leaves_parameter_and_counter():
    st = AdamState.zeros_like([np.ones(2), np.ones(3)])
    out = TorchBackend().step("torch", "float64", Hyper(), st, [np.ones(2), None])
    assert out.iterations == 1 and (out.params[1] == 1).all() and (out.params[0] != 1).all()


def test_differentiable_is_an_arithmetic_of_its_own():
    """differentiable=True forms the bias corrections as float32 tensors: in float64 the
    first step of the findings file's minimal case is off by about 6.4e-6 of its size,
    while the default path is within a few u of the exact step."""
    from adamconf.backends.torch_backend import TorchDifferentiableBackend
    v = SPEC.variant("torch")
    hyper = Hyper(learning_rate=0.001, epsilon=1e-7, maximize=True)
    state = AdamState([np.array([-1.0])], [np.array([0.0])], [np.array([0.0])], 0)
    exact = float(ref.step(v, "float64", hyper, state, [np.array([-1.0])]).approx("params")[0][0])
    plain = TorchBackend().step("torch", "float64", hyper, state, [np.array([-1.0])]).params[0][0]
    diff = TorchDifferentiableBackend().step("torch", "float64", hyper, state, [np.array([-1.0])]).params[0][0]
    step = exact + 1.0
    assert abs(plain - exact) <= 4 * 2.0 ** -53
    assert plain == -1.0009999999999999 or abs(plain - exact) < 1e-15
    assert 5e-6 < abs((diff - exact) / step) < 8e-6, (diff, exact)
    # the cause: 1 - beta_2 formed from float32(0.999)
    assert 5e-6 < abs(np.sqrt(1 - np.float64(np.float32(0.999))) / np.sqrt(1 - 0.999) - 1) < 8e-6


def test_device_option_falls_back_or_refuses(monkeypatch):
    import torch

    from adamconf.backends.torch_backend import DEVICE_VARIABLE, resolve_device
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ImportError, match="not a device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ImportError, match="sees no CUDA device"):
            resolve_device("cuda")
    monkeypatch.setenv(DEVICE_VARIABLE, "auto")
    assert TorchBackend().versions()["device"] == resolve_device("auto")
