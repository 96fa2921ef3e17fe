"""pytest plugin: `pytest --adam-backend=B` runs exactly the plan of `adamconf check`.

The same cells (numeric and API checks), the same findings (a known deviation is an
xfail carrying the finding's summary; a stale strict finding fails), the same verdicts.
Each cell is one item of the parametrized test `adamconf/pytest_gate.py::test_adam`,
with the id `variant-dtype-check`. `--adam-out DIR` writes the same results.json,
junit.xml and report.md as the CLI, also under pytest-xdist. Hypothesis's own options
apply: `--hypothesis-profile adamconf-dev`, `--hypothesis-seed`,
`--hypothesis-show-statistics`.
"""
from __future__ import annotations

import importlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

# Registers the adamconf-* hypothesis profiles as the plugin loads, before hypothesis's
# own plugin reads --hypothesis-profile in its pytest_configure.
from adamconf import profiles as _profiles  # noqa: F401

GATE = Path(__file__).with_name("pytest_gate.py")
NODE = "adamconf/pytest_gate.py"   # the items' file part, wherever the package is installed
_STATE = pytest.StashKey[dict]()


def pytest_addoption(parser: Any) -> None:
    g = parser.getgroup("adamconf", "Adam conformance checks")
    g.addoption("--adam-backend", help="backend to check: module:attr or a registered name")
    g.addoption("--adam-variant", action="append", help="spec variant (repeat); default every variant")
    g.addoption("--adam-dtype", action="append", help="dtype (repeat); default all four")
    g.addoption("--adam-check", action="append", help="run only these checks (repeat); default all")
    g.addoption("--adam-profile", default=None,
                help="ci (default), dev or thorough; --hypothesis-profile adamconf-<name> works too")
    g.addoption("--adam-max-examples", type=int, default=None, help="override the profile's example budget")
    g.addoption("--adam-timeout", type=float, default=10.0, help="seconds one backend step may take (default 10)")
    g.addoption("--adam-exact-order", default=None, metavar="NAME",
                help="exact mode: bit-for-bit equality with one op order emulated in the target format "
                "(as adamconf check --exact-order)")
    g.addoption("--adam-findings", action="append", default=[], metavar="FILE",
                help="a known-deviation file of your own, in addition to the backend's (repeat)")
    g.addoption("--adam-in-process", action="store_true",
                help="run the backend in the test process (for debugging); by default it runs in an isolated worker")
    g.addoption("--adam-out", default=None,
                help="write results.json, junit.xml, report.md and failing cases here (default: cases in a temp dir)")


def _options(config: Any) -> dict[str, Any]:
    """The plugin's options, validated exactly as `adamconf check` validates its own."""
    import argparse

    from adamconf import profiles
    from adamconf.cli import _selection
    from adamconf.exact_mode import check_order
    from adamconf.spec import load_spec
    spec = load_spec()
    ns = argparse.Namespace(variant=config.getoption("--adam-variant"), dtype=config.getoption("--adam-dtype"),
                            check=config.getoption("--adam-check"),
                            max_examples=config.getoption("--adam-max-examples"),
                            timeout=config.getoption("--adam-timeout"))
    try:
        variants, dtypes, only = _selection(ns, spec)
        check_order(config.getoption("--adam-exact-order"))
        hyp = config.getoption("--hypothesis-profile", None)
        profile = config.getoption("--adam-profile") or (
            hyp if hyp and hyp.startswith(profiles.PREFIX) else "ci")
        profile = profiles.profile_name(profile).removeprefix(profiles.PREFIX)
    except ValueError as e:
        raise pytest.UsageError(f"adamconf: {e}") from None
    seed = config.getoption("--hypothesis-seed", None)
    if seed is not None and profiles.settings_for(profile).derandomize:
        seed = None   # hypothesis itself ignores the seed for a derandomized profile
    return dict(spec=spec, variants=variants, dtypes=dtypes, only=only, profile=profile,
                seed=int(seed) if seed is not None else None)


