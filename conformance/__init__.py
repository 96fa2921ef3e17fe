"""adamconf: a conformance suite for the Adam optimizer as TensorFlow documents it.

The repository folder `conformance/` is the installed package `adamconf` itself (the
gate: backend protocol, bundled backends, checks, runner, CLI and pytest plugin); the
folders `spec/`, `reference/` and `reports/` are its subpackages `adamconf.spec`,
`adamconf.reference` and `adamconf.reports`. Nothing else is installed at the top level.
"""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("adamconf")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
