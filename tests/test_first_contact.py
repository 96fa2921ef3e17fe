"""First contact: the package layout, the README as written, and one plan for CLI and pytest.

Most tests run the installed `adamconf` command or pytest in a fresh temporary folder
in a subprocess, as a new user would, with no PYTHONPATH and nothing of this repository
on the path.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from adamconf import profiles
from adamconf.loading import load_backend
from adamconf.runner import Cell, Runner
from adamconf.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SPEC = load_spec()
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]


def _sh(cmd: str | list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _readme_backend() -> str:
    return re.search(r"```python\n(import numpy as np\n.*?)```", README, re.S).group(1)


def _readme_command() -> str:
    return re.search(r"Save it as `my_adam.py` and run `(adamconf check [^`]*)`", README).group(1)


BUGGY = """
from my_adam import MyAdam


class BuggyAdam(MyAdam):
    '''The README's backend with epsilon ten times too large.'''
    name = "buggy-adam"

    def step(self, variant, dtype, hyper, state, grads):
        return super().step(variant, dtype, hyper.replace(epsilon=hyper.epsilon * 10), state, grads)
"""

# A findings file of a downstream project's own: it declares the planted epsilon bug.
FINDINGS = """
[[finding]]
id = "eps-times-ten"
variants = ["keras3"]
checks = ["dense", "fresh", "trajectory", "special", "example", "none-grad"]
strict = false
summary = "epsilon is taken ten times too large"
evidence = "buggy_adam.py multiplies hyper.epsilon by 10"
"""


@pytest.fixture()
def user_dir(tmp_path: Path) -> Path:
    """A fresh folder holding the README's backend, a planted bug and a findings file."""
    (tmp_path / "my_adam.py").write_text(_readme_backend())
    (tmp_path / "buggy_adam.py").write_text(BUGGY)
    (tmp_path / "known.toml").write_text(FINDINGS)
    return tmp_path


# -- the package ---------------------------------------------------------------------------

