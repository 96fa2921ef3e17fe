"""The gate has teeth: every planted bug is rejected, correct op orders pass, and a
misbehaving backend gets a clear failure while the run goes on."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adamconf.checks import CHECKS
from adamconf.corpus.op_orders import CORRECT
from adamconf.corpus.planted_bugs import BUGS
from adamconf.corpus.textbook import TextbookAdam
from adamconf.runner import Runner
from adamconf.selftest import check_order, run_one
from adamconf.spec import load_spec

SPEC = load_spec()
ROOT = Path(__file__).resolve().parents[1]

def _cell(backend) -> tuple[str, str]:
    variant = backend.variants[0]
    dtype = "float32" if "float32" in backend.dtypes else backend.dtypes[0]
    return variant, dtype


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: type(b).__name__)
def test_planted_bug_is_rejected_by_the_ci_profile_in_three_cells(bug):
    """What `adamconf selftest` demands of every bug: at least 3 failing ci cells."""
    name = type(bug).__name__
    tally = run_one(SPEC, f"adamconf.corpus.planted_bugs:{name}", "bug", bug.expected_clause_area, "", target=3, timeout=10.0)
    assert not tally.load_error, tally.load_error
    assert tally.catches >= 3, f"{name} ({type(bug).__doc__.strip().splitlines()[0]}) failed only {tally.failed} " \
                               f"of {tally.cells} ci cells"


@pytest.mark.parametrize("backend", CORRECT, ids=lambda b: type(b).__name__)
def test_correct_op_orders_pass_the_ci_profile(backend):
    runner = Runner(SPEC, backend, type(backend).__name__, profile="ci")
    res = runner.run(["tf1", "keras-legacy", "keras3"], ["float32", "float64"])
    bad = [(c.variant, c.dtype, c.check, c.message) for c in res.checks if c.status in ("fail", "error")]
    assert not bad, bad


# -- misbehaving backends -------------------------------------------------------------

class Misbehaving(TextbookAdam):
    variants = ("keras3",)
    dtypes = ("float32",)
    features = ()
    how = "raise"

    def step(self, variant, dtype, hyper, state, grads):
        if self.how == "raise":
            raise RuntimeError("kernel exploded")
        if self.how == "hang":
            time.sleep(3)
        if self.how == "mutate":
            state.params[0][...] = 0
        out = super().step(variant, dtype, hyper, state, grads)
        if self.how == "nan":
            out.params[0] = np.full_like(out.params[0], np.nan)
        if self.how == "shape":
            out.params[0] = np.zeros((7,), dtype=out.params[0].dtype)
        if self.how == "dtype":
            out.params[0] = out.params[0].astype(np.float64)
        if self.how == "type":
            return [out.params]
        return out


@pytest.mark.parametrize("how,needle", [
    ("raise", "raised RuntimeError: kernel exploded"),
    ("hang", "did not return within"),
    ("mutate", "modified its inputs"),
    ("nan", "exceeds K"),
    ("shape", "has shape (7,)"),
    ("dtype", "has dtype float64"),
    ("type", "returned list, expected an AdamState"),
])
def test_misbehaving_backend_gets_a_clear_failure_and_the_run_goes_on(how, needle, tmp_path):
    backend = Misbehaving()
    backend.how = how
    runner = Runner(SPEC, backend, "misbehaving", profile="ci", timeout=0.5, out=tmp_path, max_examples=3)
    res = runner.run(["keras3"], ["float32"], only=["fresh", "dense", "amsgrad"])
    by = {c.check: c for c in res.checks}
    assert by["dense"].status == "fail" and needle in by["dense"].message, by["dense"].message
    assert by["amsgrad"].status == "unsupported"   # the run went on to the next check
    assert res.failed


# -- the CLI ---------------------------------------------------------------------------

def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamconf", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_exit_codes_and_messages(tmp_path):
    r = _cli("check", "--backend", "no_such_module:Thing", "--out", str(tmp_path))
    assert r.returncode == 2 and "cannot import module 'no_such_module'" in r.stderr
    r = _cli("check", "--backend", "numpy", "--variant", "tf9", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown variant(s) tf9" in r.stderr
    r = _cli("check", "--backend", "adamconf.corpus.textbook:VARIANT_FEATURES", "--out", str(tmp_path))
    assert r.returncode == 2 and "does not follow the adamconf backend protocol" in r.stderr
    r = _cli("check", "--backend", "nonsense", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown backend 'nonsense'" in r.stderr


def test_cli_failure_writes_reports_and_the_replay_reproduces_it(tmp_path):
    out = tmp_path / "out"
    r = _cli("check", "--backend", "adamconf.corpus.planted_bugs:EpsInsideSqrt", "--variant", "keras-legacy",
             "--dtype", "float32", "--check", "fresh", "--out", str(out), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL keras-legacy float32 check fresh" in r.stdout and "replay: adamconf replay" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["keras-legacy"]["fail"] >= 1
    assert "<failure" in (out / "junit.xml").read_text()
    replay = re.search(r"replay: adamconf (replay \S+ --backend \S+)", r.stdout).group(1).split()
    r2 = _cli(*replay)
    assert r2.returncode == 1 and "FAIL" in r2.stdout
    r3 = _cli("replay", str(next((out / "cases").glob("*.json"))), "--backend", "adamconf.corpus.op_orders:KernelOrder")
    assert r3.returncode == 0 and "PASS" in r3.stdout


def test_corrupt_results_and_case_files_are_refused(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": "adamconf-results/1", "backend": "x"')
    r = _cli("report", str(bad))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    bad.write_text('{"schema": "something-else"}')
    r = _cli("report", str(bad))
    assert r.returncode == 2 and "not an adamconf results file" in r.stderr
    case = tmp_path / "case.json"
    case.write_text('{"format": "adamconf-case/1", "variant": "keras3"}')
    r = _cli("replay", str(case), "--backend", "numpy")
    assert r.returncode == 2 and "malformed case" in r.stderr


def test_readme_example_backend_passes(tmp_path):
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "my_adam.py").write_text(code)
    env_path = f"{tmp_path}:{ROOT}"
    r = subprocess.run([sys.executable, "-m", "adamconf", "check", "--backend", "my_adam:MyAdam", "--variant", "keras3",
                        "--dtype", "float32", "--dtype", "float64", "--out", str(tmp_path / "out"), "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["summary"]["keras3"]["pass"] > 0 and res["summary"]["keras3"]["fail"] == 0
    assert res["summary"]["keras3"]["unsupported"] > 0   # amsgrad, sparse, ... not declared


def test_every_covered_suffix_names_a_real_clause():
    """A check's coverage list must not drift from the spec: each entry is a clause."""
    suffixes = {c.id.split(".", 1)[1] for c in SPEC.clauses.values()}
    dead = {chk.name: [s for s in chk.covers if s not in suffixes] for chk in CHECKS.values()}
    assert not any(dead.values()), dead


