"""Callable hyperparameters: the `callable` check judges the pages' promise that a
zero-argument callable is read when the optimizer steps."""
from __future__ import annotations

import numpy as np
import pytest

from adamconf import cases
from adamconf.backends import numpy_backend
from adamconf.backends.numpy_backend import NumpyBackend
from adamconf.checks import CHECKS
from adamconf.reference import AdamState, Hyper, step
from adamconf.reference.state import Schedule, StepInput, StepTime
from adamconf.runner import Runner
from adamconf.spec import load_spec

SPEC = load_spec()
CALLABLE_VARIANTS = sorted({v for c in SPEC.clauses.values() if c.id.split(".")[1] == "callable" for v in c.variants})


def test_every_callable_clause_is_covered():
    run = Runner(SPEC, NumpyBackend(), "numpy").run(CALLABLE_VARIANTS, ["float32"], only=["callable"])
    ids = [c for c in run.clauses if c.clause.split(".")[1] == "callable"]
    assert ids and all(c.status["float32"] == "pass" for c in ids), [(c.clause, c.status) for c in ids]


@pytest.mark.parametrize("when", ["first", "ignored"])
def test_a_callable_not_read_at_step_time_fails(monkeypatch, when):
    """A backend that keeps the callable's first value, or ignores it for the default."""
    real = numpy_backend._value

    def stale(x, iterations):
        if isinstance(x, StepTime):
            return float(x.values[0]) if when == "first" else 0.001
        return real(x, iterations)
    monkeypatch.setattr(numpy_backend, "_value", stale)
    runner = Runner(SPEC, NumpyBackend(), "numpy")
    res = runner.run_check(CHECKS["callable"], SPEC.variant("keras-legacy"), "float32")
    assert res.status == "fail", res


def test_reference_reads_the_callable_at_step_time():
    v = SPEC.variant("keras-legacy")
    st = AdamState.zeros_like([np.array([1.0], np.float32)])
    g = [np.array([0.5], np.float32)]
    lr = StepTime((0.1, 0.01), at=1)
    a = step(v, "float32", Hyper(learning_rate=lr), st, g)
    b = step(v, "float32", Hyper(learning_rate=0.01), st, g)
    assert a.state.params[0].x[0] == b.state.params[0].x[0]


def test_case_files_keep_callables_and_schedules(tmp_path):
    h = Hyper(learning_rate=StepTime((0.1, 1e-3), at=1), beta_1=StepTime((0.9, 0.5)),
              epsilon=StepTime((1e-7, 0.1), at=1))
    inp = StepInput("keras-v2", "float32", h, AdamState.zeros_like([np.zeros(2, np.float32)]), (np.ones(2, np.float32),))
    cases.save(tmp_path / "c.json", inp, "keras-v2.callable.eager-hypers", "callable")
    back, _, _ = cases.load(tmp_path / "c.json", SPEC)
    assert back.hyper == h and back.hyper.learning_rate() == 1e-3
    sched = inp.hyper.replace(learning_rate=Schedule("exponential", initial=0.1, steps=10.0, rate=0.5))
    cases.save(tmp_path / "s.json", StepInput(inp.variant, inp.dtype, sched, inp.state, inp.grads), "", "schedule")
    assert cases.load(tmp_path / "s.json", SPEC)[0].hyper == sched
