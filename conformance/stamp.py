"""What a run tested, stamped into every results.json: versions, spec hash, machine.

A verdict is only worth as much as the record of what produced it: the adamconf
version, a hash of the spec files (the promises judged), the Python and platform, the
CPU, the libraries of the reference and of the harness, and every package the backend
reports through its optional `versions() -> dict[str, str]`.
"""
from __future__ import annotations

import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from adamconf.spec.loader import PACKAGE_ROOT as SPEC_ROOT

HARNESS_PACKAGES = ("numpy", "mpmath", "gmpy2", "hypothesis", "ml_dtypes", "pytest")


def spec_hash(root: Path = SPEC_ROOT) -> str:
    """sha256 over the spec's TOML files, by relative path and content."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.toml")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def backend_versions(backend: Any) -> dict[str, str]:
    """The backend's own `versions()`, as strings; a failure is recorded, not raised."""
    fn = getattr(backend, "versions", None)
    if not callable(fn):
        return {}
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - the stamp must not stop the run
        return {"error": f"versions() raised {type(e).__name__}: {e}"}
    if not isinstance(got, dict):
        return {"error": f"versions() returned {type(got).__name__}, expected a dict"}
    return {str(k): str(v) for k, v in got.items()}


def environment() -> dict[str, Any]:
    """Everything about this machine and install that a verdict depends on."""
    from adamconf import __version__
    return {
        "adamconf": __version__,
        "spec_hash": spec_hash(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "packages": {p: package_version(p) for p in HARNESS_PACKAGES},
    }
