"""`adamconf diff`: the cases whose cause is known must come out with that cause and share.

Reference and numpy sides run everywhere; the real TensorFlow cases skip without the
[tf] extra. Problems and step counts are small so each case takes a second or two.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import xml.dom.minidom

import numpy as np
import pytest

from adamconf import cli
from adamconf.diff import (
    CAUSES,
    DiffError,
    aligned,
    build_hypers,
    diff,
    exact_run,
    find_causes,
    parse_hyper,
    parse_side,
)
from adamconf.diff_problems import PROBLEMS, get_problem
from adamconf.diff_report import as_dict, render_html, render_text
from adamconf.reports.svg import line_chart
from adamconf.spec import load_spec
from adamconf.spec.model import Variant

SPEC = load_spec()
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="install the [tf] extra: pip install -e '.[tf]'")
BUG = "adamconf.corpus.planted_bugs:AbsGradSecondMoment"

# Variant fields that change no number (API surface, documentation): not causes.
NOT_ARITHMETIC = {"id", "api", "family", "era", "page", "source", "arguments", "lr_alias", "unknown_kwarg_error",
                  "features", "slots", "weights_order", "notes", "allowed_kwargs"}


def run(a: str, b: str, **kw):
    return diff(SPEC, parse_side(a, SPEC), parse_side(b, SPEC), **kw)


def cause(result, name: str):
    return next(c for c in result.causes if c.name == name)


def top(result):
    return max((c for c in result.causes if c.active), key=lambda c: c.share)


def total_share(result) -> float:
    return sum(c.share for c in result.causes if c.active) + result.residual


# -- the causes cover the spec -------------------------------------------------------------

def test_every_arithmetic_field_of_a_variant_is_one_cause():
    fields = [f for k in CAUSES for f in k.fields]
    assert len(fields) == len(set(fields))
    every = {f.name for f in dataclasses.fields(Variant)}
    assert set(fields) | NOT_ARITHMETIC == every
    assert not set(fields) & NOT_ARITHMETIC


@pytest.mark.parametrize("a", sorted(SPEC.variants))
def test_aligning_every_cause_reproduces_the_other_variant_exactly(a):
    """What the causes do together is exactly B: nothing outside the cause list moves numbers."""
    prob = get_problem("quadratic")
    for b in sorted(SPEC.variants):
        va, vb = SPEC.variants[a], SPEC.variants[b]
        ha, hb, _ = build_hypers(va, vb, {"learning_rate": 0.01}, "each")
        v, h = aligned(va, vb, ha, hb, find_causes(va, vb, ha, hb))
        assert h == hb
        assert np.array_equal(exact_run(v, h, "float32", prob, 2), exact_run(vb, hb, "float32", prob, 2)), (a, b)


# -- the cases of the issue, through the reference and the numpy backend -------------------

def test_keras_legacy_vs_keras3_is_one_minus_beta_from_step_one():
    r = run("keras-legacy", "keras3", steps=30)
    assert r.first.step == 1 and 20 < r.first.ulps < 200
    c = top(r)
    assert c.name == "1 - beta" and c.fields["one_minus_beta"] == ("in-dtype", "double-then-cast")
    assert c.share == pytest.approx(1.0, abs=1e-9) and r.residual == 0
    assert "100% explained by 1 - beta" in r.verdict()
    assert not cause(r, "where each hyperparameter is held before the cast").active   # same numbers in float32


def test_keras_legacy_vs_keras3_in_float32_numpy_leaves_only_rounding():
    r = run("numpy:keras-legacy", "numpy:keras3", steps=30)
    assert r.first.step == 1
    assert top(r).name == "1 - beta" and top(r).share > 0.8
    assert r.residual_kind == "rounding" and r.residual < 0.2
    assert total_share(r) == pytest.approx(1.0)


def test_keras_legacy_vs_torch_is_epsilon_placement_and_default_epsilon():
    r = run("keras-legacy", "torch", steps=30)
    placement, default = cause(r, "epsilon placement"), cause(r, "default epsilon")
    assert default.fields["epsilon"] == (1e-7, 1e-8)
    assert placement.share > 0.3 and default.share > 0.3
    assert placement.share + default.share > 0.9
    assert {c.name for c in r.causes if c.active and c.share > 0.05} == {"epsilon placement", "default epsilon"}
    assert any(set(p["causes"]) == {"epsilon placement", "default epsilon"} for p in r.pairs)
    assert total_share(r) == pytest.approx(1.0)


def test_keras_legacy_vs_torch_with_explicit_values_is_epsilon_placement():
    r = run("keras-legacy", "torch", steps=30, defaults="explicit")
    assert top(r).name == "epsilon placement" and top(r).share > 0.9
    assert not any(c.kind == "hyper" for c in r.causes)


def test_tf1_vs_keras_legacy_with_each_defaults_is_default_epsilon_then_beta_powers():
    r = run("tf1", "keras-legacy", steps=300)
    assert top(r).name == "default epsilon" and top(r).fields["epsilon"] == (1e-8, 1e-7)
    assert top(r).share > 0.95
    powers = cause(r, "beta powers")
    assert powers.active and powers.share > 0
    assert "beta powers" in r.verdict()


def test_tf1_vs_keras_legacy_with_explicit_values_is_the_float32_beta_powers():
    r = run("tf1", "keras-legacy", steps=100, defaults="explicit")
    assert top(r).name == "beta powers" and top(r).share == pytest.approx(1.0)
    assert r.first.step == 2          # the accumulators and pow agree at step 1


def test_torch_vs_optax_with_amsgrad_is_which_v_is_kept():
    r = run("torch", "optax", steps=60, hyper={"amsgrad": True})
    assert top(r).name == "AMSGrad form" and top(r).share > 0.99
    assert any("learning_rate" in n for n in r.notes)       # optax has no default: said, not hidden


def test_amsgrad_form_is_not_exercised_without_amsgrad():
    r = run("torch", "optax", steps=5)
    amsgrad = cause(r, "AMSGrad form")
    assert not amsgrad.exercised and amsgrad.idle == "amsgrad is off"


def test_tf1_vs_tf1_compat_do_not_differ():
    r = run("tf1", "tf1-compat", steps=50)
    assert r.first is None and r.norm == 0 and r.residual == 0
    assert not [c for c in r.causes if c.active]
    assert r.verdict() == "tf1-compat does not differ from tf1: 0 ulps at every step of 50"


@pytest.mark.parametrize("other", ["keras-legacy", "numpy:keras-legacy"])
def test_planted_bug_against_its_own_variant_is_unexplained(other):
    r = run(f"{BUG}:keras-legacy", other, steps=10)
    assert r.first.step == 1
    assert r.residual_kind == "unexplained" and r.residual == pytest.approx(1.0)
    assert not [c for c in r.causes if c.active]
    assert r.faith_a is not None and r.faith_a.first_out.startswith("step 1,")
    assert "100% unexplained" in r.verdict()


def test_a_faithful_backend_against_its_exact_variant_is_rounding():
    r = run("numpy:keras3", "keras3", steps=20, problem="mlp")
    assert r.residual_kind == "rounding" and r.faith_a.within
    assert r.largest.ulps < 100


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_every_problem_runs_and_shares_add_up(problem):
    r = run("keras-legacy", "keras3", steps=8, problem=problem)
    assert len(r.series) == 8
    assert total_share(r) == pytest.approx(1.0)


# -- inputs ---------------------------------------------------------------------------------

def test_hyper_names_map_through_either_api():
    tf1, keras = SPEC.variants["tf1"], SPEC.variants["keras-legacy"]
    assert parse_hyper(["beta1=0.8", "epsilon=1e-6", "amsgrad=false"], [tf1, keras]) == \
        {"beta_1": 0.8, "epsilon": 1e-6, "amsgrad": False}
    with pytest.raises(DiffError):
        parse_hyper(["bogus=1"], [tf1, keras])
    with pytest.raises(DiffError):
        parse_hyper(["epsilon"], [tf1, keras])


def test_defaults_each_and_explicit():
    tf1, keras = SPEC.variants["tf1"], SPEC.variants["keras-legacy"]
    ha, hb, _ = build_hypers(tf1, keras, {}, "each")
    assert (ha.epsilon, hb.epsilon) == (1e-8, 1e-7)
    ha, hb, _ = build_hypers(tf1, keras, {}, "explicit")
    assert ha == hb and ha.epsilon == 1e-8
    ha, hb, _ = build_hypers(tf1, keras, {"epsilon": 1e-3}, "each")
    assert ha.epsilon == hb.epsilon == 1e-3


def test_bad_sides_are_usage_errors():
    with pytest.raises(DiffError, match="unknown variant"):
        parse_side("keras4", SPEC)
    with pytest.raises(DiffError, match="does not implement torch"):
        parse_side("numpy:torch", SPEC)


# -- output ---------------------------------------------------------------------------------

def test_cli_text_json_and_html(tmp_path, capsys):
    page = tmp_path / "diff.html"
    assert cli.main(["diff", "keras-legacy", "keras3", "--steps", "5", "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("keras3 differs from keras-legacy by") and "where they part" in text
    assert "1 - beta" in text and "not exercised by this run" in text
    html = page.read_text()
    svg = html[html.index("<svg"):html.index("</svg>") + 6]
    xml.dom.minidom.parseString(svg)
    assert "<script" not in html and "src=" not in html and "@import" not in html
    assert cli.main(["diff", "tf1", "keras-legacy", "--steps", "3", "--json", "--defaults", "explicit"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["defaults"] == "explicit" and len(data["per_step"]) == 3
    assert data["residual"]["kind"] == "none"
    assert {c["cause"] for c in data["causes"] if c["active"]} == {"beta powers"}


def test_cli_exits_1_when_part_of_the_gap_is_unexplained(capsys):
    assert cli.main(["diff", f"{BUG}:keras-legacy", "keras-legacy", "--steps", "3"]) == 1
    assert "100% unexplained" in capsys.readouterr().out


def test_cli_usage_errors_exit_2(capsys):
    assert cli.main(["diff", "keras4", "keras3"]) == 2
    assert cli.main(["diff", "tf1", "keras3", "--hyper", "nope=1"]) == 2
    assert cli.main(["diff", "tf1", "keras3", "--problem", "nope"]) == 2
    assert cli.main(["diff", "tf1", "keras3", "--dtype", "float8"]) == 2
    assert "adamconf diff:" in capsys.readouterr().err


def test_renderers_cover_a_result_without_a_gap():
    r = run("tf1", "tf1-compat", steps=3)
    assert "nowhere" in render_text(r)
    assert as_dict(r)["first"] is None
    assert "<svg" in render_html(r)


def test_line_chart_breaks_log_lines_at_zero():
    svg = line_chart([("a", [1, 2, 3, 4], [1.0, 0.0, 10.0, 100.0])], log_y=True, title="t")
    xml.dom.minidom.parseString(svg)
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "nothing to plot" in line_chart([("z", [1, 2], [0.0, 0.0])], log_y=True)


# -- real TensorFlow ----------------------------------------------------------------------------

@needs_tf
def test_tf_keras_legacy_vs_keras3_is_one_minus_beta():
    r = run("tensorflow:keras-legacy", "tensorflow:keras3", steps=10)
    assert r.first.step == 1 and 20 < r.first.ulps < 200
    assert top(r).name == "1 - beta" and top(r).share > 0.8
    assert r.residual_kind in ("rounding", "none")


@needs_tf
def test_tf_keras_legacy_vs_torch_is_epsilon():
    r = run("tensorflow:keras-legacy", "torch", steps=10)
    names = {c.name for c in r.causes if c.active and c.share > 0.05}
    assert names == {"epsilon placement", "default epsilon"}


@needs_tf
def test_tf_tf1_vs_keras_legacy_each_defaults_is_default_epsilon():
    r = run("tensorflow:tf1", "tensorflow:keras-legacy", steps=20)
    assert top(r).name == "default epsilon" and top(r).share > 0.95
    assert cause(r, "beta powers").active


@needs_tf
def test_tf_tf1_vs_tf1_compat_do_not_differ():
    r = run("tensorflow:tf1", "tensorflow:tf1-compat", steps=10)
    assert r.first is None


@needs_tf
def test_tf_planted_bug_against_real_keras_legacy_is_unexplained():
    r = run(f"{BUG}:keras-legacy", "tensorflow:keras-legacy", steps=5)
    assert r.residual_kind == "unexplained" and r.residual == pytest.approx(1.0)