def pytest_configure(config: Any) -> None:
    ref = config.getoption("--adam-backend")
    if not ref:
        return
    from adamconf.findings import FindingsError
    from adamconf.loading import ConfigError, load_backend
    from adamconf.runner import Runner
    from adamconf.worker import Pool, WorkerError

    opts = _options(config)
    out = Path(config.getoption("--adam-out") or tempfile.mkdtemp(prefix="adamconf-"))
    timeout = config.getoption("--adam-timeout")
    kw = dict(profile=opts["profile"], seed=opts["seed"], timeout=timeout,
              max_examples=config.getoption("--adam-max-examples"), findings_files=config.getoption("--adam-findings"),
              statistics=bool(config.getoption("--hypothesis-show-statistics", False)),
              exact_order=config.getoption("--adam-exact-order"))
    pool = None
    try:
        if config.getoption("--adam-in-process"):
            backend = load_backend(ref)
        else:
            pool = Pool(dict(backend=ref, out=str(out), cases_dir=None, **kw))
            try:
                backend = pool.start()
            except WorkerError as e:
                raise ConfigError(f"backend {ref!r} could not be loaded: {e}") from None
            if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
                pool.close()   # the xdist controller runs no test; its workers start their own
                pool = None
        runner = Runner(opts["spec"], backend, ref, out=out, executor=pool, **kw)
    except (ConfigError, FindingsError, ValueError) as e:
        if pool is not None:
            pool.shutdown()
        raise pytest.UsageError(f"adamconf: {e}") from None
    cells = runner.plan(opts["variants"], opts["dtypes"], opts["only"])
    config.stash[_STATE] = dict(runner=runner, cells=cells, opts=opts, runs={}, t0=time.perf_counter())
    # `adamconf/pytest_gate.py::test_adam[...]` selects items by their node id
    config.args[:] = [str(GATE) + a[len(NODE):] if a.split("::")[0] == NODE else a for a in config.args]
    if not any(_is_gate(a) for a in config.args):
        config.args.append(str(GATE))


def _is_gate(arg: str) -> bool:
    try:
        return Path(arg.split("::")[0]).resolve() == GATE.resolve()
    except OSError:
        return False


class GateModule(pytest.Module):
    """The gate module, imported under its package name whatever folder it lies in."""

    def _getobj(self) -> Any:
        return importlib.import_module("adamconf.pytest_gate")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> Any:
    if _STATE in parent.config.stash and module_path.resolve() == GATE.resolve():
        return GateModule.from_parent(parent, path=module_path, nodeid=NODE)
    return None


def pytest_generate_tests(metafunc: Any) -> None:
    if "adam_cell" in metafunc.fixturenames and _STATE in metafunc.config.stash:
        cells = metafunc.config.stash[_STATE]["cells"]
        metafunc.parametrize("adam_cell", cells, ids=[c.id for c in cells])


@pytest.fixture(scope="session")
def adam_runner(request: Any) -> Any:
    if _STATE not in request.config.stash:
        pytest.skip("adamconf: pass --adam-backend to run the gate")
    return request.config.stash[_STATE]["runner"]


def show_statistics(item: Any, run: Any) -> None:
    """Hand the cell's hypothesis statistics (gathered where it ran, perhaps in a worker)
    to hypothesis's own reporter, under the item's node id (--hypothesis-show-statistics)."""
    if run.statistics:
        cell = f"{run.variant}-{run.dtype}-{run.check}"
        item.hypothesis_statistics = run.statistics.replace(cell + ":", item.nodeid + ":", 1)


# Cell records reported by this process or its xdist workers, for --adam-out (a report
# carries no config, so they gather here until the session ends).
_pending: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: Any) -> None:
    """Gather each cell's record (from this process or an xdist worker) for --adam-out."""
    for key, value in getattr(report, "user_properties", ()):
        if key == "adamconf" and report.when == "call":
            _pending.append(json.loads(value))


def pytest_unconfigure(config: Any) -> None:
    state = config.stash.get(_STATE, None)
    if state and state["runner"].executor is not None:
        state["runner"].executor.close()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    config = session.config
    out = config.getoption("--adam-out", None)
    if _STATE not in config.stash or not out or hasattr(config, "workerinput"):
        return
    from adamconf.cli import _write
    from adamconf.reports import run_files
    from adamconf.runner import CheckRun, as_dict
    state = config.stash[_STATE]
    order = {c.id: i for i, c in enumerate(state["cells"])}
    runs = sorted((CheckRun(**{k: (float(v) if k == "worst_ratio" else v) for k, v in d.items()}) for d in _pending),
                  key=lambda r: order.get(f"{r.variant}-{r.dtype}-{r.check}", len(order)))
    _pending.clear()
    opts = state["opts"]
    record = as_dict(state["runner"].result(opts["variants"], opts["dtypes"], runs, time.perf_counter() - state["t0"]))
    for name, text in run_files(record).items():
        _write(Path(out) / name, text)
