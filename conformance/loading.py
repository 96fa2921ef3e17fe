"""Finding a backend by `module:attr` or by a name registered in the entry-point group."""
from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from adamconf.protocol import Backend, validate_backend

GROUP = "adamconf.backends"
# Bundled backends, so they are found even when the package is not installed.
BUNDLED = {
    "numpy": "adamconf.backends.numpy_backend:NumpyBackend",
    "tensorflow": "adamconf.backends.tensorflow_backend:TensorFlowBackend",
    "gpu": "adamconf.backends.gpu_backend:GpuBackend",
    "gpu-nofma": "adamconf.backends.gpu_backend:GpuNoFmaBackend",
    "torch": "adamconf.backends.torch_backend:TorchBackend",
    "torch-foreach": "adamconf.backends.torch_backend:TorchForeachBackend",
    "torch-fused": "adamconf.backends.torch_backend:TorchFusedBackend",
    "torch-differentiable": "adamconf.backends.torch_backend:TorchDifferentiableBackend",
    "optax": "adamconf.backends.optax_backend:OptaxBackend",
    "optax-jit": "adamconf.backends.optax_backend:OptaxJitBackend",
    "keras3-jax": "adamconf.backends.keras3_backend:Keras3JaxBackend",
    "keras3-torch": "adamconf.backends.keras3_backend:Keras3TorchBackend",
}


class ConfigError(Exception):
    """A usage or configuration problem: the CLI exits 2 with this message."""


def _instantiate(obj: Any, where: str) -> Backend:
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - report any constructor failure
            raise ConfigError(f"backend {where!r}: constructing {obj.__name__}() failed: {type(e).__name__}: {e}") from None
    try:
        validate_backend(obj, where)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    return obj


def _working_folder_on_path() -> None:
    cwd = os.getcwd()
    if not any(os.path.abspath(p or ".") == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def registered() -> dict[str, str]:
    """Backend names from the entry-point group, bundled names included."""
    names = dict(BUNDLED)
    for ep in entry_points(group=GROUP):
        names[ep.name] = ep.value
    return names


def load_backend(spec: str) -> Backend:
    """`module:attr` (attr may be a class, instantiated with no arguments) or a name.

    A `module:attr` is imported with the working folder on sys.path, as `python -m` and
    pytest do, so `my_adam:MyAdam` finds my_adam.py where the command runs."""
    target = spec if ":" in spec else registered().get(spec)
    if target is None:
        known = ", ".join(sorted(registered()))
        raise ConfigError(f"unknown backend {spec!r}: give module:attr, or one of the registered names ({known})")
    if ":" in spec:
        _working_folder_on_path()
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is a configuration error
        raise ConfigError(f"backend {spec!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not part:
            raise ConfigError(f"backend {spec!r}: give module:attr, e.g. mypkg.adam:Backend")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"backend {spec!r}: module {mod_name!r} has no attribute {attr!r}") from None
    return _instantiate(obj, spec)
