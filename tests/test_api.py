"""The object-level checks have teeth: the numpy Keras-like Adam passes every API clause
it covers, each planted API bug fails its own clause, and findings files are data that
turn known failures into reported deviations and go stale loudly."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adamconf.api import validate_world
from adamconf.api_checks import API_CHECKS, api_check_for
from adamconf.backends.numpy_api import KerasLikeAdam, NumpyApi
from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.findings import FindingsError, load
from adamconf.runner import Runner
from adamconf.spec import load_spec

SPEC = load_spec()
ROOT = Path(__file__).resolve().parents[1]
KERAS = ["keras-v2", "keras-legacy", "tf-keras", "keras3"]
API_ONLY = list(API_CHECKS)


def _api_runs(backend, variants=KERAS):
    return Runner(SPEC, backend, "test", profile="ci").run(variants, ["float32"], only=API_ONLY)


def test_numpy_api_world_passes_every_api_clause_it_covers():
    validate_world(NumpyApi(), "numpy")
    res = _api_runs(NumpyBackend())
    bad = [(c.variant, c.check, c.message) for c in res.checks if c.status not in ("pass", "unsupported")]
    assert not bad, bad
    judged = [c for c in res.clauses if c.status.get("api") == "pass"]
    assert len(judged) >= 60, len(judged)


def test_every_api_suffix_names_a_real_clause():
    suffixes = {c.id.split(".", 1)[1] for c in SPEC.clauses.values()}
    for chk in API_CHECKS.values():
        assert set(chk.covers) <= suffixes, (chk.name, set(chk.covers) - suffixes)
    assert api_check_for(SPEC.clauses["tf1.default.epsilon"]).name == "api-defaults"


# -- planted API bugs: each must fail the clause it breaks ------------------------------------

def _planted(variant: str, patch) -> NumpyBackend:
    base = KerasLikeAdam(variant)
    bad = type("Planted", (base,), patch(base))

    class World(NumpyApi):
        def __init__(self) -> None:
            super().__init__()
            self._classes = dict(self._classes, **{variant: bad})

    class Backend(NumpyBackend):
        def api(self):
            return World()
    return Backend()


def _init_override(**forced):
    def patch(base):
        def __init__(self, **kw):
            base.__init__(self, **kw)
            for k, v in forced.items():
                self._args[k] = v
        return {"__init__": __init__}
    return patch


PLANTED = {
    "epsilon-1e-8": ("keras-legacy", "keras-legacy.default.epsilon", _init_override(epsilon=1e-8)),
    "lr-alias-dropped": ("keras-v2", "keras-v2.kwargs.lr-alias", lambda base: {
        "learning_rate": property(lambda self: 0.001)}),
    "unknown-kwarg-valueerror": ("keras-v2", "keras-v2.error.unknown-kwarg", lambda base: {
        "__init__": lambda self, **kw: (_ for _ in ()).throw(ValueError("bad")) if "not_an_adam_argument" in kw
        else base.__init__(self, **kw)}),
    "weights-by-slot": ("tf-keras", "tf-keras.weights.order", lambda base: {
        "spec": _respelled(base.spec, weights_order="iter-then-by-slot")}),
    "config-drops-amsgrad": ("keras3", "keras-v2.config.round-trip", lambda base: {
        "get_config": lambda self: {k: x for k, x in base.get_config(self).items() if k != "amsgrad"}}),
    "minimize-no-count": ("keras-legacy", "keras-v2.iterations.minimize", lambda base: {
        "minimize": lambda self, loss, var_list, tape=None: (base.minimize(self, loss, var_list),
                                                              setattr(self, "iterations", self.iterations - 1))}),
    "finalize-noop": ("keras3", "keras-dtensor.ema.finalize", lambda base: {
        "finalize_variable_values": lambda self, var_list: None}),
    "malformed-valueerror": ("keras-legacy", "keras-v2.error.malformed", lambda base: {
        "apply_gradients": lambda self, gv: (_ for _ in ()).throw(ValueError("x")) if not isinstance(gv, list)
        or any(not isinstance(p, tuple) or len(p) != 2 for p in gv) else base.apply_gradients(self, gv)}),
    "clip-attribute-missing": ("keras-legacy", "keras-legacy.clip.attributes", _init_override()),
}


def _respelled(v, **kw):
    import dataclasses
    return dataclasses.replace(v, **kw)


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_api_bug_fails_its_clause(name):
    variant, clause, patch = PLANTED[name]
    if name == "clip-attribute-missing":
        def patch(base_):  # noqa: F811 - clipnorm forgotten after construction
            def __init__(self, **kw):
                base_.__init__(self, **kw)
                self.clipnorm = None
            return {"__init__": __init__}
    res = _api_runs(_planted(variant, patch), [variant])
    status = {c.clause: c.status.get("api") for c in res.clauses}
    assert status[clause] == "fail", (clause, status[clause], [c.message for c in res.checks if c.status != "pass"])


# -- findings ------------------------------------------------------------------------------

def _with_findings(tmp_path, text: str) -> NumpyBackend:
    f = tmp_path / "findings.toml"
    f.write_text(text)
    b = _planted("keras-legacy", _init_override(epsilon=1e-8))
    b.findings = str(f)
    return b


def test_a_finding_turns_a_failure_into_a_reported_deviation(tmp_path):
    b = _with_findings(tmp_path, '''
[[finding]]
id = "eps"
variants = ["keras-legacy"]
checks = ["api-defaults"]
clauses = ["keras-legacy.default.epsilon", "tf1-compat.migrate.epsilon-default"]
summary = "epsilon defaults to 1e-8"
evidence = "planted"
''')
    res = _api_runs(b, ["keras-legacy"])
    status = {c.clause: c.status.get("api") for c in res.clauses}
    assert status["keras-legacy.default.epsilon"] == "known deviation"
    assert next(c for c in res.checks if c.check == "api-defaults").status == "known deviation"
    assert res.findings[0]["observed_in"] == ["keras-legacy/api/api-defaults"]


def test_a_stale_strict_finding_fails(tmp_path):
    b = _with_findings(tmp_path, '''
[[finding]]
id = "stale"
variants = ["keras-legacy"]
checks = ["api-defaults"]
clauses = ["keras-legacy.default.betas"]
summary = "claims the betas are wrong"
evidence = "none"
''')
    res = _api_runs(b, ["keras-legacy"])
    status = {c.clause: c.status.get("api") for c in res.clauses}
    assert status["keras-legacy.default.betas"] == "fail"
    assert res.failed and "remove the finding" in next(c.message for c in res.checks if c.check == "api-defaults")


@pytest.mark.parametrize("text, needle", [
    ("[[finding]]\nid = 'x'\n", "missing field 'variants'"),
    ("[[finding]]\nid = 'x'\nvariants = ['nope']\nchecks = ['dense']\nsummary = 's'\nevidence = 'e'\n", "unknown variant nope"),
    ("[[finding]]\nid = 'x'\nvariants = ['tf1']\nchecks = ['dense']\nsummary = 's'\nevidence = 'e'\ncolour = 1\n", "unknown field 'colour'"),
    ("not toml [", "not valid TOML"),
])
def test_bad_findings_files_are_refused_with_a_clear_message(tmp_path, text, needle):
    f = tmp_path / "f.toml"
    f.write_text(text)
    with pytest.raises(FindingsError, match=needle.replace("(", r"\(")):
        b = NumpyBackend()
        b.findings = str(f)
        Runner(SPEC, b, "numpy")
    if needle == "not valid TOML":
        mod = tmp_path / "fb.py"
        mod.write_text(f"from adamconf.backends.numpy_backend import NumpyBackend\n"
                       f"class B(NumpyBackend):\n    findings = {str(f)!r}\n")
        r = subprocess.run([sys.executable, "-m", "adamconf", "check", "--backend", "fb:B", "--variant", "tf1",
                            "--dtype", "float32", "--check", "fresh", "--out", str(tmp_path / "o")],
                           cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
        assert r.returncode == 2 and "a findings file is invalid" in r.stderr, r.stderr


def test_tensorflow_findings_file_is_valid():
    fs = load(ROOT / "conformance/backends/tensorflow_findings.toml")
    from adamconf.checks import CHECKS
    from adamconf.findings import validate
    validate(fs, SPEC.variants, list(CHECKS) + list(API_CHECKS), SPEC.clauses)
    assert all(f.summary and f.evidence for f in fs)
