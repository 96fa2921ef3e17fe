"""The gate against hostile backends, options and files: no way to a false exit 0.

Each backend here is the README's faithful one with one misbehaviour planted. Every
case runs the installed `adamconf` command in a fresh folder and asserts the verdict and
the exit code.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
BASE = re.search(r"```python\n(import numpy as np\n.*?)```", README, re.S).group(1)

# One planted misbehaviour each: (module text appended to the README backend, class name).
HOSTILE = {
    "exit0-in-step": "import sys\nclass H(MyAdam):\n    def step(self, *a):\n        sys.exit(0)\n",
    "os-exit0-in-step": "import os\nclass H(MyAdam):\n    def step(self, *a):\n        os._exit(0)\n",
    "os-exit1-in-step": "import os\nclass H(MyAdam):\n    def step(self, *a):\n        os._exit(1)\n",
    "segfault": "import ctypes\nclass H(MyAdam):\n    def step(self, *a):\n        ctypes.string_at(0)\n",
    "base-exception": ("class Boom(BaseException):\n    pass\nclass H(MyAdam):\n    def step(self, *a):\n"
                       "        raise Boom('not an Exception')\n"),
    "hang": "import time\nclass H(MyAdam):\n    def step(self, *a):\n        time.sleep(3600)\n",
    # hangs on any state past the first step: the dense check meets one, the fresh check never
    "hang-past-zero": ("import time\nclass H(MyAdam):\n    def step(self, variant, dtype, hyper, state, grads):\n"
                       "        if state.iterations > 0:\n            time.sleep(3600)\n"
                       "        return MyAdam.step(self, variant, dtype, hyper, state, grads)\n"),
    "mutates-grads": ("class H(MyAdam):\n    def step(self, variant, dtype, hyper, state, grads):\n"
                      "        out = MyAdam.step(self, variant, dtype, hyper, state, grads)\n"
                      "        for g in grads:\n            if g is not None:\n                g[...] = 0\n"
                      "        return out\n"),
    # one ulp up or not, element by element, by Python's random: within the bound, so only
    # calling twice on the same input shows it
    "python-random": ("import random\nimport numpy as np\nclass H(MyAdam):\n"
                      "    def step(self, variant, dtype, hyper, state, grads):\n"
                      "        out = MyAdam.step(self, variant, dtype, hyper, state, grads)\n"
                      "        up = lambda p: np.array([random.random() < 0.5 for _ in range(p.size)], bool).reshape(p.shape)\n"
                      "        out.params = [np.where(up(p) & (p != 0), np.nextafter(p, np.inf), p).astype(p.dtype)\n"
                      "                      for p in out.params]\n"
                      "        return out\n"),
    "api-raises": "class H(MyAdam):\n    def api(self):\n        raise RuntimeError('no world today')\n",
    "api-hangs": "import time\nclass H(MyAdam):\n    def api(self):\n        time.sleep(3600)\n",
    "unsupported-raises": "class H(MyAdam):\n    def unsupported(self, *a):\n        raise RuntimeError('hook broke')\n",
    "exit0-at-import": "import sys\nsys.exit(0)\nclass H(MyAdam):\n    pass\n",
    "typo-variant": "class H(MyAdam):\n    variants = ('keras-lagacy',)\n",
    "string-variants": "class H(MyAdam):\n    variants = 'tf1-compat keras3'\n",
    "float8": "class H(MyAdam):\n    dtypes = ('float8',)\n",
}


def _write(tmp: Path, name: str) -> str:
    (tmp / "my_adam.py").write_text(BASE)
    (tmp / f"h_{name.replace('-', '_')}.py").write_text("from my_adam import MyAdam\n" + HOSTILE[name])
    return f"h_{name.replace('-', '_')}:H"


def _check(tmp: Path, backend: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    args = ["adamconf", "check", "--backend", backend, "--variant", "keras3", "--dtype", "float32", "--quiet",
            "--out", "out", *extra]
    return subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=timeout, env=ENV)


def _checks(tmp: Path) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads((tmp / "out" / "results.json").read_text())["checks"]}


@pytest.mark.parametrize("name, verdict", [
    ("exit0-in-step", "crashed: exit 0"),
    ("os-exit0-in-step", "crashed: exit 0"),
    ("os-exit1-in-step", "crashed: exit 1"),
    ("segfault", "crashed: SIGSEGV"),
    ("base-exception", "crashed: the backend raised Boom"),
])
def test_a_dying_worker_is_a_failed_cell_and_the_run_goes_on(tmp_path, name, verdict):
    r = _check(tmp_path, _write(tmp_path, name), "--check", "dense", "--check", "fresh")
    assert r.returncode == 1, r.stdout + r.stderr
    checks = _checks(tmp_path)
    assert set(checks) == {"dense", "fresh"}, "the run went on after the first crash"
    for c in checks.values():
        assert c["status"] == "fail" and c["message"].startswith(verdict), c["message"]


def test_a_hung_step_is_killed_once_per_cell(tmp_path):
    t0 = time.monotonic()
    r = _check(tmp_path, _write(tmp_path, "hang"), "--check", "dense", "--check", "fresh", "--timeout", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert all(c["status"] == "fail" and c["message"].startswith("HUNG") for c in _checks(tmp_path).values())
    assert time.monotonic() - t0 < 60


def test_after_a_hang_a_fresh_worker_judges_the_next_cell(tmp_path):
    r = _check(tmp_path, _write(tmp_path, "hang-past-zero"), "--check", "dense", "--check", "fresh", "--timeout", "2")
    checks = _checks(tmp_path)
    assert checks["dense"]["message"].startswith("HUNG") and checks["fresh"]["status"] == "pass", checks
    assert r.returncode == 1


def test_mutation_is_reported_as_mutation(tmp_path):
    r = _check(tmp_path, _write(tmp_path, "mutates-grads"), "--check", "example", "--check", "dense")
    checks = _checks(tmp_path)
    assert r.returncode == 1
    for c in checks.values():
        assert c["status"] == "fail" and "modified its inputs" in c["message"], c["message"]


def test_randomness_from_python_random_is_caught(tmp_path):
    r = _check(tmp_path, _write(tmp_path, "python-random"), "--check", "dense", "--dtype", "float64")
    c = _checks(tmp_path)["dense"]
    assert r.returncode == 1 and c["status"] == "fail" and "not deterministic" in c["message"], c


@pytest.mark.parametrize("name, needle", [("api-raises", "api() raised RuntimeError"), ("api-hangs", "HUNG")])
def test_a_broken_api_hook_is_a_verdict_and_keeps_the_numeric_results(tmp_path, name, needle):
    r = _check(tmp_path, _write(tmp_path, name), "--check", "dense", "--check", "api-defaults", "--timeout", "2",
               timeout=400)
    checks = _checks(tmp_path)
    assert checks["dense"]["status"] == "pass"
    assert checks["api-defaults"]["status"] in ("fail", "error") and needle in checks["api-defaults"]["message"]
    assert r.returncode == 1


def test_a_broken_unsupported_hook_is_an_error_verdict(tmp_path):
    r = _check(tmp_path, _write(tmp_path, "unsupported-raises"), "--check", "dense")
    c = _checks(tmp_path)["dense"]
    assert r.returncode == 1 and c["status"] == "error" and "unsupported() raised" in c["message"]


@pytest.mark.parametrize("name, needle", [
    ("exit0-at-import", "exit 0"),
    ("typo-variant", "'keras-lagacy', which the spec does not know"),
    ("string-variants", "variants must be a list, tuple or set of names"),
    ("float8", "'float8', which the spec does not know"),
])
def test_bad_backends_are_refused_before_the_run(tmp_path, name, needle):
    r = _check(tmp_path, _write(tmp_path, name))
    assert r.returncode == 2 and needle in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_in_process_mode_keeps_the_exit_code_honest(tmp_path):
    r = _check(tmp_path, _write(tmp_path, "base-exception"), "--check", "dense", "--in-process")
    assert r.returncode != 0
    r = _check(tmp_path, _write(tmp_path, "exit0-in-step"), "--check", "dense", "--in-process")
    assert r.returncode != 0


@pytest.mark.parametrize("opts, needle", [
    (["--max-examples", "0"], "--max-examples must be at least 1"),
    (["--max-examples", "-5"], "--max-examples must be at least 1"),
    (["--timeout", "0"], "--timeout must be"),
    (["--timeout", "-1"], "--timeout must be"),
    (["--timeout", "nan"], "--timeout must be"),
    (["--timeout", "inf"], "--timeout must be"),
    (["-j", "0"], "-j/--jobs"),
    (["--profile", "fast"], "unknown profile"),
    (["--seed", "3"], "derandomized"),
])
def test_bad_options_are_usage_errors(tmp_path, opts, needle):
    r = _check(tmp_path, "numpy", *opts)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_unusable_out_folder_is_refused_before_the_first_check(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out, needle in (("afile", "is a file"), ("x" * 300, "cannot be created")):
        r = subprocess.run(["adamconf", "check", "--backend", "numpy", "--variant", "keras3", "--out", out],
                           cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=120)
        assert r.returncode == 2 and needle in r.stderr and "[1/" not in r.stdout, r.stdout + r.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): no read-only folder to test")
        r = subprocess.run(["adamconf", "check", "--backend", "numpy", "--out", str(ro / "o")], cwd=tmp_path,
                           capture_output=True, text=True, env=ENV, timeout=120)
        assert r.returncode == 2 and "cannot be created" in r.stderr
    finally:
        ro.chmod(0o700)


def test_a_passing_run_leaves_no_stale_cases_and_two_runs_do_not_share_a_folder(tmp_path):
    (tmp_path / "my_adam.py").write_text(BASE)
    (tmp_path / "bad.py").write_text("from my_adam import MyAdam\nclass H(MyAdam):\n    def step(self, v, d, h, s, g):\n"
                                     "        return MyAdam.step(self, v, d, h.replace(epsilon=h.epsilon * 10), s, g)\n")
    assert _check(tmp_path, "bad:H", "--check", "dense").returncode == 1
    assert list((tmp_path / "out" / "cases").iterdir())
    assert _check(tmp_path, "my_adam:MyAdam", "--check", "dense").returncode == 0
    assert not (tmp_path / "out" / "cases").exists()
    # a second run into a folder that a running one holds is refused
    slow = subprocess.Popen(["adamconf", "check", "--backend", "my_adam:MyAdam", "--variant", "keras3", "--dtype",
                             "float32", "--out", "out", "--quiet", "--profile", "thorough"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        r = _check(tmp_path, "my_adam:MyAdam", "--check", "dense")
        assert r.returncode == 2 and "another adamconf run is writing" in r.stderr, r.stderr
    finally:
        slow.kill()
        slow.wait()


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interruption_writes_what_was_judged_and_never_exits_0(tmp_path, sig, status):
    (tmp_path / "my_adam.py").write_text(BASE)
    p = subprocess.Popen(["adamconf", "check", "--backend", "numpy", "--variant", "keras-legacy", "--out", "out"],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while not re.search(r"\[\s*3/", seen) and time.monotonic() < deadline:   # three cells judged
            line = p.stdout.readline()
            assert line, "the run ended before it could be interrupted"
            seen += line
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == status, (p.returncode, err[-2000:])
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["interrupted"] is True and len(res["checks"]) >= 3


CASE_TEXTS = {
    "not-json": "{not json",
    "a-list": "[1, 2]",
    "wrong-format": '{"format": "something-else/1"}',
    "malformed": '{"format": "adamconf-case/1", "variant": "keras3"}',
}


@pytest.mark.parametrize("name", list(CASE_TEXTS) + ["binary", "folder", "keras4", "float8", "shape", "unsupported"])
def test_replay_refuses_bad_cases_without_a_traceback(tmp_path, name):
    (tmp_path / "my_adam.py").write_text(BASE)
    good = _good_case(tmp_path)
    path = tmp_path / "case.json"
    d = json.loads(good.read_text())
    if name in CASE_TEXTS:
        path.write_text(CASE_TEXTS[name])
    elif name == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    elif name == "folder":
        path = tmp_path
    elif name == "keras4":
        path.write_text(json.dumps(dict(d, variant="keras4")))
    elif name == "float8":
        path.write_text(json.dumps(dict(d, dtype="float8")))
    elif name == "shape":
        d["state"]["m"][0]["shape"] = [7]
        d["state"]["m"][0]["hex"] = ["0x0.0p+0"] * 7
        path.write_text(json.dumps(d))
    elif name == "unsupported":
        path.write_text(json.dumps(dict(d, variant="tf1")))
    backend = "my_adam:MyAdam"
    r = subprocess.run(["adamconf", "replay", str(path), "--backend", backend], cwd=tmp_path, capture_output=True,
                       text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("adamconf replay:"), r.stderr
    if name == "unsupported":
        assert "unsupported" in r.stderr


def _good_case(tmp: Path) -> Path:
    (tmp / "bad.py").write_text("from my_adam import MyAdam\nclass H(MyAdam):\n    def step(self, v, d, h, s, g):\n"
                                "        return MyAdam.step(self, v, d, h.replace(epsilon=h.epsilon * 10), s, g)\n")
    subprocess.run(["adamconf", "check", "--backend", "bad:H", "--variant", "keras3", "--dtype", "float32", "--check",
                    "dense", "--out", "c", "--quiet"], cwd=tmp, capture_output=True, env=ENV, timeout=120)
    return next((tmp / "c" / "cases").iterdir())


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"schema": "adamconf-results/2"}', "\udcff", None])
def test_report_refuses_bad_files_without_a_traceback(tmp_path, text):
    path = tmp_path / "r.json"
    if text is None:
        path = tmp_path
    elif text == "\udcff":
        path.write_bytes(b"\xff\xfe")
    else:
        path.write_text(text)
    r = subprocess.run(["adamconf", "report", str(path)], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("adamconf report:"), r.stderr


def test_parallel_and_serial_runs_agree(tmp_path):
    runs = {}
    for jobs in ("1", "2"):
        r = subprocess.run(["adamconf", "check", "--backend", "numpy", "--variant", "tf1", "--variant", "keras3",
                            "--dtype", "float32", "--dtype", "bfloat16", "-j", jobs, "--out", f"o{jobs}", "--quiet"],
                           cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600)
        assert r.returncode == 0, r.stderr
        res = json.loads((tmp_path / f"o{jobs}" / "results.json").read_text())
        runs[jobs] = ([(c["variant"], c["dtype"], c["check"], c["status"], c["worst_ratio"], c["examples"])
                       for c in res["checks"]], [(c["clause"], c["status"]) for c in res["clauses"]])
    assert runs["1"] == runs["2"]


def test_module_level_python_import_of_the_worker_is_clean():
    """The worker module imports without side effects (the harness imports it, too)."""
    r = subprocess.run([sys.executable, "-c", "import adamconf.worker"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and not r.stdout and not r.stderr