def test_only_adamconf_is_installed_at_the_top_level(tmp_path):
    code = ("import importlib.util as u, adamconf.spec, adamconf.reference, adamconf.reports, adamconf.backends;"
            "print([n for n in ('spec', 'reference', 'conformance', 'reports') if u.find_spec(n)])")
    r = _sh([sys.executable, "-c", code], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = _sh([sys.executable, "-m", "adamconf", "spec", "list"], tmp_path)
    assert r.returncode == 0 and "keras-legacy" in r.stdout, r.stderr


# -- the README as written -------------------------------------------------------------------

def test_readme_backend_and_command_work_as_written(user_dir):
    r = _sh(_readme_command(), user_dir)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((user_dir / "adamconf-out" / "results.json").read_text())
    assert res["summary"]["keras3"]["pass"] > 0 and res["summary"]["keras3"]["fail"] == 0


def test_a_printed_replay_command_runs_as_printed(user_dir):
    r = _sh("adamconf check --backend buggy_adam:BuggyAdam --variant keras3 --dtype float32 --check dense --out out",
            user_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    replay = next(line.split("replay: ", 1)[1] for line in r.stdout.splitlines() if "replay: " in line)
    again = _sh(replay, user_dir)
    assert again.returncode == 1 and "FAIL:" in again.stdout, again.stdout + again.stderr


def test_nothing_judged_is_a_usage_error_not_a_pass(user_dir):
    r = _sh("adamconf check --backend my_adam:MyAdam --variant tf1 --out out", user_dir)
    assert r.returncode == 2 and "nothing to judge" in r.stderr, r.stdout + r.stderr
    assert "variants = ('keras3',)" in r.stderr


# -- one plan, one vocabulary ---------------------------------------------------------------

def test_checks_bind_to_the_clauses_a_variant_has():
    runner = Runner(SPEC, load_backend("numpy"), "numpy")
    plan = runner.plan(list(SPEC.variants), ["float32", "bfloat16"])
    names = {(c.variant, c.check) for c in plan}
    assert ("torch", "no-gradients") not in names and ("optax", "no-gradients") not in names
    assert ("keras3", "no-gradients") in names
    assert Cell("keras3", "bfloat16", "bfloat16-frozen") in plan and Cell("keras3", "float32", "bfloat16-frozen") not in plan
    for cell in plan:
        assert runner.clauses_of(cell), f"{cell.id} judges no clause of {cell.variant}"


def test_clause_verdicts_say_not_applicable_and_never_pass_for_nothing():
    runner = Runner(SPEC, load_backend("numpy"), "numpy")
    res = runner.run(["keras3", "tf1-compat"], ["float32"], only=["example", "bfloat16-frozen", "api-migrate"])
    by = {c.clause: c.status for c in res.clauses}
    assert by["keras3.update.bfloat16-frozen"] == {"float32": "not applicable"}
    migrate = next(c for c in res.checks if c.check == "api-migrate")
    assert migrate.status == "unsupported", (migrate.status, migrate.message)   # numpy has no tf1-compat world
    assert by["tf1-compat.migrate.arg-map"] == {"api": "unsupported"}


def test_results_say_what_was_tested(tmp_path):
    r = _sh([sys.executable, "-m", "adamconf", "check", "--backend", "numpy", "--variant", "keras3", "--dtype", "float32",
             "--check", "dense", "--out", "o", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    env = res["environment"]
    assert env["adamconf"] and env["spec_hash"].startswith("sha256:") and env["python"] and env["platform"]
    assert env["cpu"] and all(env["packages"][p] != "not installed" for p in ("numpy", "mpmath", "gmpy2", "hypothesis"))
    assert res["backend_versions"]["numpy"] == np.__version__
    assert (res["profile"], res["seed"], res["examples"]) == ("ci", None, 12)


# -- the ci profile ------------------------------------------------------------------------

RECORDER = """
import hashlib
from adamconf.backends.numpy_backend import NumpyBackend

SEEN = []
CONSTANTS = [{consts}]


class Recorder(NumpyBackend):
    def step(self, variant, dtype, hyper, state, grads):
        h = hashlib.sha256(repr((hyper, state.iterations)).encode())
        for a in list(state.params) + list(state.m) + list(state.v) + [g for g in grads if g is not None]:
            h.update(a.tobytes())
        SEEN.append(h.hexdigest())
        return super().step(variant, dtype, hyper, state, grads)
"""


def test_ci_examples_do_not_depend_on_the_backends_source(tmp_path, monkeypatch):
    """Two backends whose files hold different literals see the very same ci examples."""
    rng = np.random.default_rng(7)
    for name in ("rec_a", "rec_b"):
        consts = ", ".join(repr(float(x)) for x in rng.standard_normal(40) * 10.0 ** rng.integers(-6, 4, 40))
        (tmp_path / f"{name}.py").write_text(RECORDER.format(consts=consts))
    monkeypatch.chdir(tmp_path)
    seen = []
    for name in ("rec_a", "rec_b"):
        backend = load_backend(f"{name}:Recorder")
        run = Runner(SPEC, backend, f"{name}:Recorder").run_cell(Cell("keras-legacy", "float32", "dense"))
        assert run.status == "pass", run.message
        seen.append(list(sys.modules[name].SEEN))
    assert seen[0] and seen[0] == seen[1]


def test_profiles_are_registered_with_hypothesis():
    from hypothesis import settings
    ci = settings.get_profile("adamconf-ci")
    assert ci.derandomize and ci.max_examples == 12 and ci.database is None
    assert not settings.get_profile("adamconf-dev").derandomize
    assert settings.get_profile("adamconf-thorough").max_examples == 10 * settings.get_profile("adamconf-dev").max_examples
    assert profiles.profile_name("dev") == "adamconf-dev"
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.profile_name("fast")


# -- the pytest route agrees with the CLI ------------------------------------------------------

def _cli_results(cwd: Path, backend: str, variants: list[str], dtypes: list[str], extra: list[str] = ()) -> dict:
    args = ["adamconf", "check", "--backend", backend, "--out", "cli", "--quiet", *extra]
    args += [x for v in variants for x in ("--variant", v)] + [x for d in dtypes for x in ("--dtype", d)]
    r = _sh(args, cwd)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return json.loads((cwd / "cli" / "results.json").read_text()), r.returncode


def _plugin_results(cwd: Path, backend: str, variants: list[str], dtypes: list[str], extra: list[str] = (),
                    out: str = "plug") -> tuple[dict, int, str]:
    args = [*PYTEST, "--adam-backend", backend, "--adam-out", out, "--junitxml", f"{out}.xml", *extra]
    args += [x for v in variants for x in ("--adam-variant", v)] + [x for d in dtypes for x in ("--adam-dtype", d)]
    r = _sh(args, cwd)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return json.loads((cwd / out / "results.json").read_text()), r.returncode, (cwd / f"{out}.xml").read_text()


def _cells(res: dict) -> tuple[dict, dict]:
    checks = {(c["variant"], c["dtype"], c["check"]): (c["status"], c["clause_status"]) for c in res["checks"]}
    clauses = {c["clause"]: c["status"] for c in res["clauses"]}
    return checks, clauses


CASES = {
    "numpy": ("numpy", []),
    "planted-bug": ("buggy_adam:BuggyAdam", []),
    "findings": ("buggy_adam:BuggyAdam", ["known.toml"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_and_pytest_agree_cell_by_cell(user_dir, case):
    backend, findings = CASES[case]
    variants, dtypes = ["keras3", "tf1"], ["float32", "bfloat16"]
    cli, cli_rc = _cli_results(user_dir, backend, variants, dtypes, [x for f in findings for x in ("--findings", f)])
    plug, plug_rc, xml = _plugin_results(user_dir, backend, variants, dtypes,
                                         [x for f in findings for x in ("--adam-findings", f)])
    assert _cells(cli) == _cells(plug)
    assert cli["summary"] == plug["summary"] and cli_rc == plug_rc
    statuses = {c["status"] for c in cli["checks"]}
    if case == "planted-bug":
        assert "fail" in statuses and cli_rc == 1
    if case == "findings":
        assert "known deviation" in statuses and "fail" not in statuses and cli_rc == 0
        # the xfail carries the finding's summary
        xfails = [t for t in ET.fromstring(xml).iter("testcase")
                  if (s := t.find("skipped")) is not None and s.get("type") == "pytest.xfail"]
        assert xfails and all("epsilon is taken ten times too large" in t.find("skipped").get("message") for t in xfails)


def test_pytest_serial_and_xdist_agree(user_dir):
    pytest.importorskip("xdist", reason="pip install -e '.[test]' brings pytest-xdist")
    args = (user_dir, "buggy_adam:BuggyAdam", ["keras3"], ["float32", "float16"])
    serial, rc1, _ = _plugin_results(*args, out="serial")
    parallel, rc2, _ = _plugin_results(*args, extra=["-n", "2"], out="parallel")
    assert _cells(serial) == _cells(parallel) and rc1 == rc2 == 1


def test_items_have_a_file_path_and_stable_ids(user_dir):
    r = _sh([*PYTEST, "--co", "--adam-backend", "my_adam:MyAdam", "--adam-variant", "keras3", "--adam-dtype", "float32"],
            user_dir)
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert "adamconf/pytest_gate.py::test_adam[keras3-float32-dense]" in ids
    assert "adamconf/pytest_gate.py::test_adam[keras3-api-api-defaults]" in ids
    one = _sh([*PYTEST, "--adam-backend", "my_adam:MyAdam", "adamconf/pytest_gate.py::test_adam[keras3-float32-fresh]"],
              user_dir)
    assert one.returncode == 0 and "1 passed" in one.stdout, one.stdout + one.stderr
    k = _sh([*PYTEST, "--adam-backend", "my_adam:MyAdam", "--adam-variant", "keras3", "-k", "float64 and dense"], user_dir)
    assert k.returncode == 0 and "1 passed" in k.stdout, k.stdout + k.stderr


def test_hypothesis_options_apply_on_the_pytest_route(user_dir):
    r = _sh([*PYTEST, "--adam-backend", "my_adam:MyAdam", "--adam-variant", "keras3", "--adam-dtype", "float32",
             "--adam-check", "dense", "--hypothesis-profile", "adamconf-dev", "--hypothesis-seed", "5",
             "--hypothesis-show-statistics", "--adam-out", "o"], user_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hypothesis Statistics" in r.stdout and "test_adam[keras3-float32-dense]" in r.stdout
    res = json.loads((user_dir / "o" / "results.json").read_text())
    assert (res["profile"], res["seed"], res["examples"]) == ("dev", 5, 60)


@pytest.mark.parametrize("args, needle", [
    (["--adam-backend", "my_adam:MyAdam", "--adam-dtype", "int8"], "unknown dtype(s) int8"),
    (["--adam-backend", "my_adam:MyAdam", "--adam-profile", "fast"], "unknown profile 'fast'"),
    (["--adam-backend", "my_adam:MyAdam", "--adam-variant", "keras4"], "unknown variant(s) keras4"),
    (["--adam-backend", "nope_adam:X"], "cannot import module 'nope_adam'"),
    (["--adam-backend", "my_adam:MyAdam", "--adam-findings", "bad.toml"], "not valid TOML"),
    (["--adam-backend", "my_adam:MyAdam", "--adam-max-examples", "0"], "--max-examples must be at least 1"),
])
def test_bad_plugin_options_are_usage_errors(user_dir, args, needle):
    (user_dir / "bad.toml").write_text("not toml [")
    r = _sh([*PYTEST, *args], user_dir)
    assert r.returncode == 4 and needle in r.stderr and "INTERNALERROR" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_plugin_can_also_be_named_with_dash_p(user_dir):
    r = _sh([*PYTEST, "-p", "adamconf.pytest_plugin", "--adam-backend", "my_adam:MyAdam", "--adam-variant", "keras3",
             "--adam-dtype", "float32", "--adam-check", "fresh"], user_dir)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


def test_cli_dedupes_and_validates_options(user_dir):
    r = _sh("adamconf check --backend numpy --variant keras3 --variant keras3 --dtype float32 --check fresh "
            "--out o --quiet", user_dir)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((user_dir / "o" / "results.json").read_text())["checks"]) == 1
    for bad, needle in (("--max-examples 0", "--max-examples must be at least 1"), ("--timeout 0", "--timeout must be"),
                        ("--timeout nan", "--timeout must be"), ("--profile fast", "unknown profile")):
        r = _sh(f"adamconf check --backend numpy --variant keras3 {bad}", user_dir)
        assert r.returncode == 2 and needle in r.stderr, (bad, r.stderr)


def test_progress_lines_count_and_estimate(user_dir):
    r = _sh("adamconf check --backend numpy --variant keras3 --dtype float32 --check dense --check fresh --out o",
            user_dir)
    lines = [x for x in r.stdout.splitlines() if x.startswith("[")]
    assert [x.split("]")[0] for x in lines] == ["[1/2", "[2/2"]
    assert all(re.search(r"\d+:\d\d elapsed, ~\d+:\d\d left", x) for x in lines), lines