# -- flush-to-zero backends ---------------------------------------------------------------

def test_a_flushing_backend_passes_only_when_it_says_so():
    """TF's CPU kernels flush subnormals; the bound allows it for a backend that declares
    it in `flushes_denormals`, and only then."""
    from adamconf.corpus.op_orders import FlushedKernelOrder
    declared = FlushedKernelOrder()
    res = Runner(SPEC, declared, "FlushedKernelOrder", profile="ci").run(
        ["tf1", "keras-legacy", "keras3"], ["float32", "float64"], only=["dense", "fresh", "sparse", "special", "trajectory"])
    bad = [(c.variant, c.dtype, c.check, c.message) for c in res.checks if c.status in ("fail", "error")]
    assert not bad, bad

    class Undeclared(FlushedKernelOrder):
        flushes_denormals = ()
    res = Runner(SPEC, Undeclared(), "Undeclared", profile="ci").run(
        ["keras-legacy"], ["float32"], only=["dense", "special"], fail_fast=True)
    assert any(c.status == "fail" for c in res.checks), [(c.check, c.status) for c in res.checks]


@pytest.mark.parametrize("name", ["EpsInsideSqrt", "NoBiasCorrection", "WeightDecayLrTwice", "DecayAfterIncrement"])
def test_declaring_flush_does_not_hide_bugs(name, tmp_path):
    """The flush allowance only reaches below the normal range: bugs still fail."""
    bug = next(b for b in BUGS if type(b).__name__ == name)
    flushed = type(name, (type(bug),), {"flushes_denormals": ("float16", "bfloat16", "float32", "float64")})()
    variant, dtype = _cell(bug)
    order = check_order(bug.expected_clause_area)
    runner = Runner(SPEC, flushed, name, profile="ci")
    statuses = []
    for c in order:
        if CHECKS[c].applies_to(SPEC.variant(variant), dtype):
            statuses.append(runner.run_check(CHECKS[c], SPEC.variant(variant), dtype).status)
            if statuses[-1] == "fail":
                break
    assert "fail" in statuses, statuses
